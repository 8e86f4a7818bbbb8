// qcache::soci against real SQLite files (and the real PostgreSQL when QCACHE_PG is set):
// every result through the cache equals the same statement run by plain SOCI, and every
// write path invalidates what it must and no more.
#include <qcache/soci.h>

#include <soci/soci.h>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/sqlite3/soci-sqlite3.h>

#include <gtest/gtest.h>

#include "support/db_env.h"

#include <atomic>
#include <cstring>
#include <filesystem>
#include <thread>
#include <typeinfo>

namespace {

namespace fs = std::filesystem;

class SociSqlite : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("qcache_soci_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "app.db").string();
    cache_ = std::make_shared<qcache::cache>(qcache::options{});
    factory_ = std::make_unique<qcache::soci::caching_factory>(cache_, soci::sqlite3);
    sql_ = open();
    *sql_ << "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, n BIGINT, d REAL)";
    // SOCI binds use() by reference and runs a once-statement when its full expression
    // ends, after temporaries are gone: every bound value is a named variable.
    for (int i = 1; i <= 10; ++i) {
      std::string v = "v" + std::to_string(i);
      long long n = static_cast<long long>(i) * 1000000000LL;
      double d = i / 3.0;
      *sql_ << "INSERT INTO t(id, v, n, d) VALUES(:i, :v, :n, :d)", soci::use(i), soci::use(v),
          soci::use(n), soci::use(d);
    }
  }
  void TearDown() override {
    sql_.reset();
    fs::remove_all(dir_);
  }

  std::unique_ptr<soci::session> open() {
    return std::make_unique<soci::session>(*factory_, "db=" + path_ + " timeout=5");
  }
  std::unique_ptr<soci::session> plain() {
    return std::make_unique<soci::session>(soci::sqlite3, "db=" + path_ + " timeout=5");
  }
  qcache::stats st() const { return cache_->stats(); }
  std::string value_of(soci::session& s, int id) {
    std::string v;
    soci::indicator ind;
    s << "SELECT v FROM t WHERE id = :id", soci::use(id), soci::into(v, ind);
    return s.got_data() ? (ind == soci::i_null ? "<null>" : v) : "<none>";
  }

  fs::path dir_;
  std::string path_;
  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::soci::caching_factory> factory_;
  std::unique_ptr<soci::session> sql_;
};

TEST_F(SociSqlite, RepeatedReadIsAHit) {
  EXPECT_EQ(value_of(*sql_, 3), "v3");
  auto before = st();
  EXPECT_EQ(value_of(*sql_, 3), "v3");
  EXPECT_EQ(st().hits, before.hits + 1);
}

TEST_F(SociSqlite, PreparedStatementIsCachedPerValue) {
  int id = 1;
  std::string v;
  soci::statement s = (sql_->prepare << "SELECT v FROM t WHERE id = :id", soci::use(id),
                       soci::into(v));
  for (int round = 0; round < 3; ++round) {
    for (id = 1; id <= 4; ++id) {
      ASSERT_TRUE(s.execute(true));
      EXPECT_EQ(v, "v" + std::to_string(id));
    }
  }
  EXPECT_EQ(st().hits, 8u);
  id = 99;
  EXPECT_FALSE(s.execute(true));
  EXPECT_FALSE(s.execute(true));
  EXPECT_FALSE(sql_->got_data());
}

TEST_F(SociSqlite, UpdateOfRow5LeavesRow4AHit) {
  value_of(*sql_, 4);
  value_of(*sql_, 5);
  *sql_ << "UPDATE t SET v = 'five' WHERE id = 5";
  auto before = st();
  EXPECT_EQ(value_of(*sql_, 4), "v4");
  EXPECT_EQ(st().hits, before.hits + 1);
  EXPECT_EQ(value_of(*sql_, 5), "five");
  EXPECT_EQ(st().hits, before.hits + 1);
}

TEST_F(SociSqlite, WritesInvalidateTableReads) {
  auto count = [&] {
    int n = 0;
    *sql_ << "SELECT count(*) FROM t", soci::into(n);
    return n;
  };
  EXPECT_EQ(count(), 10);
  EXPECT_EQ(count(), 10);
  *sql_ << "INSERT INTO t(id, v) VALUES(11, 'x')";
  EXPECT_EQ(count(), 11);
  *sql_ << "DELETE FROM t WHERE id = 11";
  EXPECT_EQ(count(), 10);
  *sql_ << "UPDATE t SET v = 'y' WHERE id > 8";
  std::string v;
  *sql_ << "SELECT group_concat(v, ',') FROM t", soci::into(v);
  EXPECT_EQ(v, "v1,v2,v3,v4,v5,v6,v7,v8,y,y");
}

