// Own writes' copies from the change stream (issue 11 item 6): a transaction this cache
// wrote in is registered with its stream by xid before COMMIT, and the stream's copy of it
// moves nothing (the write hold, released after COMMIT returned, already invalidated a
// superset). These tests check that the copy costs no hits, and attack every way the
// skip could hide a change the hold did not cover: PREPARE TRANSACTION committed
// elsewhere, raw() statements in the transaction, ROLLBACK, savepoints, a lost
// connection, two caches on one database, triggers and cascades. Each freshness check
// compares with a direct read.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "pg/feed.h"
#include "support/pg_schema_fixture.h"

// LeakSanitizer (the ASan+UBSan stage): libpqxx 6.4 leaks a PGresult when a statement meets
// a connection the server has closed (as in faults_test and pg_hunt_test); this binary
// kills backends and servers. Allocations made under libpqxx are not reported here.
extern "C" const char* __lsan_default_suppressions() { return "leak:libpqxx\n"; }

#if QCACHE_ECHO_SOCI
#include <qcache/soci.h>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/soci.h>
#endif

namespace qcache_test {
namespace {

using namespace std::chrono_literals;

// ---- The feed's own-transaction set, without a server ------------------------------

class fake_schema final : public qcache::pg::stream_schema {
 public:
  const std::string& tag_space() const override { return space_; }
  std::vector<std::string> predicate_columns(std::uint32_t) const override { return {}; }
  char column_class(std::uint32_t, const std::string&) const override { return 0; }
  bool knows(std::uint32_t) const override { return true; }
  std::vector<std::uint32_t> family(std::uint32_t) const override { return {}; }
  std::optional<std::string> canonical(char, std::string_view t) const override {
    return std::string(t);
  }
  void mark_catalog_stale() override {}
  void refresh(const qcache::pg::query_fn&) override {}

