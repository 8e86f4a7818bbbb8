// The libpqxx adapter against the real PostgreSQL that scripts/test starts: every test
// reads as a specification of what qcache::pqxx promises, and checks both the rows a
// call returns and what the cache did (hits, misses, stores, reasons).
//
// Each test creates its objects in a fresh schema with a unique name (and roles with
// unique names), and drops them, so tests may run in parallel (ctest -j).
//
// CORRECTNESS.md rows that apply to a single process, and the tests that cover them:
//   P1  stale set ............ StaleSet_WriteBetweenReadAndStoreIsNeverServed,
//                              StaleSet_WriteTransactionOpenedDuringReadDropsTheStore,
//                              StaleSet_FollowerOfAFlightThatRacedAWriteReadsFresh,
//                              Threads_ReaderNeverSeesValueOlderThanLastCompletedWrite
//   P2  missing metadata ..... Budget_TinyVersionTableCostsMissesNeverStaleHits
//   P3  write paths .......... Insert_*, Update_*, Delete_*, OnConflict_*, Merge_*,
//                              CopyFrom_*, Truncate_*, WritableCte_*, Ddl_*,
//                              MultiStatement_ExecWithUpdateInvalidates,
//                              Prepared_WriteInvalidates, Write_ExecParamsUpdateInvalidates,
//                              Prepared_StatementPreparedBehindQcachesBackRunsUncachedAndFlushes,
//                              SqlPrepareExecute_WriteInvalidates, Do_BlockThatWritesInvalidates,
//                              Procedure_CallThatWritesInvalidates,
//                              Explain_AnalyzeOfAnUpdateIsAWrite, Insert_ReturningRunsEveryTime
//   P4  hidden side effects .. Fk_*, View_*, Trigger_*, Rule_*, Partition_*, Inheritance_*,
//                              MaterializedView_RefreshIsSeen,
//                              Function_VolatileUserFunctionThatWritesInvalidates,
//                              Function_ReplacedImmutableFunctionIsSeen
//   P5  name resolution ...... SearchPath_SameNameInTwoSchemasNeverServedAcross,
//                              SearchPath_QualifiedAndUnqualifiedNamesShareInvalidation,
//                              SearchPath_SetLocalAndRolledBackSetRevertAtTransactionEnd,
//                              TempTable_SameNameOnTwoConnectionsNeverShared
//   P6  security context ..... Rls_ResultsDifferPerRoleAndAreNeverCached,
//                              Rls_EnabledAfterCachingIsEnforced,
//                              SetRole_PermissionErrorPassesThroughAfterOtherRoleCached,
//                              Grant_RevokeAfterCachedReadIsEnforced,
//                              Session_SetSessionAuthorizationChangesTheKey,
//                              Session_TimeZoneIsPartOfTheKey,
//                              Session_ResetAllAndDiscardAllRestoreTheDefaultContext
//   P7  isolation levels ..... Tx_RepeatableReadBypassesAndSeesItsSnapshot,
//                              Tx_SerializableBypassesTheCache,
//                              Tx_IsolationSetBySqlBypassesTheCache,
//                              Tx_SessionDefaultIsolationBypassesTheCache,
//                              Tx_SerializationFailureAtCommitPassesThroughNothingStale
//   P8  uncommitted data ..... Tx_OwnWriteIsVisibleInsideAndNeverPublished,
//                              Tx_ViewOverATableTheTxWroteSeesOwnWriteAndIsNotPublished,
//                              Tx_RollbackRestores, Tx_RollbackToSavepointRestores,
//                              Tx_RollbackToSavepointBySqlRestores,
//                              Tx_ConcurrentReaderDuringUncommittedWrite,
//                              Tx_SqlBeginHoldsTheWriteUntilSqlCommit,
//                              Tx_DeferredConstraintFailingAtCommitPassesThroughNothingStale
//   P9  nondeterminism ....... Volatility_*, Sequence_ReadsOfASequenceAreNeverCached,
//                              Function_VolatileUserFunctionThatWritesInvalidates
//   P10 partial results ...... Errors_FailingMidResultIsNeverCached,
//                              Errors_AnErrorIsNeverCached, Cursor_FetchIsNeverCached
//   P11 hash-only keys ....... Keys_ParametersAreEncodedUnambiguously
//   P12 lock on the hit path . Threads_ManyReadersOfOneEntry (run under TSan)
//   P13 thundering herd ...... Threads_ConcurrentMissesOfOneKeyRunOnce
//   P14 unbounded metadata ... Budget_SmallBudgetStaysCorrectAndBounded,
//                              Budget_EntryLargerThanMaxEntryBytesIsNotStored,
//                              Budget_NothingFitsResultsStillCorrect
//   P15 invalidation only local: several processes; not a single-process row (README).
//   P16 clocks ............... by construction (versions are counters); exercised by the
//                              P1 and P8 tests, which involve no time at all.
//   P17 change stream ........ no change stream exists yet (writes bump after COMMIT).
// Transparency (driver errors unchanged): Errors_*, Transparency_*, Exec1Exec0ExecN_*.
#include <qcache/pqxx.h>

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <typeinfo>
#include <vector>

#include "support/db_env.h"

namespace {

using qcache::uncacheable_reason;

// ---- Helpers ----------------------------------------------------------------------

qcache::stats minus(const qcache::stats& a, const qcache::stats& b) {
  qcache::stats d;
  d.hits = a.hits - b.hits;
  d.misses = a.misses - b.misses;
  d.stores = a.stores - b.stores;
  d.stores_dropped_stale = a.stores_dropped_stale - b.stores_dropped_stale;
  d.stale_rejected = a.stale_rejected - b.stale_rejected;
  d.single_flight_waits = a.single_flight_waits - b.single_flight_waits;
  d.evictions = a.evictions - b.evictions;
  d.invalidations = a.invalidations - b.invalidations;
  d.flushes = a.flushes - b.flushes;
  d.uncacheable = a.uncacheable - b.uncacheable;
  for (int i = 0; i < static_cast<int>(uncacheable_reason::count_); ++i)
    d.uncacheable_by_reason[i] = a.uncacheable_by_reason[i] - b.uncacheable_by_reason[i];
  for (int i = 0; i < static_cast<int>(qcache::invalidation_cause::count_); ++i)
    d.invalidations_by_cause[i] = a.invalidations_by_cause[i] - b.invalidations_by_cause[i];
  d.entries = a.entries;
  d.bytes = a.bytes;
  return d;
}

std::string describe(const qcache::stats& d) {
  std::ostringstream o;
  o << "hits=" << d.hits << " misses=" << d.misses << " stores=" << d.stores
    << " dropped_stale=" << d.stores_dropped_stale << " stale_rejected=" << d.stale_rejected
    << " waits=" << d.single_flight_waits << " uncacheable=" << d.uncacheable;
  for (int i = 0; i < static_cast<int>(uncacheable_reason::count_); ++i)
    if (d.uncacheable_by_reason[i])
      o << " " << qcache::to_string(static_cast<uncacheable_reason>(i)) << "="
        << d.uncacheable_by_reason[i];
  return o.str();
}

// Every column name and type, every field's text, NULLs distinct from ''.
std::string dump(const pqxx::result& r) {
  std::ostringstream o;
  for (pqxx::row::size_type c = 0; c < r.columns(); ++c)
    o << r.column_name(c) << ":" << r.column_type(c) << "|";
  o << "\n";
  for (const auto& row : r) {
    for (const auto& f : row) {
      if (f.is_null()) o << "NULL,";
      else o << "'" << f.c_str() << "',";
    }
    o << "\n";
  }
  return o.str();
}

// What one call returned and what the cache did meanwhile.
struct outcome {
  pqxx::result r;
  qcache::stats d;  // the change of the cache's counters during the call
  bool hit() const { return d.hits == 1 && d.misses == 0 && d.stores == 0; }
  bool stored() const { return d.hits == 0 && d.misses == 1 && d.stores == 1; }
  bool missed() const { return d.hits == 0 && d.misses == 1; }
  bool not_cached(uncacheable_reason why) const {
    return d.hits == 0 && d.stores == 0 && d.not_cached(why) >= 1;
  }
  std::string v() const { return r.empty() || r[0][0].is_null() ? "<none>" : r[0][0].c_str(); }
};

std::ostream& operator<<(std::ostream& o, const outcome& x) {
  return o << "[" << describe(x.d) << "] rows:\n" << dump(x.r);
}

std::string lower_ident(std::string s) {
  for (char& c : s) c = std::isalnum(static_cast<unsigned char>(c)) ? std::tolower(c) : '_';
  return s;
}

class PqxxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    QCACHE_REQUIRE_PG(ci);
    conninfo_ = ci;
    std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    prefix_ = "qct_" + std::to_string(getpid()) + "_" + lower_ident(test).substr(0, 36);
    schema_ = prefix_;
    drop_schemas_.push_back(schema_);
    admin("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE; CREATE SCHEMA " + schema_);
    cache_ = std::make_shared<qcache::cache>(cache_options());
    conn_ = connect();
  }

  void TearDown() override {
    if (conninfo_.empty()) return;
    conns_.clear();
    conn_.reset();
    try {
      for (const auto& s : drop_schemas_) admin("DROP SCHEMA IF EXISTS " + s + " CASCADE");
      for (const auto& r : drop_roles_) admin("DROP ROLE IF EXISTS " + r);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "cleanup: " << e.what();
    }
    std::remove(copy_file_.c_str());
  }

  virtual qcache::options cache_options() { return {}; }

  // A qcache connection whose search_path is this test's schema.
  std::unique_ptr<qcache::pqxx::connection> connect(std::shared_ptr<qcache::cache> c = {}) {
    return std::make_unique<qcache::pqxx::connection>(
        conninfo_ + " options='-c search_path=" + schema_ + "'", c ? c : cache_);
  }
  qcache::pqxx::connection& another() {
    conns_.push_back(connect());
    return *conns_.back();
  }

  // Runs SQL directly through plain libpqxx (no qcache), in this test's schema.
  pqxx::result direct(const std::string& sql) {
    pqxx::connection c(conninfo_ + " options='-c search_path=" + schema_ + "'");
    pqxx::nontransaction tx(c);
    return tx.exec(sql);
  }
  void admin(const std::string& sql) {
    pqxx::connection c(conninfo_);
    pqxx::nontransaction tx(c);
    tx.exec(sql);
  }
  std::string role(const std::string& suffix) {
    std::string r = prefix_.substr(0, 40) + "_" + suffix;
    drop_roles_.push_back(r);
    return r;
  }

  // Statements through qcache, autocommit.
  pqxx::result exec(const std::string& sql) { return exec_on(*conn_, sql); }
  static pqxx::result exec_on(qcache::pqxx::connection& c, const std::string& sql) {
    qcache::pqxx::nontransaction tx(c);
    return tx.exec(sql);
  }

  template <class F>
  outcome observe(F&& f) {
    qcache::stats before = cache_->stats();
    outcome o;
    o.r = f();
    o.d = minus(cache_->stats(), before);
    return o;
  }
  outcome read(const std::string& sql) { return read_on(*conn_, sql); }
  outcome read_on(qcache::pqxx::connection& c, const std::string& sql) {
    return observe([&] {
      qcache::pqxx::nontransaction tx(c);
      return tx.exec(sql);
    });
  }
  template <class... A>
  outcome read_params(const std::string& sql, A&&... a) {
    return observe([&] {
      qcache::pqxx::nontransaction tx(*conn_);
      return tx.exec_params(sql, std::forward<A>(a)...);
    });
  }
  template <class Tx>
  outcome read_in(Tx& tx, const std::string& sql) {
    return observe([&] { return tx.exec(sql); });
  }

  // Reads `sql` while another connection runs `write` (autocommit) from inside that read's
  // store: after the read executed, before it stores. `wrote` says whether the write ran.
  outcome read_racing_write(const std::string& sql, const std::string& write, bool& wrote) {
    qcache::pqxx::connection& writer = another();
    wrote = false;
    cache_->set_test_hook_before_store([&] {
      if (wrote) return;
      wrote = true;
      exec_on(writer, write);
    });
    outcome a = read(sql);
    cache_->set_test_hook_before_store(nullptr);
    return a;
  }

  // A cached read: the first call stores, the second hits with the same data.
  void cache_it(const std::string& sql) {
    outcome a = read(sql);
    ASSERT_TRUE(a.stored() || a.hit()) << sql << a;
    outcome b = read(sql);
    ASSERT_TRUE(b.hit()) << sql << b;
  }
  // The read is no longer served from the cache and returns what the database says.
  void expect_fresh(const std::string& sql) {
    outcome o = read(sql);
    EXPECT_FALSE(o.d.hits) << "served from cache after a write: " << sql << o;
    EXPECT_EQ(dump(o.r), dump(direct(sql))) << sql;
  }
  void expect_hit(const std::string& sql) {
    outcome o = read(sql);
    EXPECT_TRUE(o.hit()) << "should still be a hit: " << sql << o;
    EXPECT_EQ(dump(o.r), dump(direct(sql))) << sql;
  }

  std::string conninfo_, prefix_, schema_, copy_file_;
  std::vector<std::string> drop_schemas_, drop_roles_;
  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::pqxx::connection> conn_;
  std::vector<std::unique_ptr<qcache::pqxx::connection>> conns_;
};

// A table t(id int primary key, k text, v text) with rows 1..5: k = 'a' for 1-3, 'b' for 4-5.
class Rows : public PqxxTest {
 protected:
  void SetUp() override {
    PqxxTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    exec("CREATE TABLE t (id int PRIMARY KEY, k text, v text)");
    exec("INSERT INTO t VALUES (1,'a','one'),(2,'a','two'),(3,'a','three'),(4,'b','four'),"
         "(5,'b','five')");
  }
};

// ---- Repeated reads hit -------------------------------------------------------------

TEST_F(Rows, Read_RepeatedExecHitsWithIdenticalData) {
  const std::string q = "SELECT id, k, v, NULL::text AS n, '' AS e, 1.5::numeric AS x FROM t ORDER BY id";
  outcome a = read(q);
  EXPECT_TRUE(a.stored()) << a;
  outcome b = read(q);
  EXPECT_TRUE(b.hit()) << b;
  EXPECT_EQ(dump(b.r), dump(direct(q)));
  EXPECT_EQ(dump(a.r), dump(b.r));
  EXPECT_TRUE(b.r[0][3].is_null());
  EXPECT_FALSE(b.r[0][4].is_null());
  EXPECT_EQ(b.r.column_name(2), std::string("v"));
  auto s = cache_->stats();
  EXPECT_EQ(s.entries, 1u);
  EXPECT_GT(s.bytes, 0u);
}

TEST_F(Rows, Read_RepeatedExecParamsWithOneParamHits) {
  const std::string q = "SELECT v FROM t WHERE id = $1";
  outcome a = read_params(q, 4);
  EXPECT_TRUE(a.stored()) << a;
  outcome b = read_params(q, 4);
  EXPECT_TRUE(b.hit()) << b;
  EXPECT_EQ(b.v(), "four");
  EXPECT_EQ(dump(a.r), dump(b.r));
  outcome c = read_params(q, 5);
  EXPECT_TRUE(c.stored()) << "another parameter is another key" << c;
  EXPECT_EQ(c.v(), "five");
}

