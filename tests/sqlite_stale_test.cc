// qcache::soci on SQLite: stale results from trusting SQLite's reports further than SQLite
// guarantees them (CORRECTNESS.md P21, P23; issue 9 classes 16-23). Every read through the
// cache is compared with the same read on a plain SOCI session opened on the same file at
// that moment, so a stale hit fails the test whatever the counters say.
#include <gtest/gtest.h>
#include <qcache/soci.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "support/sqlite_file_fixture.h"

namespace {

namespace fs = std::filesystem;
namespace sq = ::sqlite_api;

class SqliteStale : public qcache_test::sqlite_file_fixture {
 protected:
  SqliteStale() : sqlite_file_fixture("qcache_sqlite_stale_") {}
};

void make_db(soci::session& s, const std::string& v) {
  s << "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)";
  s << "INSERT INTO t VALUES(1, '" + v + "'), (2, '" + v + "2')";
}

// ---- 16: a file replaced under the same path ------------------------------------------

TEST_F(SqliteStale, FileReplacedByRenameIsANewDatabaseForLaterSessions) {
  {
    auto p = plain();
    make_db(*p, "old");
  }
  {
    auto p = plain(file("new.db"));
    make_db(*p, "new");
  }
  const std::string q = "SELECT v FROM t WHERE id = 1";
  const std::string all = "SELECT id, v FROM t ORDER BY id";
  {
    auto a = open();
    EXPECT_TRUE(twice(*a, q));
    EXPECT_TRUE(twice(*a, all));
  }
  fs::rename(file("new.db"), path_);  // a restore or a deploy
  auto b = open();
  fresh(*b, q);
  fresh(*b, all);
  *b << "UPDATE t SET v = 'newer' WHERE id = 1";
  fresh(*b, q);
}

TEST_F(SqliteStale, SessionOpenBeforeTheRenameKeepsItsFileAndLaterOnesSeeTheNew) {
  {
    auto p = plain();
    make_db(*p, "old");
  }
  {
    auto p = plain(file("new.db"));
    make_db(*p, "new");
  }
  const std::string q = "SELECT v FROM t WHERE id = 1";
  auto a = open();
  auto a_plain = plain();  // reads the old inode like `a`
  std::string old_rows = rows(*a_plain, q);
  EXPECT_EQ(rows(*a, q), old_rows);
  fs::rename(file("new.db"), path_);
  // `a` still reads the unlinked old file; a DDL statement makes it look at its schemas again.
  *a << "ATTACH DATABASE '" + file("side.db") + "' AS side";
  EXPECT_EQ(rows(*a, q), rows(*a_plain, q));
  EXPECT_EQ(rows(*a, q), rows(*a_plain, q));
  auto b = open();
  fresh(*b, q);
  fresh(*b, q);
}

// ---- 17: USING / NATURAL JOIN ------------------------------------------------------------

TEST_F(SqliteStale, UsingJoinDependsOnBothTables) {
  auto s = open();
  *s << "CREATE TABLE a(k INTEGER)";
  *s << "CREATE TABLE b(k INTEGER)";
  *s << "INSERT INTO a VALUES(1), (2)";
  script(*s,
         {"SELECT count(*) FROM a JOIN b USING (k)", "SELECT count(*) FROM a NATURAL JOIN b",
          "SELECT * FROM a NATURAL JOIN b", "SELECT 1 FROM a JOIN b USING (k) LIMIT 1",
          "SELECT count(*) FROM a LEFT JOIN b USING (k) WHERE b.k IS NULL"},
         {"INSERT INTO b VALUES(1)", "INSERT INTO a VALUES(1)", "DELETE FROM b",
          "INSERT INTO b VALUES(2)", "UPDATE a SET k = 3 WHERE k = 2"});
}

TEST_F(SqliteStale, UsingJoinThroughAViewAndAnAttachedFile) {
  auto s = open();
  *s << "ATTACH DATABASE '" + file("aux.db") + "' AS aux";
  *s << "CREATE TABLE a(k INTEGER, x TEXT)";
  *s << "CREATE TABLE aux.b(k INTEGER)";
  *s << "CREATE TEMP VIEW ab AS SELECT x FROM a JOIN aux.b USING (k)";
  *s << "INSERT INTO a VALUES(1, 'one')";
  std::vector<std::string> setup = {"ATTACH DATABASE '" + file("aux.db") + "' AS aux",
                                    "CREATE TEMP VIEW ab AS SELECT x FROM a JOIN aux.b USING (k)"};
  script(*s, {"SELECT count(*) FROM ab", "SELECT x FROM a NATURAL JOIN aux.b"},
         {"INSERT INTO aux.b VALUES(1)", "DELETE FROM aux.b"}, setup);
}

// ---- 18: reads inside a WAL read transaction ------------------------------------------

TEST_F(SqliteStale, ReadInsideAReadTransactionDoesNotStoreItsOldSnapshot) {
  {
    auto p = plain();
    *p << "PRAGMA journal_mode=WAL";
    make_db(*p, "v");
  }
  auto s = open();
  auto other = open();
  auto writer = plain();
  const std::string q2 = "SELECT v FROM t WHERE id = 2";
  {
    soci::transaction tr(*s);
    rows(*s, "SELECT v FROM t WHERE id = 1");  // the snapshot starts here
    *writer << "UPDATE t SET v = 'committed' WHERE id = 2";
    std::string in_tx = rows(*s, q2);  // the transaction's snapshot: the old value
    EXPECT_EQ(in_tx, "v2|\n");
    EXPECT_EQ(rows(*s, q2), "v2|\n");
    tr.commit();
  }
  fresh(*s, q2);
  fresh(*other, q2);
}

TEST_F(SqliteStale, ReadWhileAnotherStatementHoldsASnapshotDoesNotStoreIt) {
  {
    auto p = plain();
    *p << "PRAGMA journal_mode=WAL";
    make_db(*p, "v");
  }
  auto s = open();
  auto writer = plain();
  const std::string q2 = "SELECT v FROM t WHERE id = 2";
  {
    // An uncacheable read, stepped one row at a time, keeps the connection's snapshot.
    soci::rowset<soci::row> rs = (s->prepare << "SELECT id, random() FROM t ORDER BY id");
    auto it = rs.begin();
    ASSERT_NE(it, rs.end());
    *writer << "UPDATE t SET v = 'committed' WHERE id = 2";
    EXPECT_EQ(rows(*s, q2), "v2|\n");  // the snapshot's value
  }
  fresh(*s, q2);
  fresh(*s, q2);
}

// ---- 19: another process's commit to an attached file -----------------------------------

struct wal_hook_ctx {
  sq::sqlite3* other = nullptr;
  bool armed = false;
};

int commit_aux_elsewhere(void* arg, sq::sqlite3*, const char* db, int) {
  auto* c = static_cast<wal_hook_ctx*>(arg);
  if (c->armed && std::string(db) == "main") {
    c->armed = false;
    sq::sqlite3_exec(c->other, "UPDATE t SET v = v || '+' WHERE id = 1", nullptr, nullptr, nullptr);
  }
  return SQLITE_OK;
}

TEST_F(SqliteStale, AttachedFileCommittedElsewhereDuringOurCommitIsNotTakenForOurs) {
  std::string aux = file("aux.db");
  {
    auto p = plain();
    *p << "PRAGMA journal_mode=WAL";
    *p << "CREATE TABLE m(x)";
  }
  {
    auto p = plain(aux);
    *p << "PRAGMA journal_mode=WAL";
    make_db(*p, "a");
  }
  auto s = open();
  *s << "ATTACH DATABASE '" + aux + "' AS aux";
  const std::string q = "SELECT v FROM aux.t WHERE id = 1";
  std::vector<std::string> setup = {"ATTACH DATABASE '" + aux + "' AS aux"};
  wal_hook_ctx ctx;
  ASSERT_EQ(sq::sqlite3_open(aux.c_str(), &ctx.other), SQLITE_OK);
  sq::sqlite3_busy_timeout(ctx.other, 5000);
  sq::sqlite3_wal_hook(native(*s), &commit_aux_elsewhere, &ctx);
  for (int round = 0; round < 3; ++round) {
    fresh(*s, q, {}, setup);
    EXPECT_TRUE(fresh(*s, q, {}, setup));
    // Our commit to main; the other connection commits to aux right after it.
    ctx.armed = true;
    *s << "INSERT INTO m VALUES(1)";
    EXPECT_FALSE(ctx.armed);
    fresh(*s, q, {}, setup);
    // The same inside an explicit transaction that wrote main only.
    ctx.armed = true;
    {
      soci::transaction tr(*s);
      *s << "INSERT INTO m VALUES(2)";
      tr.commit();
    }
    fresh(*s, q, {}, setup);
  }
  sq::sqlite3_wal_hook(native(*s), nullptr, nullptr);
  sq::sqlite3_close(ctx.other);
}

// ---- 20: prepared writes after schema changes --------------------------------------------

TEST_F(SqliteStale, PreparedWriteSeesATriggerCreatedByAnotherSession) {
  auto s = open();
  *s << "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)";
  *s << "CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT)";
  std::string v = "x";
  soci::statement ins = (s->prepare << "INSERT INTO t(v) VALUES(:v)", soci::use(v));
  ins.execute(true);
  const std::string q = "SELECT count(*) FROM audit";
  const std::string q1 = "SELECT what FROM audit WHERE id = 1";
  for (int from_qcache = 0; from_qcache < 2; ++from_qcache) {
    auto other = from_qcache ? open() : plain();
    *other << "DROP TRIGGER IF EXISTS t_audit";
    *other << "CREATE TRIGGER t_audit AFTER INSERT ON t BEGIN "
              "INSERT INTO audit(what) VALUES(NEW.v); END";
    fresh(*s, q);  // SQLite re-prepares: not stored
    fresh(*s, q);
    fresh(*s, q1);
    EXPECT_TRUE(fresh(*s, q));
    ins.execute(true);  // prepared before the trigger existed
    fresh(*s, q);
    fresh(*s, q1);
  }
}

TEST_F(SqliteStale, PreparedWriteSeesATableRecreatedWithOnConflictReplace) {
  auto s = open();
  *s << "CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER UNIQUE, v TEXT)";
  *s << "INSERT INTO t VALUES(1, 1, 'one')";
  int k = 2;
  std::string v = "two";
  soci::statement ins =
      (s->prepare << "INSERT INTO t(k, v) VALUES(:k, :v)", soci::use(k), soci::use(v));
  ins.execute(true);
  {
    auto other = open();
    *other << "DROP TABLE t";
    *other
        << "CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER UNIQUE ON CONFLICT REPLACE, v TEXT)";
    *other << "INSERT INTO t VALUES(1, 1, 'one'), (2, 2, 'two')";
  }
  const std::string q1 = "SELECT v FROM t WHERE id = 1";
  const std::string qk = "SELECT v FROM t WHERE k = 1";
  fresh(*s, q1);  // SQLite re-prepares: not stored
  fresh(*s, q1);
  fresh(*s, qk);
  EXPECT_TRUE(fresh(*s, q1));
  k = 1;
  v = "replaced";
  ins.execute(true);  // ON CONFLICT REPLACE deletes row 1 and inserts a new row
  fresh(*s, q1);
  fresh(*s, qk);
}

TEST_F(SqliteStale, TableRecreatedByAnotherSessionIsJudgedByItsNewColumns) {
  auto s = open();
  *s << "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b TEXT)";
  *s << "INSERT INTO t VALUES(1, 'x', 'p'), (2, 'y', 'q')";
  const std::string q = "SELECT id FROM t WHERE a = 'x'";
  const std::string r = "SELECT id FROM t WHERE b = 'q'";
  fresh(*s, q);
  fresh(*s, r);
  {
    auto other = open();  // same columns, another order
    *other << "DROP TABLE t";
    *other << "CREATE TABLE t(id INTEGER PRIMARY KEY, b TEXT, a TEXT)";
    *other << "INSERT INTO t(id, a, b) VALUES(1, 'x', 'p'), (2, 'y', 'q')";
  }
  const std::string q2 = "SELECT id, 2 FROM t WHERE a = 'x'";  // analysed after the change
  fresh(*s, q2);
  fresh(*s, q2);
  *s << "UPDATE t SET a = 'z' WHERE id = 1";
  fresh(*s, q2);
  fresh(*s, q);
  fresh(*s, r);
}

// ---- 21: equality by SQLite's comparison rules -----------------------------------------

TEST_F(SqliteStale, CastInAnEqualityReadUsesSqliteAffinity) {
  auto s = open();
  *s << "CREATE TABLE t(id INTEGER PRIMARY KEY, c TEXT)";
  *s << "INSERT INTO t VALUES(1, '05'), (2, '5.0'), (3, '5'), (4, X'78'), (5, 'x')";
  script(*s,
         {"SELECT count(*) FROM t WHERE c = CAST(5 AS INTEGER)",
          "SELECT id FROM t WHERE c = CAST('5' AS NUMERIC) ORDER BY id",
          "SELECT id FROM t WHERE c IN (CAST(5 AS REAL), 7) ORDER BY id",
          "SELECT count(*) FROM t WHERE c = CAST('x' AS BLOB)",
          "SELECT count(*) FROM t WHERE c = 5", "SELECT count(*) FROM t WHERE c = 'x'"},
         {"UPDATE t SET c = '6' WHERE id = 1", "DELETE FROM t WHERE id = 2",
          "DELETE FROM t WHERE id = 4", "INSERT INTO t VALUES(6, '5e0')",
          "UPDATE t SET c = 5 WHERE id = 5"});
}

TEST_F(SqliteStale, CollationsAndAffinitiesFollowSqlitesRules) {
  auto s = open();
  *s << "CREATE TABLE t(id INTEGER PRIMARY KEY, nc TEXT COLLATE NOCASE, rt TEXT COLLATE RTRIM, "
        "b TEXT, i INTEGER, n NUMERIC, r REAL)";
  *s << "INSERT INTO t VALUES(1, 'A', 'a ', 'a', 5, '5', 5.0), (2, 'b', 'b', 'B', '05', 5.5, 2)";
  script(*s,
         {"SELECT id FROM t WHERE nc = 'a'", "SELECT id FROM t WHERE rt = 'a'",
          "SELECT id FROM t WHERE b = 'A' COLLATE NOCASE",
          "SELECT id FROM t WHERE b COLLATE NOCASE = 'b'", "SELECT id FROM t WHERE i = '5'",
          "SELECT id FROM t WHERE i = 5", "SELECT id FROM t WHERE n = 5",
          "SELECT id FROM t WHERE n = '5.5'", "SELECT id FROM t WHERE r = 5",
          "SELECT id FROM t WHERE r = '2'"},
         {"UPDATE t SET nc = 'c' WHERE id = 1", "UPDATE t SET rt = 'z' WHERE id = 1",
          "UPDATE t SET b = 'q' WHERE id = 2", "UPDATE t SET i = 5.0 WHERE id = 2",
          "UPDATE t SET i = '7' WHERE id = 1", "UPDATE t SET n = '5.50' WHERE id = 1",
          "UPDATE t SET r = '5' WHERE id = 2", "UPDATE t SET r = 1 WHERE id = 1"});
}

// ---- 22: shared in-memory databases -------------------------------------------------------

TEST_F(SqliteStale, SharedInMemoryDatabaseSeesOtherSessionsWrites) {
  for (std::string db :
       {"file::memory:?cache=shared", "file:qcache_stale_mem?mode=memory&cache=shared"}) {
    SCOPED_TRACE(db);
    std::string conn = "db=" + db + " timeout=5";
    auto keep = std::make_unique<soci::session>(soci::sqlite3, conn);  // keeps it alive
    *keep << "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)";
    *keep << "INSERT INTO t VALUES(1, 'a')";
    auto a = std::make_unique<soci::session>(*factory_, conn);
    auto b = std::make_unique<soci::session>(*factory_, conn);
    const std::string q = "SELECT v FROM t WHERE id = 1";
    const std::string c = "SELECT count(*) FROM t";
    auto expect = [&](soci::session& s, const std::string& x) {
      EXPECT_EQ(rows(s, x), rows(*keep, x)) << x;
    };
    expect(*a, q), expect(*a, q), expect(*a, c), expect(*a, c);
    *keep << "UPDATE t SET v = 'plain' WHERE id = 1";
    *keep << "INSERT INTO t VALUES(2, 'b')";
    expect(*a, q), expect(*a, c);
    *b << "UPDATE t SET v = 'qcache' WHERE id = 1";
    *b << "INSERT INTO t VALUES(3, 'c')";
    expect(*a, q), expect(*a, c);
    // A plain :memory: stays private to its connection (and still caches).
    auto m = std::make_unique<soci::session>(*factory_, "db=:memory:");
    *m << "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)";
    *m << "INSERT INTO t VALUES(1, 'private')";
    EXPECT_EQ(rows(*m, q), "private|\n");
    auto before = cache_->stats().hits;
    EXPECT_EQ(rows(*m, q), "private|\n");
    EXPECT_GT(cache_->stats().hits, before);
  }
}

// ---- 23: virtual tables' shadow tables ----------------------------------------------------

TEST_F(SqliteStale, ShadowTablesFollowTheirVirtualTable) {
  auto s = open();
  *s << "CREATE VIRTUAL TABLE ft USING fts5(body)";
  *s << "CREATE VIRTUAL TABLE rt USING rtree(id, x0, x1)";
  *s << "INSERT INTO ft(body) VALUES('hello world')";
  *s << "INSERT INTO rt VALUES(1, 0, 1)";
  script(
      *s,
      {"SELECT count(*) FROM ft_content", "SELECT count(*) FROM ft_docsize",
       "SELECT count(*) FROM rt_rowid", "SELECT count(*) FROM rt_node", "SELECT count(*) FROM ft",
       "SELECT count(*) FROM ft_content c JOIN rt_rowid r ON r.rowid = c.id"},
      {"INSERT INTO ft(body) VALUES('second')", "DELETE FROM ft WHERE rowid = 1",
       "INSERT INTO rt VALUES(2, 1, 2)", "UPDATE rt SET x1 = 5 WHERE id = 1",
       "DELETE FROM rt WHERE id = 1"});
}

// ---- siblings ----------------------------------------------------------------------------

TEST_F(SqliteStale, AttachedFileReplacedByRenameIsANewDatabase) {
  std::string aux = file("aux.db");
  {
    auto p = plain(aux);
    make_db(*p, "old");
  }
  {
    auto p = plain(file("new.db"));
    make_db(*p, "new");
  }
  const std::string q = "SELECT v FROM aux.t WHERE id = 1";
  std::vector<std::string> setup = {"ATTACH DATABASE '" + aux + "' AS aux"};
  {
    auto a = open();
    *a << setup[0];
    fresh(*a, q, {}, setup);
    EXPECT_TRUE(fresh(*a, q, {}, setup));
  }
  fs::rename(file("new.db"), aux);
  auto b = open();
  *b << setup[0];
  fresh(*b, q, {}, setup);
  EXPECT_TRUE(fresh(*b, q, {}, setup));
}

TEST_F(SqliteStale, TablesOnlyTheBytecodeNamesAreRead) {
  auto s = open();
  *s << "CREATE TABLE a(k INTEGER PRIMARY KEY, x TEXT)";
  *s << "CREATE TABLE b(k INTEGER)";
  *s << "CREATE INDEX b_k ON b(k)";
  *s << "INSERT INTO a VALUES(1, 'one'), (2, 'two')";
  script(*s,
         {"SELECT count(*) FROM a, b", "SELECT EXISTS (SELECT 1 FROM b)",
          "SELECT x FROM a WHERE k IN (SELECT k FROM b) ORDER BY x",
          "SELECT count(*) FROM a JOIN b USING (k) WHERE a.k = 1",
          "SELECT x FROM a NATURAL JOIN b WHERE x = 'one'"},
         {"INSERT INTO b VALUES(1)", "INSERT INTO b VALUES(2)", "DELETE FROM b WHERE k = 1",
          "UPDATE b SET k = 1"});
}

TEST_F(SqliteStale, ReadsInsideSqlBeginAndSavepointTransactions) {
  {
    auto p = plain();
    *p << "PRAGMA journal_mode=WAL";
    make_db(*p, "v");
  }
  auto s = open();
  auto writer = plain();
  const std::string q2 = "SELECT v FROM t WHERE id = 2";
  for (std::string begin : {"BEGIN", "SAVEPOINT sp"}) {
    SCOPED_TRACE(begin);
    fresh(*s, q2);
    EXPECT_TRUE(fresh(*s, q2));  // outside the transaction: a hit
    *s << begin;
    EXPECT_EQ(rows(*s, "SELECT v FROM t WHERE id = 1"), "v|\n");
    *writer << "UPDATE t SET v = v || '+' WHERE id = 2";
    std::string in_tx = rows(*s, q2);
    EXPECT_EQ(rows(*s, q2), in_tx);
    *s << (begin == "BEGIN" ? "COMMIT" : "RELEASE sp");
    fresh(*s, q2);
    fresh(*s, q2);
  }
  // A transaction that sees no other commit keeps its hits.
  fresh(*s, q2);
  {
    soci::transaction tr(*s);
    auto before = cache_->stats().hits;
    rows(*s, q2);
    EXPECT_GT(cache_->stats().hits, before);
    tr.commit();
  }
}

TEST_F(SqliteStale, AttachedRollbackJournalFileCommittedElsewhereDuringOurCommit) {
  std::string aux = file("aux.db");
  {
    auto p = plain();
    *p << "PRAGMA journal_mode=WAL";
    *p << "CREATE TABLE m(x)";
  }
  {
    auto p = plain(aux);
    make_db(*p, "a");
  }  // rollback journal
  auto s = open();
  *s << "ATTACH DATABASE '" + aux + "' AS aux";
  const std::string q = "SELECT v FROM aux.t WHERE id = 1";
  std::vector<std::string> setup = {"ATTACH DATABASE '" + aux + "' AS aux"};
  wal_hook_ctx ctx;
  ASSERT_EQ(sq::sqlite3_open(aux.c_str(), &ctx.other), SQLITE_OK);
  sq::sqlite3_busy_timeout(ctx.other, 5000);
  sq::sqlite3_wal_hook(native(*s), &commit_aux_elsewhere, &ctx);
  for (int round = 0; round < 3; ++round) {
    fresh(*s, q, {}, setup);
    EXPECT_TRUE(fresh(*s, q, {}, setup));
    ctx.armed = true;
    *s << "INSERT INTO m VALUES(1)";
    EXPECT_FALSE(ctx.armed);
    fresh(*s, q, {}, setup);
  }
  // Our own commits to both files still keep other entries: a write to main only leaves
  // the cached read of aux a hit.
  fresh(*s, q, {}, setup);
  *s << "INSERT INTO m VALUES(3)";
  EXPECT_TRUE(fresh(*s, q, {}, setup));
  sq::sqlite3_wal_hook(native(*s), nullptr, nullptr);
  sq::sqlite3_close(ctx.other);
}

TEST_F(SqliteStale, PreparedWriteAfterForeignKeysAndRecursiveTriggersChange) {
  auto s = open();
  *s << "CREATE TABLE p(id INTEGER PRIMARY KEY)";
  *s << "CREATE TABLE c(id INTEGER PRIMARY KEY, p INTEGER REFERENCES p(id) ON DELETE CASCADE)";
  *s << "CREATE TABLE n(id INTEGER PRIMARY KEY, depth INTEGER)";
  *s << "CREATE TRIGGER n_more AFTER INSERT ON n WHEN NEW.depth < 3 BEGIN "
        "INSERT INTO n(depth) VALUES(NEW.depth + 1); END";
  *s << "INSERT INTO p VALUES(1), (2), (3)";
  *s << "INSERT INTO c VALUES(10, 1), (20, 2), (30, 3)";
  int id = 1;
  soci::statement del = (s->prepare << "DELETE FROM p WHERE id = :id", soci::use(id));
  int depth = 0;
  soci::statement ins = (s->prepare << "INSERT INTO n(depth) VALUES(:d)", soci::use(depth));
  const std::vector<std::string> reads = {"SELECT count(*) FROM c", "SELECT p FROM c WHERE id = 20",
                                          "SELECT count(*) FROM n"};
  auto prime = [&] {
    for (const auto& r : reads) rows(*s, r);
  };
  auto check = [&](const std::vector<std::string>& setup) {
    for (const auto& r : reads) fresh(*s, r, {}, setup);
  };
  prime();
  del.execute(true);  // foreign keys off: no cascade
  ins.execute(true);
  check({});
  *s << "PRAGMA foreign_keys = ON";
  *s << "PRAGMA recursive_triggers = ON";
  std::vector<std::string> setup = {"PRAGMA foreign_keys = ON", "PRAGMA recursive_triggers = ON"};
  prime();
  id = 2;
  del.execute(true);  // now cascades to c
  check(setup);
  prime();
  ins.execute(true);  // now recurses
  check(setup);
}

TEST_F(SqliteStale, WritePathsNameEveryRowTheyChange) {
  auto s = open();
  *s << "CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER UNIQUE, v TEXT, "
        "g TEXT GENERATED ALWAYS AS (upper(v)) VIRTUAL, h INTEGER AS (k * 2) STORED)";
  *s << "CREATE TABLE w(k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID";
  *s << "CREATE TABLE guard(id INTEGER PRIMARY KEY, v TEXT)";
  *s << "CREATE TRIGGER guard_ign BEFORE UPDATE ON guard WHEN NEW.v = 'no' BEGIN "
        "SELECT RAISE(IGNORE); END";
  *s << "INSERT INTO t(id, k, v) VALUES(1, 1, 'a'), (2, 2, 'b'), (3, 3, 'c')";
  *s << "INSERT INTO w VALUES('x', 1), ('y', 2)";
  *s << "INSERT INTO guard VALUES(1, 'yes')";
  script(*s,
         {"SELECT v FROM t WHERE id = 1", "SELECT v FROM t WHERE k = 2",
          "SELECT id FROM t WHERE g = 'B'", "SELECT id FROM t WHERE h = 6",
          "SELECT count(*) FROM t", "SELECT v FROM w WHERE k = 'x'", "SELECT count(*) FROM w",
          "SELECT v FROM guard WHERE id = 1"},
         {"INSERT OR REPLACE INTO t(id, k, v) VALUES(4, 2, 'B2')",
          "REPLACE INTO t(id, k, v) VALUES(1, 5, 'z')",
          "INSERT INTO t(id, k, v) VALUES(6, 3, 'up') ON CONFLICT(k) DO UPDATE SET v = excluded.v",
          "UPDATE t SET v = 'q' WHERE k = 3", "UPDATE w SET v = 9 WHERE k = 'x'",
          "INSERT OR REPLACE INTO w VALUES('y', 7)", "DELETE FROM w",
          "UPDATE guard SET v = 'no' WHERE id = 1", "UPDATE guard SET v = 'ok' WHERE id = 1",
          "DELETE FROM t"});
}

TEST_F(SqliteStale, TempObjectsAndAttachChangeWhatANameMeans) {
  auto s = open();
  std::string aux = file("aux.db");
  {
    auto p = plain(aux);
    make_db(*p, "aux");
  }
  *s << "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)";
  *s << "INSERT INTO t VALUES(1, 'main')";
  const std::string q = "SELECT v FROM t WHERE id = 1";
  {
    std::string v;
    soci::statement sel = (s->prepare << q, soci::into(v));
    auto read = [&] {
      sel.execute(true);
      return v;
    };
    EXPECT_EQ(read(), "main");
    EXPECT_EQ(read(), "main");
    *s << "CREATE TEMP TABLE t(id INTEGER PRIMARY KEY, v TEXT)";
    *s << "INSERT INTO temp.t VALUES(1, 'temp')";
    EXPECT_EQ(rows(*s, q), "temp|\n");
    EXPECT_EQ(read(), "temp");
    *s << "DROP TABLE temp.t";
    EXPECT_EQ(read(), "main");
  }
  *s << "ATTACH DATABASE '" + aux + "' AS aux";
  std::string qa = "SELECT v FROM aux.t WHERE id = 1";
  EXPECT_EQ(rows(*s, qa), "aux|\n");
  EXPECT_EQ(rows(*s, qa), "aux|\n");
  *s << "DETACH DATABASE aux";
  std::string other = file("other.db");
  {
    auto p = plain(other);
    make_db(*p, "other");
  }
  *s << "ATTACH DATABASE '" + other + "' AS aux";
  EXPECT_EQ(rows(*s, qa), "other|\n");
  // A temp trigger on a main table writes another table behind the statement.
  *s << "CREATE TABLE log(n INTEGER)";
  *s << "CREATE TEMP TRIGGER t_log AFTER UPDATE ON main.t BEGIN INSERT INTO log VALUES(1); END";
  EXPECT_EQ(rows(*s, "SELECT count(*) FROM log"), "0|\n");
  *s << "UPDATE t SET v = 'x' WHERE id = 1";
  EXPECT_EQ(rows(*s, "SELECT count(*) FROM log"), "1|\n");
}

int g_calls = 0;
void counter_fn(sq::sqlite3_context* ctx, int, sq::sqlite3_value**) {
  sq::sqlite3_result_int(ctx, ++g_calls);
}

TEST_F(SqliteStale, ApplicationFunctionsAndLikeSettingsAreNeverServedStale) {
  auto s = open();
  *s << "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)";
  *s << "INSERT INTO t VALUES(1, 'Abc'), (2, 'abd')";
  sq::sqlite3_create_function(native(*s), "next_n", 0, SQLITE_UTF8, nullptr, &counter_fn, nullptr,
                              nullptr);
  sq::sqlite3_create_function(native(*s), "det_n", 0, SQLITE_UTF8 | SQLITE_DETERMINISTIC, nullptr,
                              &counter_fn, nullptr, nullptr);
  std::string a = rows(*s, "SELECT next_n() FROM t WHERE id = 1");
  EXPECT_NE(rows(*s, "SELECT next_n() FROM t WHERE id = 1"), a);
  // Deterministic by SQLite's flag but not declared to qcache: not cached either.
  std::string b = rows(*s, "SELECT det_n() FROM t WHERE id = 1");
  EXPECT_NE(rows(*s, "SELECT det_n() FROM t WHERE id = 1"), b);
  const std::string like = "SELECT count(*) FROM t WHERE v LIKE 'a%'";
  EXPECT_EQ(rows(*s, like), "2|\n");
  EXPECT_EQ(rows(*s, like), "2|\n");
  *s << "PRAGMA case_sensitive_like = ON";
  EXPECT_EQ(rows(*s, like), "1|\n");
  *s << "PRAGMA case_sensitive_like = OFF";
  EXPECT_EQ(rows(*s, like), "2|\n");
}

void log_it(sq::sqlite3_context* ctx, int, sq::sqlite3_value**) {
  sq::sqlite3_exec(sq::sqlite3_context_db_handle(ctx), "INSERT INTO log VALUES(1)", nullptr,
                   nullptr, nullptr);
  sq::sqlite3_result_int(ctx, 7);
}

TEST_F(SqliteStale, WritesByApplicationFunctionsInvalidateWhatTheyWrite) {
  // On a file and on :memory: (no file counter to notice the commit: only the hooks can).
  for (std::string db : {path_, std::string(":memory:")}) {
    SCOPED_TRACE(db);
    auto s = std::make_unique<soci::session>(*factory_, "db=" + db);
    *s << "CREATE TABLE log(n INTEGER)";
    *s << "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)";
    *s << "INSERT INTO t VALUES(1, 0)";
    sq::sqlite3_create_function(native(*s), "log_it", 0, SQLITE_UTF8, nullptr, &log_it, nullptr,
                                nullptr);
    const std::vector<std::string> reads = {"SELECT count(*) FROM log", "SELECT sum(n) FROM log",
                                            "SELECT v FROM t WHERE id = 1"};
    int unique = 0;
    // The database's own answer: the same read under a SQL text never cached before.
    auto direct = [&](const std::string& r) {
      return rows(*s, r + " -- " + std::to_string(++unique));
    };
    for (std::string w : {"SELECT log_it()", "UPDATE t SET v = log_it() + v WHERE id = 1",
                          "SELECT log_it() FROM t"}) {
      SCOPED_TRACE(w);
      for (const auto& r : reads) rows(*s, r);
      rows(*s, w);
      for (const auto& r : reads) EXPECT_EQ(rows(*s, r), direct(r)) << r;
      {
        soci::transaction tr(*s);
        for (const auto& r : reads) rows(*s, r);
        rows(*s, w);
        for (const auto& r : reads) EXPECT_EQ(rows(*s, r), direct(r)) << r;
        tr.commit();
      }
      for (const auto& r : reads) EXPECT_EQ(rows(*s, r), direct(r)) << r;
    }
  }
}

TEST_F(SqliteStale, WritesSteppedInFetchInvalidate) {
  for (std::string db : {path_, std::string(":memory:")}) {
    SCOPED_TRACE(db);
    auto s = std::make_unique<soci::session>(*factory_, "db=" + db);
    make_db(*s, "v");
    int unique = 0;
    auto check = [&](const std::string& r) {
      EXPECT_EQ(rows(*s, r), rows(*s, r + " -- " + std::to_string(++unique))) << r;
    };
    const std::string q = "SELECT v FROM t WHERE id = 1";
    const std::string c = "SELECT count(*) FROM t";
    // A rowset over a write: SOCI's SQLite backend steps it only when rows are fetched.
    check(q);
    check(c);
    {
      soci::rowset<soci::row> rs =
          (s->prepare << "UPDATE t SET v = 'returned' WHERE id = 1 RETURNING v");
      for (const auto& r : rs) (void)r;
    }
    check(q);
    check(c);
    {
      soci::rowset<soci::row> rs =
          (s->prepare << "INSERT INTO t(v) VALUES('a'), ('b') RETURNING id");
      for (const auto& r : rs) (void)r;
    }
    check(c);
    // execute() without data exchange, then fetch() by hand.
    std::string v;
    soci::statement st =
        (s->prepare << "UPDATE t SET v = v || '+' WHERE id = 1 RETURNING v", soci::into(v));
    st.execute();
    while (st.fetch()) {
    }
    check(q);
    check(q);
  }
}

TEST_F(SqliteStale, UncommittedWriteOfAStatementNotRunToItsEndIsNeverPublished) {
  {
    auto p = plain();
    make_db(*p, "old");
  }
  auto a = open();
  auto b = open();
  const std::string q = "SELECT v FROM t WHERE id = 1";
  fresh(*b, q);
  {
    std::string v;
    soci::statement st =
        (a->prepare << "UPDATE t SET v = 'new' WHERE id = 1 RETURNING v", soci::into(v));
    st.execute(true);  // one row read: the statement is not done, its write not committed
    EXPECT_EQ(v, "new");
    EXPECT_EQ(rows(*a, q), "new|\n");  // its own connection sees it
    fresh(*b, q);                      // every other one sees the committed state
    fresh(*b, q);
  }  // finalized: committed now
  fresh(*b, q);
  fresh(*a, q);
}

TEST_F(SqliteStale, JournalModeSwitchedByAnotherConnectionIsStillWatched) {
  {
    auto p = plain();
    make_db(*p, "v");
  }
  auto s = open();
  const std::string q = "SELECT v FROM t WHERE id = 1";
  for (std::string mode : {"TRUNCATE", "DELETE", "WAL"}) {
    SCOPED_TRACE(mode);
    fresh(*s, q);
    EXPECT_TRUE(fresh(*s, q));
    {
      auto p = plain();
      *p << "PRAGMA journal_mode=" + mode;
      *p << "UPDATE t SET v = v || '+' WHERE id = 1";
    }
    fresh(*s, q);
  }
}

TEST_F(SqliteStale, AttachedSharedMemoryDatabaseSeesOtherSessionsWrites) {
  std::string uri = "file:qcache_stale_aux_mem?mode=memory&cache=shared";
  auto keep = std::make_unique<soci::session>(soci::sqlite3, "db=" + uri);
  *keep << "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)";
  *keep << "INSERT INTO t VALUES(1, 'a')";
  auto s = open();
  *s << "ATTACH DATABASE '" + uri + "' AS m";
  const std::string q = "SELECT v FROM m.t WHERE id = 1";
  EXPECT_EQ(rows(*s, q), "a|\n");
  EXPECT_EQ(rows(*s, q), "a|\n");
  *keep << "UPDATE t SET v = 'b' WHERE id = 1";
  EXPECT_EQ(rows(*s, q), "b|\n");
}

}  // namespace
