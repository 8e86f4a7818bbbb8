// The change stream's loss modes (issue 11): the stream is gone or another server answers,
// and nothing cached before may be served as the database's answer. Registered RUN_SERIAL
// (they kill walsenders, stop and replace servers). Every test restores what it changed,
// and the clusters a test creates are stopped and removed by the test.
//   * SlotDroppedWhileFollowing: the walsender is terminated and its slot dropped; writes
//     made while no slot exists must be seen (the follower starts again from a flush),
//     then caching resumes.
//   * PublicationNoLongerCoveringEveryTable: another client replaces the publication.
//   * SyncTimeoutServesNothingStale: the read right after sync() timed out.
//   * AnotherSystemOnTheSameAddress: the server is replaced by a fresh initdb on the same
//     socket directory and port, holding a table of the same name (and, from the same
//     DDL, the same relid) with other rows: only the new cluster's rows may be served.
//   * FailoverToAPromotedStandby: a physical copy of the server is started on the same
//     socket and port and promoted (a new timeline; the last write to the old primary never
//     reached it). Only its rows may be served, and sync() must not count the old
//     timeline's stream positions as processed on the new one.
#include <gtest/gtest.h>
#include <qcache/pqxx.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <thread>

#include "support/pg_schema_fixture.h"

// LeakSanitizer (the ASan+UBSan stage): libpqxx 6.4 leaks a PGresult when a statement meets
// a connection the server has closed (as in faults_test and pg_hunt_test); this binary
// kills backends and servers. Allocations made under libpqxx are not reported here.
extern "C" const char* __lsan_default_suppressions() { return "leak:libpqxx\n"; }