TEST_F(Rows, Read_RepeatedExecParamsWithSeveralParamsHits) {
  const std::string q = "SELECT id, v FROM t WHERE k = $1 AND id IN ($2, $3) ORDER BY id";
  outcome a = read_params(q, "a", 1, 3);
  EXPECT_TRUE(a.stored()) << a;
  outcome b = read_params(q, "a", 1, 3);
  EXPECT_TRUE(b.hit()) << b;
  EXPECT_EQ(dump(b.r), dump(a.r));
  ASSERT_EQ(b.r.size(), 2u);
  EXPECT_EQ(std::string(b.r[1][1].c_str()), "three");
  outcome c = read_params(q, "b", 1, 3);
  EXPECT_TRUE(c.stored()) << c;
  EXPECT_EQ(c.r.size(), 0u);
}

TEST_F(Rows, Read_RepeatedExecPreparedHits) {
  conn_->prepare("by_id", "SELECT id, v FROM t WHERE id = $1");
  auto run = [&](int id) {
    return observe([&] {
      qcache::pqxx::nontransaction tx(*conn_);
      return tx.exec_prepared("by_id", id);
    });
  };
  outcome a = run(2);
  EXPECT_TRUE(a.stored()) << a;
  outcome b = run(2);
  EXPECT_TRUE(b.hit()) << b;
  EXPECT_EQ(dump(b.r), dump(direct("SELECT id, v FROM t WHERE id = 2")));
}

TEST_F(Rows, Read_StatsCountHitsMissesStores) {
  auto before = cache_->stats();
  for (int i = 0; i < 3; ++i) read("SELECT count(*) FROM t");
  for (int i = 0; i < 2; ++i) read_params("SELECT v FROM t WHERE id = $1", 1);
  auto d = minus(cache_->stats(), before);
  EXPECT_EQ(d.misses, 2u);
  EXPECT_EQ(d.stores, 2u);
  EXPECT_EQ(d.hits, 3u);
  EXPECT_EQ(cache_->stats().entries, 2u);
  EXPECT_GT(cache_->stats().hit_ratio(), 0.5);
}

TEST_F(PqxxTest, Keys_ParametersAreEncodedUnambiguously) {
  const std::string q = "SELECT $1::text IS NULL AS is_null, $1::text AS v, $2::text AS w";
  outcome a = read_params(q, nullptr, "x");
  outcome b = read_params(q, "", "x");
  EXPECT_TRUE(b.stored()) << "NULL and '' are different keys" << b;
  EXPECT_EQ(a.v(), "t");
  EXPECT_EQ(b.v(), "f");
  outcome c = read_params(q, "ab", "c");
  outcome e = read_params(q, "a", "bc");
  EXPECT_TRUE(e.stored()) << "('ab','c') is not ('a','bc')" << e;
  EXPECT_EQ(std::string(c.r[0][1].c_str()) + "|" + c.r[0][2].c_str(), "ab|c");
  EXPECT_EQ(std::string(e.r[0][1].c_str()) + "|" + e.r[0][2].c_str(), "a|bc");
  outcome i = read_params("SELECT $1::text", 1);
  outcome s = read_params("SELECT $1::text", "1");
  EXPECT_TRUE(i.stored()) << i;
  EXPECT_TRUE(s.stored()) << "1 is not '1'" << s;
  EXPECT_TRUE(read_params("SELECT $1::text", 1).hit());
}

// ---- Each write kind invalidates what it must, and not much more --------------------

TEST_F(Rows, Insert_InvalidatesCountAndPointReadOfTheNewKey) {
  cache_it("SELECT count(*) FROM t");
  cache_it("SELECT v FROM t WHERE id = 9");
  cache_it("SELECT v FROM t WHERE id = 4");
  exec("INSERT INTO t (id, k, v) VALUES (9, 'c', 'nine')");
  expect_fresh("SELECT count(*) FROM t");
  expect_fresh("SELECT v FROM t WHERE id = 9");
  expect_hit("SELECT v FROM t WHERE id = 4");
}

// Without a column list the inserted values cannot be matched to columns: every point
// read of the table is invalidated (conservative), and of course the new key's too.
TEST_F(Rows, Insert_WithoutColumnListInvalidatesEveryPointRead) {
  cache_it("SELECT v FROM t WHERE id = 9");
  cache_it("SELECT v FROM t WHERE id = 4");
  exec("INSERT INTO t VALUES (9, 'c', 'nine')");
  expect_fresh("SELECT v FROM t WHERE id = 9");
  expect_fresh("SELECT v FROM t WHERE id = 4");
}

TEST_F(Rows, Insert_SelectInvalidates) {
  cache_it("SELECT count(*) FROM t");
  cache_it("SELECT v FROM t WHERE id = 14");
  exec("INSERT INTO t SELECT id + 10, k, v FROM t");
  expect_fresh("SELECT count(*) FROM t");
  expect_fresh("SELECT v FROM t WHERE id = 14");
}

TEST_F(Rows, Update_InvalidatesThePointReadOfTheRow) {
  cache_it("SELECT v FROM t WHERE id = 5");
  exec("UPDATE t SET v = 'FIVE' WHERE id = 5");
  expect_fresh("SELECT v FROM t WHERE id = 5");
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 5").v(), "FIVE");
}

TEST_F(Rows, Update_OfRow5LeavesCachedPointReadOfRow4AHit) {
  cache_it("SELECT v FROM t WHERE id = 4");
  cache_it("SELECT v FROM t WHERE id = 5");
  exec("UPDATE t SET v = 'FIVE' WHERE id = 5");
  expect_hit("SELECT v FROM t WHERE id = 4");
  expect_fresh("SELECT v FROM t WHERE id = 5");
}

// Cached entries outlive the session that stored them: the columns its predicate reads
// registered must still be named by a later session's writes.
TEST_F(Rows, Update_FromALaterSessionInvalidatesWhatAClosedSessionCached) {
  cache_it("SELECT v FROM t WHERE id = 5");
  conn_.reset();  // the only qcache session of this database in the process goes away
  conn_ = connect();
  exec("UPDATE t SET v = 'FIVE' WHERE id = 5");
  expect_fresh("SELECT v FROM t WHERE id = 5");
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 5").v(), "FIVE");
}

// Two-phase commit: the writes of a prepared transaction become visible at COMMIT
// PREPARED, possibly run by another connection, long after the writer's transaction ended.
TEST_F(Rows, TwoPhase_CommitPreparedInvalidates) {
  const std::string gid = prefix_ + "_gid";
  {
    qcache::pqxx::work tx{*conn_};
    tx.exec("UPDATE t SET v = 'FIVE' WHERE id = 5");
    tx.exec("PREPARE TRANSACTION '" + gid + "'");
    tx.commit();  // libpqxx's COMMIT only warns: the transaction is already prepared
  }
  cache_it("SELECT v FROM t WHERE id = 5");  // the prepared write is not visible yet
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 5").v(), "five");
  exec_on(another(), "COMMIT PREPARED '" + gid + "'");
  expect_fresh("SELECT v FROM t WHERE id = 5");
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 5").v(), "FIVE");
}

TEST_F(Rows, Update_InvalidatesAggregatesAndRangeReads) {
  cache_it("SELECT string_agg(v, ',' ORDER BY id) FROM t");
  cache_it("SELECT v FROM t WHERE id > 3 ORDER BY id");
  exec("UPDATE t SET v = 'FOUR' WHERE id = 4");
  expect_fresh("SELECT string_agg(v, ',' ORDER BY id) FROM t");
  expect_fresh("SELECT v FROM t WHERE id > 3 ORDER BY id");
}

TEST_F(Rows, Update_ChangingPredicateColumnInvalidatesOldAndNewValue) {
  cache_it("SELECT id FROM t WHERE k = 'a' ORDER BY id");
  cache_it("SELECT id FROM t WHERE k = 'b' ORDER BY id");
  exec("UPDATE t SET k = 'b' WHERE id = 1");
  expect_fresh("SELECT id FROM t WHERE k = 'a' ORDER BY id");
  expect_fresh("SELECT id FROM t WHERE k = 'b' ORDER BY id");
  EXPECT_EQ(read("SELECT count(*) FROM t WHERE k = 'b'").v(), "3");
}

TEST_F(Rows, Update_ChangingPredicateColumnByItsOwnValueInvalidatesBoth) {
  cache_it("SELECT count(*) FROM t WHERE k = 'a'");
  cache_it("SELECT count(*) FROM t WHERE k = 'b'");
  cache_it("SELECT count(*) FROM t WHERE k = 'c'");
  exec("UPDATE t SET k = 'c' WHERE k = 'b'");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'b'");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'c'");
  expect_hit("SELECT count(*) FROM t WHERE k = 'a'");
}

TEST_F(Rows, Update_ChangingPredicateColumnByExpressionInvalidates) {
  cache_it("SELECT count(*) FROM t WHERE k = 'a'");
  cache_it("SELECT count(*) FROM t WHERE k = 'ax'");
  exec("UPDATE t SET k = k || 'x' WHERE id = 2");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'a'");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'ax'");
}

TEST_F(Rows, Update_ChangingPredicateColumnViaParamsInvalidatesBoth) {
  const std::string q = "SELECT count(*) FROM t WHERE k = $1";
  read_params(q, "a");
  read_params(q, "b");
  ASSERT_TRUE(read_params(q, "a").hit());
  ASSERT_TRUE(read_params(q, "b").hit());
  {
    qcache::pqxx::nontransaction tx(*conn_);
    tx.exec_params("UPDATE t SET k = $1 WHERE id = $2", "b", 2);
  }
  outcome a = read_params(q, "a");
  outcome b = read_params(q, "b");
  EXPECT_FALSE(a.d.hits) << a;
  EXPECT_FALSE(b.d.hits) << b;
  EXPECT_EQ(a.v(), "2");
  EXPECT_EQ(b.v(), "3");
}

TEST_F(Rows, Write_ExecParamsUpdateInvalidates) {
  const std::string q = "SELECT v FROM t WHERE id = $1";
  read_params(q, 3);
  ASSERT_TRUE(read_params(q, 3).hit());
  ASSERT_TRUE(read_params(q, 2).stored());
  {
    qcache::pqxx::nontransaction tx(*conn_);
    tx.exec_params("UPDATE t SET v = $1 WHERE id = $2", "THREE", 3);
  }
  outcome o = read_params(q, 3);
  EXPECT_FALSE(o.d.hits) << o;
  EXPECT_EQ(o.v(), "THREE");
  EXPECT_TRUE(read_params(q, 2).hit()) << "row 2 was not touched";
}

TEST_F(Rows, Delete_InvalidatesPointAndTableReads) {
  cache_it("SELECT v FROM t WHERE id = 3");
  cache_it("SELECT count(*) FROM t");
  cache_it("SELECT v FROM t WHERE id = 2");
  exec("DELETE FROM t WHERE id = 3");
  expect_fresh("SELECT v FROM t WHERE id = 3");
  expect_fresh("SELECT count(*) FROM t");
  expect_hit("SELECT v FROM t WHERE id = 2");
}

// Outside a transaction the engine reads the ids of the rows the DELETE may touch first
// (a pre-image): the point reads of the deleted rows go, the others stay.
TEST_F(Rows, Delete_WithoutPredicateInvalidatesThePointReadsOfTheRowsItDeletes) {
  cache_it("SELECT v FROM t WHERE id = 3");
  cache_it("SELECT v FROM t WHERE id = 4");
  exec("DELETE FROM t WHERE v LIKE 't%'");
  expect_fresh("SELECT v FROM t WHERE id = 3");
  expect_hit("SELECT v FROM t WHERE id = 4");
  EXPECT_EQ(read("SELECT count(*) FROM t WHERE id = 3").v(), "0");
}

// ---- Pre-images: old values of rows an UPDATE/DELETE touches ------------------------

TEST_F(Rows, Preimage_DeleteByIdInvalidatesOnlyTheDeletedRowsPredicateValue) {
  cache_it("SELECT count(*) FROM t WHERE k = 'a'");
  cache_it("SELECT count(*) FROM t WHERE k = 'b'");
  exec("DELETE FROM t WHERE id = 4");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'b'");
  expect_hit("SELECT count(*) FROM t WHERE k = 'a'");
  EXPECT_EQ(read("SELECT count(*) FROM t WHERE k = 'b'").v(), "1");
}

// The statement's WHERE is copied as written: comments in it, including a trailing line
// comment, must not break the pre-image.
TEST_F(Rows, Preimage_CommentsInTheWhere) {
  cache_it("SELECT count(*) FROM t WHERE k = 'a'");
  cache_it("SELECT count(*) FROM t WHERE k = 'b'");
  exec("DELETE FROM t WHERE /* row ( */ id = 4 -- the fourth )");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'b'");
  expect_hit("SELECT count(*) FROM t WHERE k = 'a'");
}

TEST_F(Rows, Preimage_UpdateByIdInvalidatesTheReadsOfTheRowsValues) {
  cache_it("SELECT id, v FROM t WHERE k = 'a' ORDER BY id");
  cache_it("SELECT id, v FROM t WHERE k = 'b' ORDER BY id");
  exec("UPDATE t SET v = 'ONE' WHERE id = 1");
  expect_fresh("SELECT id, v FROM t WHERE k = 'a' ORDER BY id");
  expect_hit("SELECT id, v FROM t WHERE k = 'b' ORDER BY id");
}

TEST_F(Rows, Preimage_UpdateMovingTheColumnInvalidatesOldAndNewValues) {
  cache_it("SELECT count(*) FROM t WHERE k = 'a'");
  cache_it("SELECT count(*) FROM t WHERE k = 'b'");
  cache_it("SELECT count(*) FROM t WHERE k = 'c'");
  exec("UPDATE t SET k = 'c' WHERE id = 1");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'a'");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'c'");
  expect_hit("SELECT count(*) FROM t WHERE k = 'b'");
}

TEST_F(Rows, Preimage_UpdateByAnUnknownNewValueInvalidatesTheColumn) {
  cache_it("SELECT count(*) FROM t WHERE k = 'b'");
  cache_it("SELECT count(*) FROM t WHERE k = 'ax'");
  exec("UPDATE t SET k = k || 'x' WHERE id = 1");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'ax'");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'b'");
}

// Parameters go into the pre-image as literals: quotes, backslashes and NULLs must
// select exactly the rows the statement touches.
TEST_F(Rows, Preimage_ParametersWithQuotesBackslashesAndNulls) {
  exec("UPDATE t SET v = E'it''s \\\\ five' WHERE id = 5");
  cache_it("SELECT id, v FROM t WHERE k = 'a' ORDER BY id");
  cache_it("SELECT id, v FROM t WHERE k = 'b' ORDER BY id");
  {
    qcache::pqxx::nontransaction tx(*conn_);
    auto r = tx.exec_params("UPDATE t SET v = $1 WHERE v = $2 OR v = $3", "FIVE",
                            "it's \\ five", nullptr);
    EXPECT_EQ(r.affected_rows(), 1u);
  }
  expect_fresh("SELECT id, v FROM t WHERE k = 'b' ORDER BY id");
  expect_hit("SELECT id, v FROM t WHERE k = 'a' ORDER BY id");
  EXPECT_EQ(direct("SELECT v FROM t WHERE id = 5")[0][0].c_str(), std::string("FIVE"));
}

