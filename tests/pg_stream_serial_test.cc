// The change stream's failure modes that change server-wide state (issue 11): registered
// RUN_SERIAL. Every test restores what it changed on every exit path.
//   * decoded before visible (STREAM.md §5 case 2): with synchronous_standby_names naming
//     a standby that never comes, a committing session waits in SyncRep after its commit
//     was decoded, while new snapshots do not see it yet. A read meanwhile must not be
//     stored, or it would be served stale after the commit becomes visible.
//   * server restart: nothing stale served, then caching resumes.
#include <gtest/gtest.h>
#include <qcache/memoize.h>

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
  std::string cmd = std::string(QCACHE_SOURCE_DIR) + "/scripts/pg restart " + dir + " >/dev/null 2>&1";
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

}  // namespace
}  // namespace qcache_test