TEST_F(SociSqlite, SilentHookPathsInvalidatePointReads) {
  value_of(*sql_, 2);
  *sql_ << "INSERT OR REPLACE INTO t(id, v) VALUES(2, 'replaced')";
  EXPECT_EQ(value_of(*sql_, 2), "replaced");
  *sql_ << "UPDATE t SET id = 100 WHERE id = 3";
  value_of(*sql_, 100);
  EXPECT_EQ(value_of(*sql_, 3), "<none>");
  value_of(*sql_, 4);
  *sql_ << "DELETE FROM t";
  EXPECT_EQ(value_of(*sql_, 4), "<none>");
  *sql_ << "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID";
  *sql_ << "INSERT INTO kv VALUES('a', '1')";
  std::string v;
  *sql_ << "SELECT v FROM kv WHERE k = 'a'", soci::into(v);
  *sql_ << "UPDATE kv SET v = '2'";
  *sql_ << "SELECT v FROM kv WHERE k = 'a'", soci::into(v);
  EXPECT_EQ(v, "2");
}

TEST_F(SociSqlite, ViewsTriggersAndCascades) {
  *sql_ << "PRAGMA foreign_keys = ON";
  *sql_ << "CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT)";
  *sql_ << "CREATE TABLE child(id INTEGER PRIMARY KEY, pid INTEGER REFERENCES parent(id) ON DELETE CASCADE)";
  *sql_ << "CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT)";
  *sql_ << "CREATE TRIGGER tr AFTER UPDATE ON t BEGIN INSERT INTO audit(what) VALUES(new.v); END";
  *sql_ << "CREATE VIEW big AS SELECT id, v FROM t WHERE id > 5";
  *sql_ << "INSERT INTO parent VALUES(1, 'p')";
  *sql_ << "INSERT INTO child VALUES(1, 1)";
  *sql_ << "INSERT INTO child VALUES(2, 1)";
  auto q = [&](const std::string& sql) {
    int n = -1;
    *sql_ << sql, soci::into(n);
    return n;
  };
  EXPECT_EQ(q("SELECT count(*) FROM big"), 5);
  EXPECT_EQ(q("SELECT count(*) FROM audit"), 0);
  EXPECT_EQ(q("SELECT count(*) FROM child"), 2);
  EXPECT_EQ(q("SELECT count(*) FROM big"), 5);
  EXPECT_GE(st().hits, 1u);
  *sql_ << "UPDATE t SET id = 50 WHERE id = 2";  // through the view, and the trigger
  EXPECT_EQ(q("SELECT count(*) FROM big"), 6);
  EXPECT_EQ(q("SELECT count(*) FROM audit"), 1);
  *sql_ << "DELETE FROM parent WHERE id = 1";  // cascade
  EXPECT_EQ(q("SELECT count(*) FROM child"), 0);
}

TEST_F(SociSqlite, RollbackAndSavepoints) {
  EXPECT_EQ(value_of(*sql_, 1), "v1");
  EXPECT_EQ(value_of(*sql_, 1), "v1");
  {
    soci::transaction tr(*sql_);
    *sql_ << "UPDATE t SET v = 'tx' WHERE id = 1";
    EXPECT_EQ(value_of(*sql_, 1), "tx");  // the transaction sees its own write
    tr.rollback();
  }
  EXPECT_EQ(value_of(*sql_, 1), "v1");
  {
    soci::transaction tr(*sql_);
    *sql_ << "UPDATE t SET v = 'a' WHERE id = 1";
    *sql_ << "SAVEPOINT s1";
    *sql_ << "UPDATE t SET v = 'b' WHERE id = 1";
    EXPECT_EQ(value_of(*sql_, 1), "b");
    *sql_ << "ROLLBACK TO s1";
    EXPECT_EQ(value_of(*sql_, 1), "a");
    tr.commit();
  }
  EXPECT_EQ(value_of(*sql_, 1), "a");
  EXPECT_EQ(value_of(*sql_, 1), "a");
}