TEST_F(Rows, Preimage_InsideATransactionTheWriteIsStillInvalidated) {
  cache_it("SELECT id, v FROM t WHERE k = 'a' ORDER BY id");
  {
    qcache::pqxx::work tx{*conn_};
    tx.exec("UPDATE t SET v = 'ONE' WHERE id = 1");
    tx.commit();
  }
  expect_fresh("SELECT id, v FROM t WHERE k = 'a' ORDER BY id");
}

// A pre-image the server refuses (no SELECT privilege on the column) must change nothing
// the application sees: the write succeeds, and the column's reads are all invalidated.
TEST_F(Rows, Preimage_RefusedByTheServerFallsBackAndTheWriteSucceeds) {
  const std::string r = role("w");
  admin("CREATE ROLE " + r + "; GRANT USAGE ON SCHEMA " + schema_ + " TO " + r +
        "; GRANT SELECT (id), UPDATE (v) ON " + schema_ + ".t TO " + r);
  cache_it("SELECT id, v FROM t WHERE k = 'a' ORDER BY id");
  cache_it("SELECT id, v FROM t WHERE k = 'b' ORDER BY id");
  qcache::pqxx::connection& w = another();
  exec_on(w, "SET ROLE " + r);
  pqxx::result res = exec_on(w, "UPDATE t SET v = 'FOUR' WHERE id = 4");
  EXPECT_EQ(res.affected_rows(), 1u);
  expect_fresh("SELECT id, v FROM t WHERE k = 'b' ORDER BY id");
  expect_fresh("SELECT id, v FROM t WHERE k = 'a' ORDER BY id");
  // The connection is fine afterwards.
  EXPECT_EQ(exec_on(w, "UPDATE t SET v = 'four' WHERE id = 4").affected_rows(), 1u);
  expect_fresh("SELECT id, v FROM t WHERE k = 'b' ORDER BY id");
}

// More distinct old values than the engine turns into tags: the column's epoch moves.
TEST_F(Rows, Preimage_ManyValuesFallBackToTheColumn) {
  exec("INSERT INTO t SELECT g, 'k' || g, 'v' FROM generate_series(10, 400) g");
  cache_it("SELECT count(*) FROM t WHERE k = 'a'");
  cache_it("SELECT count(*) FROM t WHERE k = 'k399'");
  exec("UPDATE t SET v = 'w' WHERE id >= 10");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'k399'");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'a'");
}

// ---- Correlated scalar subqueries: dependencies named by the result's values ---------

class Correlated : public Rows {
 protected:
  void SetUp() override {
    Rows::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    exec("CREATE TABLE c (id int PRIMARY KEY, t_id int, body text)");
    exec("INSERT INTO c VALUES (1, 1, 'x'), (2, 1, 'y'), (3, 2, 'z'), (4, 4, 'w')");
  }
  // Posts with k = 'a' (ids 1, 2, 3) and their comment counts.
  const std::string q =
      "SELECT t.id, t.v, (SELECT count(*) FROM c WHERE c.t_id = t.id) AS n FROM t "
      "WHERE t.k = 'a' ORDER BY t.id";
};

TEST_F(Correlated, Correlated_WritesForRowsNotInTheResultKeepItCached) {
  cache_it(q);
  exec("INSERT INTO c (id, t_id, body) VALUES (10, 4, 'new')");
  expect_hit(q);
  exec("DELETE FROM c WHERE id = 4");  // t_id 4, learnt by the pre-image
  expect_hit(q);
  exec("UPDATE c SET body = 'edited' WHERE id = 10");
  expect_hit(q);
}

TEST_F(Correlated, Correlated_WritesForRowsInTheResultInvalidateIt) {
  cache_it(q);
  exec("INSERT INTO c (id, t_id, body) VALUES (10, 3, 'new')");
  expect_fresh(q);
  cache_it(q);
  exec("DELETE FROM c WHERE id = 3");  // t_id 2
  expect_fresh(q);
  cache_it(q);
  exec("UPDATE c SET t_id = 2 WHERE id = 4");  // moves a comment from 4 (absent) to 2
  expect_fresh(q);
  cache_it(q);
  {
    qcache::pqxx::work tx{*conn_};
    tx.exec("UPDATE c SET body = 'tx' WHERE id = 1");  // no pre-image in a transaction
    tx.commit();
  }
  expect_fresh(q);
  EXPECT_EQ(dump(read(q).r), dump(direct(q)));
}

// Which rows the result shows depends on t: a write to t invalidates as before.
TEST_F(Correlated, Correlated_WritesToTheOuterTableInvalidate) {
  cache_it(q);
  exec("UPDATE t SET k = 'a' WHERE id = 4");
  expect_fresh(q);
}

// A write to the subquery's table while the read runs: its tags cannot be read after
// the fact, so the result must not be stored.
TEST_F(Correlated, Correlated_WriteBetweenExecutionAndStoreIsNotStored) {
  bool once = false;
  outcome a = read_racing_write(q, "INSERT INTO c (id, t_id, body) VALUES (20, 2, 'during')", once);
  ASSERT_TRUE(once);
  EXPECT_EQ(a.d.stores, 0u) << a;
  outcome b = read(q);
  EXPECT_FALSE(b.d.hits) << b;
  EXPECT_EQ(dump(b.r), dump(direct(q)));
  EXPECT_TRUE(b.stored()) << b;
}

TEST_F(Correlated, Correlated_ExplainNamesTheResultColumn) {
  qcache::explanation e = conn_->explain(q);
  EXPECT_TRUE(e.cacheable) << e.to_string();
  EXPECT_NE(std::find(e.tags.begin(), e.tags.end(),
                      "predicate " + schema_ + ".c.t_id = each value of result column 1"),
            e.tags.end())
      << e.to_string();
}

// Different classes on the two sides (int vs numeric): no textual equality, so the
// subquery's table is a whole-table dependency (still correct).
TEST_F(Correlated, Correlated_MismatchedTypesDependOnTheWholeTable) {
  exec("CREATE TABLE cn (id int PRIMARY KEY, t_id numeric)");
  exec("INSERT INTO cn VALUES (1, 1), (2, 4)");
  const std::string qn =
      "SELECT t.id, (SELECT count(*) FROM cn WHERE cn.t_id = t.id) FROM t WHERE t.k = 'a' "
      "ORDER BY t.id";
  cache_it(qn);
  exec("INSERT INTO cn (id, t_id) VALUES (3, 5)");
  expect_fresh(qn);
}

// A second evaluation of the WHERE could select other rows: no pre-image, the column's
// reads all go.
TEST_F(Rows, Preimage_NotForWheresThatMaySelectOtherRowsTheSecondTime) {
  const char* writes[] = {
      "UPDATE t SET v = 'x' WHERE id = 4 AND random() >= 0",
      "UPDATE t SET v = 'x' WHERE id = 4 AND now() > '2000-01-01'",
      "UPDATE t SET v = 'x' WHERE id = 4 AND CURRENT_DATE > '2000-01-01'",
      "UPDATE t SET v = 'x' WHERE id IN (SELECT id FROM t WHERE k = 'b' LIMIT 1)",
  };
  for (const char* w : writes) {
    cache_it("SELECT id, v FROM t WHERE k = 'a' ORDER BY id");
    cache_it("SELECT id, v FROM t WHERE k = 'b' ORDER BY id");
    exec(w);
    expect_fresh("SELECT id, v FROM t WHERE k = 'b' ORDER BY id");
    outcome a = read("SELECT id, v FROM t WHERE k = 'a' ORDER BY id");
    EXPECT_FALSE(a.d.hits) << w << a;
  }
}

// Functions outside the WHERE do not matter: SET updated = now() keeps its pre-image.
TEST_F(Rows, Preimage_FunctionsInTheSetListDoNotPreventIt) {
  cache_it("SELECT id, v FROM t WHERE k = 'a' ORDER BY id");
  cache_it("SELECT id, v FROM t WHERE k = 'b' ORDER BY id");
  exec("UPDATE t SET v = 'at ' || now()::text WHERE id = 4 AND abs(id) = 4");
  expect_fresh("SELECT id, v FROM t WHERE k = 'b' ORDER BY id");
  expect_hit("SELECT id, v FROM t WHERE k = 'a' ORDER BY id");
}

// ---- Joins to a row chosen by a key: the joined table is named by the result ----------

class KeyedJoin : public PqxxTest {
 protected:
  void SetUp() override {
    PqxxTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    exec("CREATE TABLE revs (id int PRIMARY KEY, body text)");
    exec("CREATE TABLE pages (id int PRIMARY KEY, slug text, latest int)");
    exec("INSERT INTO revs (id, body) VALUES (1, 'one'), (2, 'two')");
    exec("INSERT INTO pages (id, slug, latest) VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 99)");
  }
  static std::string view(int page) {
    return "SELECT p.id, r.id, r.body FROM pages p JOIN revs r ON r.id = p.latest WHERE p.id = " +
           std::to_string(page);
  }
};

TEST_F(KeyedJoin, Join_WritesToOtherRowsOfTheJoinedTableKeepViewsCached) {
  cache_it(view(1));
  cache_it(view(2));
  exec("INSERT INTO revs (id, body) VALUES (10, 'new')");
  expect_hit(view(1));
  expect_hit(view(2));
  exec("UPDATE revs SET body = 'ONE' WHERE id = 1");
  expect_fresh(view(1));
  expect_hit(view(2));
  exec("DELETE FROM revs WHERE id = 10");
  expect_hit(view(2));
}

TEST_F(KeyedJoin, Join_MovingTheJoinColumnInvalidatesThatView) {
  cache_it(view(1));
  cache_it(view(2));
  exec("INSERT INTO revs (id, body) VALUES (10, 'new')");
  exec("UPDATE pages SET latest = 10 WHERE id = 1");
  expect_fresh(view(1));
  expect_hit(view(2));
  EXPECT_EQ(std::string(read(view(1)).r[0][2].c_str()), "new");
}

// An empty result names no join value: the row that would make it non-empty is unknown.
TEST_F(KeyedJoin, Join_EmptyResultDependsOnTheWholeJoinedTable) {
  cache_it(view(3));  // latest = 99 does not exist
  EXPECT_EQ(read(view(3)).r.size(), 0u);
  exec("INSERT INTO revs (id, body) VALUES (99, 'late')");
  expect_fresh(view(3));
  EXPECT_EQ(read(view(3)).r.size(), 1u);
}

// Without a key on the outer filter, several outer rows may qualify, some without a
// match: the joined table is a whole-table dependency.
TEST_F(KeyedJoin, Join_OuterFilterThatIsNotAKeyDependsOnTheWholeJoinedTable) {
  exec("INSERT INTO pages (id, slug, latest) VALUES (4, 'a', 77)");
  const std::string q =
      "SELECT p.id, r.id, r.body FROM pages p JOIN revs r ON r.id = p.latest "
      "WHERE p.slug = 'a' ORDER BY p.id";
  cache_it(q);
  exec("INSERT INTO revs (id, body) VALUES (77, 'seven')");
  expect_fresh(q);
  EXPECT_EQ(read(q).r.size(), 2u);
}

// An inheritance parent's primary key does not make `id = v` select one row.
TEST_F(KeyedJoin, Join_InheritanceParentKeyIsNotAKey) {
  exec("CREATE TABLE pages_kid () INHERITS (pages)");
  exec("INSERT INTO pages_kid (id, slug, latest) VALUES (1, 'kid', 88)");
  cache_it(view(1));
  exec("INSERT INTO revs (id, body) VALUES (88, 'eight')");
  expect_fresh(view(1));
  EXPECT_EQ(read(view(1)).r.size(), 2u);
}

class RowsNoPreimage : public Rows {
 protected:
  qcache::options cache_options() override {
    qcache::options o;
    o.write_preimage = false;
    return o;
  }
};

TEST_F(RowsNoPreimage, Preimage_SwitchedOffTheColumnIsInvalidated) {
  cache_it("SELECT count(*) FROM t WHERE k = 'a'");
  cache_it("SELECT count(*) FROM t WHERE k = 'b'");
  exec("DELETE FROM t WHERE id = 4");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'b'");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'a'");
}

TEST_F(Rows, OnConflict_DoUpdateInvalidatesTheConflictingRow) {
  cache_it("SELECT v FROM t WHERE id = 4");
  cache_it("SELECT count(*) FROM t");
  exec("INSERT INTO t VALUES (4, 'b', 'FOUR') ON CONFLICT (id) DO UPDATE SET v = excluded.v");
  expect_fresh("SELECT v FROM t WHERE id = 4");
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 4").v(), "FOUR");
  expect_fresh("SELECT count(*) FROM t");
}

TEST_F(Rows, OnConflict_DoNothingInsertingNewRowInvalidates) {
  cache_it("SELECT count(*) FROM t");
  cache_it("SELECT v FROM t WHERE id = 7");
  exec("INSERT INTO t VALUES (7, 'c', 'seven'), (1, 'x', 'dup') ON CONFLICT DO NOTHING");
  expect_fresh("SELECT count(*) FROM t");
  expect_fresh("SELECT v FROM t WHERE id = 7");
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 1").v(), "one");
}

TEST_F(Rows, Merge_InvalidatesMatchedAndInsertedRows) {
  cache_it("SELECT v FROM t WHERE id = 1");
  cache_it("SELECT v FROM t WHERE id = 9");
  cache_it("SELECT count(*) FROM t");
  exec("MERGE INTO t USING (VALUES (1, 'ONE'), (9, 'NINE')) AS s(id, v) ON t.id = s.id "
       "WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT VALUES (s.id, 'm', s.v)");
  expect_fresh("SELECT v FROM t WHERE id = 1");
  expect_fresh("SELECT v FROM t WHERE id = 9");
  expect_fresh("SELECT count(*) FROM t");
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 9").v(), "NINE");
}

TEST_F(Rows, CopyFrom_ServerFileInvalidates) {
  copy_file_ = "/tmp/" + prefix_ + ".csv";
  {
    std::ofstream f(copy_file_);
    f << "20,c,twenty\n21,c,twenty-one\n";
  }
  ASSERT_EQ(chmod(copy_file_.c_str(), 0644), 0);
  cache_it("SELECT count(*) FROM t");
  cache_it("SELECT v FROM t WHERE id = 20");
  cache_it("SELECT count(*) FROM t WHERE k = 'c'");
  exec("COPY t (id, k, v) FROM '" + copy_file_ + "' WITH (FORMAT csv)");
  expect_fresh("SELECT count(*) FROM t");
  expect_fresh("SELECT v FROM t WHERE id = 20");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'c'");
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 20").v(), "twenty");
}

TEST_F(Rows, Truncate_Invalidates) {
  cache_it("SELECT count(*) FROM t");
  cache_it("SELECT v FROM t WHERE id = 1");
  exec("TRUNCATE t");
  expect_fresh("SELECT count(*) FROM t");
  expect_fresh("SELECT v FROM t WHERE id = 1");
  EXPECT_EQ(read("SELECT count(*) FROM t").v(), "0");
}

