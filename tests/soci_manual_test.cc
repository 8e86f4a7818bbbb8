// Manual invalidation by name and explain on the SOCI front end, for both backends
// (issue 10 item 4): qcache::soci::invalidate_table / invalidate_row / explain behave as
// qcache::pqxx::connection's do.
//
// SQLite: a write by another connection is seen (the file's change counter) and invalidates
// the whole database, so these tests invalidate without writing and assert, with the cache's
// counters, exactly which reads stop being hits; every value read is compared with a plain
// SOCI session. PostgreSQL: the write is made behind qcache's back (plain libpq), the cached
// read stays stale until the manual invalidation, then equals the database.
#include <gtest/gtest.h>
#include <qcache/soci.h>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "support/soci_pg_schema_fixture.h"

namespace {

namespace fs = std::filesystem;

bool has_tag(const qcache::explanation& e, const std::string& tag) {
  return std::find(e.tags.begin(), e.tags.end(), tag) != e.tags.end();
}

// Every row of `q` (one text column, NULL as "NULL"), through `s`, with `k` bound as :k
// unless empty.
std::string texts(soci::session& s, const std::string& q, const std::string& k) {
  std::string out;
  soci::rowset<soci::row> rs = k.empty()
                                   ? soci::rowset<soci::row>(s.prepare << q)
                                   : soci::rowset<soci::row>((s.prepare << q, soci::use(k, "k")));
  for (const auto& row : rs) {
    out += row.get_indicator(0) == soci::i_null ? "NULL" : row.get<std::string>(0);
    out += "\n";
  }
  return out;
}

// What one read through the cache did.
struct outcome {
  std::string value;
  bool hit = false;
};

// ---- SQLite ------------------------------------------------------------------------------

// t(id INTEGER PRIMARY KEY, v TEXT, k TEXT) = (1..5, 'v<i>', 'a' for odd / 'b' for even);
// u(id INTEGER PRIMARY KEY).
class SociManualSqlite : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("qcache_soci_manual_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "app.db").string();
    cache_ = std::make_shared<qcache::cache>(qcache::options{});
    factory_ = std::make_unique<qcache::soci::caching_factory>(cache_, soci::sqlite3);
    sql_ = std::make_unique<soci::session>(*factory_, "db=" + path_ + " timeout=5");
    *sql_ << "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, k TEXT)";
    *sql_ << "CREATE TABLE u(id INTEGER PRIMARY KEY)";
    *sql_ << "INSERT INTO t VALUES (1, 'v1', 'a'), (2, 'v2', 'b'), (3, 'v3', 'a'), "
             "(4, 'v4', 'b'), (5, 'v5', 'a')";
  }
  void TearDown() override {
    sql_.reset();
    fs::remove_all(dir_);
  }

  // SELECT v FROM t WHERE id = :id through the cache, checked against a plain session.
  outcome by_id(int id) {
    const std::string q = "SELECT v FROM t WHERE id = :id";
    return observe([&](soci::session& s) {
      std::string v;
      s << q, soci::use(id, "id"), soci::into(v);
      return v;
    });
  }
  // The v of the rows whose k = :k (a column predicate read), through the cache, checked against a
  // plain session.
  outcome by_k(const std::string& k) {
    return observe(
        [&](soci::session& s) { return texts(s, "SELECT v FROM t WHERE k = :k ORDER BY id", k); });
  }
  outcome count() {
    return observe([&](soci::session& s) {
      int n = 0;
      s << "SELECT count(*) FROM t", soci::into(n);
      return std::to_string(n);
    });
  }
  template <class F>
  outcome observe(F&& read) {
    auto before = cache_->stats().hits;
    outcome o;
    o.value = read(*sql_);
    o.hit = cache_->stats().hits == before + 1;
    soci::session plain(soci::sqlite3, "db=" + path_ + " timeout=5");
    EXPECT_EQ(o.value, read(plain)) << "the cached read differs from the database";
    return o;
  }
  // Reads twice: the second must be a hit.
  template <class F>
  void cache_it(F&& read) {
    read();
    ASSERT_TRUE(read().hit) << "not cached";
  }