TEST_F(SociSqlite, AnotherConnectionWritingTheFile) {
  EXPECT_EQ(value_of(*sql_, 6), "v6");
  EXPECT_EQ(value_of(*sql_, 6), "v6");
  auto other = plain();
  *other << "UPDATE t SET v = 'other' WHERE id = 6";
  EXPECT_EQ(value_of(*sql_, 6), "other");
  EXPECT_EQ(value_of(*sql_, 6), "other");
  *other << "PRAGMA journal_mode = WAL";
  EXPECT_EQ(value_of(*sql_, 6), "other");
  *other << "UPDATE t SET v = 'wal' WHERE id = 6";
  EXPECT_EQ(value_of(*sql_, 6), "wal");
  *other << "UPDATE t SET v = 'wal2' WHERE id = 6";
  EXPECT_EQ(value_of(*sql_, 6), "wal2");
  EXPECT_EQ(value_of(*sql_, 6), "wal2");
}

TEST_F(SociSqlite, NonDeterministicFunctionsAreNotCached) {
  for (const char* q : {"SELECT random()", "SELECT datetime('now')", "SELECT changes()",
                        "SELECT last_insert_rowid()", "SELECT CURRENT_TIMESTAMP",
                        "SELECT randomblob(4) IS NOT NULL"}) {
    std::string v;
    *sql_ << q, soci::into(v);
    *sql_ << q, soci::into(v);
  }
  EXPECT_EQ(st().hits, 0u);
  EXPECT_EQ(st().stores, 0u);
  std::string v;
  *sql_ << "SELECT abs(-3) || upper('x')", soci::into(v);
  *sql_ << "SELECT abs(-3) || upper('x')", soci::into(v);
  EXPECT_EQ(st().hits, 1u);
}

// Runs `f(session)` uncached and cached (miss, then hit) and checks all three agree.
template <class F>
void same_three_ways(soci::session& plain_s, soci::session& cached_s, F f) {
  auto a = f(plain_s);
  auto b = f(cached_s);
  auto c = f(cached_s);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
}

TEST_F(SociSqlite, ExchangeTypesRoundTripExactly) {
  *sql_ << "CREATE TABLE x(i INTEGER, b BIGINT, u BIGINT, r REAL, s TEXT, dt DATE, z TEXT, e)";
  std::string nul("a\0b", 3);
  long long big = 5000000000LL;
  unsigned long long ub = 9000000000000000000ULL;
  double d = 0.1 + 0.2;
  std::tm tm{};
  tm.tm_year = 124;
  tm.tm_mon = 1;
  tm.tm_mday = 29;
  tm.tm_hour = 13;
  tm.tm_min = 14;
  tm.tm_sec = 15;
  soci::indicator null_ind = soci::i_null;
  std::string nothing;
  *sql_ << "INSERT INTO x VALUES(:i, :b, :u, :r, :s, :dt, :z, 7)", soci::use(big), soci::use(big),
      soci::use(ub), soci::use(d), soci::use(nul), soci::use(tm), soci::use(nothing, null_ind);
  auto p = plain();
  using row_t = std::tuple<long long, long long, unsigned long long, std::uint64_t, std::string,
                           std::string, int, int, std::string>;
  same_three_ways(*p, *sql_, [&](soci::session& s) {
    long long i = 0, b = 0;
    unsigned long long u = 0;
    double r = 0;
    std::string str, e;
    std::tm t{};
    soci::indicator zi = soci::i_ok;
    std::string z = "untouched";
    s << "SELECT i, b, u, r, s, dt, z, e FROM x", soci::into(i), soci::into(b), soci::into(u),
        soci::into(r), soci::into(str), soci::into(t), soci::into(z, zi), soci::into(e);
    std::uint64_t bits;
    std::memcpy(&bits, &r, 8);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &t);
    return row_t{i, b, u, bits, str, buf, static_cast<int>(zi), static_cast<int>(str.size()), z + e};
  });
  // Generic rows: types by declared type, the 32-bit INTEGER truncation included.
  same_three_ways(*p, *sql_, [&](soci::session& s) {
    soci::row r;
    s << "SELECT i, b, r, s, dt, z, e, i * 2 AS twice FROM x", soci::into(r);
    std::string out;
    for (std::size_t k = 0; k < r.size(); ++k) {
      out += r.get_properties(k).get_name() + ":" + std::to_string(r.get_properties(k).get_data_type());
      if (r.get_indicator(k) == soci::i_null) {
        out += "=null;";
        continue;
      }
      switch (r.get_properties(k).get_data_type()) {
        case soci::dt_integer: out += "=" + std::to_string(r.get<int>(k)); break;
        case soci::dt_long_long: out += "=" + std::to_string(r.get<long long>(k)); break;
        case soci::dt_double: {
          double dv = r.get<double>(k);
          std::uint64_t bits;
          std::memcpy(&bits, &dv, 8);
          out += "=" + std::to_string(bits);
          break;
        }
        case soci::dt_string: out += "=" + r.get<std::string>(k) + "/" + std::to_string(r.get<std::string>(k).size()); break;
        case soci::dt_date: {
          std::tm t = r.get<std::tm>(k);
          out += "=" + std::to_string(t.tm_year) + "-" + std::to_string(t.tm_mday);
          break;
        }
        default: out += "=?";
      }
      out += ";";
    }
    return out;
  });
}