TEST_F(Rows, WritableCte_DeleteReturningInvalidatesAndIsNeverCached) {
  cache_it("SELECT count(*) FROM t");
  cache_it("SELECT v FROM t WHERE id = 2");
  const std::string w = "WITH d AS (DELETE FROM t WHERE id = 2 RETURNING *) SELECT count(*) FROM d";
  outcome a = read(w);
  EXPECT_EQ(a.v(), "1");
  EXPECT_EQ(a.d.stores, 0u) << a;
  outcome b = read(w);
  EXPECT_EQ(b.v(), "0") << "a writable CTE is a write: it runs every time" << b;
  EXPECT_EQ(b.d.hits, 0u) << b;
  expect_fresh("SELECT count(*) FROM t");
  expect_fresh("SELECT v FROM t WHERE id = 2");
}

TEST_F(Rows, Ddl_AddColumnThenSelectStarShowsIt) {
  cache_it("SELECT * FROM t WHERE id = 1");
  cache_it("SELECT * FROM t ORDER BY id");
  exec("ALTER TABLE t ADD COLUMN extra int DEFAULT 7");
  outcome o = read("SELECT * FROM t WHERE id = 1");
  EXPECT_FALSE(o.d.hits) << o;
  ASSERT_EQ(o.r.columns(), 4u);
  EXPECT_EQ(std::string(o.r.column_name(3)), "extra");
  EXPECT_EQ(std::string(o.r[0][3].c_str()), "7");
  expect_fresh("SELECT * FROM t ORDER BY id");
}

TEST_F(Rows, Ddl_DropAndRecreateTableIsNeverServedOldRows) {
  cache_it("SELECT count(*) FROM t");
  exec("DROP TABLE t");
  exec("CREATE TABLE t (id int PRIMARY KEY, k text, v text)");
  expect_fresh("SELECT count(*) FROM t");
  EXPECT_EQ(read("SELECT count(*) FROM t").v(), "0");
}

TEST_F(Rows, MultiStatement_ExecWithUpdateInvalidates) {
  cache_it("SELECT v FROM t WHERE id = 1");
  outcome o = read("SELECT 1; UPDATE t SET v = 'uno' WHERE id = 1");
  EXPECT_EQ(o.d.stores, 0u);
  expect_fresh("SELECT v FROM t WHERE id = 1");
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 1").v(), "uno");
  outcome m = read("SELECT 1; SELECT v FROM t WHERE id = 1");
  EXPECT_TRUE(m.not_cached(uncacheable_reason::multi_statement)) << m;
}

TEST_F(Rows, Do_BlockThatWritesInvalidates) {
  cache_it("SELECT v FROM t WHERE id = 1");
  exec("DO $$BEGIN UPDATE t SET v = 'done' WHERE id = 1; END$$");
  expect_fresh("SELECT v FROM t WHERE id = 1");
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 1").v(), "done");
}

TEST_F(Rows, Procedure_CallThatWritesInvalidates) {
  exec("CREATE PROCEDURE p() LANGUAGE sql AS $$UPDATE t SET v = 'called' WHERE id = 2$$");
  cache_it("SELECT v FROM t WHERE id = 2");
  exec("CALL p()");
  expect_fresh("SELECT v FROM t WHERE id = 2");
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 2").v(), "called");
}

TEST_F(Rows, Update_ChangingTheKeyInvalidatesOldAndNewKey) {
  cache_it("SELECT v FROM t WHERE id = 1");
  cache_it("SELECT v FROM t WHERE id = 10");
  cache_it("SELECT v FROM t WHERE id = 2");
  exec("UPDATE t SET id = 10 WHERE id = 1");
  expect_fresh("SELECT v FROM t WHERE id = 1");
  expect_fresh("SELECT v FROM t WHERE id = 10");
  expect_hit("SELECT v FROM t WHERE id = 2");
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 10").v(), "one");
}

TEST_F(Rows, Update_WithSubqueryInWhereInvalidates) {
  cache_it("SELECT count(*) FROM t WHERE k = 'z'");
  cache_it("SELECT k FROM t WHERE id = 2");
  exec("UPDATE t SET k = 'z' WHERE id IN (SELECT id FROM t WHERE v LIKE 't%')");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'z'");
  expect_fresh("SELECT k FROM t WHERE id = 2");
}

TEST_F(Rows, Update_StringLiteralAndIntegerSpellingsOfOneKeyShareInvalidation) {
  cache_it("SELECT v FROM t WHERE id = '4'");
  cache_it("SELECT v FROM t WHERE id = '04'");
  read_params("SELECT v FROM t WHERE id = $1", " 4");
  exec("UPDATE t SET v = 'vier' WHERE id = 4");
  expect_fresh("SELECT v FROM t WHERE id = '4'");
  expect_fresh("SELECT v FROM t WHERE id = '04'");
  outcome o = read_params("SELECT v FROM t WHERE id = $1", " 4");
  EXPECT_FALSE(o.d.hits) << o;
  EXPECT_EQ(o.v(), "vier");
}

TEST_F(Rows, Insert_ExecParamsValuesLeaveOtherRowsHit) {
  cache_it("SELECT v FROM t WHERE id = 1");
  cache_it("SELECT v FROM t WHERE id = 6");
  cache_it("SELECT count(*) FROM t WHERE k = 'c'");
  {
    qcache::pqxx::nontransaction tx(*conn_);
    tx.exec_params("INSERT INTO t (id, k, v) VALUES ($1, $2, $3)", 6, "c", "six");
  }
  expect_fresh("SELECT v FROM t WHERE id = 6");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'c'");
  expect_hit("SELECT v FROM t WHERE id = 1");
}

TEST_F(Rows, Insert_ReturningRunsEveryTime) {
  exec("CREATE TABLE s (id serial PRIMARY KEY, v text)");
  outcome a = read("INSERT INTO s (v) VALUES ('x') RETURNING id");
  outcome b = read("INSERT INTO s (v) VALUES ('x') RETURNING id");
  EXPECT_EQ(a.v(), "1");
  EXPECT_EQ(b.v(), "2");
  EXPECT_EQ(a.d.stores + b.d.stores + a.d.hits + b.d.hits, 0u);
}

TEST_F(Rows, OnConflict_DoUpdateMovingPredicateColumnInvalidatesBoth) {
  cache_it("SELECT count(*) FROM t WHERE k = 'a'");
  cache_it("SELECT count(*) FROM t WHERE k = 'q'");
  exec("INSERT INTO t (id, k, v) VALUES (1, 'q', 'one') ON CONFLICT (id) DO UPDATE SET k = excluded.k");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'a'");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'q'");
}

TEST_F(Rows, WritableCte_UpdateInvalidatesBothPredicateValues) {
  cache_it("SELECT count(*) FROM t WHERE k = 'a'");
  cache_it("SELECT count(*) FROM t WHERE k = 'b'");
  outcome o = read("WITH u AS (UPDATE t SET k = 'b' WHERE id = 1 RETURNING id) SELECT id FROM u");
  EXPECT_EQ(o.v(), "1");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'a'");
  expect_fresh("SELECT count(*) FROM t WHERE k = 'b'");
}

TEST_F(Rows, WritableCte_InsertIntoOtherTableInvalidatesIt) {
  exec("CREATE TABLE arch (id int, v text)");
  cache_it("SELECT count(*) FROM arch");
  cache_it("SELECT count(*) FROM t");
  exec("WITH d AS (DELETE FROM t WHERE k = 'b' RETURNING id, v) INSERT INTO arch SELECT * FROM d");
  expect_fresh("SELECT count(*) FROM arch");
  expect_fresh("SELECT count(*) FROM t");
}

TEST_F(Rows, Join_WriteToEitherSideInvalidates) {
  exec("CREATE TABLE u (id int PRIMARY KEY, w text); INSERT INTO u VALUES (1, 'u1'), (2, 'u2')");
  const std::string q = "SELECT t.v, u.w FROM t JOIN u ON u.id = t.id WHERE t.id = 1";
  cache_it(q);
  exec("UPDATE u SET w = 'U1' WHERE id = 1");
  expect_fresh(q);
  cache_it(q);
  exec("UPDATE t SET v = 'ONE' WHERE id = 1");
  expect_fresh(q);
  cache_it(q);
  exec("UPDATE t SET v = 'TWO' WHERE id = 2");
  expect_hit(q);
  const std::string sub = "SELECT v FROM t WHERE id IN (SELECT id FROM u WHERE w = 'u2')";
  cache_it(sub);
  exec("UPDATE u SET w = 'u2' WHERE id = 1");
  expect_fresh(sub);
}

TEST_F(Rows, SqlPrepareExecute_WriteInvalidates) {
  cache_it("SELECT v FROM t WHERE id = 1");
  exec("PREPARE w (text) AS UPDATE t SET v = $1 WHERE id = 1");
  exec("EXECUTE w('executed')");
  expect_fresh("SELECT v FROM t WHERE id = 1");
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 1").v(), "executed");
  exec("DEALLOCATE w");
}

TEST_F(Rows, ForUpdate_IsNeverCached) {
  qcache::pqxx::work tx(*conn_);
  outcome o = read_in(tx, "SELECT v FROM t WHERE id = 1 FOR UPDATE");
  EXPECT_TRUE(o.not_cached(uncacheable_reason::locking)) << o;
  EXPECT_EQ(o.v(), "one");
  tx.commit();
}

TEST_F(Rows, Rule_DoAlsoInsertInvalidatesTheOtherTable) {
  exec("CREATE TABLE audit (note text);"
       "CREATE RULE r AS ON UPDATE TO t DO ALSO INSERT INTO audit VALUES (NEW.v)");
  cache_it("SELECT count(*) FROM audit");
  exec("UPDATE t SET v = 'ruled' WHERE id = 1");
  expect_fresh("SELECT count(*) FROM audit");
  EXPECT_EQ(read("SELECT count(*) FROM audit").v(), "1");
}

// Without the change stream (options::follow_changes = false): writes behind qcache's
// back are not seen until invalidated by hand, and materialized views are cached (with
// it they are read uncached: another client's REFRESH is not in the stream).
class RowsWithoutStream : public Rows {
 protected:
  qcache::options cache_options() override {
    qcache::options o;
    o.follow_changes = false;
    return o;
  }
};

TEST_F(RowsWithoutStream, MaterializedView_RefreshIsSeen) {
  exec("CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM t");
  cache_it("SELECT n FROM mv");
  exec("INSERT INTO t (id, k, v) VALUES (6, 'c', 'six')");
  EXPECT_EQ(read("SELECT n FROM mv").v(), "5") << "not refreshed yet";
  exec("REFRESH MATERIALIZED VIEW mv");
  expect_fresh("SELECT n FROM mv");
  EXPECT_EQ(read("SELECT n FROM mv").v(), "6");
}

TEST_F(Rows, Sequence_ReadsOfASequenceAreNeverCached) {
  exec("CREATE SEQUENCE sq");
  read("SELECT nextval('sq')");
  outcome a = read("SELECT last_value FROM sq");
  read("SELECT nextval('sq')");
  outcome b = read("SELECT last_value FROM sq");
  EXPECT_EQ(a.v(), "1");
  EXPECT_EQ(b.v(), "2");
  EXPECT_TRUE(b.not_cached(uncacheable_reason::system_relation)) << b;
}

TEST_F(Rows, Explain_AnalyzeOfAnUpdateIsAWrite) {
  cache_it("SELECT v FROM t WHERE id = 1");
  outcome e = read("EXPLAIN ANALYZE UPDATE t SET v = 'explained' WHERE id = 1");
  EXPECT_EQ(e.d.stores, 0u) << e;
  expect_fresh("SELECT v FROM t WHERE id = 1");
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 1").v(), "explained");
}

TEST_F(Rows, Function_ReplacedImmutableFunctionIsSeen) {
  exec("CREATE FUNCTION f(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 + 1'");
  cache_it("SELECT f(1)");
  exec_on(another(), "CREATE OR REPLACE FUNCTION f(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 + 100'");
  expect_fresh("SELECT f(1)");
  EXPECT_EQ(read("SELECT f(1)").v(), "101");
}

TEST_F(Rows, Ddl_OnAnotherConnectionSharingTheCacheIsSeen) {
  cache_it("SELECT * FROM t WHERE id = 1");
  exec_on(another(), "ALTER TABLE t DROP COLUMN k");
  outcome o = read("SELECT * FROM t WHERE id = 1");
  EXPECT_FALSE(o.d.hits) << o;
  EXPECT_EQ(o.r.columns(), 2u);
}

TEST_F(Rows, Tx_SessionDefaultIsolationBypassesTheCache) {
  const std::string q = "SELECT v FROM t WHERE id = 1";
  cache_it(q);
  for (const std::string set : {"SET default_transaction_isolation = 'repeatable read'",
                                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL "
                                "SERIALIZABLE"}) {
    exec(set);
    for (int i = 0; i < 2; ++i) {
      qcache::pqxx::work tx(*conn_);
      outcome a = read_in(tx, q);
      outcome b = read_in(tx, q);
      EXPECT_TRUE(a.not_cached(uncacheable_reason::isolation)) << set << a;
      EXPECT_TRUE(b.not_cached(uncacheable_reason::isolation)) << set << b;
      tx.commit();
    }
    exec("RESET default_transaction_isolation");
  }
  qcache::pqxx::work tx(*conn_);
  EXPECT_TRUE(read_in(tx, q).hit());
  tx.commit();
}

// ---- Hidden side effects ----------------------------------------------------------

class Fk : public PqxxTest {
 protected:
  void SetUp() override {
    PqxxTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    exec("CREATE TABLE parent (id int PRIMARY KEY);"
         "CREATE TABLE child_c (id int PRIMARY KEY, pid int REFERENCES parent "
         "  ON DELETE CASCADE ON UPDATE CASCADE);"
         "CREATE TABLE child_n (id int PRIMARY KEY, pid int REFERENCES parent ON DELETE SET NULL);"
         "CREATE TABLE grandchild (id int PRIMARY KEY, cid int REFERENCES child_c ON DELETE CASCADE);"
         "INSERT INTO parent VALUES (1), (2);"
         "INSERT INTO child_c VALUES (10, 1), (20, 2);"
         "INSERT INTO child_n VALUES (11, 1), (21, 1);"
         "INSERT INTO grandchild VALUES (100, 10)");
  }
};

TEST_F(Fk, Fk_DeleteCascadeInvalidatesChildReads) {
  cache_it("SELECT count(*) FROM child_c");
  cache_it("SELECT id FROM child_c WHERE pid = 1");
  cache_it("SELECT id FROM child_c WHERE id = 10");
  cache_it("SELECT count(*) FROM grandchild");
  exec("DELETE FROM parent WHERE id = 1");
  expect_fresh("SELECT count(*) FROM child_c");
  expect_fresh("SELECT id FROM child_c WHERE pid = 1");
  expect_fresh("SELECT id FROM child_c WHERE id = 10");
  expect_fresh("SELECT count(*) FROM grandchild");
  EXPECT_EQ(read("SELECT count(*) FROM grandchild").v(), "0");
}

TEST_F(Fk, Fk_UpdateCascadeInvalidatesChildReads) {
  cache_it("SELECT id FROM child_c WHERE pid = 2");
  cache_it("SELECT pid FROM child_c WHERE id = 20");
  exec("UPDATE parent SET id = 3 WHERE id = 2");
  expect_fresh("SELECT id FROM child_c WHERE pid = 2");
  expect_fresh("SELECT pid FROM child_c WHERE id = 20");
  EXPECT_EQ(read("SELECT pid FROM child_c WHERE id = 20").v(), "3");
}