  fs::path dir_;
  std::string path_;
  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::soci::caching_factory> factory_;
  std::unique_ptr<soci::session> sql_;
};

TEST_F(SociManualSqlite, InvalidateRowByKeyInvalidatesThatRowOnly) {
  cache_it([&] { return by_id(4); });
  cache_it([&] { return by_id(5); });
  qcache::soci::invalidate_row(*sql_, "t", "id", "4");
  EXPECT_FALSE(by_id(4).hit) << "invalidate_row left row 4 cached";
  EXPECT_TRUE(by_id(5).hit) << "invalidate_row of row 4 invalidated row 5";
}

TEST_F(SociManualSqlite, InvalidateRowOfAnotherRowKeepsTheRead) {
  cache_it([&] { return by_id(4); });
  qcache::soci::invalidate_row(*sql_, "t", "id", "3");
  EXPECT_TRUE(by_id(4).hit);
}

TEST_F(SociManualSqlite, InvalidateRowByColumnValueInvalidatesThoseRowsOnly) {
  cache_it([&] { return by_k("a"); });
  cache_it([&] { return by_k("b"); });
  qcache::soci::invalidate_row(*sql_, "t", "k", "a");
  EXPECT_FALSE(by_k("a").hit);
  EXPECT_TRUE(by_k("b").hit);
}

TEST_F(SociManualSqlite, InvalidateRowInvalidatesWholeTableReads) {
  cache_it([&] { return count(); });
  qcache::soci::invalidate_row(*sql_, "t", "id", "4");
  EXPECT_FALSE(count().hit) << "a read of the whole table includes row 4";
}

TEST_F(SociManualSqlite, InvalidateRowNamesAreCaseInsensitiveAndMayBeQualified) {
  cache_it([&] { return by_id(4); });
  cache_it([&] { return by_k("a"); });
  qcache::soci::invalidate_row(*sql_, "T", "ID", "4");
  EXPECT_FALSE(by_id(4).hit);
  qcache::soci::invalidate_row(*sql_, "main.t", "K", "a");
  EXPECT_FALSE(by_k("a").hit);
}

TEST_F(SociManualSqlite, InvalidateRowWithAValueNoKeyCanEqualStillInvalidates) {
  // '04' is not an integer's canonical text: reads of the column are invalidated wholesale.
  cache_it([&] { return by_id(4); });
  cache_it([&] { return by_id(5); });
  qcache::soci::invalidate_row(*sql_, "t", "id", "04");
  EXPECT_FALSE(by_id(4).hit);
  EXPECT_FALSE(by_id(5).hit);
}

TEST_F(SociManualSqlite, InvalidateTableInvalidatesEveryReadOfIt) {
  cache_it([&] { return by_id(4); });
  cache_it([&] { return by_k("b"); });
  cache_it([&] { return count(); });
  qcache::soci::invalidate_table(*sql_, "t");
  EXPECT_FALSE(by_id(4).hit);
  EXPECT_FALSE(by_k("b").hit);
  EXPECT_FALSE(count().hit);
}

TEST_F(SociManualSqlite, InvalidateTableOfAnotherTableKeepsReads) {
  cache_it([&] { return by_id(4); });
  cache_it([&] { return count(); });
  qcache::soci::invalidate_table(*sql_, "u");
  EXPECT_TRUE(by_id(4).hit);
  EXPECT_TRUE(count().hit);
}

TEST_F(SociManualSqlite, UnknownTableIsNotAnErrorAndInvalidatesNothing) {
  cache_it([&] { return by_id(4); });
  EXPECT_NO_THROW(qcache::soci::invalidate_table(*sql_, "no_such_table"));
  EXPECT_NO_THROW(qcache::soci::invalidate_row(*sql_, "no_such_table", "id", "4"));
  EXPECT_TRUE(by_id(4).hit);
}