TEST_F(SociSqlite, NullWithoutIndicatorThrowsTheSameError) {
  *sql_ << "UPDATE t SET v = NULL WHERE id = 7";
  auto p = plain();
  auto attempt = [](soci::session& s) {
    std::string v;
    try {
      s << "SELECT v FROM t WHERE id = 7", soci::into(v);
    } catch (const std::exception& e) {
      return std::string(typeid(e).name()) + ":" + e.what();
    }
    return std::string("no error");
  };
  std::string expected = attempt(*p);
  EXPECT_NE(expected, "no error");
  EXPECT_EQ(attempt(*sql_), expected);
  EXPECT_EQ(attempt(*sql_), expected);
}

TEST_F(SociSqlite, DriverErrorsPassThrough) {
  auto p = plain();
  for (const char* q : {"SELEC v FROM t", "SELECT nope FROM t", "SELECT v FROM missing",
                        "INSERT INTO t(id) VALUES(1)"}) {
    auto attempt = [&](soci::session& s) {
      try {
        int n;
        s << q, soci::into(n);
      } catch (const soci::sqlite3_soci_error& e) {
        return "sqlite3_soci_error:" + std::to_string(e.result()) + ":" + e.what();
      } catch (const soci::soci_error& e) {
        return std::string("soci_error:") + e.what();
      }
      return std::string("no error");
    };
    std::string expected = attempt(*p);
    EXPECT_EQ(attempt(*sql_), expected) << q;
    EXPECT_EQ(attempt(*sql_), expected) << q;
  }
}

TEST_F(SociSqlite, BulkVectorsAndRowsets) {
  std::vector<int> ids(4);
  std::vector<std::string> vs(4);
  auto p = plain();
  same_three_ways(*p, *sql_, [&](soci::session& s) {
    std::vector<std::string> all;
    std::vector<int> ids2(4);
    std::vector<std::string> vs2(4);
    soci::statement q = (s.prepare << "SELECT id, v FROM t ORDER BY id", soci::into(ids2), soci::into(vs2));
    q.execute();
    while (q.fetch())
      for (std::size_t k = 0; k < ids2.size(); ++k) all.push_back(std::to_string(ids2[k]) + vs2[k]);
    return all;
  });
  std::vector<int> new_ids{20, 21, 22};
  std::vector<std::string> new_vs{"a", "b", "c"};
  *sql_ << "INSERT INTO t(id, v) VALUES(:id, :v)", soci::use(new_ids), soci::use(new_vs);
  same_three_ways(*p, *sql_, [&](soci::session& s) {
    std::vector<std::string> all;
    int k = 5;
    soci::rowset<soci::row> rs = (s.prepare << "SELECT * FROM t WHERE id > :k ORDER BY id", soci::use(k));
    for (const auto& r : rs) all.push_back(r.get<std::string>(1));
    return all;
  });
  std::vector<std::string> all;
  soci::rowset<std::string> rs = (sql_->prepare << "SELECT v FROM t WHERE id >= 20 ORDER BY id");
  for (const auto& v : rs) all.push_back(v);
  EXPECT_EQ(all, new_vs);
}

TEST_F(SociSqlite, AffectedRowsAndGotData) {
  soci::statement u = (sql_->prepare << "UPDATE t SET v = 'z' WHERE id < 4");
  u.execute(true);
  EXPECT_EQ(u.get_affected_rows(), 3);
  std::string v;
  *sql_ << "SELECT v FROM t WHERE id = 1000", soci::into(v);
  EXPECT_FALSE(sql_->got_data());
  *sql_ << "SELECT v FROM t WHERE id = 1000", soci::into(v);
  EXPECT_FALSE(sql_->got_data());
  *sql_ << "SELECT v FROM t WHERE id = 1", soci::into(v);
  EXPECT_TRUE(sql_->got_data());
  *sql_ << "SELECT v FROM t WHERE id = 1", soci::into(v);
  EXPECT_TRUE(sql_->got_data());
}