TEST_F(Fk, Fk_DeleteSetNullInvalidatesChildReads) {
  cache_it("SELECT pid FROM child_n WHERE id = 11");
  cache_it("SELECT count(*) FROM child_n WHERE pid IS NULL");
  exec("DELETE FROM parent WHERE id = 1");
  expect_fresh("SELECT pid FROM child_n WHERE id = 11");
  expect_fresh("SELECT count(*) FROM child_n WHERE pid IS NULL");
  EXPECT_EQ(read("SELECT pid FROM child_n WHERE id = 11").v(), "<none>");
}

TEST_F(Fk, Fk_TriggerOnCascadedChildInvalidatesItsTarget) {
  exec("CREATE TABLE gone (id int);"
       "CREATE FUNCTION log_gone() RETURNS trigger LANGUAGE plpgsql AS "
       "$$BEGIN INSERT INTO gone VALUES (OLD.id); RETURN OLD; END$$;"
       "CREATE TRIGGER tr AFTER DELETE ON child_c FOR EACH ROW EXECUTE FUNCTION log_gone()");
  cache_it("SELECT count(*) FROM gone");
  exec("DELETE FROM parent WHERE id = 2");
  expect_fresh("SELECT count(*) FROM gone");
  EXPECT_EQ(read("SELECT count(*) FROM gone").v(), "1");
}

TEST_F(Fk, Fk_TruncateCascadeInvalidatesChildReads) {
  cache_it("SELECT count(*) FROM child_c");
  cache_it("SELECT count(*) FROM child_n");
  exec("TRUNCATE parent CASCADE");
  expect_fresh("SELECT count(*) FROM child_c");
  expect_fresh("SELECT count(*) FROM child_n");
}

TEST_F(Rows, View_ReadInvalidatedByWriteToBaseTable) {
  exec("CREATE VIEW tv AS SELECT id, v FROM t WHERE k = 'a'");
  exec("CREATE VIEW tv2 AS SELECT count(*) AS n FROM tv");
  cache_it("SELECT id, v FROM tv ORDER BY id");
  cache_it("SELECT n FROM tv2");
  cache_it("SELECT v FROM tv WHERE id = 1");
  exec("UPDATE t SET v = 'uno' WHERE id = 1");
  expect_fresh("SELECT id, v FROM tv ORDER BY id");
  expect_fresh("SELECT v FROM tv WHERE id = 1");
  exec("INSERT INTO t VALUES (6, 'a', 'six')");
  expect_fresh("SELECT n FROM tv2");
  EXPECT_EQ(read("SELECT n FROM tv2").v(), "4");
}

TEST_F(Rows, View_WriteThroughUpdatableViewInvalidatesBaseReads) {
  exec("CREATE VIEW tv AS SELECT id, v FROM t");
  cache_it("SELECT v FROM t WHERE id = 3");
  cache_it("SELECT v FROM tv WHERE id = 3");
  exec("UPDATE tv SET v = 'tres' WHERE id = 3");
  expect_fresh("SELECT v FROM t WHERE id = 3");
  expect_fresh("SELECT v FROM tv WHERE id = 3");
}

TEST_F(Rows, Trigger_WriteIntoAuditTableInvalidatesItsReads) {
  exec("CREATE TABLE audit (n serial, note text);"
       "CREATE FUNCTION log_t() RETURNS trigger LANGUAGE plpgsql AS "
       "$$BEGIN INSERT INTO audit(note) VALUES (NEW.v); RETURN NEW; END$$;"
       "CREATE TRIGGER tr AFTER INSERT OR UPDATE ON t FOR EACH ROW EXECUTE FUNCTION log_t()");
  cache_it("SELECT count(*) FROM audit");
  cache_it("SELECT note FROM audit WHERE note = 'six'");
  exec("INSERT INTO t VALUES (6, 'c', 'six')");
  expect_fresh("SELECT count(*) FROM audit");
  expect_fresh("SELECT note FROM audit WHERE note = 'six'");
  cache_it("SELECT count(*) FROM audit");
  exec("UPDATE t SET v = 'SIX' WHERE id = 6");
  expect_fresh("SELECT count(*) FROM audit");
  EXPECT_EQ(read("SELECT count(*) FROM audit").v(), "2");
}

class Partitions : public PqxxTest {
 protected:
  void SetUp() override {
    PqxxTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    exec("CREATE TABLE m (id int, region text, v text) PARTITION BY LIST (region);"
         "CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu');"
         "CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us');"
         // No primary key: the change stream's FOR ALL TABLES publication makes UPDATE
         // and DELETE fail on a table without a replica identity.
         "ALTER TABLE m_eu REPLICA IDENTITY FULL; ALTER TABLE m_us REPLICA IDENTITY FULL;"
         "INSERT INTO m VALUES (1, 'eu', 'a'), (2, 'us', 'b')");
  }
};

TEST_F(Partitions, Partition_WriteIntoPartitionInvalidatesParentRead) {
  cache_it("SELECT count(*) FROM m");
  cache_it("SELECT v FROM m WHERE id = 3");
  exec("INSERT INTO m_eu VALUES (3, 'eu', 'c')");
  expect_fresh("SELECT count(*) FROM m");
  expect_fresh("SELECT v FROM m WHERE id = 3");
}

TEST_F(Partitions, Partition_WriteIntoParentInvalidatesPartitionRead) {
  cache_it("SELECT count(*) FROM m_eu");
  cache_it("SELECT v FROM m_eu WHERE id = 1");
  cache_it("SELECT count(*) FROM m_us");
  exec("INSERT INTO m VALUES (4, 'eu', 'd')");
  expect_fresh("SELECT count(*) FROM m_eu");
  exec("UPDATE m SET v = 'A' WHERE id = 1");
  expect_fresh("SELECT v FROM m_eu WHERE id = 1");
  exec("UPDATE m SET region = 'us' WHERE id = 1");  // moves a row across partitions
  expect_fresh("SELECT count(*) FROM m_us");
  EXPECT_EQ(read("SELECT count(*) FROM m_us").v(), "2");
}

TEST_F(PqxxTest, Inheritance_WritesToChildAndParentInvalidateEachOther) {
  exec("CREATE TABLE base (id int, v text);"
       "CREATE TABLE sub (extra int) INHERITS (base);"
       // No primary key: see Partitions.
       "ALTER TABLE base REPLICA IDENTITY FULL; ALTER TABLE sub REPLICA IDENTITY FULL;"
       "INSERT INTO base VALUES (1, 'b1'); INSERT INTO sub VALUES (2, 's2', 0)");
  cache_it("SELECT count(*) FROM base");
  cache_it("SELECT count(*) FROM ONLY base");
  cache_it("SELECT v FROM sub WHERE id = 2");
  exec("INSERT INTO sub VALUES (3, 's3', 0)");
  expect_fresh("SELECT count(*) FROM base");
  EXPECT_EQ(read("SELECT count(*) FROM base").v(), "3");
  exec("UPDATE base SET v = 'S2' WHERE id = 2");
  expect_fresh("SELECT v FROM sub WHERE id = 2");
  EXPECT_EQ(read("SELECT v FROM sub WHERE id = 2").v(), "S2");
  EXPECT_EQ(read("SELECT count(*) FROM ONLY base").v(), "1");
}

// ---- Security context and name resolution -------------------------------------------

TEST_F(PqxxTest, Rls_ResultsDifferPerRoleAndAreNeverCached) {
  std::string r1 = role("r1"), r2 = role("r2");
  exec("CREATE ROLE " + r1 + "; CREATE ROLE " + r2);
  exec("CREATE TABLE docs (id int PRIMARY KEY, owner text, body text);"
       "INSERT INTO docs VALUES (1, '" + r1 + "', 'mine-1'), (2, '" + r2 + "', 'mine-2');"
       "ALTER TABLE docs ENABLE ROW LEVEL SECURITY;"
       "CREATE POLICY own ON docs USING (owner = current_user);"
       "GRANT USAGE ON SCHEMA " + schema_ + " TO " + r1 + ", " + r2 + ";"
       "GRANT SELECT ON docs TO " + r1 + ", " + r2);
  const std::string q = "SELECT body FROM docs ORDER BY id";
  for (int round = 0; round < 2; ++round) {
    exec("SET ROLE " + r1);
    outcome a = read(q);
    EXPECT_EQ(a.v(), "mine-1") << a;
    EXPECT_EQ(a.r.size(), 1u);
    EXPECT_TRUE(a.not_cached(uncacheable_reason::row_security)) << a;
    exec("SET ROLE " + r2);
    outcome b = read(q);
    EXPECT_EQ(b.v(), "mine-2") << b;
    EXPECT_TRUE(b.not_cached(uncacheable_reason::row_security)) << b;
    exec("RESET ROLE");
    outcome c = read(q);
    EXPECT_EQ(c.r.size(), 2u) << "the superuser bypasses RLS" << c;
  }
  qcache::explanation e = conn_->explain(q);
  EXPECT_FALSE(e.cacheable);
  EXPECT_EQ(e.reason, "row_security") << e.to_string();
  EXPECT_EQ(cache_->stats().entries, 0u);
}

TEST_F(Rows, SetRole_PermissionErrorPassesThroughAfterOtherRoleCached) {
  std::string r1 = role("reader"), r2 = role("other");
  exec("CREATE ROLE " + r1 + "; CREATE ROLE " + r2 + ";"
       "GRANT USAGE ON SCHEMA " + schema_ + " TO " + r1 + ", " + r2 + ";"
       "GRANT SELECT ON t TO " + r1);
  const std::string q = "SELECT v FROM t WHERE id = 1";
  exec("SET ROLE " + r1);
  outcome a = read(q);
  EXPECT_TRUE(a.stored()) << a;
  EXPECT_TRUE(read(q).hit());
  std::string plain_what;
  {
    pqxx::connection c(conninfo_ + " options='-c search_path=" + schema_ + "'");
    pqxx::nontransaction tx(c);
    tx.exec("SET ROLE " + r2);
    try {
      tx.exec(q);
    } catch (const pqxx::insufficient_privilege& e) {
      plain_what = e.what();
    }
  }
  ASSERT_NE(plain_what, "");
  exec("SET ROLE " + r2);
  for (int i = 0; i < 2; ++i) {
    auto before = cache_->stats();
    try {
      read(q);
      ADD_FAILURE() << "a result cached for " << r1 << " was served to " << r2;
    } catch (const pqxx::insufficient_privilege& e) {
      EXPECT_EQ(std::string(e.what()), plain_what);
      EXPECT_EQ(e.query(), q);
    }
    EXPECT_EQ(cache_->stats().hits, before.hits);
  }
  exec("SET ROLE " + r1);
  EXPECT_TRUE(read(q).hit()) << "the entry of " << r1 << " is still valid for " << r1;
  exec("RESET ROLE");
  outcome su = read(q);
  EXPECT_EQ(su.v(), "one");
}

TEST_F(PqxxTest, SearchPath_SameNameInTwoSchemasNeverServedAcross) {
  std::string a = schema_ + "_a", b = schema_ + "_b";
  drop_schemas_.push_back(a);
  drop_schemas_.push_back(b);
  exec("CREATE SCHEMA " + a + "; CREATE SCHEMA " + b + ";"
       "CREATE TABLE " + a + ".t (id int PRIMARY KEY, v text);"
       "CREATE TABLE " + b + ".t (id int PRIMARY KEY, v text);"
       "INSERT INTO " + a + ".t VALUES (1, 'from-a'); INSERT INTO " + b + ".t VALUES (1, 'from-b')");
  const std::string q = "SELECT v FROM t WHERE id = 1";
  exec("SET search_path TO " + a);
  EXPECT_TRUE(read(q).stored());
  EXPECT_EQ(read(q).v(), "from-a");
  exec("SET search_path TO " + b);
  outcome o = read(q);
  EXPECT_FALSE(o.d.hits) << o;
  EXPECT_EQ(o.v(), "from-b");
  exec("UPDATE t SET v = 'B' WHERE id = 1");  // b.t
  EXPECT_EQ(read(q).v(), "B");
  exec("SET search_path TO " + a);
  outcome back = read(q);
  EXPECT_TRUE(back.hit()) << "a.t was not written" << back;
  EXPECT_EQ(back.v(), "from-a");
  exec("SET search_path TO " + b + ", " + a);
  EXPECT_EQ(read(q).v(), "B");
}

TEST_F(Rows, SearchPath_QualifiedAndUnqualifiedNamesShareInvalidation) {
  cache_it("SELECT v FROM " + schema_ + ".t WHERE id = 1");
  cache_it("SELECT count(*) FROM t");
  exec("UPDATE " + schema_ + ".t SET v = 'x' WHERE id = 1");
  exec("INSERT INTO " + schema_ + ".t VALUES (8, 'c', 'eight')");
  expect_fresh("SELECT v FROM " + schema_ + ".t WHERE id = 1");
  expect_fresh("SELECT count(*) FROM t");
}

TEST_F(PqxxTest, Session_TimeZoneIsPartOfTheKey) {
  exec("CREATE TABLE ts (id int PRIMARY KEY, at timestamptz);"
       "INSERT INTO ts VALUES (1, '2024-01-01 12:00:00+00')");
  const std::string q = "SELECT at::text FROM ts WHERE id = 1";
  exec("SET TimeZone = 'UTC'");
  EXPECT_EQ(read(q).v(), "2024-01-01 12:00:00+00");
  EXPECT_TRUE(read(q).hit());
  exec("SET TimeZone = 'Asia/Tokyo'");
  outcome o = read(q);
  EXPECT_FALSE(o.d.hits) << o;
  EXPECT_EQ(o.v(), "2024-01-01 21:00:00+09");
}

TEST_F(PqxxTest, SearchPath_SetLocalAndRolledBackSetRevertAtTransactionEnd) {
  std::string a = schema_ + "_a", b = schema_ + "_b";
  drop_schemas_.push_back(a);
  drop_schemas_.push_back(b);
  exec("CREATE SCHEMA " + a + "; CREATE SCHEMA " + b + ";"
       "CREATE TABLE " + a + ".t (v text); CREATE TABLE " + b + ".t (v text);"
       "INSERT INTO " + a + ".t VALUES ('from-a'); INSERT INTO " + b + ".t VALUES ('from-b')");
  const std::string q = "SELECT v FROM t";
  exec("SET search_path TO " + a);
  cache_it(q);
  {
    qcache::pqxx::work tx(*conn_);
    tx.exec("SET LOCAL search_path TO " + b);
    EXPECT_EQ(read_in(tx, q).v(), "from-b");
    EXPECT_EQ(read_in(tx, q).v(), "from-b");
    tx.commit();
  }
  EXPECT_EQ(read(q).v(), "from-a") << "SET LOCAL ended with the transaction";
  exec("BEGIN");
  exec("SET search_path TO " + b);
  EXPECT_EQ(read(q).v(), "from-b");
  exec("ROLLBACK");
  EXPECT_EQ(read(q).v(), "from-a") << "a SET rolled back is undone";
  read("SELECT set_config('search_path', '" + b + "', false)");
  EXPECT_EQ(read(q).v(), "from-b") << "set_config() changes the session like SET";
  exec("RESET ALL");
  exec("SET search_path TO " + a);
  EXPECT_TRUE(read(q).hit());
}

