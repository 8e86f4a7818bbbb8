// Hostile and odd inputs (issue 5, item 3): malformed, huge and deeply nested SQL,
// multi-statement strings, NUL bytes, invalid UTF-8, very long strings, every parameter
// type, ambiguous-looking parameter lists, results above the entry size limit, a budget
// too small for any entry, statements the analyzer cannot parse.
//
// For each input, the call through qcache is compared with the same call through the
// plain driver: either both throw the same exception type with the same message, or both
// return the same rows. Nothing that failed is stored, nothing crashes or hangs, and
// afterwards a cached read is still invalidated by a write (still_consistent()).
//
// PostgreSQL through qcache::pqxx (HostilePg*); SQLite through qcache::soci (HostileSqlite,
// built when the SOCI adapter is).
#include <qcache/pqxx.h>

#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <typeinfo>
#include <vector>

#include "support/db_env.h"

#ifdef QCACHE_HOSTILE_SOCI
#include <qcache/soci.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>

#include <filesystem>
#endif

namespace {

// What a call did: the rows it returned (rendered, NULL distinct from '') or the exception.
struct result_or_error {
  bool threw = false;
  std::string type;  // typeid name of the exception
  std::string what;
  std::string rows;
};

std::ostream& operator<<(std::ostream& o, const result_or_error& r) {
  if (r.threw) return o << "threw " << r.type << ": " << r.what.substr(0, 300);
  return o << "rows: " << r.rows.substr(0, 300) << (r.rows.size() > 300 ? "..." : "");
}

bool operator==(const result_or_error& a, const result_or_error& b) {
  return a.threw == b.threw && a.type == b.type && a.what == b.what && a.rows == b.rows;
}

std::string dump(const pqxx::result& r) {
  std::ostringstream o;
  for (pqxx::row::size_type c = 0; c < r.columns(); ++c) o << r.column_type(c) << "|";
  o << "\n";
  for (const auto& row : r) {
    for (const auto& f : row) {
      if (f.is_null()) o << "NULL,";
      else o << "'" << std::string(f.c_str(), f.size()) << "',";
    }
    o << "\n";
  }
  return o.str();
}

template <class F>
result_or_error capture(F&& f) {
  result_or_error out;
  try {
    out.rows = f();
  } catch (const std::exception& e) {
    out.threw = true;
    out.type = typeid(e).name();
    out.what = e.what();
  }
  return out;
}

std::string lower_ident(std::string s) {
  for (char& c : s) c = std::isalnum(static_cast<unsigned char>(c)) ? std::tolower(c) : '_';
  return s;
}

std::string nested(int depth) {
  return "SELECT " + std::string(depth, '(') + "1" + std::string(depth, ')') + " AS x";
}

// ---- PostgreSQL ------------------------------------------------------------------------

class HostilePg : public ::testing::Test {
 protected:
  void SetUp() override {
    QCACHE_REQUIRE_PG(ci);
    conninfo_ = ci;
    std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    schema_ = "qch_" + std::to_string(getpid()) + "_" + lower_ident(test).substr(0, 40);
    admin("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE; CREATE SCHEMA " + schema_ +
          "; CREATE TABLE " + schema_ + ".t (id int PRIMARY KEY, v text);" + " INSERT INTO " +
          schema_ + ".t SELECT g, 'v' || g FROM generate_series(1, 5) g");
    cache_ = std::make_shared<qcache::cache>(cache_options());
    conn_ = std::make_unique<qcache::pqxx::connection>(conninfo(), cache_);
    plain_ = std::make_unique<pqxx::connection>(conninfo());
  }
  void TearDown() override {
    if (conninfo_.empty()) return;
    conn_.reset();
    plain_.reset();
    try {
      admin("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
    } catch (const std::exception& e) {
      ADD_FAILURE() << "cleanup: " << e.what();
    }
  }
  virtual qcache::options cache_options() { return {}; }

  std::string conninfo() const {
    return conninfo_ + " options='-c search_path=" + schema_ + "'";
  }
  void admin(const std::string& sql) {
    pqxx::connection c(conninfo_);
    pqxx::nontransaction tx(c);
    tx.exec(sql);
  }

  // The same statement through qcache and through plain libpqxx (each in its own
  // autocommit transaction; a broken connection is reopened).
  result_or_error via_qcache(const std::string& sql) {
    return capture([&] {
      qcache::pqxx::nontransaction tx(*conn_);
      return dump(tx.exec(sql));
    });
  }
  result_or_error via_plain(const std::string& sql) {
    return capture([&] {
      pqxx::nontransaction tx(*plain_);
      return dump(tx.exec(sql));
    });
  }
  template <class... A>
  result_or_error params_qcache(const std::string& sql, A&&... a) {
    return capture([&] {
      qcache::pqxx::nontransaction tx(*conn_);
      return dump(tx.exec_params(sql, std::forward<A>(a)...));
    });
  }
  template <class... A>
  result_or_error params_plain(const std::string& sql, A&&... a) {
    return capture([&] {
      pqxx::nontransaction tx(*plain_);
      return dump(tx.exec_params(sql, std::forward<A>(a)...));
    });
  }

  // Runs `sql` twice through qcache and once directly: all three agree. When the direct
  // call throws, nothing may have been stored.
  void same_as_driver(const std::string& sql) {
    SCOPED_TRACE(sql.substr(0, 120));
    auto before = cache_->stats();
    result_or_error p = via_plain(sql);
    result_or_error q1 = via_qcache(sql);
    result_or_error q2 = via_qcache(sql);
    EXPECT_EQ(q1, p);
    EXPECT_EQ(q2, p);
    if (p.threw) {
      EXPECT_EQ(cache_->stats().stores, before.stores) << "an error was stored";
      EXPECT_EQ(cache_->stats().hits, before.hits) << "an error was served from the cache";
    }
  }
  template <class... A>
  void params_same_as_driver(const std::string& sql, A&&... a) {
    SCOPED_TRACE(sql.substr(0, 120));
    auto before = cache_->stats();
    result_or_error p = params_plain(sql, a...);
    result_or_error q1 = params_qcache(sql, a...);
    result_or_error q2 = params_qcache(sql, a...);
    EXPECT_EQ(q1, p);
    EXPECT_EQ(q2, p);
    if (p.threw) {
      EXPECT_EQ(cache_->stats().stores, before.stores) << "an error was stored";
    }
  }

  std::string read_v(int id) {
    qcache::pqxx::nontransaction tx(*conn_);
    pqxx::result r = tx.exec_params("SELECT v FROM t WHERE id = $1", id);
    return r.empty() ? "<none>" : r[0][0].is_null() ? "<null>" : r[0][0].c_str();
  }
  // After whatever came before: a read is cached (second read a hit), a write through
  // qcache invalidates it, and the next read is fresh.
  void still_consistent() {
    static int round = 0;
    std::string fresh = "c" + std::to_string(++round);
    read_v(1);
    auto before = cache_->stats();
    std::string v = read_v(1);
    if (cache_options().max_entry_bytes != 1) {  // TinyEntries caches nothing, by design
      EXPECT_EQ(cache_->stats().hits, before.hits + 1) << "a plain read is no longer cached";
    }
    {
      qcache::pqxx::nontransaction tx(*conn_);
      tx.exec_params("UPDATE t SET v = $1 WHERE id = 1", fresh);
    }
    EXPECT_EQ(read_v(1), fresh) << "stale after a write (was " << v << ")";
    EXPECT_EQ(read_v(2), "v2");
  }

  std::string conninfo_, schema_;
  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::pqxx::connection> conn_;
  std::unique_ptr<pqxx::connection> plain_;
};

TEST_F(HostilePg, MalformedSqlGivesTheDriversError) {
  for (const char* sql :
       {"SELEC 1", "SELECT FROM WHERE", "SELECT (1", "SELECT 'unterminated", "SELECT \"x",
        "SELECT 1 FROM no_such_table", "SELECT no_such_column FROM t", "SELECT $1",
        "SELECT 1 +", ")", "SELECT * FROM t WHERE", "SELECT 1 /* unterminated comment",
        "SELECT 1; SELEC 2", "SELECT E'\\x'", "", " ", ";", ";;;", "-- only a comment",
        "/* c */", "SELECT 1::no_such_type", "\x01\x02\x03", "SELECT 1 LIMIT -1"})
    same_as_driver(sql);
  still_consistent();
}

TEST_F(HostilePg, HugeSqlIsCorrect) {
  // About 4 MB of comment, 3 MB of literal, a 1.5 MB IN list.
  same_as_driver("SELECT v FROM t WHERE id = 3 /*" + std::string(4 << 20, 'x') + "*/");
  same_as_driver("SELECT length('" + std::string(3 << 20, 'y') + "')");
  std::string in = "SELECT count(*) FROM t WHERE id IN (";
  for (int i = 0; i < 200000; ++i) in += std::to_string(i % 7) + ",";
  in += "9)";
  same_as_driver(in);
  // A huge syntax error: the message is the server's.
  same_as_driver("SELECT 1 " + std::string(2 << 20, '(') + " oops");
  still_consistent();
}

TEST_F(HostilePg, DeepNestingGivesTheDriversAnswerOrError) {
  for (int depth : {100, 1000, 3000, 10000}) same_as_driver(nested(depth));
  // Nested subqueries over the table, and a nested boolean WHERE.
  std::string sub = "SELECT v FROM t WHERE id = 2";
  for (int i = 0; i < 200; ++i) sub = "SELECT * FROM (" + sub + ") s" + std::to_string(i);
  same_as_driver(sub);
  same_as_driver("SELECT v FROM t WHERE " + std::string(10000, '(') + "id = 4" +
                 std::string(10000, ')'));
  still_consistent();
}

TEST_F(HostilePg, MultiStatementStrings) {
  same_as_driver("SELECT 1; SELECT 2");
  same_as_driver("SELECT v FROM t WHERE id = 3; SELECT v FROM t WHERE id = 4");
  // A read cached, then a multi-statement string that ends with a read but writes first.
  EXPECT_EQ(read_v(5), "v5");
  EXPECT_EQ(read_v(5), "v5");
  auto r = via_qcache("UPDATE t SET v = 'm' WHERE id = 5; SELECT v FROM t WHERE id = 5");
  EXPECT_FALSE(r.threw) << r;
  EXPECT_EQ(read_v(5), "m");
  // A failing statement after a write: the write is rolled back (one implicit transaction).
  r = via_qcache("UPDATE t SET v = 'n' WHERE id = 5; SELECT 1/0");
  EXPECT_TRUE(r.threw);
  EXPECT_EQ(read_v(5), "m");
  still_consistent();
}

TEST_F(HostilePg, NulBytesInParameters) {
  // libpq passes text parameters as C strings; whatever the driver does with the bytes
  // after a NUL, qcache must do the same.
  params_same_as_driver("SELECT $1::text AS v", std::string("a\0b", 3));
  params_same_as_driver("SELECT $1::text AS v", std::string("\0", 1));
  // bytea with NULs, through pqxx::binarystring.
  const std::string bytes("x\0y\0\0z", 6);
  pqxx::binarystring bin(bytes.data(), bytes.size());
  params_same_as_driver("SELECT length($1::bytea), encode($1::bytea, 'hex')", bin);
  pqxx::binarystring bin2(std::string("x\0y\0\0w", 6).data(), 6);
  auto a = params_qcache("SELECT encode($1::bytea, 'hex')", bin);
  auto b = params_qcache("SELECT encode($1::bytea, 'hex')", bin2);
  EXPECT_NE(a.rows, b.rows) << "two byte strings that differ after a NUL share a key";
  // A NUL inside the SQL text itself.
  same_as_driver(std::string("SELECT 1\0 AS x", 14));
  still_consistent();
}

TEST_F(HostilePg, InvalidUtf8GivesTheDriversErrorAndNothingIsCached) {
  auto before = cache_->stats();
  same_as_driver("SELECT '\xff\xfe' AS v");
  same_as_driver("SELECT v FROM t WHERE v = '\xc3\x28'");
  same_as_driver("SELECT 1 AS \"\xed\xa0\x80\"");
  params_same_as_driver("SELECT $1::text", std::string("\xff"));
  params_same_as_driver("SELECT v FROM t WHERE v = $1", std::string("ok\xc0\xaf"));
  EXPECT_EQ(cache_->stats().stores, before.stores);
  still_consistent();
}

TEST_F(HostilePg, VeryLongStrings) {
  std::string big(2 << 20, 'z');
  big[12345] = 'q';
  params_same_as_driver("SELECT length($1::text), md5($1::text)", big);
  std::string big2 = big;
  big2[12345] = 'r';
  auto a = params_qcache("SELECT md5($1::text)", big);
  auto b = params_qcache("SELECT md5($1::text)", big2);
  EXPECT_NE(a.rows, b.rows);
  // A 3 MB result (above the default max_entry_bytes of 16 MB? no: below) read twice.
  same_as_driver("SELECT repeat('w', 3 << 20) AS big");
  {
    qcache::pqxx::nontransaction tx(*conn_);
    tx.exec_params("UPDATE t SET v = $1 WHERE id = 4", big);
  }
  same_as_driver("SELECT md5(v), length(v) FROM t WHERE id = 4");
  still_consistent();
}

TEST_F(HostilePg, EveryParameterType) {
  const std::string q = "SELECT $1::text AS v, pg_typeof($1)::text AS t";
  params_same_as_driver(q, true);
  params_same_as_driver(q, false);
  params_same_as_driver(q, static_cast<short>(-7));
  params_same_as_driver(q, static_cast<unsigned short>(7));
  params_same_as_driver(q, -2147483647 - 1);
  params_same_as_driver(q, 4294967295u);
  params_same_as_driver(q, -9223372036854775807LL - 1);
  params_same_as_driver(q, 18446744073709551615ULL);
  params_same_as_driver(q, 1.5);
  params_same_as_driver(q, 0.1f);
  params_same_as_driver(q, -0.0);
  params_same_as_driver(q, 1e308);
  params_same_as_driver(q, std::numeric_limits<double>::infinity());
  params_same_as_driver(q, std::numeric_limits<double>::quiet_NaN());
  params_same_as_driver(q, std::string("s"));
  params_same_as_driver(q, "c-string");
  params_same_as_driver(q, nullptr);
  params_same_as_driver(q, static_cast<const char*>(nullptr));
  params_same_as_driver(q, std::optional<int>{});
  params_same_as_driver(q, std::optional<int>{42});
  params_same_as_driver(q, std::string());
  params_same_as_driver("SELECT $1::int + $2::bigint, $3::float8, $4::bool, $5::text", 1,
                        2LL, 3.25, true, "x");
  // Driver errors for a value the column type rejects.
  params_same_as_driver("SELECT $1::int", "not a number");
  params_same_as_driver("SELECT $1::int", 1e20);
  still_consistent();
}

TEST_F(HostilePg, AmbiguousLookingParametersAreDistinct) {
  const std::string q = "SELECT coalesce($1::text, '<null>') || '|' || coalesce($2::text, '<null>')";
  std::vector<result_or_error> seen;
  seen.push_back(params_qcache(q, nullptr, ""));
  seen.push_back(params_qcache(q, "", nullptr));
  seen.push_back(params_qcache(q, "", ""));
  seen.push_back(params_qcache(q, "ab", "c"));
  seen.push_back(params_qcache(q, "a", "bc"));
  seen.push_back(params_qcache(q, 1, "1"));
  seen.push_back(params_qcache(q, "1", 1));
  const char* want[] = {"<null>|", "|<null>", "|", "ab|c", "a|bc", "1|1", "1|1"};
  for (std::size_t i = 0; i < seen.size(); ++i) {
    ASSERT_FALSE(seen[i].threw) << seen[i];
    EXPECT_NE(seen[i].rows.find(want[i]), std::string::npos) << i << ": " << seen[i];
  }
  // And again, now from the cache: each key still gives its own answer.
  EXPECT_EQ(params_qcache(q, nullptr, ""), seen[0]);
  EXPECT_EQ(params_qcache(q, "a", "bc"), seen[4]);
  auto before = cache_->stats();
  params_qcache("SELECT $1::text", 1);
  params_qcache("SELECT $1::text", "1");
  EXPECT_EQ(cache_->stats().stores, before.stores + 2) << "integer 1 and text '1' share a key";
  still_consistent();
}

TEST_F(HostilePg, StatementsTheAnalyzerCannotParse) {
  // Syntax from PostgreSQL 16/17 (the analyzer and the server are PostgreSQL 15): the
  // server's error passes through.
  same_as_driver("SELECT JSON_OBJECT('a': 1)");
  same_as_driver("SELECT * FROM JSON_TABLE('[1]', '$[*]' COLUMNS (a int PATH '$'))");
  same_as_driver("SELECT 0x1F");
  same_as_driver("SELECT 1_000");
  same_as_driver("MERGE INTO t USING t s ON t.id = s.id WHEN NOT MATCHED BY SOURCE THEN DELETE");
  still_consistent();
}

TEST_F(HostilePg, PreparedStatementsAndParameterCountMismatches) {
  // A malformed prepared statement, an unknown name, a definition prepared twice: the
  // driver's error each time (libpqxx prepares lazily, at the first exec_prepared).
  auto prepared = [&](bool through_qcache, const std::string& name, const std::string& def,
                      auto... args) {
    return capture([&]() -> std::string {
      if (through_qcache) {
        conn_->prepare(name, def);
        qcache::pqxx::nontransaction tx(*conn_);
        return dump(tx.exec_prepared(name, args...));
      }
      plain_->prepare(name, def);
      pqxx::nontransaction tx(*plain_);
      return dump(tx.exec_prepared(name, args...));
    });
  };
  for (int round = 0; round < 2; ++round) {
    EXPECT_EQ(prepared(true, "bad", "SELEC 1"), prepared(false, "bad", "SELEC 1"));
    EXPECT_EQ(prepared(true, "p1", "SELECT v FROM t WHERE id = $1", 2),
              prepared(false, "p1", "SELECT v FROM t WHERE id = $1", 2));
    EXPECT_EQ(prepared(true, "p1", "SELECT v FROM t WHERE id = $1", 2, 3),
              prepared(false, "p1", "SELECT v FROM t WHERE id = $1", 2, 3));
    EXPECT_EQ(prepared(true, "p1", "SELECT v FROM t WHERE id = $1"),
              prepared(false, "p1", "SELECT v FROM t WHERE id = $1"));
    EXPECT_EQ(prepared(true, "p1", "SELECT v FROM t WHERE id = $1", "x"),
              prepared(false, "p1", "SELECT v FROM t WHERE id = $1", "x"));
    EXPECT_EQ(prepared(true, "p1", "SELECT v FROM t WHERE id = $1", nullptr),
              prepared(false, "p1", "SELECT v FROM t WHERE id = $1", nullptr));
  }
  // exec_params with too many / too few parameters, and $0.
  params_same_as_driver("SELECT v FROM t WHERE id = $1", 1, 2);
  params_same_as_driver("SELECT v FROM t WHERE id = $2", 1);
  params_same_as_driver("SELECT v FROM t WHERE id = $0", 1);
  params_same_as_driver("SELECT v FROM t WHERE id = $1 AND id = $1", 3);
  still_consistent();
}

class HostileSmallEntries : public HostilePg {
 protected:
  qcache::options cache_options() override {
    qcache::options o;
    o.max_entry_bytes = 4096;
    return o;
  }
};

TEST_F(HostileSmallEntries, ResultsAboveMaxEntryBytesAreCorrectAndNotStored) {
  auto before = cache_->stats();
  same_as_driver("SELECT repeat('x', 100000) AS big");
  same_as_driver("SELECT g, repeat('y', 100) FROM generate_series(1, 500) g");
  EXPECT_EQ(cache_->stats().stores, before.stores);
  EXPECT_GE(cache_->stats().not_cached(qcache::uncacheable_reason::too_large),
            before.not_cached(qcache::uncacheable_reason::too_large) + 2);
  still_consistent();
}

class HostileTinyEntries : public HostilePg {
 protected:
  qcache::options cache_options() override {
    qcache::options o;
    o.max_entry_bytes = 1;
    return o;
  }
};

TEST_F(HostileTinyEntries, NoEntryFitsEveryAnswerStillCorrect) {
  for (int i = 0; i < 3; ++i) {
    same_as_driver("SELECT v FROM t WHERE id = 2");
    same_as_driver("SELECT count(*) FROM t");
  }
  EXPECT_EQ(cache_->stats().stores, 0u);
  EXPECT_EQ(cache_->stats().entries, 0u);
  still_consistent();
}

// The smallest budget the cache accepts (the version table + 64 KiB) with max_entry_bytes
// above it: an entry larger than the whole budget must neither be stored nor evict
// everything into an inconsistent state.
class HostileTinyBudget : public HostilePg {
 protected:
  qcache::options cache_options() override {
    qcache::options o;
    o.version_slots = 1024;  // 8 KiB, the smallest version table
    o.shards = 1;
    o.max_bytes = 1024 * 8 + (64 << 10) + 1;
    o.max_entry_bytes = 1 << 20;
    return o;
  }
};

TEST_F(HostileTinyBudget, BudgetTooSmallForTheEntryStillCorrect) {
  for (int i = 0; i < 3; ++i) {
    same_as_driver("SELECT v FROM t WHERE id = 3");
    same_as_driver("SELECT repeat(v, 50000) FROM t WHERE id = 3");  // ~100 KB
    same_as_driver("SELECT g, repeat('z', 1000) FROM generate_series(1, 200) g");  // ~200 KB
    EXPECT_LE(cache_->stats().bytes, cache_->stats().max_bytes);
  }
  {
    qcache::pqxx::nontransaction tx(*conn_);
    tx.exec("UPDATE t SET v = 'tb' WHERE id = 3");
  }
  same_as_driver("SELECT repeat(v, 50000) FROM t WHERE id = 3");
  EXPECT_EQ(read_v(3), "tb");
  still_consistent();
}

TEST(HostileOptions, BudgetSmallerThanTheVersionTableIsRejected) {
  qcache::options o;
  o.version_slots = 1 << 10;
  o.max_bytes = 100;
  EXPECT_THROW(qcache::cache c(o), std::invalid_argument);
}

#ifdef QCACHE_HOSTILE_SOCI
// ---- SQLite through qcache::soci -------------------------------------------------------

namespace fs = std::filesystem;

class HostileSqlite : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("qcache_hostile_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "app.db").string();
    cache_ = std::make_shared<qcache::cache>(qcache::options{});
    factory_ = std::make_unique<qcache::soci::caching_factory>(cache_, soci::sqlite3);
    sql_ = std::make_unique<soci::session>(*factory_, "db=" + path_ + " timeout=5");
    plain_ = std::make_unique<soci::session>(soci::sqlite3, "db=" + path_ + " timeout=5");
    *sql_ << "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)";
    for (int i = 1; i <= 5; ++i) {
      std::string v = "v" + std::to_string(i);  // use() binds by reference: no temporaries
      *sql_ << "INSERT INTO t(id, v) VALUES(:i, :v)", soci::use(i), soci::use(v);
    }
  }
  void TearDown() override {
    sql_.reset();
    plain_.reset();
    fs::remove_all(dir_);
  }