TEST_F(SociSqlite, DdlAndAttach) {
  int n = 0;
  *sql_ << "SELECT count(*) FROM t", soci::into(n);
  *sql_ << "ALTER TABLE t ADD COLUMN extra TEXT DEFAULT 'e'";
  std::string e;
  *sql_ << "SELECT extra FROM t WHERE id = 1", soci::into(e);
  EXPECT_EQ(e, "e");
  std::string other = (dir_ / "other.db").string();
  *sql_ << "ATTACH DATABASE '" + other + "' AS aux";
  *sql_ << "CREATE TABLE aux.o(id INTEGER PRIMARY KEY, w TEXT)";
  *sql_ << "INSERT INTO aux.o VALUES(1, 'one')";
  std::string w;
  *sql_ << "SELECT w FROM aux.o WHERE id = 1", soci::into(w);
  *sql_ << "SELECT w FROM aux.o WHERE id = 1", soci::into(w);
  EXPECT_EQ(w, "one");
  *sql_ << "UPDATE aux.o SET w = 'uno'";
  *sql_ << "SELECT w FROM aux.o WHERE id = 1", soci::into(w);
  EXPECT_EQ(w, "uno");
  soci::session o(soci::sqlite3, "db=" + other);
  o << "UPDATE o SET w = 'eins'";
  *sql_ << "SELECT w FROM aux.o WHERE id = 1", soci::into(w);
  EXPECT_EQ(w, "eins");
}

TEST_F(SociSqlite, ThreadsShareOneCache) {
  constexpr int kThreads = 4;
  std::atomic<int> failures{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      auto s = open();
      for (int i = 0; i < 200; ++i) {
        int id = 1 + (i % 10);
        if (i % 10 == t) {
          std::string nv = "t" + std::to_string(t) + "_" + std::to_string(i);
          *s << "UPDATE t SET v = :v WHERE id = :id", soci::use(nv), soci::use(id);
          if (value_of(*s, id) != nv) ++failures;  // read-your-writes through the cache
        } else {
          value_of(*s, id);
        }
      }
    });
  }
  for (auto& th : ts) th.join();
  EXPECT_EQ(failures.load(), 0);
  auto p = plain();
  for (int id = 1; id <= 10; ++id) EXPECT_EQ(value_of(*sql_, id), value_of(*p, id)) << id;
  EXPECT_GT(st().hits, 0u);
}

TEST_F(SociSqlite, WriteOnOneSessionInvalidatesAnother) {
  auto other = open();
  EXPECT_EQ(value_of(*other, 8), "v8");
  EXPECT_EQ(value_of(*other, 9), "v9");
  *sql_ << "UPDATE t SET v = 'new' WHERE id = 8";
  auto before = st();
  EXPECT_EQ(value_of(*other, 8), "new");
  EXPECT_EQ(value_of(*other, 9), "v9");
  EXPECT_EQ(st().hits, before.hits + 1);  // row 9 survived, in another session
}

// P1: a read that captured its versions before a write, and stores after it, is dropped.
TEST_F(SociSqlite, StaleSetRaceIsDropped) {
  auto writer = open();
  auto foreign = plain();
  for (int variant = 0; variant < 2; ++variant) {
    int id = 4 + variant;
    bool fired = false;
    cache_->set_test_hook_before_store([&] {
      if (fired) return;
      fired = true;
      // Between the reader's execution and its store: a qcache session writes, or another
      // connection that qcache does not see writes the file.
      if (variant == 0) *writer << "UPDATE t SET v = 'w' WHERE id = 4";
      else *foreign << "UPDATE t SET v = 'f' WHERE id = 5";
    });
    EXPECT_EQ(value_of(*sql_, id), "v" + std::to_string(id));  // pre-write result served once
    cache_->set_test_hook_before_store(nullptr);
    EXPECT_TRUE(fired);
    EXPECT_EQ(value_of(*sql_, id), variant == 0 ? "w" : "f");  // never the stale one
  }
}

TEST_F(SociSqlite, RowAndTypedIntoOfOneSqlDoNotShareEntries) {
  int n = 0;
  *sql_ << "SELECT id FROM t WHERE id = 3", soci::into(n);
  soci::row r;
  *sql_ << "SELECT id FROM t WHERE id = 3", soci::into(r);
  EXPECT_EQ(r.get<int>(0), 3);
  std::string s;
  *sql_ << "SELECT id FROM t WHERE id = 3", soci::into(s);
  EXPECT_EQ(s, "3");
  long long ll = 0;
  *sql_ << "SELECT id FROM t WHERE id = 3", soci::into(ll);
  EXPECT_EQ(ll, 3);
}

// ---- The same program against SQLite and PostgreSQL: only the factory changes. --------

struct backend_case {
  const char* name;
  const soci::backend_factory* factory;
};