TEST_F(PqxxTest, TempTable_SameNameOnTwoConnectionsNeverShared) {
  qcache::pqxx::connection& other = another();
  exec("CREATE TEMP TABLE tt (v text); INSERT INTO tt VALUES ('mine')");
  exec_on(other, "CREATE TEMP TABLE tt (v text); INSERT INTO tt VALUES ('theirs')");
  for (int i = 0; i < 2; ++i) {
    outcome a = read("SELECT v FROM tt");
    outcome b = read_on(other, "SELECT v FROM tt");
    EXPECT_EQ(a.v(), "mine");
    EXPECT_EQ(b.v(), "theirs");
    EXPECT_TRUE(a.not_cached(uncacheable_reason::system_relation)) << a;
  }
}

TEST_F(Rows, Session_ResetAllAndDiscardAllRestoreTheDefaultContext) {
  const std::string q = "SELECT '2024-01-01 12:00:00+00'::timestamptz::text, v FROM t WHERE id = 1";
  exec("SET TimeZone = 'UTC'");
  std::string utc = read(q).v();
  exec("SET TimeZone = 'Asia/Tokyo'");
  std::string tokyo = read(q).v();
  EXPECT_NE(utc, tokyo);
  exec("RESET ALL");
  EXPECT_EQ(read(q).v(), direct(q)[0][0].c_str());
  exec("SET TimeZone = 'Asia/Tokyo'");
  EXPECT_EQ(read(q).v(), tokyo);
  exec("DISCARD ALL");
  EXPECT_EQ(read(q).v(), direct(q)[0][0].c_str());
}

TEST_F(Rows, Grant_RevokeAfterCachedReadIsEnforced) {
  std::string r1 = role("rev");
  exec("CREATE ROLE " + r1 + "; GRANT USAGE ON SCHEMA " + schema_ + " TO " + r1 +
       "; GRANT SELECT ON t TO " + r1);
  const std::string q = "SELECT v FROM t WHERE id = 1";
  exec("SET ROLE " + r1);
  cache_it(q);
  exec("RESET ROLE");
  qcache::pqxx::connection& admin_conn = another();
  exec_on(admin_conn, "REVOKE SELECT ON t FROM " + r1);
  exec("SET ROLE " + r1);
  EXPECT_THROW(read(q), pqxx::insufficient_privilege);
  exec("RESET ROLE");
}

TEST_F(Rows, Rls_EnabledAfterCachingIsEnforced) {
  std::string r1 = role("late");
  exec("CREATE ROLE " + r1 + "; GRANT USAGE ON SCHEMA " + schema_ + " TO " + r1 +
       "; GRANT SELECT ON t TO " + r1);
  const std::string q = "SELECT count(*) FROM t";
  exec("SET ROLE " + r1);
  cache_it(q);
  exec("RESET ROLE");
  exec("ALTER TABLE t ENABLE ROW LEVEL SECURITY;"
       "CREATE POLICY only_a ON t USING (k = 'a')");
  exec("SET ROLE " + r1);
  outcome o = read(q);
  EXPECT_EQ(o.v(), "3") << o;
  EXPECT_TRUE(o.not_cached(uncacheable_reason::row_security)) << o;
  exec("RESET ROLE");
}

TEST_F(Rows, Session_SetSessionAuthorizationChangesTheKey) {
  std::string r1 = role("auth");
  exec("CREATE ROLE " + r1 + "; GRANT USAGE ON SCHEMA " + schema_ + " TO " + r1);
  const std::string q = "SELECT v FROM t WHERE id = 1";
  cache_it(q);
  exec("SET SESSION AUTHORIZATION " + r1);
  EXPECT_THROW(read(q), pqxx::insufficient_privilege);
  exec("RESET SESSION AUTHORIZATION");
  EXPECT_TRUE(read(q).hit());
}

// ---- Nondeterminism ---------------------------------------------------------------

TEST_F(PqxxTest, Volatility_NowAndCurrentTimestampAreNeverCached) {
  for (const char* q : {"SELECT now()", "SELECT CURRENT_TIMESTAMP", "SELECT localtimestamp"}) {
    for (int i = 0; i < 2; ++i) {
      outcome o = read(q);
      EXPECT_TRUE(o.not_cached(uncacheable_reason::stable_function)) << q << o;
    }
  }
}

TEST_F(PqxxTest, Volatility_RandomClockTimestampAndNextvalDifferEveryCall) {
  exec("CREATE SEQUENCE sq");
  for (const char* q : {"SELECT random()", "SELECT clock_timestamp()", "SELECT nextval('sq')"}) {
    outcome a = read(q);
    outcome b = read(q);
    EXPECT_TRUE(a.not_cached(uncacheable_reason::volatile_function)) << q << a;
    EXPECT_TRUE(b.not_cached(uncacheable_reason::volatile_function)) << q << b;
    EXPECT_NE(a.v(), b.v()) << q;
  }
}

TEST_F(PqxxTest, Volatility_NowLiteralAndNowParameterAreNeverCached) {
  outcome a = read("SELECT 'now'::timestamptz");
  outcome b = read("SELECT 'now'::timestamptz");
  EXPECT_TRUE(a.not_cached(uncacheable_reason::time_literal)) << a;
  EXPECT_TRUE(b.not_cached(uncacheable_reason::time_literal)) << b;
  EXPECT_NE(a.v(), b.v());
  outcome c = read_params("SELECT $1::timestamptz", "now");
  outcome d = read_params("SELECT $1::timestamptz", "now");
  EXPECT_TRUE(c.not_cached(uncacheable_reason::time_literal)) << c;
  EXPECT_TRUE(d.not_cached(uncacheable_reason::time_literal)) << d;
  EXPECT_NE(c.v(), d.v());
  outcome e = read_params("SELECT $1::timestamptz", "2024-01-01 00:00:00+00");
  EXPECT_TRUE(e.stored()) << "a fixed timestamp parameter is cacheable" << e;
}

TEST_F(Rows, Function_VolatileUserFunctionThatWritesInvalidates) {
  exec("CREATE FUNCTION add_row() RETURNS int LANGUAGE sql AS "
       "$$INSERT INTO t VALUES (6, 'a', 'six'); SELECT 1$$");
  cache_it("SELECT count(*) FROM t");
  cache_it("SELECT v FROM t WHERE id = 6");
  outcome f = read("SELECT add_row()");
  EXPECT_EQ(f.d.stores, 0u) << f;
  expect_fresh("SELECT count(*) FROM t");
  expect_fresh("SELECT v FROM t WHERE id = 6");
  EXPECT_EQ(read("SELECT count(*) FROM t").v(), "6");
}

TEST_F(Rows, Function_ImmutableUserFunctionIsCacheable) {
  exec("CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2'");
  const std::string q = "SELECT twice(id) FROM t WHERE id = 2";
  EXPECT_TRUE(read(q).stored());
  outcome o = read(q);
  EXPECT_TRUE(o.hit()) << o;
  EXPECT_EQ(o.v(), "4");
}

// ---- Transactions -----------------------------------------------------------------

TEST_F(Rows, Tx_OwnWriteIsVisibleInsideAndNeverPublished) {
  const std::string q = "SELECT v FROM t WHERE id = 1";
  cache_it(q);
  qcache::pqxx::connection& other = another();
  {
    qcache::pqxx::work tx(*conn_);
    tx.exec("UPDATE t SET v = 'mine' WHERE id = 1");
    outcome in = read_in(tx, q);
    EXPECT_EQ(in.v(), "mine");
    EXPECT_TRUE(in.not_cached(uncacheable_reason::transaction_local)) << in;
    outcome in2 = read_in(tx, q);
    EXPECT_EQ(in2.v(), "mine");
    EXPECT_EQ(in2.d.stores, 0u);
    for (int i = 0; i < 2; ++i) {
      outcome o = read_on(other, q);
      EXPECT_EQ(o.v(), "one") << "another connection sees the committed value" << o;
      EXPECT_EQ(o.d.stores, 0u) << "nothing is stored while a write is in flight" << o;
    }
    tx.commit();
  }
  outcome after = read_on(other, q);
  EXPECT_EQ(after.v(), "mine") << after;
  EXPECT_FALSE(after.d.hits);
  EXPECT_EQ(read(q).v(), "mine");
}

TEST_F(Rows, Tx_RollbackRestores) {
  const std::string q = "SELECT v FROM t WHERE id = 2";
  cache_it(q);
  cache_it("SELECT count(*) FROM t");
  {
    qcache::pqxx::work tx(*conn_);
    tx.exec("UPDATE t SET v = 'gone' WHERE id = 2");
    tx.exec("INSERT INTO t VALUES (9, 'z', 'nine')");
    EXPECT_EQ(read_in(tx, q).v(), "gone");
    EXPECT_EQ(read_in(tx, "SELECT count(*) FROM t").v(), "6");
    tx.abort();
  }
  EXPECT_EQ(read(q).v(), "two");
  EXPECT_EQ(read("SELECT count(*) FROM t").v(), "5");
  {
    qcache::pqxx::work tx(*conn_);
    tx.exec("UPDATE t SET v = 'gone' WHERE id = 2");
    // destroyed without commit: libpqxx aborts
  }
  EXPECT_EQ(read(q).v(), "two");
  EXPECT_EQ(dump(read(q).r), dump(direct(q)));
}

TEST_F(Rows, Tx_RollbackToSavepointRestores) {
  const std::string q = "SELECT v FROM t WHERE id = 3";
  cache_it(q);
  {
    qcache::pqxx::work tx(*conn_);
    tx.exec("UPDATE t SET v = 'first' WHERE id = 3");
    tx.exec("SAVEPOINT s");
    tx.exec("UPDATE t SET v = 'second' WHERE id = 3");
    EXPECT_EQ(read_in(tx, q).v(), "second");
    tx.exec("ROLLBACK TO SAVEPOINT s");
    EXPECT_EQ(read_in(tx, q).v(), "first");
    tx.exec("SAVEPOINT s2");
    tx.exec("DELETE FROM t WHERE id = 3");
    EXPECT_EQ(read_in(tx, q).r.size(), 0u);
    tx.exec("RELEASE SAVEPOINT s2");
    tx.exec("SAVEPOINT s3");
    tx.exec("INSERT INTO t VALUES (3, 'a', 'third')");
    tx.exec("ROLLBACK TO SAVEPOINT s3");
    EXPECT_EQ(read_in(tx, q).r.size(), 0u);
    tx.commit();
  }
  outcome o = read(q);
  EXPECT_FALSE(o.d.hits) << o;
  EXPECT_EQ(o.r.size(), 0u);
  EXPECT_EQ(dump(o.r), dump(direct(q)));
}

TEST_F(Rows, Tx_RollbackToSavepointBySqlRestores) {
  const std::string q = "SELECT v FROM t WHERE id = 3";
  cache_it(q);
  qcache::pqxx::nontransaction tx(*conn_);
  tx.exec("BEGIN");
  tx.exec("UPDATE t SET v = 'first' WHERE id = 3");
  tx.exec("SAVEPOINT s");
  tx.exec("UPDATE t SET v = 'second' WHERE id = 3");
  EXPECT_EQ(read_in(tx, q).v(), "second");
  EXPECT_THROW(tx.exec("INSERT INTO t VALUES (1, 'dup', 'dup')"), pqxx::unique_violation);
  tx.exec("ROLLBACK TO SAVEPOINT s");
  outcome in = read_in(tx, q);
  EXPECT_EQ(in.v(), "first") << in;
  EXPECT_EQ(in.d.stores, 0u) << in;
  tx.exec("COMMIT");
  outcome o = read_in(tx, q);
  EXPECT_FALSE(o.d.hits) << o;
  EXPECT_EQ(o.v(), "first");
  EXPECT_TRUE(read_in(tx, q).hit());
}

TEST_F(Rows, Tx_ViewOverATableTheTxWroteSeesOwnWriteAndIsNotPublished) {
  exec("CREATE VIEW tv AS SELECT id, v FROM t");
  const std::string q = "SELECT v FROM tv WHERE id = 1";
  cache_it(q);
  {
    qcache::pqxx::work tx(*conn_);
    tx.exec("UPDATE t SET v = 'mine' WHERE id = 1");
    outcome o = read_in(tx, q);
    EXPECT_EQ(o.v(), "mine");
    EXPECT_TRUE(o.not_cached(uncacheable_reason::transaction_local)) << o;
    tx.abort();
  }
  outcome after = read(q);
  EXPECT_EQ(after.v(), "one") << after;
}

TEST_F(Rows, Tx_SqlBeginHoldsTheWriteUntilSqlCommit) {
  const std::string q = "SELECT v FROM t WHERE id = 2";
  qcache::pqxx::connection& b = another();
  EXPECT_TRUE(read_on(b, q).stored());
  exec("BEGIN");
  exec("UPDATE t SET v = 'deux' WHERE id = 2");
  outcome r1 = read_on(b, q);
  outcome r2 = read_on(b, q);
  EXPECT_EQ(r1.v(), "two");
  EXPECT_EQ(r2.v(), "two");
  EXPECT_EQ(r1.d.stores + r2.d.stores + r1.d.hits + r2.d.hits, 0u) << r1 << r2;
  exec("COMMIT");
  outcome after = read_on(b, q);
  EXPECT_FALSE(after.d.hits) << after;
  EXPECT_EQ(after.v(), "deux");
}

TEST_F(Rows, Tx_DeferredConstraintFailingAtCommitPassesThroughNothingStale) {
  exec("CREATE TABLE c (id int PRIMARY KEY, tid int REFERENCES t DEFERRABLE INITIALLY DEFERRED)");
  const std::string q = "SELECT v FROM t WHERE id = 1";
  cache_it(q);
  cache_it("SELECT count(*) FROM c");
  std::string plain;
  {
    pqxx::connection raw(conninfo_ + " options='-c search_path=" + schema_ + "'");
    pqxx::work tx(raw);
    tx.exec("INSERT INTO c VALUES (1, 99)");
    try {
      tx.commit();
    } catch (const std::exception& e) {
      plain = std::string(typeid(e).name()) + ": " + e.what();
    }
  }
  std::string ours;
  {
    qcache::pqxx::work tx(*conn_);
    tx.exec("UPDATE t SET v = 'never' WHERE id = 1");
    EXPECT_EQ(read_in(tx, q).v(), "never");
    tx.exec("INSERT INTO c VALUES (1, 99)");
    try {
      tx.commit();
    } catch (const std::exception& e) {
      ours = std::string(typeid(e).name()) + ": " + e.what();
    }
  }
  EXPECT_NE(plain, "");
  EXPECT_EQ(ours, plain);
  outcome o = read(q);
  EXPECT_EQ(o.v(), "one") << o;
  EXPECT_EQ(read("SELECT count(*) FROM c").v(), "0");
  EXPECT_TRUE(read(q).hit());
}

TEST_F(Rows, Tx_ReadsOfUntouchedTablesInsideWritingTxMayHit) {
  exec("CREATE TABLE u (id int PRIMARY KEY, w text); INSERT INTO u VALUES (1, 'u1')");
  cache_it("SELECT w FROM u WHERE id = 1");
  qcache::pqxx::work tx(*conn_);
  tx.exec("UPDATE t SET v = 'x' WHERE id = 1");
  outcome o = read_in(tx, "SELECT w FROM u WHERE id = 1");
  EXPECT_TRUE(o.hit()) << o;
  EXPECT_EQ(o.v(), "u1");
  tx.commit();
}

