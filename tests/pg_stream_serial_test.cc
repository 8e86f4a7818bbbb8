// The change stream's failure modes that change server-wide state (issue 11): registered
// RUN_SERIAL. Every test restores what it changed on every exit path.
//   * decoded before visible (STREAM.md §5 case 2): with synchronous_standby_names naming
//     a standby that never comes, a committing session waits in SyncRep after its commit
//     was decoded, while new snapshots do not see it yet. A read meanwhile must not be
//     stored, or it would be served stale after the commit becomes visible.
//   * server restart: nothing stale served, then caching resumes.
#include <gtest/gtest.h>
#include <qcache/memoize.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "support/pg_schema_fixture.h"

namespace qcache_test {
namespace {

using namespace std::chrono_literals;

class StreamSerial : public pg_schema_fixture {
 protected:
  StreamSerial() : pg_schema_fixture("qcss_") {}
  qcache::options cache_options() const override { return following(); }
  void before_connect() override {
    admin("SET search_path = " + schema_ +
          "; CREATE TABLE kv (id int PRIMARY KEY, v int);"
          "INSERT INTO kv VALUES (1, 10), (2, 20)");
  }
  std::string one(const std::string& sql) {
    pqxx::connection c(conninfo_);
    pqxx::nontransaction tx(c);
    auto r = tx.exec(sql);
    return r.empty() || r[0][0].is_null() ? std::string() : r[0][0].c_str();
  }
};

// Resets synchronous_standby_names however the test ends.
struct sync_rep_guard {
  std::function<void(const std::string&)> admin;
  ~sync_rep_guard() {
    try {
      admin("ALTER SYSTEM RESET synchronous_standby_names");
      admin("SELECT pg_reload_conf()");
    } catch (...) {
    }
  }
};

TEST_F(StreamSerial, DecodedBeforeVisibleIsNotStored) {
  const std::string read = "SELECT v FROM kv WHERE id = 1";
  cache_it(read);
  sync_rep_guard guard{[this](const std::string& s) { admin(s); }};
  admin("ALTER SYSTEM SET synchronous_standby_names = 'ghost'");
  admin("SELECT pg_reload_conf()");
  std::this_thread::sleep_for(300ms);  // the checkpointer publishes the setting
  pqxx::connection w(conninfo_ + " options='-c search_path=" + schema_ + "'");
  const int pid = w.backendpid();
  std::thread writer([&w] {
    try {
      pqxx::nontransaction tx(w);
      tx.exec("UPDATE kv SET v = 999 WHERE id = 1");
    } catch (...) {  // canceled while waiting: committed locally all the same
    }
  });
  struct joiner {
    std::thread& t;
    std::function<void()> release;
    ~joiner() {
      release();
      if (t.joinable()) t.join();
    }
  } join{writer, [&] {
           try {
             admin("ALTER SYSTEM RESET synchronous_standby_names");
             admin("SELECT pg_reload_conf()");
             admin("SELECT pg_cancel_backend(" + std::to_string(pid) + ")");
           } catch (...) {
           }
         }};
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (one("SELECT wait_event FROM pg_stat_activity WHERE pid = " + std::to_string(pid)) !=
         "SyncRep") {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the writer never waited in SyncRep";
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(dump(direct(read)), "'10',\n") << "the commit must not be visible yet";
  // Once the stream applied the commit, the cached entry is gone; a read then computes
  // from a snapshot without the commit and must not store that.
  auto refused = cache_->stats().not_cached(qcache::uncacheable_reason::stream_unconfirmed);
  deadline = std::chrono::steady_clock::now() + 5s;
  while (true) {
    auto hits = cache_->stats().hits;
    ASSERT_EQ(dump(exec(read)), "'10',\n");
    if (cache_->stats().hits == hits) break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the stream never applied it";
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_GT(cache_->stats().not_cached(qcache::uncacheable_reason::stream_unconfirmed), refused);
  // A memoized page over that read is not stored either.
  int runs = 0;
  auto page = [&] {
    return cache_->memoize("page", [&] {
      ++runs;
      return dump(exec(read));
    });
  };
  EXPECT_EQ(page(), "'10',\n");
  EXPECT_EQ(page(), "'10',\n");
  EXPECT_EQ(runs, 2) << "a page over a refused read was stored";
  auto hits = cache_->stats().hits;
  exec(read);
  EXPECT_EQ(cache_->stats().hits, hits) << "a read that may miss an applied commit was stored";
  join.release();
  writer.join();
  ASSERT_EQ(dump(direct(read)), "'999',\n");
  // Without sync(): nothing stale was stored, so the next read is fresh at once.
  EXPECT_EQ(dump(exec(read)), "'999',\n");
  ASSERT_TRUE(conn_->sync());
  expect_fresh(read);
  cache_it(read);  // caching of the row resumes once the commit is visible
}

TEST_F(StreamSerial, ServerRestartServesNothingStaleThenResumes) {
  const char* dir = std::getenv("QCACHE_PG_DIR");
  ASSERT_TRUE(dir) << "QCACHE_PG_DIR (scripts/pg's env) is needed to restart the server";
  const std::string read = "SELECT v FROM kv WHERE id = 2";
  cache_it(read);
  std::string cmd =
      std::string(QCACHE_SOURCE_DIR) + "/scripts/pg restart " + dir + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  admin("UPDATE " + schema_ + ".kv SET v = 2020 WHERE id = 2");
  auto& c = another();  // conn_ lost its server session with the restart
  expect_fresh_on(c, read, dump(direct(read)));
  auto deadline = std::chrono::steady_clock::now() + 15s;
  while (true) {  // caching resumes on a new slot
    auto hits = cache_->stats().hits;
    EXPECT_EQ(dump(exec_on(c, read)), dump(direct(read)));
    if (cache_->stats().hits > hits) break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "caching did not resume";
    std::this_thread::sleep_for(20ms);
  }
  admin("UPDATE " + schema_ + ".kv SET v = 2021 WHERE id = 2");
  ASSERT_TRUE(c.sync());
  expect_fresh_on(c, read, dump(direct(read)));
}

// A silent network cut (the walsender stops answering; SIGSTOP stands for a dead link):
// declared down within stream.h's silence_limit, reads then go to the database, and
// caching resumes on a new slot.
TEST_F(StreamSerial, SilentCutIsDetectedByTimeout) {
  const std::string read = "SELECT v FROM kv WHERE id = 1";
  cache_it(read);
  std::string pid =
      one("SELECT active_pid FROM pg_replication_slots WHERE slot_name LIKE 'qcache\\_" +
          std::to_string(getpid()) + "\\_%' AND active_pid IS NOT NULL");
  ASSERT_FALSE(pid.empty());
  const pid_t sender = std::atoi(pid.c_str());
  ASSERT_EQ(::kill(sender, SIGSTOP), 0);
  struct cont {
    pid_t p;
    ~cont() { ::kill(p, SIGCONT); }
  } resume{sender};
  admin("UPDATE " + schema_ + ".kv SET v = 111 WHERE id = 1");
  auto t0 = std::chrono::steady_clock::now();
  while (dump(exec(read)) != "'111',\n") {
    ASSERT_LT(std::chrono::steady_clock::now(), t0 + 8s)
        << "the silent stream was never declared lost";
    std::this_thread::sleep_for(20ms);
  }
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GT(cache_->stats().not_cached(qcache::uncacheable_reason::stream_down) +
                cache_->stats().invalidated(qcache::invalidation_cause::stream),
            0u);
  std::printf("silent cut detected after %lld ms\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()));
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (true) {  // caching resumes on a new slot (the stopped walsender keeps the old one)
    auto hits = cache_->stats().hits;
    EXPECT_EQ(dump(exec(read)), "'111',\n");
    if (cache_->stats().hits > hits) break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "caching did not resume";
    std::this_thread::sleep_for(20ms);
  }
}

// wal_level below logical: connecting fails and says how to fix it (a second cluster).
TEST_F(StreamSerial, WalLevelReplicaIsRefusedWithTheFix) {
  const char* base = std::getenv("QCACHE_PG_DIR");
  ASSERT_TRUE(base);
  std::string dir = std::string(base) + "_replica";
  std::string pg = std::string(QCACHE_SOURCE_DIR) + "/scripts/pg ";
  struct stop {
    std::string cmd;
    ~stop() { std::system(cmd.c_str()); }
  } stopper{pg + "stop " + dir + " >/dev/null 2>&1"};
  ASSERT_EQ(std::system((pg + "start " + dir + " >/dev/null 2>&1").c_str()), 0);
  std::string ci = "host=" + dir + "/sock user=postgres dbname=postgres port=" + [&] {
    std::string env = dir + "/env", port;
    FILE* f = std::fopen(env.c_str(), "r");
    char line[512];
    while (f && std::fgets(line, sizeof line, f))
      if (std::string(line).rfind("export QCACHE_PG_PORT=", 0) == 0)
        port = std::string(line).substr(22);
    if (f) std::fclose(f);
    while (!port.empty() && (port.back() == '\n')) port.pop_back();
    return port;
  }();
  {
    pqxx::connection c(ci);
    pqxx::nontransaction tx(c);
    tx.exec("ALTER SYSTEM SET wal_level = replica");
  }
  ASSERT_EQ(std::system((pg + "restart " + dir + " >/dev/null 2>&1").c_str()), 0);
  std::string msg;
  try {
    qcache::pqxx::connection c(ci, std::make_shared<qcache::cache>(following()));
  } catch (const std::exception& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("wal_level = logical"), std::string::npos) << msg;
  EXPECT_NE(msg.find("restart"), std::string::npos) << msg;
}

}  // namespace
}  // namespace qcache_test