namespace qcache_test {
namespace {

using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;

std::string first_field(const std::string& conninfo, const std::string& sql) {
  pqxx::connection c(conninfo);
  pqxx::nontransaction tx(c);
  auto r = tx.exec(sql);
  return r.empty() || r[0][0].is_null() ? std::string() : r[0][0].c_str();
}

// The walsender serving this process's slot (stream.cc names it qcache_<pid>_<n>), and
// the slot's name; empty when there is none.
std::pair<std::string, std::string> own_slot(const std::string& conninfo) {
  pqxx::connection c(conninfo);
  pqxx::nontransaction tx(c);
  auto r = tx.exec(
      "SELECT active_pid, slot_name FROM pg_replication_slots WHERE slot_name LIKE 'qcache\\_" +
      std::to_string(getpid()) + "\\_%' AND active_pid IS NOT NULL");
  if (r.size() != 1) return {};
  return {r[0][0].c_str(), r[0][1].c_str()};
}

// Resumes a stopped walsender however the test ends.
struct resume_on_exit {
  pid_t pid;
  ~resume_on_exit() { ::kill(pid, SIGCONT); }
};

// ---- (a) The slot is dropped while the cache follows ---------------------------------

class StreamLoss : public pg_schema_fixture {
 protected:
  StreamLoss() : pg_schema_fixture("qcsl_") {}
  qcache::options cache_options() const override { return following(); }
  void before_connect() override {
    admin("SET search_path = " + schema_ +
          "; CREATE TABLE kv (id int PRIMARY KEY, v int);"
          "INSERT INTO kv VALUES (1, 10), (2, 20)");
  }
};

TEST_F(StreamLoss, SlotDroppedWhileFollowing) {
  const std::string read = "SELECT v FROM kv WHERE id = 1";
  cache_it(read);
  auto [sender, slot] = own_slot(conninfo_);
  ASSERT_FALSE(sender.empty()) << "no walsender for this process's slot";
  // An open transaction with an xid: creating the next slot waits for it, so the
  // follower stays without a slot until it ends.
  pqxx::connection blocker(conninfo_);
  auto hold = std::make_unique<pqxx::work>(blocker);
  hold->exec("SELECT pg_catalog.txid_current()");
  admin("SELECT pg_terminate_backend(" + sender + ")");
  auto deadline = clk::now() + 5s;
  while (true) {  // gone (a temporary slot ends with its walsender), else drop it
    std::string active =
        first_field(conninfo_,
                    "SELECT coalesce(active_pid::text, 'none') FROM pg_replication_slots "
                    "WHERE slot_name = '" +
                        slot + "'");
    if (active.empty()) break;
    if (active == "none") {
      try {
        admin("SELECT pg_drop_replication_slot('" + slot + "')");
      } catch (const std::exception&) {  // dropped by its walsender's exit meanwhile
      }
    }
    ASSERT_LT(clk::now(), deadline) << "slot " << slot << " is still there";
    std::this_thread::sleep_for(10ms);
  }
  // The follower noticed: it is creating a new slot, behind the open transaction.
  deadline = clk::now() + 5s;
  while (first_field(conninfo_,
                     "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender' "
                     "AND application_name = 'qcache_stream' AND wait_event = 'transactionid'") !=
         "1") {
    ASSERT_LT(clk::now(), deadline) << "the follower never tried to create a new slot";
    std::this_thread::sleep_for(10ms);
  }
  admin("UPDATE " + schema_ + ".kv SET v = 11 WHERE id = 1");  // while no slot exists
  auto down = cache_->stats().not_cached(qcache::uncacheable_reason::stream_down);
  auto hits = cache_->stats().hits;
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(dump(exec(read)), "'11',\n") << "a hit from before the loss";
  EXPECT_EQ(cache_->stats().hits, hits) << "served from the cache while the stream was down";
  EXPECT_GT(cache_->stats().not_cached(qcache::uncacheable_reason::stream_down), down);
  EXPECT_FALSE(conn_->sync()) << "sync() succeeded without a stream";
  hold->abort();
  hold.reset();
  deadline = clk::now() + 10s;
  while (true) {  // a new slot: caching resumes
    hits = cache_->stats().hits;
    ASSERT_EQ(dump(exec(read)), dump(direct(read)));
    if (cache_->stats().hits > hits) break;
    ASSERT_LT(clk::now(), deadline) << "caching did not resume";
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_NE(own_slot(conninfo_).second, slot);
  admin("UPDATE " + schema_ + ".kv SET v = 12 WHERE id = 1");
  ASSERT_TRUE(conn_->sync());
  expect_fresh(read);
}

// Restores the publication scripts/pg made however the test ends.
struct publication_guard {
  std::function<void(const std::string&)> admin;
  ~publication_guard() {
    try {
      admin("DROP PUBLICATION IF EXISTS qcache; CREATE PUBLICATION qcache FOR ALL TABLES");
    } catch (...) {
    }
  }
};

// Another client replaces the publication by one that leaves the cached table out: the
// stream then silently stops carrying its changes. The follower must notice (while
// streaming, and at every new slot) and stay down until the publication covers every
// table again.
TEST_F(StreamLoss, PublicationNoLongerCoveringEveryTable) {
  const std::string read = "SELECT v FROM kv WHERE id = 1";
  admin("CREATE TABLE " + schema_ + ".other (id int PRIMARY KEY)");
  cache_it(read);
  publication_guard guard{[this](const std::string& s) { admin(s); }};
  admin("DROP PUBLICATION qcache; CREATE PUBLICATION qcache FOR TABLE " + schema_ + ".other");
  auto deadline = clk::now() + 5s;
  auto down = cache_->stats().not_cached(qcache::uncacheable_reason::stream_down);
  while (cache_->stats().not_cached(qcache::uncacheable_reason::stream_down) == down) {
    ASSERT_LT(clk::now(), deadline) << "still following a publication that misses kv";
    exec(read);
    std::this_thread::sleep_for(20ms);
  }
  admin("UPDATE " + schema_ + ".kv SET v = 11 WHERE id = 1");
  auto hits = cache_->stats().hits;
  for (int i = 0; i < 20; ++i) {  // a new slot does not bring it back either
    ASSERT_EQ(dump(exec(read)), "'11',\n");
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(cache_->stats().hits, hits) << "cached while the publication misses kv";
  admin("DROP PUBLICATION qcache; CREATE PUBLICATION qcache FOR ALL TABLES");
  deadline = clk::now() + 10s;
  while (true) {
    hits = cache_->stats().hits;
    ASSERT_EQ(dump(exec(read)), dump(direct(read)));
    if (cache_->stats().hits > hits) break;
    ASSERT_LT(clk::now(), deadline) << "caching did not resume";
    std::this_thread::sleep_for(20ms);
  }
  admin("UPDATE " + schema_ + ".kv SET v = 12 WHERE id = 1");
  ASSERT_TRUE(conn_->sync());
  expect_fresh(read);
}

// sync() that times out declares the stream lost, and "nothing stale is served either
// way" (pqxx.h): the read right after it returned false must not be a hit, although the
// follower thread may not have noticed the loss yet. A stopped walsender stands for a
// stream that lags; a short sync_timeout makes the race repeat often.
class StreamLossShortSync : public StreamLoss {
 protected:
  qcache::options cache_options() const override {
    auto o = following();
    o.sync_timeout = 100ms;
    return o;
  }
};

TEST_F(StreamLossShortSync, SyncTimeoutServesNothingStale) {
  const std::string read = "SELECT v FROM kv WHERE id = 1";
  for (int round = 0; round < 10; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    auto deadline = clk::now() + 10s;
    while (true) {  // cached, on a stream that is up
      auto hits = cache_->stats().hits;
      ASSERT_EQ(dump(exec(read)), dump(direct(read)));
      if (cache_->stats().hits > hits) break;
      ASSERT_LT(clk::now(), deadline) << "caching did not resume";
      std::this_thread::sleep_for(10ms);
    }
    auto [sender, slot] = own_slot(conninfo_);
    ASSERT_FALSE(sender.empty());
    ASSERT_EQ(::kill(std::atoi(sender.c_str()), SIGSTOP), 0);
    resume_on_exit resume{std::atoi(sender.c_str())};
    admin("UPDATE " + schema_ + ".kv SET v = " + std::to_string(100 + round) + " WHERE id = 1");
    bool synced = conn_->sync();
    ASSERT_EQ(dump(exec(read)), "'" + std::to_string(100 + round) + "',\n")
        << "stale right after sync() returned " << synced;
    EXPECT_FALSE(synced);
  }
}

// ---- Clusters a test creates on its own -------------------------------------------------

std::string as_postgres() { return ::geteuid() == 0 ? "runuser -u postgres -- " : ""; }

int sh(const std::string& cmd) { return std::system(("set -e; " + cmd).c_str()); }

// A cluster made by scripts/pg in `dir` (QCACHE_PG_DIR + a suffix). Stopped and removed,
// with everything the test put in `dir`, when the object ends.
class own_cluster {
 public:
  // Starts from nothing (a run that crashed may have left its clusters running).
  explicit own_cluster(std::string dir) : dir_(std::move(dir)) { remove(); }
  ~own_cluster() { remove(); }
  // scripts/pg start; `first_port` makes it take that port when free.
  bool start(int first_port = 0) {
    std::string env = first_port ? "QCACHE_PG_FIRST_PORT=" + std::to_string(first_port) + " " : "";
    if (sh(env + script() + " start " + dir_ + " >/dev/null 2>&1") != 0) return false;
    std::ifstream f(dir_ + "/env");
    for (std::string line; std::getline(f, line);)
      if (line.rfind("export QCACHE_PG_PORT=", 0) == 0) port_ = std::atoi(line.c_str() + 22);
    return port_ > 0;
  }
  bool stop() { return sh(script() + " stop " + dir_ + " >/dev/null 2>&1") == 0; }
  std::string conninfo() const {
    return "host=" + dir_ + "/sock port=" + std::to_string(port_) +
           " user=postgres dbname=postgres";
  }
  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  static std::string pg_bin() {
    const char* b = std::getenv("QCACHE_PG_BIN");
    return b ? b : "/usr/lib/postgresql/15/bin";
  }

 private:
  static std::string script() { return std::string(QCACHE_SOURCE_DIR) + "/scripts/pg"; }
  void remove() {
    std::system((as_postgres() + pg_bin() + "/pg_ctl -D " + dir_ +
                 "/standby -m immediate -w stop >/dev/null 2>&1")
                    .c_str());
    std::system((script() + " stop " + dir_ + " >/dev/null 2>&1").c_str());
    std::system(("rm -rf " + dir_).c_str());
  }
  std::string dir_;
  int port_ = 0;
};

class StreamLossCluster : public ::testing::Test {
 protected:
  void SetUp() override {
    QCACHE_REQUIRE_PG(ci);  // the suite runs where scripts/test's server does
    const char* dir = std::getenv("QCACHE_PG_DIR");
    ASSERT_TRUE(dir) << "QCACHE_PG_DIR (scripts/pg's env) is needed to place the test's clusters";
    base_ = std::string(dir) + "_loss";
  }
  static void admin(const std::string& conninfo, const std::string& sql) {
    pqxx::connection c(conninfo);
    pqxx::nontransaction tx(c);
    tx.exec(sql);
  }
  static std::string direct(const std::string& conninfo, const std::string& sql) {
    pqxx::connection c(conninfo);
    pqxx::nontransaction tx(c);
    return dump(tx.exec(sql));
  }
  static std::string cached(qcache::pqxx::connection& c, const std::string& sql) {
    qcache::pqxx::nontransaction tx(c);
    return dump(tx.exec(sql));
  }
  // Reads `sql` on `c` until it is a hit; every answer must be the database's.
  void until_hit(qcache::pqxx::connection& c, const std::string& conninfo, const std::string& sql,
                 std::chrono::seconds limit) {
    auto deadline = clk::now() + limit;
    while (true) {
      auto hits = cache_->stats().hits;
      ASSERT_EQ(cached(c, sql), direct(conninfo, sql)) << sql;
      if (cache_->stats().hits > hits) return;
      ASSERT_LT(clk::now(), deadline) << "caching did not resume: " << sql;
      std::this_thread::sleep_for(20ms);
    }
  }
  // A physical copy of `pg` in pg.dir()/standby. Without -R's primary_conninfo: on the
  // same address it would stream from itself; standby.signal alone keeps it in recovery.
  static int copy_to_standby(own_cluster& pg) {
    const std::string standby = pg.dir() + "/standby";
    return sh("mkdir -p " + standby + " && chmod 700 " + standby +
              (as_postgres().empty() ? "" : " && chown postgres:postgres " + standby) + " && " +
              as_postgres() + own_cluster::pg_bin() + "/pg_basebackup -h " + pg.dir() +
              "/sock -p " + std::to_string(pg.port()) + " -U postgres -D " + standby +
              " -X stream -c fast --no-sync >/dev/null && " + as_postgres() + "touch " + standby +
              "/standby.signal");
  }
  // Stops `pg` and starts its copy on the same socket directory and port (in recovery).
  static int fail_over(own_cluster& pg) {
    if (!pg.stop()) return 1;
    return sh(as_postgres() + own_cluster::pg_bin() + "/pg_ctl -D " + pg.dir() + "/standby -l " +
              pg.dir() + "/standby/pg.log -w -t 30 start >/dev/null");
  }
  static int promote(own_cluster& pg) {
    return sh(as_postgres() + own_cluster::pg_bin() + "/pg_ctl -D " + pg.dir() +
              "/standby -w -t 30 promote >/dev/null");
  }
  std::string base_;
  std::shared_ptr<qcache::cache> cache_ = std::make_shared<qcache::cache>(following());
};

// ---- (b) Another system identifier on the same address ---------------------------------

TEST_F(StreamLossCluster, AnotherSystemOnTheSameAddress) {
  own_cluster pg(base_);
  ASSERT_TRUE(pg.start());
  const std::string ci = pg.conninfo();
  const std::string ddl = "CREATE TABLE kv (id int PRIMARY KEY, v int)";
  admin(ci, ddl + "; INSERT INTO kv VALUES (1, 10), (2, 20)");
  const std::string relid = "SELECT 'kv'::regclass::oid::text";
  const std::string old_relid = first_field(ci, relid);
  const std::string old_sysid = direct(ci, "SELECT system_identifier FROM pg_control_system()");
  const std::string point = "SELECT v FROM kv WHERE id = 1", all = "SELECT * FROM kv ORDER BY id";
  qcache::pqxx::connection c1(ci, cache_);
  ASSERT_TRUE(c1.sync());
  until_hit(c1, ci, point, 5s);
  until_hit(c1, ci, all, 5s);
  // Replace the cluster: same socket directory and port, a fresh initdb.
  const int port = pg.port();
  ASSERT_TRUE(pg.stop());
  ASSERT_EQ(sh("rm -rf " + pg.dir() + "/pgdata"), 0);
  ASSERT_TRUE(pg.start(port));
  ASSERT_EQ(pg.port(), port) << "the new cluster did not get the old one's port";
  admin(ci, ddl + "; INSERT INTO kv VALUES (1, 100), (3, 300)");
  ASSERT_NE(direct(ci, "SELECT system_identifier FROM pg_control_system()"), old_sysid);
  std::printf("relid of kv: old %s, new %s\n", old_relid.c_str(), first_field(ci, relid).c_str());
  // The old session: libpqxx may reconnect it to the new server behind our back.
  for (int i = 0; i < 3; ++i) {
    try {
      EXPECT_EQ(cached(c1, point), "'100',\n") << "the old cluster's row was served";
      EXPECT_EQ(cached(c1, all), direct(ci, all)) << "the old cluster's rows were served";
    } catch (const pqxx::broken_connection&) {
    }
  }
  qcache::pqxx::connection c2(ci, cache_);
  EXPECT_EQ(cached(c2, point), "'100',\n") << "the old cluster's row was served";
  until_hit(c2, ci, all, 10s);
  until_hit(c2, ci, point, 10s);
  admin(ci, "UPDATE kv SET v = 101 WHERE id = 1");
  ASSERT_TRUE(c2.sync());
  EXPECT_EQ(cached(c2, point), "'101',\n");
}

// ---- (c) Failover: a promoted standby, another timeline, same address -------------------

TEST_F(StreamLossCluster, FailoverToAPromotedStandby) {
  own_cluster pg(base_);
  ASSERT_TRUE(pg.start());
  const std::string ci = pg.conninfo();
  admin(ci,
        "CREATE TABLE kv (id int PRIMARY KEY, v int); INSERT INTO kv VALUES (1, 10);"
        "CREATE TABLE filler (id int PRIMARY KEY)");
  const std::string read = "SELECT v FROM kv WHERE id = 1";
  qcache::pqxx::connection c1(ci, cache_);
  ASSERT_TRUE(c1.sync());
  until_hit(c1, ci, read, 5s);
  ASSERT_EQ(copy_to_standby(pg), 0);
  // Writes the copy never gets: the row, and WAL enough that the old timeline's positions
  // stay far ahead of the new one's during the test.
  admin(ci,
        "UPDATE kv SET v = 11 WHERE id = 1; INSERT INTO filler SELECT generate_series(1, 50000)");
  ASSERT_TRUE(c1.sync());
  until_hit(c1, ci, read, 5s);
  ASSERT_EQ(cached(c1, read), "'11',\n");
  ASSERT_EQ(fail_over(pg), 0);
  ASSERT_EQ(direct(ci, "SELECT pg_is_in_recovery()"), "'t',\n");
  qcache::pqxx::connection c2(ci, cache_);
  auto hits = cache_->stats().hits;
  EXPECT_EQ(cached(c2, read), "'10',\n") << "the old primary's row was served by the standby";
  EXPECT_EQ(cached(c2, read), "'10',\n");
  EXPECT_EQ(cache_->stats().hits, hits) << "served from the cache without a stream";
  ASSERT_EQ(promote(pg), 0);
  ASSERT_EQ(direct(ci, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"),
            "'00000002',\n");
  until_hit(c2, ci, read, 15s);
  // The new timeline's stream is stalled (SIGSTOP stands for a slow walsender) while
  // another client writes: sync() must not report it processed, and no read after it may
  // be the cached row.
  auto [sender, slot] = own_slot(ci);
  ASSERT_FALSE(sender.empty());
  ASSERT_EQ(::kill(std::atoi(sender.c_str()), SIGSTOP), 0);
  resume_on_exit resume{std::atoi(sender.c_str())};
  admin(ci, "UPDATE kv SET v = 12 WHERE id = 1");
  bool synced = c2.sync();
  EXPECT_EQ(cached(c2, read), "'12',\n") << "stale after sync() returned " << synced;
  EXPECT_FALSE(synced) << "sync() succeeded although the stream could not deliver the write";
}

// A commit decoded on the old primary but never visible there (it waits for a
// synchronous standby that never answers) when the primary fails. On the new timeline
// that xid means nothing: waiting for it to become visible would refuse every store of its
// tags, and hold back the confirmation of every later commit, until the new primary's
// xids pass it.
TEST_F(StreamLossCluster, FailoverWhileACommitWaitsForItsStandby) {
  own_cluster pg(base_);
  ASSERT_TRUE(pg.start());
  const std::string ci = pg.conninfo();
  admin(ci, "CREATE TABLE kv (id int PRIMARY KEY, v int); INSERT INTO kv VALUES (1, 10)");
  const std::string read = "SELECT v FROM kv WHERE id = 1";
  qcache::pqxx::connection c1(ci, cache_);
  ASSERT_TRUE(c1.sync());
  until_hit(c1, ci, read, 5s);
  ASSERT_EQ(copy_to_standby(pg), 0);
  {  // xids the copy never sees: the waiting commit's xid stays ahead of the new primary's
    pqxx::connection burn(ci);
    for (int i = 0; i < 300; ++i) pqxx::nontransaction(burn).exec("SELECT txid_current()");
  }
  admin(ci, "ALTER SYSTEM SET synchronous_standby_names = 'ghost'");  // the copy has not
  admin(ci, "SELECT pg_reload_conf()");
  std::this_thread::sleep_for(300ms);  // the checkpointer publishes the setting
  std::thread writer([ci] {
    try {
      pqxx::connection w(ci);
      pqxx::nontransaction(w).exec("UPDATE kv SET v = 11 WHERE id = 1");
    } catch (...) {  // the primary stops while the commit waits
    }
  });
  struct joiner {
    std::thread& t;
    ~joiner() { t.join(); }
  } join{writer};
  auto applied = cache_->stats().invalidated(qcache::invalidation_cause::stream);
  auto deadline = clk::now() + 5s;
  while (cache_->stats().invalidated(qcache::invalidation_cause::stream) == applied) {
    ASSERT_LT(clk::now(), deadline) << "the stream never applied the waiting commit";
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(direct(ci, read), "'10',\n") << "the commit must not be visible yet";
  ASSERT_EQ(fail_over(pg), 0);
  ASSERT_EQ(promote(pg), 0);
  qcache::pqxx::connection c2(ci, cache_);
  until_hit(c2, ci, read, 10s);
  EXPECT_EQ(cached(c2, read), "'10',\n");
  admin(ci, "UPDATE kv SET v = 12 WHERE id = 1");
  ASSERT_TRUE(c2.sync());
  EXPECT_EQ(cached(c2, read), "'12',\n");
  until_hit(c2, ci, read, 5s);
}

}  // namespace
}  // namespace qcache_test
