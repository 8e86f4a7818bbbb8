// Test support: a PostgreSQL schema of one's own, reached through qcache::pqxx and plainly.
//
// Thread safety: none. A fixture and its connections belong to the test's thread (libpqxx's
// rule: a connection and everything tied to it is one world).
//
// SetUp skips the test without QCACHE_PG (fails under CI=true, see db_env.h), creates a
// fresh schema named from `prefix`, the process id and the test's name (so tests may run in
// parallel), and opens `conn_`; TearDown drops the schema. Every qcache connection shares one
// qcache::cache (`cache_`); `direct()` runs on a new plain libpqxx connection with default
// settings, which is what the expectations compare the cache's answers with.
#pragma once

#include <gtest/gtest.h>
#include <qcache/pqxx.h>
#include <unistd.h>

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "support/db_env.h"

// Not in namespace qcache: there `pqxx::` would name qcache's adapter.
namespace qcache_test {

// Every field's text, NULLs distinct from ''.
inline std::string dump(const pqxx::result& r) {
  std::ostringstream o;
  for (const auto& row : r) {
    for (const auto& f : row)
      o << (f.is_null() ? std::string("NULL") : "'" + std::string(f.c_str()) + "'") << ",";
    o << "\n";
  }
  return o.str();
}

// A cache that follows the change stream (off by default).
inline qcache::options following() {
  qcache::options o;
  o.follow_changes = true;
  return o;
}

class pg_schema_fixture : public ::testing::Test {
 protected:
  // `prefix` starts the schema's name (e.g. "qcv_"), followed by the process id and the
  // first `name_chars` characters of the test's name.
  explicit pg_schema_fixture(std::string prefix, std::size_t name_chars = 40)
      : prefix_(std::move(prefix)), name_chars_(name_chars) {}

  // Runs after the schema is created and before `cache_` and `conn_` exist: objects the
  // first qcache connection should find already there.
  virtual void before_connect() {}
  // The cache's options (the change-stream tests turn the stream on).
  virtual qcache::options cache_options() const { return {}; }

  void SetUp() override {
    QCACHE_REQUIRE_PG(ci);
    conninfo_ = ci;
    std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    for (char& c : test) c = std::isalnum(static_cast<unsigned char>(c)) ? std::tolower(c) : '_';
    schema_ = prefix_ + std::to_string(getpid()) + "_" + test.substr(0, name_chars_);
    admin("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE; CREATE SCHEMA " + schema_);
    before_connect();
    cache_ = std::make_shared<qcache::cache>(cache_options());
    conn_ = connect();
    // before_connect() wrote through another client: the change stream reports it later,
    // and must not invalidate what a test caches first.
    ASSERT_TRUE(conn_->sync());
  }
  void TearDown() override {
    if (conninfo_.empty()) return;
    conns_.clear();
    conn_.reset();
    try {
      admin("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
    } catch (const std::exception& e) {
      ADD_FAILURE() << "cleanup: " << e.what();
    }
  }

  // A qcache connection in this test's schema; `options` are more `-c name=value`.
  std::unique_ptr<qcache::pqxx::connection> connect(const std::string& options = "") {
    return std::make_unique<qcache::pqxx::connection>(
        conninfo_ + " options='-c search_path=" + schema_ + " " + options + "'", cache_);
  }
  qcache::pqxx::connection& another(const std::string& options = "") {
    conns_.push_back(connect(options));
    return *conns_.back();
  }
  void admin(const std::string& sql) {
    pqxx::connection c(conninfo_);
    pqxx::nontransaction tx(c);
    tx.exec(sql);
  }
  // Through plain libpqxx, default settings, this test's schema.
  pqxx::result direct(const std::string& sql) {
    pqxx::connection c(conninfo_ + " options='-c search_path=" + schema_ + "'");
    pqxx::nontransaction tx(c);
    return tx.exec(sql);
  }

  pqxx::result exec(const std::string& sql) { return exec_on(*conn_, sql); }
  static pqxx::result exec_on(qcache::pqxx::connection& c, const std::string& sql) {
    qcache::pqxx::nontransaction tx(c);
    return tx.exec(sql);
  }
  template <class... A>
  pqxx::result exec_params(const std::string& sql, A&&... a) {
    qcache::pqxx::nontransaction tx(*conn_);
    return tx.exec_params(sql, std::forward<A>(a)...);
  }

  // Caches `sql` on `c`: the second run must be a hit.
  void cache_on(qcache::pqxx::connection& c, const std::string& sql) {
    exec_on(c, sql);
    auto before = cache_->stats().hits;
    exec_on(c, sql);
    ASSERT_EQ(cache_->stats().hits, before + 1) << "not cached: " << sql;
  }
  void cache_it(const std::string& sql) { cache_on(*conn_, sql); }
  // `sql` on `c` returns what the database returns (`expected`, or a direct run).
  void expect_fresh_on(qcache::pqxx::connection& c, const std::string& sql,
                       const std::string& expected) {
    EXPECT_EQ(dump(exec_on(c, sql)), expected) << "stale: " << sql;
  }
  void expect_fresh(const std::string& sql) { expect_fresh_on(*conn_, sql, dump(direct(sql))); }
  void expect_hit(const std::string& sql) {
    auto before = cache_->stats().hits;
    pqxx::result r = exec(sql);
    EXPECT_EQ(cache_->stats().hits, before + 1) << "should still be a hit: " << sql;
    EXPECT_EQ(dump(r), dump(direct(sql))) << sql;
  }
  std::uint64_t flushes() const { return cache_->stats().flushes; }

  std::string prefix_;
  std::size_t name_chars_;
  std::string conninfo_, schema_;
  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::pqxx::connection> conn_;
  std::vector<std::unique_ptr<qcache::pqxx::connection>> conns_;
};

}  // namespace qcache_test