class SociBoth : public ::testing::TestWithParam<backend_case> {
 protected:
  void SetUp() override {
    if (std::string(GetParam().name) == "postgresql") {
      QCACHE_REQUIRE_PG(pg);
      // Each test in its own schema: ctest runs tests as parallel processes, and a shared
      // qs_t would be dropped under another test's feet.
      pg_base_ = pg;
      schema_ = "qcs_" + std::to_string(::getpid()) + "_" +
                std::to_string(std::hash<std::string>{}(
                                   ::testing::UnitTest::GetInstance()->current_test_info()->name()) %
                               1000000007u);
      soci::session admin(*GetParam().factory, pg_base_);
      admin << "DROP SCHEMA IF EXISTS " + schema_ + " CASCADE";
      admin << "CREATE SCHEMA " + schema_;
      conn_ = pg + " options='-c search_path=" + schema_ + "'";
    } else {
      dir_ = fs::temp_directory_path() /
             ("qcache_soci_both_" + std::to_string(::getpid()) + "_" +
              std::to_string(std::hash<std::string>{}(
                  ::testing::UnitTest::GetInstance()->current_test_info()->name())));
      fs::remove_all(dir_);
      fs::create_directories(dir_);
      conn_ = "db=" + (dir_ / "both.db").string() + " timeout=5";
    }
    cache_ = std::make_shared<qcache::cache>(qcache::options{});
    factory_ = std::make_unique<qcache::soci::caching_factory>(cache_, *GetParam().factory);
    auto p = plain();
    *p << "DROP TABLE IF EXISTS qs_t";
    *p << "CREATE TABLE qs_t(id INTEGER PRIMARY KEY, v TEXT, n BIGINT, d DOUBLE PRECISION)";
    for (int i = 1; i <= 10; ++i) {
      std::string v = "v" + std::to_string(i);
      long long n = static_cast<long long>(i) * 1000000000LL;
      double d = i / 3.0;
      *p << "INSERT INTO qs_t(id, v, n, d) VALUES(:i, :v, :n, :d)", soci::use(i), soci::use(v),
          soci::use(n), soci::use(d);
    }
    sql_ = open();
  }
  void TearDown() override {
    sql_.reset();
    if (!dir_.empty()) fs::remove_all(dir_);
    if (!schema_.empty()) {
      soci::session admin(*GetParam().factory, pg_base_);
      admin << "DROP SCHEMA IF EXISTS " + schema_ + " CASCADE";
    }
  }
  std::unique_ptr<soci::session> open() { return std::make_unique<soci::session>(*factory_, conn_); }
  std::unique_ptr<soci::session> plain() {
    return std::make_unique<soci::session>(*GetParam().factory, conn_);
  }
  std::string value_of(soci::session& s, int id) {
    std::string v;
    soci::indicator ind;
    s << "SELECT v FROM qs_t WHERE id = :id", soci::use(id), soci::into(v, ind);
    return s.got_data() ? (ind == soci::i_null ? "<null>" : v) : "<none>";
  }
  qcache::stats st() const { return cache_->stats(); }

  fs::path dir_;
  std::string conn_, pg_base_, schema_;
  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::soci::caching_factory> factory_;
  std::unique_ptr<soci::session> sql_;
};

TEST_P(SociBoth, RepeatedReadsAndPreparedStatementsHit) {
  EXPECT_EQ(value_of(*sql_, 3), "v3");
  EXPECT_EQ(value_of(*sql_, 3), "v3");
  EXPECT_EQ(st().hits, 1u);
  int id = 1;
  std::string v;
  soci::statement s = (sql_->prepare << "SELECT v FROM qs_t WHERE id = :id", soci::use(id),
                       soci::into(v));
  for (int round = 0; round < 2; ++round)
    for (id = 1; id <= 3; ++id) {
      ASSERT_TRUE(s.execute(true));
      EXPECT_EQ(v, "v" + std::to_string(id));
    }
  EXPECT_EQ(st().hits, 5u);  // id 3 was cached by the first read (same SQL, same shape)
}

TEST_P(SociBoth, UpdateOfRow5LeavesRow4AHit) {
  value_of(*sql_, 4);
  value_of(*sql_, 5);
  *sql_ << "UPDATE qs_t SET v = 'five' WHERE id = 5";
  auto before = st();
  EXPECT_EQ(value_of(*sql_, 4), "v4");
  EXPECT_EQ(st().hits, before.hits + 1);
  EXPECT_EQ(value_of(*sql_, 5), "five");
}