TEST_F(SociManualSqlite, InvalidateTableOfAViewInvalidatesReadsThroughIt) {
  *sql_ << "CREATE VIEW tv AS SELECT id, v FROM t WHERE k = 'a'";
  auto through_view = [&] {
    return observe([&](soci::session& s) { return texts(s, "SELECT v FROM tv ORDER BY id", ""); });
  };
  cache_it(through_view);
  qcache::soci::invalidate_table(*sql_, "tv");
  EXPECT_FALSE(through_view().hit);
}

TEST_F(SociManualSqlite, InvalidateRowResolvesTablesOfAttachedDatabases) {
  const std::string aux = (dir_ / "aux.db").string();
  *sql_ << "ATTACH DATABASE '" + aux + "' AS aux";
  *sql_ << "CREATE TABLE aux.t2(id INTEGER PRIMARY KEY, v TEXT)";
  *sql_ << "INSERT INTO aux.t2 VALUES (1, 'a1'), (2, 'a2')";
  auto by_id2 = [&](int id) {
    auto before = cache_->stats().hits;
    outcome o;
    *sql_ << "SELECT v FROM aux.t2 WHERE id = :id", soci::use(id, "id"), soci::into(o.value);
    o.hit = cache_->stats().hits == before + 1;
    return o;
  };
  cache_it([&] { return by_id2(1); });
  cache_it([&] { return by_id2(2); });
  qcache::soci::invalidate_row(*sql_, "aux.t2", "id", "1");
  EXPECT_FALSE(by_id2(1).hit);
  EXPECT_TRUE(by_id2(2).hit);
  qcache::soci::invalidate_row(*sql_, "t2", "id", "2");  // unqualified: SQLite finds it in aux
  EXPECT_FALSE(by_id2(2).hit);
  EXPECT_EQ(by_id2(2).value, "a2");
}

TEST_F(SociManualSqlite, ExplainPointReadIsCacheableWithRowidPredicate) {
  qcache::explanation e = qcache::soci::explain(*sql_, "SELECT v FROM t WHERE id = :id");
  EXPECT_TRUE(e.cacheable) << e.to_string();
  EXPECT_EQ(e.kind, "read");
  EXPECT_EQ(e.reads, std::vector<std::string>{"main.t"}) << e.to_string();
  EXPECT_TRUE(has_tag(e, "predicate main.t.rowid = :id")) << e.to_string();
}

TEST_F(SociManualSqlite, ExplainColumnEqualityReadHasColumnPredicate) {
  qcache::explanation e = qcache::soci::explain(*sql_, "SELECT id FROM t WHERE k = :k");
  EXPECT_TRUE(e.cacheable) << e.to_string();
  EXPECT_TRUE(has_tag(e, "predicate main.t.k = :k")) << e.to_string();
  EXPECT_TRUE(has_tag(e, "reads main.t")) << e.to_string();
}

TEST_F(SociManualSqlite, ExplainRandomIsNotCacheableWithReason) {
  qcache::explanation e = qcache::soci::explain(*sql_, "SELECT v FROM t WHERE random() < 0");
  EXPECT_FALSE(e.cacheable);
  EXPECT_EQ(e.kind, "read");
  EXPECT_EQ(e.reason, "volatile_function") << e.to_string();
}

TEST_F(SociManualSqlite, ExplainWriteNamesItsTableAndDoesNotRunIt) {
  qcache::explanation w = qcache::soci::explain(*sql_, "UPDATE t SET v = 'x' WHERE id = 1");
  EXPECT_FALSE(w.cacheable);
  EXPECT_EQ(w.kind, "write");
  EXPECT_EQ(w.reason, "not_a_read") << w.to_string();
  EXPECT_EQ(w.writes, std::vector<std::string>{"main.t"}) << w.to_string();
  EXPECT_TRUE(has_tag(w, "invalidates main.t")) << w.to_string();
  EXPECT_EQ(by_id(1).value, "v1") << "explain ran the statement";
}