  // One string column of the first row (or "<none>"), through `s`.
  static result_or_error text_of(soci::session& s, const std::string& q) {
    return capture([&] {
      std::string v;
      soci::indicator ind = soci::i_ok;
      s << q, soci::into(v, ind);
      return !s.got_data() ? std::string("<none>") : ind == soci::i_null ? "<null>" : v;
    });
  }
  static result_or_error text_of(soci::session& s, const std::string& q, const std::string& p) {
    return capture([&] {
      std::string v;
      soci::indicator ind = soci::i_ok;
      std::string param = p;
      s << q, soci::use(param), soci::into(v, ind);
      return !s.got_data() ? std::string("<none>") : ind == soci::i_null ? "<null>" : v;
    });
  }
  template <class... P>
  void same_as_driver(const std::string& q, const P&... p) {
    SCOPED_TRACE(q.substr(0, 120));
    auto before = cache_->stats();
    result_or_error d = text_of(*plain_, q, p...);
    EXPECT_EQ(text_of(*sql_, q, p...), d);
    EXPECT_EQ(text_of(*sql_, q, p...), d);
    if (d.threw) {
      EXPECT_EQ(cache_->stats().stores, before.stores) << "an error was stored";
    }
  }
  void still_consistent() {
    static int round = 0;
    std::string fresh = "s" + std::to_string(++round);
    const std::string q = "SELECT v FROM t WHERE id = 1";
    text_of(*sql_, q);
    auto before = cache_->stats();
    text_of(*sql_, q);
    EXPECT_EQ(cache_->stats().hits, before.hits + 1) << "a plain read is no longer cached";
    *sql_ << "UPDATE t SET v = :v WHERE id = 1", soci::use(fresh);
    EXPECT_EQ(text_of(*sql_, q).rows, fresh);
  }