// A write that names only the id of its row still leaves reads by another column's other
// values cached (PostgreSQL: a pre-image read; SQLite: the preupdate hook).
TEST_P(SociBoth, DeleteByIdInvalidatesOnlyTheReadsOfItsRowsValues) {
  auto count_v = [&](const std::string& v) {
    int n = -1;
    *sql_ << "SELECT count(*) FROM qs_t WHERE v = :v", soci::use(v), soci::into(n);
    return n;
  };
  EXPECT_EQ(count_v("v3"), 1);
  EXPECT_EQ(count_v("v4"), 1);
  auto before = st();
  EXPECT_EQ(count_v("v3"), 1);
  EXPECT_EQ(count_v("v4"), 1);
  ASSERT_EQ(st().hits, before.hits + 2);
  int id = 3;
  *sql_ << "DELETE FROM qs_t WHERE id = :id", soci::use(id);
  before = st();
  EXPECT_EQ(count_v("v4"), 1);
  EXPECT_EQ(st().hits, before.hits + 1) << "v4's row was not touched";
  EXPECT_EQ(count_v("v3"), 0);
  EXPECT_EQ(st().hits, before.hits + 1) << "v3's count must be read again";
}

// PostgreSQL: a scalar subquery correlated to an output column depends only on the rows
// of the ids the result shows (the values come from SOCI's into columns).
TEST_P(SociBoth, CorrelatedSubqueryIsNamedByTheResultsIds) {
  {
    auto p = plain();
    *p << "CREATE TABLE qs_c(id INTEGER PRIMARY KEY, t_id BIGINT, body TEXT)";
    *p << "INSERT INTO qs_c(id, t_id, body) VALUES (1, 1, 'a'), (2, 1, 'b'), (3, 2, 'c'), (4, 9, 'd')";
  }
  // Written behind the cache: once its change stream has them, their echo cannot
  // invalidate what is cached below (PostgreSQL, follow_changes).
  qcache::soci::sync(*sql_);
  const std::string q =
      "SELECT t.id, (SELECT count(*) FROM qs_c c WHERE c.t_id = t.id) FROM qs_t t "
      "WHERE t.id <= 3 ORDER BY t.id";
  auto counts = [&] {
    std::vector<long long> ids(10), n(10);
    *sql_ << q, soci::into(ids), soci::into(n);
    std::string out;
    for (std::size_t i = 0; i < ids.size(); ++i)
      out += std::to_string(ids[i]) + ":" + std::to_string(n[i]) + " ";
    return out;
  };
  EXPECT_EQ(counts(), "1:2 2:1 3:0 ");
  auto before = st();
  EXPECT_EQ(counts(), "1:2 2:1 3:0 ");
  ASSERT_EQ(st().hits, before.hits + 1);
  *sql_ << "INSERT INTO qs_c(id, t_id, body) VALUES (5, 9, 'e')";  // t_id 9 is not shown
  before = st();
  EXPECT_EQ(counts(), "1:2 2:1 3:0 ");
  if (std::string(GetParam().name) == "postgresql") {
    EXPECT_EQ(st().hits, before.hits + 1);
  }
  *sql_ << "INSERT INTO qs_c(id, t_id, body) VALUES (6, 3, 'f')";  // t_id 3 is
  before = st();
  EXPECT_EQ(counts(), "1:2 2:1 3:1 ");
  EXPECT_EQ(st().hits, before.hits) << "a comment of a shown id must be read again";
}

TEST_P(SociBoth, WritesAndTransactions) {
  auto count = [&] {
    int n = 0;
    *sql_ << "SELECT count(*) FROM qs_t", soci::into(n);
    return n;
  };
  EXPECT_EQ(count(), 10);
  EXPECT_EQ(count(), 10);
  *sql_ << "INSERT INTO qs_t(id, v) VALUES(11, 'x')";
  EXPECT_EQ(count(), 11);
  {
    soci::transaction tr(*sql_);
    *sql_ << "DELETE FROM qs_t WHERE id = 11";
    EXPECT_EQ(count(), 10);
    tr.rollback();
  }
  EXPECT_EQ(count(), 11);
  {
    soci::transaction tr(*sql_);
    std::string v = "committed";
    int id = 1;
    *sql_ << "UPDATE qs_t SET v = :v WHERE id = :id", soci::use(v), soci::use(id);
    tr.commit();
  }
  EXPECT_EQ(value_of(*sql_, 1), "committed");
  EXPECT_EQ(value_of(*sql_, 1), "committed");
}

