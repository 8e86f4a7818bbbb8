// qcache-difftest's PostgreSQL target: its sessions never wait on each other without bound,
// and a statement that does wait out the statement timeout is recognised as one.
//
// The sessions of a scenario run in ONE client thread, so a session waiting on a lock that
// another session holds inside its open transaction is a deadlock the server cannot see:
// the wait lasts forever. An hour run stalled that way: session_init's SET lock_timeout
// was undone by the role family's RESET ALL / DISCARD ALL, which return every setting to
// the connection's startup value.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "difftest.h"
#include "support/db_env.h"

namespace qcache::difftest {
namespace {

// A schema like a generated one (one table) and the generator's session_init.
scenario one_table(const std::string& schema) {
  scenario s;
  s.setup = {"CREATE SCHEMA " + schema, "CREATE TABLE " + schema + ".u (id int PRIMARY KEY, w int)",
             "INSERT INTO " + schema + ".u VALUES (1, 1), (2, 2)"};
  s.session_init = {"SET client_min_messages TO error", "SET lock_timeout TO '50ms'",
                    "SET search_path TO " + schema};
  s.cleanup = {"DROP SCHEMA IF EXISTS " + schema + " CASCADE"};
  return s;
}

std::string text(const outcome& o) { return o.ok ? "ok" : o.error_class + ": " + o.error_text; }

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// GetParam(): a statement returning settings to their startup values.
class DifftestPgTarget : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    pg_ = qcache::testing::env_or_empty("QCACHE_PG");
    if (pg_.empty()) {
      if (qcache::testing::in_ci()) FAIL() << "QCACHE_PG is not set under CI";
      GTEST_SKIP() << "QCACHE_PG not set: run through scripts/test";
    }
    schema_ = "dt_target_" + std::to_string(::getpid());
    // The statement timeout only bounds a wait that lock_timeout should have ended.
    t_ = make_postgresql_target(pg_, false, 5);
    s_ = one_table(schema_);
    t_->open(s_, 2);
    ASSERT_TRUE(t_->exec(0, GetParam()).ok);
    ASSERT_TRUE(t_->exec(0, "SET search_path TO " + schema_).ok);
  }
  void TearDown() override {
    if (t_) t_->close(s_);
  }
  std::string pg_, schema_;
  std::unique_ptr<target> t_;
  scenario s_;
};

TEST_P(DifftestPgTarget, ReadBehindAnotherSessionsUncommittedTruncateEndsWithLockTimeout) {
  ASSERT_TRUE(t_->exec(1, "BEGIN").ok);
  ASSERT_TRUE(t_->exec(1, "TRUNCATE u").ok);  // ACCESS EXCLUSIVE until the transaction ends
  const auto start = std::chrono::steady_clock::now();
  outcome cached, direct;
  t_->read(0, "SELECT * FROM u", cached, direct);
  EXPECT_LT(seconds_since(start), 2.0);
  EXPECT_FALSE(t_->timed_out(cached)) << text(cached);
  EXPECT_EQ(cached.error_class, "55P03") << text(cached);
  EXPECT_EQ(direct.error_class, "55P03") << text(direct);
  EXPECT_TRUE(t_->exec(1, "ROLLBACK").ok);
}

TEST_P(DifftestPgTarget, WriteOfARowAnotherSessionLockedEndsWithLockTimeout) {
  ASSERT_TRUE(t_->exec(1, "BEGIN").ok);
  ASSERT_TRUE(t_->exec(1, "UPDATE u SET w = 3 WHERE id = 1").ok);
  const auto start = std::chrono::steady_clock::now();
  outcome o = t_->exec(0, "UPDATE u SET w = 4 WHERE id = 1");
  EXPECT_LT(seconds_since(start), 2.0);
  EXPECT_FALSE(t_->timed_out(o)) << text(o);
  EXPECT_EQ(o.error_class, "55P03") << text(o);
  EXPECT_TRUE(t_->exec(1, "ROLLBACK").ok);
}

INSTANTIATE_TEST_SUITE_P(Resets, DifftestPgTarget,
                         ::testing::Values("RESET ALL", "DISCARD ALL", "RESET lock_timeout",
                                           "SET lock_timeout TO DEFAULT"));

TEST(DifftestPgTargetTimeout, AStatementPastTheTimeoutIsATimeoutAndTheServerStateNamesIt) {
  QCACHE_REQUIRE_PG(pg);
  auto t = make_postgresql_target(pg, false, 0.3);
  scenario s = one_table("dt_target_timeout_" + std::to_string(::getpid()));
  t->open(s, 2);
  outcome o = t->exec(0, "SELECT pg_sleep(3)");
  EXPECT_TRUE(t->timed_out(o)) << text(o);
  outcome other = t->exec(1, "SELECT 1/0");
  EXPECT_FALSE(t->timed_out(other)) << text(other);
  const std::string state = t->server_state();
  EXPECT_NE(state.find("qcache-difftest-" + std::to_string(::getpid()) + "-s0"), std::string::npos)
      << state;
  t->close(s);
}

}  // namespace
}  // namespace qcache::difftest