  fs::path dir_;
  std::string path_;
  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::soci::caching_factory> factory_;
  std::unique_ptr<soci::session> sql_, plain_;
};

TEST_F(HostileSqlite, MalformedHugeAndNestedSql) {
  for (const char* q : {"SELEC 1", "SELECT FROM WHERE", "SELECT (1", "SELECT 'unterminated",
                        "SELECT v FROM no_such_table", "SELECT no_such_col FROM t", "SELECT 1 +",
                        "SELECT 1; SELEC 2", "SELECT 'a'; SELECT 'b'", "\x01\x02"})
    same_as_driver(q);
  same_as_driver("SELECT v FROM t WHERE id = 3 /*" + std::string(3 << 20, 'x') + "*/");
  same_as_driver("SELECT length('" + std::string(2 << 20, 'y') + "')");
  for (int depth : {10, 100, 1000, 10000})
    same_as_driver("SELECT CAST(" + std::string(depth, '(') + "1" + std::string(depth, ')') +
                   " AS TEXT)");
  still_consistent();
}

TEST_F(HostileSqlite, OddParameters) {
  same_as_driver("SELECT :p || '|' || length(:p)", std::string("a\0b", 3));
  same_as_driver("SELECT hex(:p)", std::string("\xff\xfe", 2));
  same_as_driver("SELECT :p", std::string());
  same_as_driver("SELECT length(:p)", std::string(2 << 20, 'L'));
  // ('ab','c') vs ('a','bc'), integer 1 vs text '1'.
  auto two = [&](const std::string& a, const std::string& b) {
    return capture([&] {
      std::string v;
      std::string x = a, y = b;
      *sql_ << "SELECT :a || '|' || :b", soci::use(x), soci::use(y), soci::into(v);
      return v;
    });
  };
  EXPECT_EQ(two("ab", "c").rows, "ab|c");
  EXPECT_EQ(two("a", "bc").rows, "a|bc");
  EXPECT_EQ(two("ab", "c").rows, "ab|c");
  auto typed = [&](auto p) {
    return capture([&] {
      std::string v;
      auto x = p;
      *sql_ << "SELECT typeof(:p)", soci::use(x), soci::into(v);
      return v;
    });
  };
  EXPECT_EQ(typed(1).rows, "integer");
  EXPECT_EQ(typed(std::string("1")).rows, "text");
  EXPECT_EQ(typed(1).rows, "integer");
  still_consistent();
}
#endif

}  // namespace