TEST_F(SociManualSqlite, ExplainDdlFlushes) {
  qcache::explanation e = qcache::soci::explain(*sql_, "DROP TABLE u");
  EXPECT_FALSE(e.cacheable);
  EXPECT_EQ(e.kind, "ddl");
  EXPECT_NE(e.reason.find("flushes"), std::string::npos) << e.to_string();
  int n = -1;
  *sql_ << "SELECT count(*) FROM sqlite_master WHERE name = 'u'", soci::into(n);
  EXPECT_EQ(n, 1) << "explain ran the statement";
}

TEST_F(SociManualSqlite, ExplainOfSqlSqliteRejectsIsAnError) {
  qcache::explanation e = qcache::soci::explain(*sql_, "SELEC v FROM t");
  EXPECT_EQ(e.kind, "error");
  EXPECT_FALSE(e.cacheable);
  EXPECT_FALSE(e.error.empty()) << e.to_string();
}

TEST(SociManualPlain, NonCachingSessionExplainsNothingAndInvalidatesNothing) {
  soci::session plain(soci::sqlite3, ":memory:");
  EXPECT_NO_THROW(qcache::soci::invalidate_table(plain, "t"));
  EXPECT_NO_THROW(qcache::soci::invalidate_row(plain, "t", "id", "1"));
  qcache::explanation e = qcache::soci::explain(plain, "SELECT 1");
  EXPECT_FALSE(e.cacheable);
  EXPECT_FALSE(e.reason.empty());
}

// ---- PostgreSQL --------------------------------------------------------------------------

// t(id int PRIMARY KEY, v text) = (1..5, 'v<i>'); u(id int).
class SociManualPg : public qcache_test::soci_pg_schema_fixture {
 protected:
  SociManualPg() : soci_pg_schema_fixture("qcsm_") {}
  // Manual invalidation is what an application without the change stream uses for writes
  // made behind qcache's back (with it, such writes are seen: pg_stream_test).
  qcache::options cache_options() const override {
    qcache::options o;
    o.follow_changes = false;
    return o;
  }

  void before_connect() override {
    admin("CREATE TABLE " + schema_ + ".t (id int PRIMARY KEY, v text);" + "INSERT INTO " +
          schema_ + ".t SELECT i, 'v' || i FROM generate_series(1, 5) i;" + "CREATE TABLE " +
          schema_ + ".u (id int)");
  }

  outcome read(const std::string& q) {
    auto before = cache_->stats().hits;
    outcome o;
    o.value = texts(*sql_, q, "");
    o.hit = cache_->stats().hits == before + 1;
    return o;
  }
  std::string direct(const std::string& q) {
    soci::session plain(soci::postgresql, conninfo());
    return texts(plain, q, "");
  }
  void cache_it(const std::string& q) {
    read(q);
    ASSERT_TRUE(read(q).hit) << "not cached: " << q;
  }
  // A write qcache cannot see (another program).
  void behind(const std::string& q) { admin("SET search_path = " + schema_ + "; " + q); }
};

const char* const pg_row4 = "SELECT v FROM t WHERE id = 4";
const char* const pg_row5 = "SELECT v FROM t WHERE id = 5";
const char* const pg_count = "SELECT count(*)::text FROM t";

TEST_F(SociManualPg, InvalidateRowInvalidatesThatRowOnly) {
  cache_it(pg_row4);
  cache_it(pg_row5);
  behind("UPDATE t SET v = 'outside' WHERE id = 4");
  EXPECT_TRUE(read(pg_row4).hit) << "documented: a write behind qcache's back is not seen";
  qcache::soci::invalidate_row(*sql_, "t", "id", "4");
  outcome o = read(pg_row4);
  EXPECT_FALSE(o.hit);
  EXPECT_EQ(o.value, direct(pg_row4));
  EXPECT_EQ(o.value, "outside\n");
  EXPECT_TRUE(read(pg_row5).hit) << "invalidate_row of row 4 invalidated row 5";
}

TEST_F(SociManualPg, InvalidateRowOfAnotherRowKeepsTheRead) {
  cache_it(pg_row4);
  qcache::soci::invalidate_row(*sql_, "t", "id", "3");
  EXPECT_TRUE(read(pg_row4).hit);
}