 private:
  std::string space_ = "db";
};

class FeedOwn : public ::testing::Test {
 protected:
  std::shared_ptr<qcache::cache> cache_ = std::make_shared<qcache::cache>();
  qcache::pg::feed feed_{cache_, std::make_shared<fake_schema>()};
  std::vector<qcache::tags::tag> table_tags() { return {qcache::tags::table("db", "1")}; }
  std::uint64_t moved() const {
    return cache_->stats().invalidated(qcache::invalidation_cause::stream);
  }
};

TEST_F(FeedOwn, RegisteredCommitMovesNothingOnce) {
  ASSERT_TRUE(feed_.own_register(700));
  auto before = moved();
  auto seq = feed_.apply(700, table_tags());
  EXPECT_EQ(moved(), before) << "an own commit's copy must move no tag";
  EXPECT_EQ(feed_.applied(), seq) << "it still takes its seq";
  EXPECT_EQ(feed_.own_pending(), 0u);
  feed_.apply(700, table_tags());  // the same low bits again: not own any more
  EXPECT_GT(moved(), before);
}

TEST_F(FeedOwn, ForgottenCommitIsApplied) {
  ASSERT_TRUE(feed_.own_register(701));
  feed_.own_forget(701);
  auto before = moved();
  feed_.apply(701, table_tags());
  EXPECT_GT(moved(), before);
}

TEST_F(FeedOwn, ComparesTheLow32BitsOfTheXid8) {
  // The stream's xid has 32 bits; pg_current_xact_id() gives epoch << 32 | xid.
  ASSERT_TRUE(feed_.own_register((std::uint64_t{3} << 32) | 702));
  auto before = moved();
  feed_.apply(702, table_tags());
  EXPECT_EQ(moved(), before);
}

TEST_F(FeedOwn, OtherXidsAreApplied) {
  ASSERT_TRUE(feed_.own_register(703));
  auto before = moved();
  feed_.apply(704, table_tags());
  EXPECT_GT(moved(), before);
  EXPECT_EQ(feed_.own_pending(), 1u);
}

// Full: the oldest entry makes room (its copy then invalidates, as another client's).
TEST_F(FeedOwn, BoundedSet) {
  for (std::uint64_t x = 1; x <= qcache::pg::feed::own_cap; ++x)
    ASSERT_TRUE(feed_.own_register(100000 + x));
  EXPECT_TRUE(feed_.own_register(1));
  EXPECT_EQ(feed_.own_pending(), qcache::pg::feed::own_cap);
  auto before = moved();
  feed_.apply(100001, table_tags());
  EXPECT_GT(moved(), before) << "the evicted oldest is applied";
  before = moved();
  feed_.apply(1, table_tags());
  EXPECT_EQ(moved(), before);
}

// A long transaction registered first does not pin what was consumed after it, nor is it
// dropped for them.
TEST_F(FeedOwn, LongTransactionAmongManyShortOnes) {
  ASSERT_TRUE(feed_.own_register(42));
  for (std::uint64_t x = 1; x <= 3 * qcache::pg::feed::own_cap; ++x) {
    ASSERT_TRUE(feed_.own_register(1000000 + x));
    feed_.apply(1000000 + x, table_tags());
  }
  EXPECT_EQ(feed_.own_pending(), 1u);
  auto before = moved();
  feed_.apply(42, table_tags());
  EXPECT_EQ(moved(), before);
}

TEST_F(FeedOwn, StreamLossDropsEverything) {
  ASSERT_TRUE(feed_.own_register(705));
  feed_.go_down();
  EXPECT_EQ(feed_.own_pending(), 0u);
  auto before = moved();
  feed_.apply(705, table_tags());
  EXPECT_GT(moved(), before) << "a copy from a new slot is applied as another client's";
}

TEST_F(FeedOwn, UnknownOutcomeTakesTheStreamDown) {
  feed_.go_up();
  ASSERT_TRUE(feed_.serving());
  ASSERT_TRUE(feed_.own_register(706));
  feed_.own_outcome_unknown(706);
  EXPECT_FALSE(feed_.serving());
  EXPECT_TRUE(feed_.lost_wanted.load());
  EXPECT_EQ(feed_.own_pending(), 0u);
}

// ---- Against the server ------------------------------------------------------------

class Echo : public pg_schema_fixture {
 protected:
  Echo() : pg_schema_fixture("qce_") {}
  qcache::options cache_options() const override { return following(); }
  void before_connect() override {
    admin("SET search_path = " + schema_ +
          ";"
          // The default replica identity: the copy of an UPDATE/DELETE carries no old
          // non-key values, so it would move cat's column epoch.
          "CREATE TABLE kv (id int PRIMARY KEY, v int, cat text);"
          "ALTER TABLE kv REPLICA IDENTITY DEFAULT;"
          "INSERT INTO kv SELECT g, g * 10, CASE WHEN g % 2 = 0 THEN 'even' ELSE 'odd' END "
          "  FROM generate_series(1, 6) g;"
          "CREATE TABLE parent (id int PRIMARY KEY);"
          "CREATE TABLE child (id int PRIMARY KEY, pid int REFERENCES parent ON DELETE CASCADE);"
          "INSERT INTO parent VALUES (1), (2); INSERT INTO child VALUES (1, 1), (2, 1), (3, 2);"
          "CREATE TABLE audit (id serial PRIMARY KEY, note text);"
          "CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS "
          "  $$BEGIN INSERT INTO audit(note) VALUES ('kv ' || NEW.id); RETURN NEW; END$$;"
          "CREATE TRIGGER t AFTER UPDATE ON kv FOR EACH ROW EXECUTE FUNCTION note();"
          "CREATE TABLE dref (id int PRIMARY KEY, pid int REFERENCES parent "
          "  DEFERRABLE INITIALLY DEFERRED);"
          "CREATE TABLE ruled (id int PRIMARY KEY, v int);"
          "INSERT INTO ruled VALUES (1, 1);"
          "CREATE RULE r AS ON UPDATE TO ruled DO ALSO INSERT INTO audit(note) VALUES ('rule');");
  }
  void TearDown() override {
    admin_quiet("ROLLBACK PREPARED 'qce_" + std::to_string(getpid()) + "'");
    pg_schema_fixture::TearDown();
  }
  // Deliberately ignores the error: no such prepared transaction is the usual case.
  void admin_quiet(const std::string& sql) {
    try {
      admin(sql);
    } catch (const std::exception&) {
    }
  }
  // Own commits whose stream copy was skipped. (Not the cache's count of stream
  // invalidations: other tests' commits in the same database move that one.)
  std::uint64_t own_skipped() const {
    std::uint64_t n = 0;
    for (const auto& f : qcache::pg::feeds_of(cache_.get())) n += f->own_skipped();
    return n;
  }
  std::size_t own_pending() const {
    std::size_t n = 0;
    for (const auto& f : qcache::pg::feeds_of(cache_.get())) n += f->own_pending();
    return n;
  }
  void plain(const std::string& sql) {
    pqxx::connection c(conninfo_ + " options='-c search_path=" + schema_ + "'");
    pqxx::nontransaction tx(c);
    tx.exec(sql);
  }
  const std::string even_ = "SELECT id FROM kv WHERE cat = 'even' ORDER BY id";
  const std::string odd_ = "SELECT id FROM kv WHERE cat = 'odd' ORDER BY id";
};

// The blog's writes: autocommit UPDATE/DELETE with parameters. The write changes an odd
// row; the read of the even rows must survive the stream's copy.
TEST_F(Echo, AutocommitUpdateCopyCostsNoHit) {
  cache_it(even_);
  auto skipped = own_skipped();
  exec_params("UPDATE kv SET v = $2 WHERE id = $1", 1, 11);
  ASSERT_TRUE(conn_->sync());
  EXPECT_EQ(own_skipped(), skipped + 1) << "the copy of an own write was not skipped";
  expect_hit(even_);
  EXPECT_EQ(dump(exec("SELECT v FROM kv WHERE id = 1")), "'11',\n");
  EXPECT_EQ(own_pending(), 0u);
}

// Under a default isolation of REPEATABLE READ the wrapped statement would run on the
// wrapper's older snapshot (an error where autocommit succeeds when another client
// commits in between): such writes are not wrapped, and their copy is applied.
TEST_F(Echo, RepeatableReadDefaultIsNotWrapped) {
  exec("SET default_transaction_isolation = 'repeatable read'");
  cache_it(odd_);
  auto skipped = own_skipped();
  exec_params("UPDATE kv SET v = $2 WHERE id = $1", 1, 14);
  ASSERT_TRUE(conn_->sync());
  EXPECT_EQ(own_skipped(), skipped) << "wrapped under repeatable read";
  expect_fresh("SELECT v FROM kv WHERE id = 1");
  expect_fresh(odd_);
  exec("SET default_transaction_isolation = 'read committed'");
  exec_params("UPDATE kv SET v = $2 WHERE id = $1", 1, 15);
  ASSERT_TRUE(conn_->sync());
  EXPECT_EQ(own_skipped(), skipped + 1) << "not wrapped under read committed";
  expect_fresh("SELECT v FROM kv WHERE id = 1");
}

// The application opened no transaction: a short idle-in-transaction timeout must not
// end its session between the wrapper's round trips.
TEST_F(Echo, IdleInTransactionTimeoutNeverFiresInTheWrapper) {
  exec("SET idle_in_transaction_session_timeout = '1ms'");
  // A read first: the first statement of a session whose database object an earlier
  // test created reads the catalog again, and a write planned then is not wrapped.
  cache_it(odd_);
  auto skipped = own_skipped();
  for (int i = 0; i < 200; ++i) exec_params("UPDATE kv SET v = $2 WHERE id = $1", 2, 100 + i);
  ASSERT_TRUE(conn_->sync());
  EXPECT_EQ(own_skipped(), skipped + 200) << "not every write was wrapped";
  expect_fresh("SELECT v FROM kv WHERE id = 2");
}

TEST_F(Echo, AutocommitDeleteCopyCostsNoHit) {
  cache_it(even_);
  cache_it(odd_);
  exec_params("DELETE FROM kv WHERE id = $1", 3);
  ASSERT_TRUE(conn_->sync());
  expect_hit(even_);
  expect_fresh(odd_);
}

TEST_F(Echo, SimpleProtocolWriteCopyCostsNoHit) {
  cache_it(even_);
  exec("UPDATE kv SET v = 12 WHERE id = 1");
  ASSERT_TRUE(conn_->sync());
  expect_hit(even_);
}

TEST_F(Echo, TransactionCopyCostsNoHit) {
  cache_it(even_);
  auto skipped = own_skipped();
  {
    // (Inside a transaction no pre-image is read: the WHERE names cat's value, so the
    // engine's own tags spare the even rows.)
    qcache::pqxx::work w(*conn_);
    w.exec_params("UPDATE kv SET v = $2 WHERE id = $1 AND cat = 'odd'", 1, 13);
    w.exec_params("UPDATE kv SET v = $2 WHERE id = $1 AND cat = 'odd'", 3, 33);
    w.commit();
  }
  ASSERT_TRUE(conn_->sync());
  EXPECT_EQ(own_skipped(), skipped + 1);
  expect_hit(even_);
  expect_fresh("SELECT v FROM kv WHERE id IN (1, 3) ORDER BY id");
}

// A failing autocommit write: the same error as without the wrapping, and the connection
// is left outside any transaction.
TEST_F(Echo, WrappedWriteErrorPassesUnchanged) {
  std::string direct_error, cached_error;
  try {
    plain("INSERT INTO kv VALUES (1, 0, 'x')");
  } catch (const pqxx::sql_error& e) {
    direct_error = e.sqlstate() + std::string(" ") + e.what();
  }
  try {
    exec_params("INSERT INTO kv VALUES ($1, 0, 'x')", 1);
  } catch (const pqxx::sql_error& e) {
    cached_error = e.sqlstate() + std::string(" ") + e.what();
  }
  ASSERT_FALSE(direct_error.empty());
  EXPECT_EQ(cached_error, direct_error);
  EXPECT_EQ(dump(exec("SELECT pg_catalog.txid_current_if_assigned() IS NULL")), "'t',\n");
  EXPECT_EQ(own_pending(), 0u);
  expect_fresh(even_);
}

// A deferred constraint fails at the statement, as in autocommit (SET CONSTRAINTS ALL
// IMMEDIATE), with the same error; nothing is committed.
TEST_F(Echo, DeferredConstraintFailsAsInAutocommit) {
  std::string direct_error, cached_error;
  try {
    plain("INSERT INTO dref VALUES (1, 99)");
  } catch (const pqxx::sql_error& e) {
    direct_error = e.sqlstate();
  }
  try {
    exec_params("INSERT INTO dref VALUES ($1, $2)", 1, 99);
  } catch (const pqxx::sql_error& e) {
    cached_error = e.sqlstate();
  }
  EXPECT_EQ(direct_error, "23503");
  EXPECT_EQ(cached_error, direct_error);
  EXPECT_EQ(dump(direct("SELECT count(*) FROM dref")), "'0',\n");
  EXPECT_EQ(own_pending(), 0u);
}

// PREPARE TRANSACTION ends the transaction without committing; COMMIT PREPARED by another
// client commits it later, and that copy must invalidate.
TEST_F(Echo, PreparedTransactionCommittedElsewhereIsApplied) {
  std::string gid = "qce_" + std::to_string(getpid());
  {
    qcache::pqxx::nontransaction tx(*conn_);
    tx.exec("BEGIN");
    tx.exec_params("UPDATE kv SET v = $2 WHERE id = $1", 2, 222);
    EXPECT_EQ(own_pending(), 1u);
    tx.exec("PREPARE TRANSACTION '" + gid + "'");
  }
  EXPECT_EQ(own_pending(), 0u) << "forgotten before PREPARE was sent";
  const std::string read = "SELECT v FROM kv WHERE id = 2";
  cache_it(read);
  EXPECT_EQ(dump(exec(read)), "'20',\n");
  plain("COMMIT PREPARED '" + gid + "'");
  ASSERT_TRUE(conn_->sync());
  expect_fresh(read);
  EXPECT_EQ(dump(exec(read)), "'222',\n");
}

// Statements through raw() join the transaction unseen by the engine: the copy must
// invalidate what they wrote.
TEST_F(Echo, RawStatementInTransactionIsApplied) {
  const std::string read = "SELECT v FROM kv WHERE id = 4";
  cache_it(read);
  {
    qcache::pqxx::work w(*conn_);
    w.exec_params("UPDATE kv SET v = $2 WHERE id = $1", 1, 14);
    w.raw().exec("UPDATE kv SET v = 444 WHERE id = 4");
    w.commit();
  }
  ASSERT_TRUE(conn_->sync());
  expect_fresh(read);
}

// The same with raw() taken before BEGIN on a nontransaction.
TEST_F(Echo, RawTakenBeforeBeginIsApplied) {
  const std::string read = "SELECT v FROM kv WHERE id = 4";
  cache_it(read);
  {
    qcache::pqxx::nontransaction tx(*conn_);
    auto& r = tx.raw();
    tx.exec("BEGIN");
    tx.exec_params("UPDATE kv SET v = $2 WHERE id = $1", 1, 15);
    r.exec("UPDATE kv SET v = 445 WHERE id = 4");
    tx.exec("COMMIT");
  }
  ASSERT_TRUE(conn_->sync());
  expect_fresh(read);
}

TEST_F(Echo, RollbackLeavesNothingRegistered) {
  cache_it(even_);
  {
    qcache::pqxx::work w(*conn_);
    w.exec_params("UPDATE kv SET cat = $2 WHERE id = $1", 2, "odd");
    EXPECT_EQ(own_pending(), 1u);
    w.abort();
  }
  EXPECT_EQ(own_pending(), 0u);
  {
    qcache::pqxx::nontransaction tx(*conn_);
    tx.exec("BEGIN");
    tx.exec_params("UPDATE kv SET cat = $2 WHERE id = $1", 2, "odd");
    tx.exec("ROLLBACK");
  }
  EXPECT_EQ(own_pending(), 0u);
  ASSERT_TRUE(conn_->sync());
  expect_fresh(even_);
}

TEST_F(Echo, SavepointRolledBackAfterWrite) {
  cache_it(even_);
  cache_it(odd_);
  {
    qcache::pqxx::nontransaction tx(*conn_);
    tx.exec("BEGIN");
    tx.exec_params("UPDATE kv SET cat = $2 WHERE id = $1", 1, "even");
    tx.exec("SAVEPOINT s");
    tx.exec_params("UPDATE kv SET cat = $2 WHERE id = $1", 2, "odd");
    tx.exec("ROLLBACK TO SAVEPOINT s");
    tx.exec_params("UPDATE kv SET cat = $2 WHERE id = $1", 3, "even");
    tx.exec("COMMIT");
  }
  ASSERT_TRUE(conn_->sync());
  expect_fresh(even_);
  expect_fresh(odd_);
  EXPECT_EQ(own_pending(), 0u);
}

// A write whose local invalidation is a flush (a rule), in a transaction and alone.
TEST_F(Echo, FlushWriteStaysFresh) {
  const std::string read = "SELECT note FROM audit ORDER BY id";
  cache_it(read);
  {
    qcache::pqxx::work w(*conn_);
    w.exec_params("UPDATE ruled SET v = $2 WHERE id = $1", 1, 2);
    w.commit();
  }
  ASSERT_TRUE(conn_->sync());
  expect_fresh(read);
  cache_it(read);
  exec_params("UPDATE ruled SET v = $2 WHERE id = $1", 1, 3);
  ASSERT_TRUE(conn_->sync());
  expect_fresh(read);
}

// Writes the statement causes elsewhere (a trigger, an FK cascade) are covered by the
// local hold, copy skipped or not.
TEST_F(Echo, TriggerAndCascadeStayFresh) {
  const std::string audit = "SELECT note FROM audit ORDER BY id";
  const std::string child = "SELECT id FROM child WHERE pid = 1 ORDER BY id";
  cache_it(audit);
  cache_it(child);
  exec_params("UPDATE kv SET v = $2 WHERE id = $1", 5, 55);
  exec_params("DELETE FROM parent WHERE id = $1", 1);
  ASSERT_TRUE(conn_->sync());
  expect_fresh(audit);
  expect_fresh(child);
  cache_it(audit);
  {
    qcache::pqxx::work w(*conn_);
    w.exec_params("UPDATE kv SET v = $2 WHERE id = $1", 6, 66);
    w.commit();
  }
  ASSERT_TRUE(conn_->sync());
  expect_fresh(audit);
}

// Two caches in one process on one database: each applies the other's transactions.
TEST_F(Echo, AnotherCacheAppliesTheCopy) {
  auto other_cache = std::make_shared<qcache::cache>(following());
  qcache::pqxx::connection other(conninfo_ + " options='-c search_path=" + schema_ + "'",
                                 other_cache);
  const std::string read = "SELECT v FROM kv WHERE id = 2";
  {
    qcache::pqxx::nontransaction tx(other);
    tx.exec(read);
    tx.exec(read);
  }
  ASSERT_EQ(other_cache->stats().hits, 1u);
  exec_params("UPDATE kv SET v = $2 WHERE id = $1", 2, 2222);
  {
    qcache::pqxx::work w(*conn_);
    w.exec_params("UPDATE kv SET v = v + $2 WHERE id = $1", 2, 1);
    w.commit();
  }
  ASSERT_TRUE(other.sync());
  qcache::pqxx::nontransaction tx(other);
  EXPECT_EQ(dump(tx.exec(read)), dump(direct(read)));
  EXPECT_EQ(dump(direct(read)), "'2223',\n");
}

// The connection dies after the xid was registered and before COMMIT: the outcome is
// unknown to the engine, so the stream goes down (the database is flushed and bypassed
// until a new slot is up) and nothing is left registered.
TEST_F(Echo, ConnectionLostBeforeCommit) {
  cache_it(even_);
  auto victim = connect();
  int pid = 0;
  {
    qcache::pqxx::nontransaction tx(*victim);
    pid = tx.exec("SELECT pg_backend_pid()")[0][0].as<int>();
  }
  bool threw = false;
  {
    qcache::pqxx::work w(*victim);
    w.exec_params("UPDATE kv SET cat = $2 WHERE id = $1", 2, "odd");
    EXPECT_EQ(own_pending(), 1u);
    admin("SELECT pg_terminate_backend(" + std::to_string(pid) + ")");
    try {
      w.commit();
    } catch (const std::exception&) {
      threw = true;
    }
  }
  EXPECT_TRUE(threw);
  EXPECT_EQ(own_pending(), 0u);
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!conn_->sync()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the stream did not come back";
    std::this_thread::sleep_for(10ms);
  }
  expect_fresh(even_);
}

// A COMMIT that fails (a deferred constraint) through libpqxx's work: nothing stays
// registered, nothing is stale.
TEST_F(Echo, FailedCommitForgetsTheTransaction) {
  const std::string read = "SELECT count(*) FROM dref";
  cache_it(read);
  {
    qcache::pqxx::work w(*conn_);
    w.exec_params("INSERT INTO dref VALUES ($1, $2)", 1, 99);
    EXPECT_EQ(own_pending(), 1u);
    EXPECT_THROW(w.commit(), pqxx::sql_error);
  }
  EXPECT_EQ(own_pending(), 0u);
  expect_fresh(read);
}

#if QCACHE_ECHO_SOCI
// The same through SOCI's postgresql backend: its failed commit used to be reported to the
// engine as a commit, which would keep the xid registered (and skip a copy that might
// still come).
TEST_F(Echo, FailedCommitThroughSociForgetsTheTransaction) {
  qcache::soci::caching_factory factory(cache_, soci::postgresql);
  soci::session sql(factory, conninfo_ + " options='-c search_path=" + schema_ + "'");
  {
    soci::transaction tr(sql);
    sql << "INSERT INTO dref VALUES (1, 99)";
    EXPECT_EQ(own_pending(), 1u);
    EXPECT_THROW(tr.commit(), soci::soci_error);
  }
  EXPECT_EQ(own_pending(), 0u);
  expect_fresh("SELECT count(*) FROM dref");
}

// SOCI's autocommit writes are wrapped too: their copies cost no hit.
TEST_F(Echo, SociAutocommitUpdateCopyCostsNoHit) {
  qcache::soci::caching_factory factory(cache_, soci::postgresql);
  soci::session sql(factory, conninfo_ + " options='-c search_path=" + schema_ + "'");
  auto read_even = [&] {
    std::vector<int> ids(10);
    sql << even_, soci::into(ids);
    return ids;
  };
  read_even();
  auto hits = cache_->stats().hits;
  EXPECT_EQ(read_even(), (std::vector<int>{2, 4, 6}));
  ASSERT_EQ(cache_->stats().hits, hits + 1);
  auto skipped = own_skipped();
  int id = 1, v = 17;
  sql << "UPDATE kv SET v = :v WHERE id = :id", soci::use(v, "v"), soci::use(id, "id");
  ASSERT_TRUE(qcache::soci::sync(sql));
  EXPECT_EQ(own_skipped(), skipped + 1);
  hits = cache_->stats().hits;
  EXPECT_EQ(read_even(), (std::vector<int>{2, 4, 6}));
  EXPECT_EQ(cache_->stats().hits, hits + 1);
  EXPECT_EQ(dump(direct("SELECT v FROM kv WHERE id = 1")), "'17',\n");
  EXPECT_EQ(own_pending(), 0u);
}

// A failing SOCI autocommit write: the same error as plain SOCI gives, nothing left open.
TEST_F(Echo, SociWrappedWriteErrorPassesUnchanged) {
  std::string ci = conninfo_ + " options='-c search_path=" + schema_ + "'";
  auto error_of = [](soci::session& sql) {
    try {
      int id = 1;
      sql << "INSERT INTO kv VALUES (:id, 0, 'x')", soci::use(id, "id");
    } catch (const soci::postgresql_soci_error& e) {
      return e.sqlstate() + " " + e.what();
    }
    return std::string("no error");
  };
  soci::session plain_sql(soci::postgresql, ci);
  qcache::soci::caching_factory factory(cache_, soci::postgresql);
  soci::session sql(factory, ci);
  std::string want = error_of(plain_sql);
  EXPECT_EQ(want.substr(0, 5), "23505");
  EXPECT_EQ(error_of(sql), want);
  int idle = 0;
  sql << "SELECT count(*) FROM kv WHERE pg_catalog.txid_current_if_assigned() IS NULL",
      soci::into(idle);
  EXPECT_EQ(idle, 6);
  EXPECT_EQ(own_pending(), 0u);
}
#endif

// ---- The stream outlives the cache's connections --------------------------------------
// A program that closes every connection between requests (or a benchmark between its
// warm-up and its measurement) must not lose the whole cache at the next connection: the
// stream follows the database as long as the cache lives.

TEST_F(Echo, ReconnectingAfterEveryConnectionClosedKeepsTheCache) {
  cache_it(even_);
  conns_.clear();
  conn_.reset();
  conn_ = connect();
  ASSERT_TRUE(conn_->sync());
  expect_hit(even_);
}

TEST_F(Echo, WritesWhileNoConnectionIsOpenAreSeen) {
  cache_it(odd_);
  conns_.clear();
  conn_.reset();
  plain("UPDATE kv SET cat = 'even' WHERE id = 1");
  conn_ = connect();
  ASSERT_TRUE(conn_->sync());
  expect_fresh(odd_);
}

TEST_F(Echo, DestroyingTheCacheEndsItsStream) {
  const std::string mine = "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'qcache\\_" +
                           std::to_string(getpid()) + "\\_%'";
  ASSERT_NE(dump(direct(mine)), "'0',\n");
  conns_.clear();
  conn_.reset();
  cache_.reset();
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (dump(direct(mine)) != "'0',\n") {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the slot outlived its cache";
    std::this_thread::sleep_for(10ms);
  }
}

// ---- Relations the catalog does not know (other clients' tables) -------------------
// Other programs (other test processes, migrations, ETL) create, fill and drop tables in
// the same database. Their changes reach the stream for relations this cache's catalog
// never knew; a relation already dropped when the stream reads the catalog again used to
// flush the whole database (hit expectations failed when test binaries ran in parallel).

class Unknown : public Echo {
 protected:
  void before_connect() override {
    Echo::before_connect();
    admin("SET search_path = " + schema_ +
          ";"
          "CREATE TABLE p (id int, v int) PARTITION BY RANGE (id);"
          "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100);"
          "INSERT INTO p VALUES (1, 1), (2, 2);");
  }
  std::string other_schema() const { return schema_ + "_other"; }
  void TearDown() override {
    admin("DROP SCHEMA IF EXISTS " + other_schema() + " CASCADE");
    Echo::TearDown();
  }
};

// A staging table created, filled and dropped in one transaction by another client: it
// never existed for anyone else, so nothing cached may die for it.
TEST_F(Unknown, TableCreatedFilledAndDroppedInOneTransactionFlushesNothing) {
  cache_it(even_);
  plain("BEGIN; CREATE TABLE stage (id int PRIMARY KEY, v text);"
        "INSERT INTO stage SELECT g, 'x' FROM generate_series(1, 10) g;"
        "UPDATE stage SET v = 'y' WHERE id = 3; DELETE FROM stage WHERE id = 4;"
        "DROP TABLE stage; COMMIT");
  ASSERT_TRUE(conn_->sync());
  expect_hit(even_);
}

// Another program's table in another schema: created and filled (one transaction), then
// dropped, as test fixtures do. Nothing this cache holds depends on it.
TEST_F(Unknown, OtherProgramsTableLifecycleFlushesNothing) {
  cache_it(even_);
  auto flushes0 = flushes();
  admin("CREATE SCHEMA " + other_schema() + "; CREATE TABLE " + other_schema() +
        ".t (id int PRIMARY KEY, v int); INSERT INTO " + other_schema() +
        ".t SELECT g, g FROM generate_series(1, 5) g");
  admin("UPDATE " + other_schema() + ".t SET v = 0 WHERE id = 1");
  admin("DROP SCHEMA " + other_schema() + " CASCADE");
  ASSERT_TRUE(conn_->sync());
  EXPECT_EQ(flushes(), flushes0);
  expect_hit(even_);
}

// A partition created and filled in one transaction by another client: the stream may read
// the catalog before that commit is visible; the parent's cached reads must still die.
TEST_F(Unknown, PartitionCreatedAndFilledElsewhereInvalidatesTheParent) {
  const std::string read = "SELECT count(*), sum(v) FROM p";
  cache_it(read);
  plain("BEGIN; CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100) TO (200);"
        "INSERT INTO p2 VALUES (150, 7), (160, 8); COMMIT");
  ASSERT_TRUE(conn_->sync());
  expect_fresh(read);
  EXPECT_EQ(dump(exec(read)), "'4','18',\n");
}

// The same partition created, filled and dropped in one transaction changes nothing.
TEST_F(Unknown, PartitionCreatedFilledAndDroppedInOneTransactionKeepsTheParent) {
  const std::string read = "SELECT count(*), sum(v) FROM p";
  cache_it(read);
  plain("BEGIN; CREATE TABLE p3 PARTITION OF p FOR VALUES FROM (200) TO (300);"
        "INSERT INTO p3 VALUES (250, 9); DROP TABLE p3; COMMIT");
  ASSERT_TRUE(conn_->sync());
  expect_hit(read);
}

}  // namespace
}  // namespace qcache_test
