// qcache::soci on SQLite, adversarial hunt: results the database would not return (stale or
// wrong cached results, results served where SQLite raises an error, lost writes). Every read
// through the cache is compared with the same read on a plain SOCI session on the same file.
#include <gtest/gtest.h>
#include <qcache/soci.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <atomic>
#include <random>
#include <vector>

#include "support/sqlite_file_fixture.h"

namespace {

namespace fs = std::filesystem;

class SqliteHunt : public qcache_test::sqlite_file_fixture {
 protected:
  SqliteHunt() : sqlite_file_fixture("qcache_sqlite_hunt_") {}
};

void make_c(soci::session& s) {
  s << "CREATE TABLE t(id INTEGER PRIMARY KEY, c INTEGER, v TEXT)";
  s << "INSERT INTO t VALUES(1, 1, 'a'), (2, 2, 'b'), (3, 3, 'c')";
}

// SQLite's block comments do not nest; PostgreSQL's (whose parser reads the statement for
// predicates) do: `/* /* */ OR c = 2 -- */` hides the OR from the analyzer only.
TEST_F(SqliteHunt, NestedBlockCommentHidesADisjunctFromThePredicateAnalysis) {
  auto s = open();
  make_c(*s);
  script(*s, {"SELECT id, c FROM t WHERE c = 1 /* /* */ OR c = 2 -- */"},
         {"UPDATE t SET c = 5 WHERE id = 2"});
}

// PostgreSQL ends a `--` comment at a carriage return, SQLite only at a newline: text after
// the \r is a comment for SQLite and a conjunct for the analyzer.
TEST_F(SqliteHunt, CarriageReturnEndsALineCommentOnlyForTheAnalyzer) {
  auto s = open();
  make_c(*s);
  script(*s, {"SELECT id, c FROM t WHERE (c = 1 OR c = 2) --\r AND c = 1"},
         {"UPDATE t SET c = 5 WHERE id = 2"});
}

TEST_F(SqliteHunt, BlobLiteralComparedWithATextColumn) {
  auto s = open();
  make_c(*s);
  script(*s, {"SELECT id FROM t WHERE v = X'61'", "SELECT id FROM t WHERE v = x'62'"},
         {"UPDATE t SET v = X'61' WHERE id = 3", "INSERT INTO t VALUES(9, 9, X'62')"});
}

TEST_F(SqliteHunt, CollateInTheComparison) {
  auto s = open();
  make_c(*s);
  script(*s, {"SELECT id FROM t WHERE v = 'A' COLLATE NOCASE",
              "SELECT id FROM t WHERE v COLLATE NOCASE = 'B'"},
         {"UPDATE t SET v = 'a' WHERE id = 3", "INSERT INTO t VALUES(9, 9, 'b')"});
}

TEST_F(SqliteHunt, DerivedTableWithLimitOrWindow) {
  auto s = open();
  make_c(*s);
  script(*s,
         {"SELECT id FROM (SELECT id, c FROM t ORDER BY id LIMIT 2) WHERE c = 1",
          "SELECT id, rn FROM (SELECT id, c, row_number() OVER (ORDER BY id) AS rn FROM t) "
          "AS x WHERE c = 2",
          "SELECT n FROM (SELECT c, count(*) OVER () AS n FROM t) AS x WHERE c = 2",
          "SELECT id FROM (SELECT id, c FROM t ORDER BY id LIMIT 1 OFFSET 1) AS x WHERE c = 2"},
         {"INSERT INTO t VALUES(0, 7, 'z')", "DELETE FROM t WHERE id = 0",
          "UPDATE t SET id = -1 WHERE id = 3"});
}

TEST_F(SqliteHunt, LeftJoinOnConjunctOfTheLeftTable) {
  auto s = open();
  make_c(*s);
  *s << "CREATE TABLE u(id INTEGER PRIMARY KEY, tid INTEGER, k INTEGER)";
  *s << "INSERT INTO u VALUES(1, 1, 1), (2, 2, 2)";
  script(*s,
         {"SELECT t.id, u.id FROM t LEFT JOIN u ON u.tid = t.id AND t.c = 1 ORDER BY t.id",
          "SELECT t.id, u.id FROM u RIGHT JOIN t ON u.tid = t.id AND t.c = 1 ORDER BY t.id",
          "SELECT t.id, u.id FROM t FULL JOIN u ON u.tid = t.id AND u.k = 1 AND t.c = 1 "
          "ORDER BY t.id, u.id",
          "SELECT t.id, u.id FROM t LEFT JOIN u ON u.tid = t.id WHERE u.k = 1 ORDER BY t.id"},
         {"INSERT INTO t VALUES(9, 9, 'z')", "INSERT INTO u VALUES(9, 9, 9)",
          "UPDATE u SET k = 1 WHERE id = 2", "UPDATE t SET c = 1 WHERE id = 2"});
}

TEST_F(SqliteHunt, UnaryMinusOnAString) {
  auto s = open();
  make_c(*s);
  script(*s, {"SELECT id FROM t WHERE c = -'-1'", "SELECT id FROM t WHERE c = - -1",
              "SELECT id FROM t WHERE v = -'1'", "SELECT id FROM t WHERE c = 0x1",
              "SELECT id FROM t WHERE c = +'1'"},
         {"UPDATE t SET c = 1, v = '-1' WHERE id = 3", "UPDATE t SET v = '1' WHERE id = 2"});
}

TEST_F(SqliteHunt, BackslashInALiteral) {
  auto s = open();
  make_c(*s);
  script(*s, {"SELECT id FROM t WHERE v = 'a\\' AND c = 1 OR c = 2 -- '"},
         {"UPDATE t SET c = 5 WHERE id = 2"});
}

TEST_F(SqliteHunt, InsertSelectTransferOptimisation) {
  auto s = open();
  make_c(*s);
  *s << "CREATE TABLE t2(id INTEGER PRIMARY KEY, c INTEGER, v TEXT)";
  script(*s, {"SELECT id FROM t2 WHERE c = 1", "SELECT v FROM t2 WHERE id = 1",
              "SELECT count(*) FROM t2"},
         {"INSERT INTO t2 SELECT * FROM t", "DELETE FROM t2", "INSERT INTO t2 SELECT * FROM t"});
}


// Guard: a once-statement's analysis is memoized by its SQL and authorizer events. Another
// connection turns `t` into a virtual table (fts4 over external content) whose column reads
// raise the same events, and an uncacheable statement lets SQLite reload the schema before
// qcache looks at the file. The memoized "read of an ordinary table" must not be stored
// (today it is not because the module prepares SQL while the read steps, which qcache takes
// as a re-prepare): a write to the content table through qcache would leave it stale.
TEST_F(SqliteHunt, MemoizedAnalysisOfATableThatBecameVirtual) {
  auto s = open();
  *s << "CREATE TABLE docs(id INTEGER PRIMARY KEY, a TEXT)";
  *s << "INSERT INTO docs VALUES(1, 'old'), (2, 'two')";
  *s << "CREATE TABLE t(a TEXT)";
  *s << "INSERT INTO t VALUES('table')";
  const std::string q = "SELECT a FROM t";
  EXPECT_TRUE(twice(*s, q));
  {
    auto p = plain();
    *p << "DROP TABLE t";
    *p << "CREATE VIRTUAL TABLE t USING fts4(content='docs', a)";
    *p << "INSERT INTO t(t) VALUES('rebuild')";
  }
  int r = 0;
  *s << "SELECT random() FROM docs LIMIT 1", soci::into(r);  // SQLite reloads the schema
  fresh(*s, q);
  fresh(*s, q);
  *s << "UPDATE docs SET a = 'new' WHERE id = 1";
  fresh(*s, q);
}


// The WAL index's change counter lives in the -shm file, which SQLite rebuilds from zero
// when a connection opens a database no connection has open (the last one to close
// deletes it). A counter remembered by the process across that reset can be met again
// after exactly as many commits by another connection: the change went unseen.
std::uint32_t shm_counter(const std::string& db) {
  std::uint32_t v = 0;
  if (std::FILE* f = std::fopen((db + "-shm").c_str(), "rb")) {
    if (std::fseek(f, 8, SEEK_SET) != 0 || std::fread(&v, 4, 1, f) != 1) v = ~0u;
    std::fclose(f);
  } else {
    v = ~0u;
  }
  return v;
}

TEST_F(SqliteHunt, WalIndexCounterRebuiltAfterEveryConnectionClosed) {
  const std::string q = "SELECT id, c, v FROM t ORDER BY id";
  std::uint32_t seen = 0;
  {
    auto a = open();
    *a << "PRAGMA journal_mode=WAL";
    make_c(*a);
    for (int i = 0; i < 4; ++i) *a << "UPDATE t SET c = c + 1 WHERE id = 1";
    EXPECT_TRUE(twice(*a, q));
    seen = shm_counter(path_);
    ASSERT_NE(seen, ~0u);
  }
  auto p = plain();
  for (int i = 0; i < 1000 && shm_counter(path_) != seen; ++i)
    *p << "UPDATE t SET v = 'new" + std::to_string(i) + "' WHERE id = 2";
  ASSERT_EQ(shm_counter(path_), seen) << "the counter was not rebuilt from zero";
  auto b = open();
  fresh(*b, q);
}


// Guards: rows changed where the update hook is silent or the row is named differently,
// against rowid reads, column-predicate reads and whole-table reads.
TEST_F(SqliteHunt, SilentRowChangesAgainstPredicateReads) {
  auto s = open();
  *s << "PRAGMA foreign_keys=ON";
  *s << "PRAGMA recursive_triggers=ON";
  *s << "CREATE TABLE p(id INTEGER PRIMARY KEY, k TEXT UNIQUE, c INTEGER)";
  *s << "CREATE TABLE ch(id INTEGER PRIMARY KEY, pid INTEGER REFERENCES p(id) ON DELETE CASCADE "
        "ON UPDATE CASCADE DEFERRABLE INITIALLY DEFERRED, c INTEGER)";
  *s << "CREATE TABLE w(k TEXT PRIMARY KEY, c INTEGER) WITHOUT ROWID";
  *s << "CREATE TABLE st(id INTEGER PRIMARY KEY, c INTEGER, g INTEGER AS (c * 2) STORED) STRICT";
  *s << "CREATE TABLE log(id INTEGER PRIMARY KEY, c INTEGER)";
  *s << "CREATE VIEW pv AS SELECT id, k, c FROM p";
  *s << "CREATE TRIGGER pv_ins INSTEAD OF INSERT ON pv BEGIN "
        "INSERT OR REPLACE INTO p VALUES(NEW.id, NEW.k, NEW.c); "
        "INSERT INTO log(c) VALUES(NEW.c); END";
  *s << "CREATE TRIGGER p_upd AFTER UPDATE ON p BEGIN UPDATE w SET c = NEW.c WHERE k = NEW.k; END";
  *s << "INSERT INTO p VALUES(1, 'a', 1), (2, 'b', 2), (3, 'c', 3)";
  *s << "INSERT INTO ch VALUES(1, 1, 1), (2, 2, 2), (3, 3, 3)";
  *s << "INSERT INTO w VALUES('a', 1), ('b', 2), ('c', 3)";
  *s << "INSERT INTO st(id, c) VALUES(1, 1), (2, 2)";
  script(*s,
         {"SELECT id, k FROM p WHERE c = 1", "SELECT k FROM p WHERE id = 2",
          "SELECT id, pid FROM ch WHERE pid = 2", "SELECT id FROM ch WHERE id = 3",
          "SELECT k FROM w WHERE c = 2", "SELECT c FROM w WHERE k = 'c'",
          "SELECT id FROM st WHERE g = 4", "SELECT id FROM st WHERE c = 1",
          "SELECT count(*) FROM log", "SELECT id, c FROM pv WHERE k = 'b'",
          "SELECT id FROM p WHERE k = 'z'"},
         {"INSERT OR REPLACE INTO p VALUES(9, 'b', 1)", "INSERT INTO pv VALUES(4, 'c', 2)",
          "INSERT INTO p VALUES(5, 'a', 7) ON CONFLICT(k) DO UPDATE SET c = 2, k = 'z'",
          "UPDATE p SET id = 20 WHERE k = 'z'", "DELETE FROM p WHERE c = 2",
          "UPDATE st SET c = 2 WHERE id = 1", "REPLACE INTO w VALUES('c', 2)",
          "DELETE FROM w", "DELETE FROM p"});
}

TEST_F(SqliteHunt, OneFileUnderTwoPaths) {
  {
    auto p = plain();
    make_c(*p);
  }
  fs::create_hard_link(path_, file("hard.db"));
  fs::create_symlink(path_, file("sym.db"));
  auto a = open();
  auto h = open(file("hard.db"));
  auto y = open(file("sym.db"));
  auto u = std::make_unique<soci::session>(*factory_, "db=file:" + path_ + "?mode=rw timeout=5");
  *a << "ATTACH '" + file("hard.db") + "' AS aux";
  const std::vector<std::string> qs = {"SELECT id, c FROM t WHERE c = 2",
                                       "SELECT v FROM t WHERE id = 1",
                                       "SELECT count(*) FROM t"};
  int step = 0;
  for (soci::session* w : {a.get(), h.get(), y.get(), u.get()}) {
    for (soci::session* r : {a.get(), h.get(), y.get(), u.get()})
      for (const auto& q : qs) rows(*r, q);
    ++step;
    *w << "UPDATE t SET c = c + 10, v = v || 'x' WHERE id IN (1, 2)";
    if (w == a.get()) *a << "UPDATE aux.t SET c = 2 WHERE id = 3";
    for (soci::session* r : {a.get(), h.get(), y.get(), u.get()})
      for (const auto& q : qs) {
        SCOPED_TRACE("writer " + std::to_string(step));
        fresh(*r, q);
      }
  }
}


// Bulk intos fetched in pieces (execute(false) + fetch, execute(true) + fetch), a miss and
// then a hit, must hand out the rows SQLite does, in the same pieces.
std::string bulk(soci::session& s, bool exchange, std::size_t n) {
  std::vector<int> ids(n);
  std::vector<std::string> vs(n);
  soci::statement st = (s.prepare << "SELECT id, v FROM t ORDER BY id", soci::into(ids),
                        soci::into(vs));
  std::string r;
  bool more = st.execute(exchange);
  auto take = [&] {
    r += "[";
    for (std::size_t i = 0; i < ids.size(); ++i) r += std::to_string(ids[i]) + vs[i] + ",";
    r += "]";
  };
  if (exchange && more) take();
  if (exchange && !more && !ids.empty()) take();
  while (st.fetch()) take();
  return r;
}

TEST_F(SqliteHunt, BulkIntoFetchedInPieces) {
  auto s = open();
  make_c(*s);
  *s << "INSERT INTO t SELECT id + 3, c, v || id FROM t";
  auto p = plain();
  for (bool exchange : {false, true})
    for (std::size_t n : {1u, 2u, 4u, 6u, 7u})
      for (int rep = 0; rep < 2; ++rep) {
        SCOPED_TRACE(std::to_string(exchange) + " " + std::to_string(n));
        EXPECT_EQ(bulk(*s, exchange, n), bulk(*p, exchange, n));
      }
}

// Threads, each with its own session, writing and reading through one cache (WAL): once
// they are done, every read through the cache equals the database.
TEST_F(SqliteHunt, ThreadsWritingAndReadingOneFile) {
  {
    auto s = open();
    *s << "PRAGMA journal_mode=WAL";
    *s << "CREATE TABLE t(id INTEGER PRIMARY KEY, c INTEGER, v TEXT)";
    for (int i = 0; i < 20; ++i)
      *s << "INSERT INTO t VALUES(" + std::to_string(i) + ", " + std::to_string(i % 5) + ", 'x')";
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> th;
  for (int k = 0; k < 4; ++k)
    th.emplace_back([&, k] {
      auto s = open();
      std::mt19937 g(k);
      while (!stop.load()) {
        int id = static_cast<int>(g() % 20), c = static_cast<int>(g() % 5);
        try {
          if (k < 2) {
            if (g() % 3 == 0) {
              soci::transaction tr(*s);
              *s << "UPDATE t SET c = :c WHERE id = :id", soci::use(c), soci::use(id);
              *s << "UPDATE t SET v = v || 'y' WHERE c = :c", soci::use(c);
              tr.commit();
            } else {
              *s << "UPDATE t SET c = :c, v = 'z' WHERE id = :id", soci::use(c), soci::use(id);
            }
          } else {
            rows(*s, "SELECT id, v FROM t WHERE c = " + std::to_string(c) + " ORDER BY id");
            rows(*s, "SELECT c, v FROM t WHERE id = " + std::to_string(id));
            rows(*s, "SELECT count(*), sum(c) FROM t");
          }
        } catch (const soci::soci_error&) {
          // busy: retried by the next iteration
        }
      }
    });
  std::this_thread::sleep_for(std::chrono::seconds(2));
  stop = true;
  for (auto& t : th) t.join();
  auto s = open();
  for (int c = 0; c < 5; ++c)
    fresh(*s, "SELECT id, v FROM t WHERE c = " + std::to_string(c) + " ORDER BY id");
  for (int id = 0; id < 20; ++id) fresh(*s, "SELECT c, v FROM t WHERE id = " + std::to_string(id));
  fresh(*s, "SELECT count(*), sum(c) FROM t");
}


// A text parameter with an embedded NUL: the key and the predicate must use the value SOCI
// actually binds.
TEST_F(SqliteHunt, TextParameterWithAnEmbeddedNul) {
  auto s = open();
  make_c(*s);
  auto p = plain();
  const std::string q = "SELECT id FROM t WHERE v = :v ORDER BY id";
  auto read = [&](soci::session& x, const std::string& v) {
    std::vector<int> ids(10);
    std::string val = v;
    x << q, soci::use(val, "v"), soci::into(ids);
    std::string r;
    for (int i : ids) r += std::to_string(i) + ",";
    return r;
  };
  auto readc = [&](soci::session& x, char c) {
    std::vector<int> ids(10);
    char val = c;
    x << "SELECT id FROM t WHERE v = :v ORDER BY id", soci::use(val, "v"), soci::into(ids);
    std::string r;
    for (int i : ids) r += std::to_string(i) + ",";
    return r;
  };
  const std::string nul("a\0b", 3);
  const std::string lone("\0", 1);
  for (const char* w : {"UPDATE t SET v = 'x' WHERE id = 1", "UPDATE t SET v = 'a' WHERE id = 2",
                        "UPDATE t SET v = '' WHERE id = 3", "UPDATE t SET v = 'q' WHERE id = 3"}) {
    read(*s, nul);
    read(*s, lone);
    readc(*s, '\0');
    *s << w;
    SCOPED_TRACE(w);
    EXPECT_EQ(read(*s, nul), read(*p, nul));
    EXPECT_EQ(read(*s, lone), read(*p, lone));
    EXPECT_EQ(readc(*s, '\0'), readc(*p, '\0'));
  }
}

}  // namespace