TEST_F(SociManualPg, InvalidateTableInvalidatesEveryReadOfIt) {
  cache_it(pg_row4);
  cache_it(pg_count);
  behind("UPDATE t SET v = 'outside' WHERE id = 4; INSERT INTO t VALUES (6, 'v6')");
  qcache::soci::invalidate_table(*sql_, "t");
  outcome o = read(pg_row4);
  EXPECT_FALSE(o.hit);
  EXPECT_EQ(o.value, direct(pg_row4));
  outcome c = read(pg_count);
  EXPECT_FALSE(c.hit);
  EXPECT_EQ(c.value, direct(pg_count));
}

TEST_F(SociManualPg, InvalidateTableOfAnotherTableKeepsReads) {
  cache_it(pg_row4);
  qcache::soci::invalidate_table(*sql_, "u");
  EXPECT_TRUE(read(pg_row4).hit);
}

TEST_F(SociManualPg, UnknownTableIsNotAnErrorAndInvalidatesNothing) {
  cache_it(pg_row4);
  EXPECT_NO_THROW(qcache::soci::invalidate_table(*sql_, "no_such_table"));
  EXPECT_NO_THROW(qcache::soci::invalidate_row(*sql_, "no_such_table", "id", "4"));
  EXPECT_TRUE(read(pg_row4).hit);
}

TEST_F(SociManualPg, InsideAFailedTransactionInvalidationStillHappens) {
  cache_it(pg_row4);
  behind("UPDATE t SET v = 'outside' WHERE id = 4");
  {
    soci::transaction tx(*sql_);
    EXPECT_ANY_THROW(*sql_ << "SELECT 1/0");
    // The catalog cannot be read in a failed transaction: the cache is flushed instead.
    EXPECT_NO_THROW(qcache::soci::invalidate_row(*sql_, "t", "id", "4"));
    tx.rollback();
  }
  outcome o = read(pg_row4);
  EXPECT_FALSE(o.hit);
  EXPECT_EQ(o.value, direct(pg_row4));
}

TEST_F(SociManualPg, ExplainPointReadIsCacheableWithPredicateTag) {
  // SOCI's :name placeholders, as the application writes them.
  qcache::explanation e = qcache::soci::explain(*sql_, "SELECT v FROM t WHERE id = :id");
  EXPECT_TRUE(e.cacheable) << e.to_string();
  EXPECT_EQ(e.kind, "read");
  EXPECT_EQ(e.reads, std::vector<std::string>{schema_ + ".t"}) << e.to_string();
  EXPECT_TRUE(has_tag(e, "predicate " + schema_ + ".t.id = $1")) << e.to_string();
}

TEST_F(SociManualPg, ExplainRandomIsNotCacheableWithReason) {
  qcache::explanation e = qcache::soci::explain(*sql_, "SELECT v FROM t WHERE random() < 0.5");
  EXPECT_FALSE(e.cacheable);
  EXPECT_EQ(e.reason, "volatile_function") << e.to_string();
}

TEST_F(SociManualPg, ExplainWriteNamesItsTableAndDoesNotRunIt) {
  qcache::explanation w = qcache::soci::explain(*sql_, "UPDATE t SET v = 'x' WHERE id = 1");
  EXPECT_FALSE(w.cacheable);
  EXPECT_EQ(w.kind, "write");
  EXPECT_EQ(w.writes, std::vector<std::string>{schema_ + ".t"}) << w.to_string();
  EXPECT_EQ(direct("SELECT v FROM t WHERE id = 1"), "v1\n") << "explain ran the statement";
}

TEST_F(SociManualPg, ExplainOfUnparsableSqlIsAnError) {
  qcache::explanation e = qcache::soci::explain(*sql_, "SELEC v FROM t");
  EXPECT_EQ(e.kind, "error");
  EXPECT_FALSE(e.cacheable);
  EXPECT_FALSE(e.error.empty());
}

}  // namespace