TEST_F(Rows, Tx_ReadOnlyWorkReadsHitAndStore) {
  const std::string q = "SELECT v FROM t WHERE id = 4";
  {
    qcache::pqxx::work tx(*conn_);
    EXPECT_TRUE(read_in(tx, q).stored());
    EXPECT_TRUE(read_in(tx, q).hit());
    tx.commit();
  }
  EXPECT_TRUE(read(q).hit());
}

TEST_F(Rows, Tx_RepeatableReadBypassesAndSeesItsSnapshot) {
  const std::string q = "SELECT v FROM t WHERE id = 1";
  cache_it(q);
  qcache::pqxx::connection& other = another();
  {
    qcache::pqxx::transaction<pqxx::repeatable_read> tx(*conn_);
    outcome a = read_in(tx, q);
    EXPECT_TRUE(a.not_cached(uncacheable_reason::isolation)) << a;
    EXPECT_EQ(a.v(), "one");
    exec_on(other, "UPDATE t SET v = 'uno' WHERE id = 1");
    EXPECT_EQ(read_on(other, q).v(), "uno");
    EXPECT_TRUE(read_on(other, q).hit());
    outcome b = read_in(tx, q);
    EXPECT_TRUE(b.not_cached(uncacheable_reason::isolation)) << b;
    EXPECT_EQ(b.v(), "one") << "the snapshot, not the newer cached value";
    tx.commit();
  }
  EXPECT_EQ(read(q).v(), "uno");
}

TEST_F(Rows, Tx_SerializableBypassesTheCache) {
  const std::string q = "SELECT v FROM t WHERE id = 1";
  cache_it(q);
  qcache::pqxx::connection& other = another();
  qcache::pqxx::transaction<pqxx::serializable> tx(*conn_);
  outcome a = read_in(tx, q);
  EXPECT_TRUE(a.not_cached(uncacheable_reason::isolation)) << a;
  exec_on(other, "UPDATE t SET v = 'uno' WHERE id = 1");
  read_on(other, q);
  outcome b = read_in(tx, q);
  EXPECT_TRUE(b.not_cached(uncacheable_reason::isolation)) << b;
  EXPECT_EQ(b.v(), "one");
  tx.commit();
}

TEST_F(Rows, Tx_IsolationSetBySqlBypassesTheCache) {
  const std::string q = "SELECT v FROM t WHERE id = 1";
  cache_it(q);
  qcache::pqxx::nontransaction tx(*conn_);
  tx.exec("BEGIN ISOLATION LEVEL REPEATABLE READ");
  outcome a = read_in(tx, q);
  EXPECT_TRUE(a.not_cached(uncacheable_reason::isolation)) << a;
  tx.exec("COMMIT");
  tx.exec("BEGIN");
  tx.exec("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE");
  outcome b = read_in(tx, q);
  EXPECT_TRUE(b.not_cached(uncacheable_reason::isolation)) << b;
  tx.exec("COMMIT");
  EXPECT_TRUE(read_in(tx, q).hit());
}

TEST_F(Rows, Tx_ConcurrentReaderDuringUncommittedWrite) {
  const std::string q = "SELECT v FROM t WHERE id = 5";
  qcache::pqxx::connection& b = another();
  EXPECT_TRUE(read_on(b, q).stored());
  {
    qcache::pqxx::work a(*conn_);
    a.exec("UPDATE t SET v = 'cinq' WHERE id = 5");
    outcome r1 = read_on(b, q);
    outcome r2 = read_on(b, q);
    EXPECT_EQ(r1.v(), "five");
    EXPECT_EQ(r2.v(), "five");
    EXPECT_EQ(r1.d.stores + r2.d.stores, 0u) << r1 << r2;
    EXPECT_EQ(r1.d.hits + r2.d.hits, 0u) << "the entry is invalid once the write began";
    a.commit();
  }
  outcome after = read_on(b, q);
  EXPECT_FALSE(after.d.hits) << after;
  EXPECT_EQ(after.v(), "cinq");
  EXPECT_TRUE(read_on(b, q).hit());
}