TEST_P(SociBoth, ValuesAreIdenticalToUncached) {
  *sql_ << "UPDATE qs_t SET v = NULL WHERE id = 2";
  auto p = plain();
  auto read = [&](soci::session& s) {
    std::vector<std::string> out;
    int id = 0;
    long long n = 0;
    double d = 0;
    std::string v;
    soci::indicator vi;
    int k = 5;
    soci::statement q = (s.prepare << "SELECT id, n, d, v FROM qs_t WHERE id <= :k ORDER BY id",
                         soci::use(k), soci::into(id), soci::into(n), soci::into(d),
                         soci::into(v, vi));
    q.execute();
    while (q.fetch()) {
      std::uint64_t bits;
      std::memcpy(&bits, &d, 8);
      out.push_back(std::to_string(id) + "|" + std::to_string(n) + "|" + std::to_string(bits) +
                    "|" + (vi == soci::i_null ? "null" : v));
    }
    soci::row r;
    s << "SELECT id, n, d, v, n * 2 AS twice FROM qs_t WHERE id = 3", soci::into(r);
    for (std::size_t k = 0; k < r.size(); ++k)
      out.push_back(r.get_properties(k).get_name() + ":" +
                    std::to_string(r.get_properties(k).get_data_type()));
    return out;
  };
  auto a = read(*p);
  EXPECT_EQ(read(*sql_), a);
  EXPECT_EQ(read(*sql_), a);
  EXPECT_GE(st().hits, 2u);
}

TEST_P(SociBoth, ErrorsPassThroughUnchanged) {
  auto p = plain();
  for (const char* q : {"SELEC v FROM qs_t", "SELECT nope FROM qs_t", "SELECT v FROM qs_missing",
                        "INSERT INTO qs_t(id) VALUES(1)", "SELECT v FROM qs_t WHERE id = 2"}) {
    *p << "UPDATE qs_t SET v = NULL WHERE id = 2";
    auto attempt = [&](soci::session& s) {
      try {
        std::string v;
        s << q, soci::into(v);
      } catch (const std::exception& e) {
        std::string w = e.what();
        return std::string(typeid(e).name()) + ":" + w;
      }
      return std::string("no error");
    };
    std::string expected = attempt(*p);
    EXPECT_EQ(attempt(*sql_), expected) << q;
    EXPECT_EQ(attempt(*sql_), expected) << q;
  }
}

TEST_P(SociBoth, BulkVectorsAndRowsets) {
  auto p = plain();
  auto read = [&](soci::session& s) {
    std::vector<std::string> all;
    std::vector<int> ids(4);
    std::vector<std::string> vs(4);
    soci::statement q = (s.prepare << "SELECT id, v FROM qs_t ORDER BY id", soci::into(ids),
                         soci::into(vs));
    q.execute();
    while (q.fetch())
      for (std::size_t k = 0; k < ids.size(); ++k) all.push_back(std::to_string(ids[k]) + vs[k]);
    int k = 5;
    soci::rowset<soci::row> rs = (s.prepare << "SELECT * FROM qs_t WHERE id > :k ORDER BY id", soci::use(k));
    for (const auto& r : rs) all.push_back(r.get<std::string>(1));
    return all;
  };
  auto a = read(*p);
  EXPECT_EQ(read(*sql_), a);
  EXPECT_EQ(read(*sql_), a);
  std::vector<int> new_ids{20, 21, 22};
  std::vector<std::string> new_vs{"a", "b", "c"};
  *sql_ << "INSERT INTO qs_t(id, v) VALUES(:id, :v)", soci::use(new_ids), soci::use(new_vs);
  EXPECT_EQ(read(*sql_), read(*p));
}

TEST_P(SociBoth, SessionsOnThreadsShareOneCache) {
  std::atomic<int> failures{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; ++t) {
    ts.emplace_back([&, t] {
      auto s = open();
      for (int i = 0; i < 60; ++i) {
        int id = 1 + (i % 10);
        if (i % 10 == t) {
          std::string nv = "t" + std::to_string(t) + "_" + std::to_string(i);
          *s << "UPDATE qs_t SET v = :v WHERE id = :id", soci::use(nv), soci::use(id);
          if (value_of(*s, id) != nv) ++failures;
        } else {
          value_of(*s, id);
        }
      }
    });
  }
  for (auto& th : ts) th.join();
  EXPECT_EQ(failures.load(), 0);
  auto p = plain();
  for (int id = 1; id <= 10; ++id) EXPECT_EQ(value_of(*sql_, id), value_of(*p, id)) << id;
  EXPECT_GT(st().hits, 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, SociBoth,
                         ::testing::Values(backend_case{"sqlite3", &soci::sqlite3},
                                           backend_case{"postgresql", &soci::postgresql}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