TEST_F(Rows, Tx_SerializationFailureAtCommitPassesThroughNothingStale) {
  exec("CREATE TABLE dr (id int PRIMARY KEY, on_call bool);"
       "INSERT INTO dr VALUES (1, true), (2, true)");
  const std::string q = "SELECT count(*) FROM dr WHERE on_call";
  cache_it(q);
  qcache::pqxx::connection& other = another();
  bool failed = false;
  {
    qcache::pqxx::transaction<pqxx::serializable> t1(*conn_);
    qcache::pqxx::transaction<pqxx::serializable> t2(other);
    EXPECT_EQ(read_in(t1, q).v(), "2");
    EXPECT_EQ(read_in(t2, q).v(), "2");
    t1.exec("UPDATE dr SET on_call = false WHERE id = 1");
    t2.exec("UPDATE dr SET on_call = false WHERE id = 2");
    t1.commit();
    try {
      t2.commit();
    } catch (const pqxx::serialization_failure& e) {
      failed = true;
      EXPECT_NE(std::string(e.what()).find("could not serialize"), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(failed) << "write skew under SERIALIZABLE must fail the second COMMIT";
  outcome o = read(q);
  EXPECT_FALSE(o.d.hits) << o;
  EXPECT_EQ(dump(o.r), dump(direct(q)));
  EXPECT_EQ(o.v(), "1");
  EXPECT_EQ(read_on(other, "SELECT on_call FROM dr WHERE id = 2").v(), "t");
}

// ---- Errors -----------------------------------------------------------------------

TEST_F(Rows, Errors_SyntaxErrorPassesThroughUnchanged) {
  const std::string bad = "SELEC v FROM t";
  std::string plain_what, plain_state;
  try {
    direct(bad);
  } catch (const pqxx::syntax_error& e) {
    plain_what = e.what();
    plain_state = e.sqlstate();
  }
  ASSERT_EQ(plain_state, "42601");
  for (int i = 0; i < 2; ++i) {
    try {
      read(bad);
      ADD_FAILURE() << "no error";
    } catch (const pqxx::syntax_error& e) {
      EXPECT_EQ(e.sqlstate(), "42601");
      EXPECT_EQ(std::string(e.what()), plain_what);
      EXPECT_EQ(e.query(), bad);
    }
  }
  EXPECT_EQ(cache_->stats().entries, 0u);
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 1").v(), "one");
}

TEST_F(Rows, Errors_UndefinedTablePassesThrough) {
  for (int i = 0; i < 2; ++i) {
    EXPECT_THROW(read("SELECT * FROM no_such_table"), pqxx::undefined_table);
    EXPECT_THROW(read_params("SELECT * FROM no_such_table WHERE id = $1", 1),
                 pqxx::undefined_table);
  }
  EXPECT_EQ(cache_->stats().stores, 0u);
  exec("CREATE TABLE no_such_table (id int); INSERT INTO no_such_table VALUES (1)");
  EXPECT_EQ(read("SELECT * FROM no_such_table").v(), "1");
}

TEST_F(Rows, Errors_ConstraintViolationPassesThroughAndInvalidatesNothingWrongly) {
  cache_it("SELECT count(*) FROM t");
  try {
    exec("INSERT INTO t VALUES (1, 'dup', 'dup')");
    ADD_FAILURE() << "no error";
  } catch (const pqxx::unique_violation& e) {
    EXPECT_EQ(e.sqlstate(), "23505");
  }
  outcome o = read("SELECT count(*) FROM t");
  EXPECT_EQ(o.v(), "5");
  EXPECT_EQ(dump(o.r), dump(direct("SELECT count(*) FROM t")));
  exec("INSERT INTO t VALUES (6, 'c', 'six')");
  EXPECT_EQ(read("SELECT count(*) FROM t").v(), "6");
}

TEST_F(Rows, Errors_AnErrorIsNeverCached) {
  auto before = cache_->stats();
  for (int i = 0; i < 3; ++i) {
    qcache::pqxx::nontransaction tx(*conn_);
    EXPECT_THROW(tx.exec_params("SELECT 10 / $1::int", 0), pqxx::data_exception);
  }
  auto d = minus(cache_->stats(), before);
  EXPECT_EQ(d.stores, 0u);
  EXPECT_EQ(d.hits, 0u);
  EXPECT_EQ(read_params("SELECT 10 / $1::int", 2).v(), "5");
}

TEST_F(Rows, Errors_FailingMidResultIsNeverCached) {
  const std::string q = "SELECT 10 / (id - 3) FROM t ORDER BY id";
  for (int i = 0; i < 2; ++i) EXPECT_THROW(read(q), pqxx::data_exception);
  EXPECT_EQ(cache_->stats().stores, 0u);
  exec("DELETE FROM t WHERE id = 3");
  EXPECT_EQ(read(q).r.size(), 4u);
}

TEST_F(Rows, Errors_InsideTransactionPassThroughAndTransactionRecovers) {
  cache_it("SELECT v FROM t WHERE id = 1");
  // libpqxx closes a transaction after an error: the next statement throws usage_error.
  {
    qcache::pqxx::work tx(*conn_);
    EXPECT_THROW(tx.exec("SELECT * FROM no_such_table"), pqxx::undefined_table);
    EXPECT_THROW(tx.exec("SELECT v FROM t WHERE id = 1"), pqxx::usage_error);
  }
  {
    pqxx::connection c(conninfo_ + " options='-c search_path=" + schema_ + "'");
    pqxx::work tx(c);
    EXPECT_THROW(tx.exec("SELECT * FROM no_such_table"), pqxx::undefined_table);
    EXPECT_THROW(tx.exec("SELECT v FROM t WHERE id = 1"), pqxx::usage_error);
  }
  EXPECT_TRUE(read("SELECT v FROM t WHERE id = 1").hit());
}

TEST_F(Rows, Cursor_FetchIsNeverCached) {
  qcache::pqxx::work tx(*conn_);
  tx.exec("DECLARE c CURSOR FOR SELECT id FROM t ORDER BY id");
  outcome a = read_in(tx, "FETCH 2 FROM c");
  outcome b = read_in(tx, "FETCH 2 FROM c");
  EXPECT_EQ(std::string(a.r[0][0].c_str()), "1");
  EXPECT_EQ(std::string(b.r[0][0].c_str()), "3");
  EXPECT_EQ(a.d.stores + b.d.stores + a.d.hits + b.d.hits, 0u);
  tx.commit();
}

// ---- Entry points -----------------------------------------------------------------

TEST_F(Rows, Prepared_WriteInvalidates) {
  conn_->prepare("get", "SELECT v FROM t WHERE id = $1");
  conn_->prepare("set", "UPDATE t SET v = $2 WHERE id = $1");
  auto get = [&](int id) {
    return observe([&] {
      qcache::pqxx::nontransaction tx(*conn_);
      return tx.exec_prepared("get", id);
    });
  };
  get(1);
  get(2);
  ASSERT_TRUE(get(1).hit());
  {
    qcache::pqxx::nontransaction tx(*conn_);
    tx.exec_prepared0("set", 1, "UNO");
  }
  outcome o = get(1);
  EXPECT_FALSE(o.d.hits) << o;
  EXPECT_EQ(o.v(), "UNO");
  EXPECT_TRUE(get(2).hit());
  conn_->unprepare("get");
  qcache::pqxx::nontransaction tx(*conn_);
  EXPECT_THROW(tx.exec_prepared("get", 1), pqxx::argument_error);  // as libpqxx 6.4
}

TEST_F(Rows, Prepared_StatementPreparedBehindQcachesBackRunsUncachedAndFlushes) {
  conn_->raw().prepare("raw_set", "UPDATE t SET v = 'raw' WHERE id = 1");
  cache_it("SELECT v FROM t WHERE id = 1");
  {
    qcache::pqxx::nontransaction tx(*conn_);
    tx.exec_prepared("raw_set");
  }
  expect_fresh("SELECT v FROM t WHERE id = 1");
}

TEST_F(Rows, Exec1Exec0ExecN_BehaveAsInLibpqxx) {
  qcache::pqxx::nontransaction tx(*conn_);
  EXPECT_EQ(std::string(tx.exec1("SELECT v FROM t WHERE id = 1")[0].c_str()), "one");
  EXPECT_EQ(std::string(tx.exec1("SELECT v FROM t WHERE id = 1")[0].c_str()), "one");  // hit
  EXPECT_EQ(tx.exec_n(2, "SELECT v FROM t WHERE k = 'b'").size(), 2u);
  EXPECT_TRUE(tx.exec0("UPDATE t SET v = 'x' WHERE id = 99").empty());
  EXPECT_THROW(tx.exec1("SELECT v FROM t WHERE k = 'b'"), pqxx::unexpected_rows);
  EXPECT_THROW(tx.exec1("SELECT v FROM t WHERE k = 'b'"), pqxx::unexpected_rows);  // a hit too
  EXPECT_THROW(tx.exec0("SELECT v FROM t WHERE id = 1"), pqxx::unexpected_rows);
  EXPECT_EQ(std::string(tx.exec_params1("SELECT v FROM t WHERE id = $1", 2)[0].c_str()), "two");
  EXPECT_THROW(tx.exec_params_n(3, "SELECT v FROM t WHERE id = $1", 2), pqxx::unexpected_rows);
}

// What libpqxx throws for `f` on a plain connection, and through qcache, as "type: what".
template <class Plain, class Cached>
std::pair<std::string, std::string> both_errors(Plain&& plain, Cached&& cached) {
  auto run = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const std::exception& e) {
      return std::string(typeid(e).name()) + ": " + e.what();
    }
    return "no exception";
  };
  return {run(plain), run(cached)};
}

TEST_F(Rows, Transparency_UnexpectedRowsMessagesMatchLibpqxx) {
  pqxx::connection raw(conninfo_ + " options='-c search_path=" + schema_ + "'");
  raw.prepare("ps", "SELECT v FROM t WHERE k = $1");
  conn_->prepare("ps", "SELECT v FROM t WHERE k = $1");
  pqxx::nontransaction p(raw);
  qcache::pqxx::nontransaction c(*conn_);
  for (int round = 0; round < 2; ++round) {  // a miss, then a hit
    auto [a, b] = both_errors([&] { p.exec1("SELECT v FROM t WHERE k = 'b'"); },
                              [&] { c.exec1("SELECT v FROM t WHERE k = 'b'"); });
    EXPECT_EQ(a, b);
    std::tie(a, b) = both_errors([&] { p.exec_n(3, "SELECT v FROM t WHERE k = 'b'", "desc"); },
                                 [&] { c.exec_n(3, "SELECT v FROM t WHERE k = 'b'", "desc"); });
    EXPECT_EQ(a, b);
    std::tie(a, b) = both_errors([&] { p.exec_params0("SELECT v FROM t WHERE k = $1", "b"); },
                                 [&] { c.exec_params0("SELECT v FROM t WHERE k = $1", "b"); });
    EXPECT_EQ(a, b);
    std::tie(a, b) = both_errors([&] { p.exec_prepared1("ps", "b"); },
                                 [&] { c.exec_prepared1("ps", "b"); });
    EXPECT_EQ(a, b);
    EXPECT_NE(a, "no exception");
  }
}

TEST_F(Rows, Transparency_ExecAfterCommitOrAbortThrowsLikeLibpqxx) {
  const std::string q = "SELECT v FROM t WHERE id = 1";
  cache_it(q);
  pqxx::connection raw(conninfo_ + " options='-c search_path=" + schema_ + "'");
  {
    pqxx::work p(raw);
    p.commit();
    qcache::pqxx::work c(*conn_);
    c.commit();
    auto [a, b] = both_errors([&] { p.exec(q); }, [&] { c.exec(q); });
    EXPECT_EQ(a, b);
    EXPECT_NE(a, "no exception");
    std::tie(a, b) = both_errors([&] { p.exec_params("SELECT v FROM t WHERE id = $1", 1); },
                                 [&] { c.exec_params("SELECT v FROM t WHERE id = $1", 1); });
    EXPECT_EQ(a, b);
  }
  {
    pqxx::nontransaction p(raw);
    p.abort();
    qcache::pqxx::nontransaction c(*conn_);
    c.abort();
    auto [a, b] = both_errors([&] { p.exec(q); }, [&] { c.exec(q); });
    EXPECT_EQ(a, b);
  }
  EXPECT_TRUE(read(q).hit());
}

TEST_F(Rows, Annotated_DependsOnTableIsInvalidatedByItsWrites) {
  exec("CREATE TABLE u (id int PRIMARY KEY); INSERT INTO u VALUES (1)");
  auto q = [&] {
    return observe([&] {
      qcache::pqxx::nontransaction tx(*conn_);
      return tx.exec(qcache::pqxx::annotated{"SELECT v FROM t WHERE id = 1"}.depends_on("u"));
    });
  };
  EXPECT_TRUE(q().stored());
  EXPECT_TRUE(q().hit());
  exec("INSERT INTO u VALUES (2)");
  outcome o = q();
  EXPECT_FALSE(o.d.hits) << o;
}

TEST_F(Rows, Annotated_DependsOnRowIsInvalidatedByInvalidateRow) {
  auto q = [&](const std::string& user) {
    return observe([&] {
      qcache::pqxx::nontransaction tx(*conn_);
      return tx.exec_params(
          qcache::pqxx::annotated{"SELECT v FROM t WHERE id = 1 AND $1::text <> ''"}.depends_on(
              "accounts", "name", user),
          user);
    });
  };
  EXPECT_TRUE(q("ann").stored());
  EXPECT_TRUE(q("bob").stored());
  conn_->invalidate_row("accounts", "name", "ann");
  EXPECT_FALSE(q("ann").d.hits);
  EXPECT_TRUE(q("bob").hit());
}

TEST_F(Rows, Annotated_UncacheableIsNeverStored) {
  for (int i = 0; i < 2; ++i) {
    outcome o = observe([&] {
      qcache::pqxx::nontransaction tx(*conn_);
      return tx.exec(qcache::pqxx::annotated{"SELECT v FROM t WHERE id = 1"}.uncacheable());
    });
    EXPECT_TRUE(o.not_cached(uncacheable_reason::annotated)) << o;
    EXPECT_EQ(o.v(), "one");
  }
}

TEST_F(RowsWithoutStream, Manual_InvalidateTableAfterWriteBehindQcachesBack) {
  cache_it("SELECT v FROM t WHERE id = 1");
  cache_it("SELECT count(*) FROM t");
  direct("UPDATE t SET v = 'outside' WHERE id = 1");
  EXPECT_TRUE(read("SELECT v FROM t WHERE id = 1").hit()) << "documented: not seen";
  conn_->invalidate_table("t");
  outcome o = read("SELECT v FROM t WHERE id = 1");
  EXPECT_FALSE(o.d.hits);
  EXPECT_EQ(o.v(), "outside");
  EXPECT_FALSE(read("SELECT count(*) FROM t").d.hits);
}

TEST_F(Rows, Manual_InvalidateRowInvalidatesThatRowOnly) {
  cache_it("SELECT v FROM t WHERE id = 4");
  cache_it("SELECT v FROM t WHERE id = 5");
  direct("UPDATE t SET v = 'outside' WHERE id = 4");
  conn_->invalidate_row("t", "id", "4");
  outcome o = read("SELECT v FROM t WHERE id = 4");
  EXPECT_FALSE(o.d.hits) << o;
  EXPECT_EQ(o.v(), "outside");
  expect_hit("SELECT v FROM t WHERE id = 5");
}

TEST_F(Rows, Explain_PointReadIsCacheableWithPredicateTag) {
  qcache::explanation e = conn_->explain("SELECT v FROM t WHERE id = $1");
  EXPECT_TRUE(e.cacheable) << e.to_string();
  EXPECT_EQ(e.kind, "read");
  ASSERT_EQ(e.reads.size(), 1u);
  EXPECT_EQ(e.reads[0], schema_ + ".t");
  EXPECT_NE(std::find(e.tags.begin(), e.tags.end(), "predicate " + schema_ + ".t.id = $1"),
            e.tags.end())
      << e.to_string();
}

TEST_F(Rows, Explain_RandomIsNotCacheableWithReason) {
  qcache::explanation e = conn_->explain("SELECT v FROM t WHERE random() < 0.5");
  EXPECT_FALSE(e.cacheable);
  EXPECT_EQ(e.reason, "volatile_function") << e.to_string();
  qcache::explanation w = conn_->explain("UPDATE t SET v = 'x' WHERE id = 1");
  EXPECT_FALSE(w.cacheable);
  EXPECT_EQ(w.writes, std::vector<std::string>{schema_ + ".t"}) << w.to_string();
}

// ---- Concurrency ------------------------------------------------------------------

TEST_F(Rows, StaleSet_WriteBetweenReadAndStoreIsNeverServed) {
  const std::string q = "SELECT v FROM t WHERE id = 1";
  bool once = false;
  outcome a = read_racing_write(q, "UPDATE t SET v = 'later' WHERE id = 1", once);
  EXPECT_TRUE(once);
  EXPECT_EQ(a.v(), "one");
  EXPECT_EQ(a.d.stores, 0u) << a;
  EXPECT_EQ(a.d.stores_dropped_stale, 1u) << a;
  outcome b = read(q);
  EXPECT_FALSE(b.d.hits) << b;
  EXPECT_EQ(b.v(), "later");
}

TEST_F(Rows, StaleSet_WriteTransactionOpenedDuringReadDropsTheStore) {
  const std::string q = "SELECT v FROM t WHERE id = 2";
  qcache::pqxx::connection& writer = another();
  std::unique_ptr<qcache::pqxx::work> open_tx;
  cache_->set_test_hook_before_store([&] {
    if (open_tx) return;
    open_tx = std::make_unique<qcache::pqxx::work>(writer);
    open_tx->exec("UPDATE t SET v = 'pending' WHERE id = 2");
  });
  outcome a = read(q);
  cache_->set_test_hook_before_store(nullptr);
  ASSERT_TRUE(open_tx);
  EXPECT_EQ(a.v(), "two");
  EXPECT_EQ(a.d.stores, 0u) << a;
  outcome b = read(q);
  EXPECT_EQ(b.v(), "two");
  EXPECT_EQ(b.d.stores + b.d.hits, 0u) << "uncommitted write in flight" << b;
  open_tx->commit();
  open_tx.reset();
  outcome c = read(q);
  EXPECT_FALSE(c.d.hits) << c;
  EXPECT_EQ(c.v(), "pending");
}

TEST_F(Rows, StaleSet_FollowerOfAFlightThatRacedAWriteReadsFresh) {
  const std::string q = "SELECT v FROM t WHERE id = 3";
  qcache::pqxx::connection& writer = another();
  auto follower_conn = connect();
  std::string follower_saw;
  std::thread follower;
  bool once = false;
  cache_->set_test_hook_before_store([&] {
    if (once) return;
    once = true;
    exec_on(writer, "UPDATE t SET v = 'newer' WHERE id = 3");  // completes before...
    follower = std::thread([&] {  // ...this reader starts
      qcache::pqxx::nontransaction tx(*follower_conn);
      follower_saw = tx.exec(q)[0][0].c_str();
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let it join the flight
  });
  outcome leader = read(q);
  cache_->set_test_hook_before_store(nullptr);
  follower.join();
  EXPECT_EQ(leader.v(), "three");
  EXPECT_EQ(follower_saw, "newer") << "a read that started after a completed write saw older data";
  EXPECT_EQ(read(q).v(), "newer");
}

TEST_F(Rows, Threads_ReaderNeverSeesValueOlderThanLastCompletedWrite) {
  exec("UPDATE t SET v = '0' WHERE id = 1");
  constexpr int kWrites = 150;
  std::atomic<int> completed{0};
  std::atomic<bool> done{false};
  std::atomic<int> violations{0}, reads{0};
  std::string first_violation;
  auto wconn = connect();
  auto rconn = connect();
  std::thread reader([&] {
    try {
      int i = 0;
      while (!done.load()) {
        int floor = completed.load();
        qcache::pqxx::nontransaction tx(*rconn);
        pqxx::result r = (i++ % 2) ? tx.exec_params("SELECT v::int FROM t WHERE id = $1", 1)
                                   : tx.exec("SELECT max(v::int) FROM t WHERE id < 2");
        int seen = r[0][0].as<int>();
        reads.fetch_add(1);
        if (seen < floor && violations.fetch_add(1) == 0)
          first_violation = "saw " + std::to_string(seen) + " after write " + std::to_string(floor);
      }
    } catch (const std::exception& e) {
      violations.fetch_add(1000);
      first_violation = e.what();
    }
  });
  for (int i = 1; i <= kWrites; ++i) {
    if (i % 3 == 0) {
      qcache::pqxx::work tx(*wconn);
      tx.exec_params("UPDATE t SET v = $1 WHERE id = $2", std::to_string(i), 1);
      tx.commit();
    } else {
      exec_on(*wconn, "UPDATE t SET v = '" + std::to_string(i) + "' WHERE id = 1");
    }
    completed.store(i);
    if (i % 10 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  done.store(true);
  reader.join();
  EXPECT_EQ(violations.load(), 0) << first_violation;
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 1").v(), std::to_string(kWrites));
}

TEST_F(Rows, Threads_ManyReadersOfOneEntry) {
  constexpr int kThreads = 8, kReads = 300;
  const std::string q = "SELECT id, k, v FROM t ORDER BY id";
  const std::string expected = dump(direct(q));
  std::vector<std::unique_ptr<qcache::pqxx::connection>> cs;
  for (int i = 0; i < kThreads; ++i) cs.push_back(connect());
  cache_it(q);
  auto before = cache_->stats();
  std::atomic<int> wrong{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < kThreads; ++i)
    ts.emplace_back([&, i] {
      for (int j = 0; j < kReads; ++j) {
        qcache::pqxx::nontransaction tx(*cs[i]);
        pqxx::result r = tx.exec(q);
        if (dump(r) != expected) wrong.fetch_add(1);
      }
    });
  for (auto& t : ts) t.join();
  auto d = minus(cache_->stats(), before);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(d.hits, static_cast<std::uint64_t>(kThreads * kReads)) << describe(d);
  EXPECT_EQ(d.misses, 0u);
}

TEST_F(PqxxTest, Threads_ConcurrentMissesOfOneKeyRunOnce) {
  constexpr int kThreads = 6;
  const std::string q = "SELECT count(*) FROM generate_series(1, 1500000)";
  std::vector<std::unique_ptr<qcache::pqxx::connection>> cs;
  for (int i = 0; i < kThreads; ++i) cs.push_back(connect());
  std::barrier sync(kThreads);
  std::atomic<int> wrong{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < kThreads; ++i)
    ts.emplace_back([&, i] {
      qcache::pqxx::nontransaction tx(*cs[i]);
      tx.exec("SELECT 1");  // warm the session: catalog and context are loaded
      sync.arrive_and_wait();
      if (std::string(tx.exec(q)[0][0].c_str()) != "1500000") wrong.fetch_add(1);
    });
  for (auto& t : ts) t.join();
  auto s = cache_->stats();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(s.stores, 1u) << describe(s);
  EXPECT_GE(s.single_flight_waits + s.hits, static_cast<std::uint64_t>(kThreads - 1))
      << describe(s);
}

// ---- Budgets ----------------------------------------------------------------------

class SmallBudget : public Rows {
 protected:
  qcache::options cache_options() override {
    qcache::options o;
    o.version_slots = 1024;
    o.max_bytes = 1024 * 8 + (64u << 10);
    o.shards = 4;
    return o;
  }
};

TEST_F(SmallBudget, Budget_SmallBudgetStaysCorrectAndBounded) {
  for (int round = 0; round < 2; ++round)
    for (int i = 0; i < 300; ++i) {
      std::string q = "SELECT v, " + std::to_string(i) + " FROM t WHERE id = " +
                      std::to_string(i % 5 + 1);
      outcome o = read(q);
      ASSERT_EQ(o.r.size(), 1u);
      if (i == 3) exec("UPDATE t SET v = 'changed' WHERE id = 4");
    }
  auto s = cache_->stats();
  EXPECT_GT(s.evictions, 0u) << describe(s);
  EXPECT_LE(s.bytes, s.max_bytes);
  EXPECT_EQ(read("SELECT v, 3 FROM t WHERE id = 4").v(), "changed");
}

TEST_F(SmallBudget, Budget_EntryLargerThanMaxEntryBytesIsNotStored) {
  const std::string q = "SELECT repeat('x', 20000)";
  for (int i = 0; i < 2; ++i) {
    outcome o = read(q);
    EXPECT_TRUE(o.not_cached(uncacheable_reason::too_large)) << o;
    EXPECT_EQ(std::string(o.r[0][0].c_str()).size(), 20000u);
  }
}

class TinyEntries : public Rows {
 protected:
  qcache::options cache_options() override {
    qcache::options o;
    o.max_entry_bytes = 1;
    return o;
  }
};

TEST_F(TinyEntries, Budget_NothingFitsResultsStillCorrect) {
  const std::string q = "SELECT v FROM t WHERE id = 2";
  for (int i = 0; i < 3; ++i) {
    outcome o = read(q);
    EXPECT_TRUE(o.not_cached(uncacheable_reason::too_large)) << o;
    EXPECT_EQ(o.v(), "two");
  }
  exec("UPDATE t SET v = 'deux' WHERE id = 2");
  EXPECT_EQ(read(q).v(), "deux");
  EXPECT_EQ(cache_->stats().entries, 0u);
}

TEST_F(SmallBudget, Budget_TinyVersionTableCostsMissesNeverStaleHits) {
  // 1024 counters shared by every tag: many collide. A write to one row may invalidate
  // others (extra misses), but a read after a write is never stale.
  for (int i = 1; i <= 5; ++i) read("SELECT v FROM t WHERE id = " + std::to_string(i));
  for (int i = 1; i <= 5; ++i) {
    exec("UPDATE t SET v = 'w" + std::to_string(i) + "' WHERE id = " + std::to_string(i));
    for (int j = 1; j <= 5; ++j) {
      std::string q = "SELECT v FROM t WHERE id = " + std::to_string(j);
      EXPECT_EQ(dump(read(q).r), dump(direct(q))) << "after write " << i;
    }
  }
}

}  // namespace
