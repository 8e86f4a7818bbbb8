// Test support: a PostgreSQL schema of one's own, reached through SOCI's postgresql backend
// (qcache::soci::caching_factory) and through plain libpq for administration.
//
// Thread safety: none. A fixture and its sessions belong to the test's thread (SOCI's rule:
// one session, one thread at a time).
//
// SetUp skips the test without QCACHE_PG (fails under CI=true, see db_env.h), creates a
// fresh schema named from `prefix`, the process id and a hash of the test's name (so tests
// may run in parallel), and opens `sql_` through the cache with the schema as search_path;
// TearDown closes the sessions and drops the schema.
#pragma once

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <qcache/soci.h>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/soci.h>
#include <unistd.h>

#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "support/db_env.h"

// Not in namespace qcache: there `soci::` would name qcache's adapter.
namespace qcache_test {

class soci_pg_schema_fixture : public ::testing::Test {
 protected:
  // `prefix` starts the schema's name (e.g. "qchs_").
  explicit soci_pg_schema_fixture(std::string prefix) : prefix_(std::move(prefix)) {}

  // Runs after the schema is created and before `cache_` and `sql_` exist: the objects the
  // tests start from.
  virtual void before_connect() {}
  // The cache's options (a fixture about manual invalidation turns the stream off).
  virtual qcache::options cache_options() const { return {}; }

  void SetUp() override {
    QCACHE_REQUIRE_PG(ci);
    pg_ = ci;
    std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    schema_ = prefix_ + std::to_string(getpid()) + "_" +
              std::to_string(std::hash<std::string>{}(test) % 1000000007u);
    admin("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE; CREATE SCHEMA " + schema_);
    before_connect();
    cache_ = std::make_shared<qcache::cache>(cache_options());
    factory_ = std::make_unique<qcache::soci::caching_factory>(cache_, soci::postgresql);
    sql_ = std::make_unique<soci::session>(*factory_, conninfo());
    // before_connect() wrote through another client: let the change stream catch up.
    ASSERT_TRUE(qcache::soci::sync(*sql_));
  }
  void TearDown() override {
    if (pg_.empty()) return;
    sessions_.clear();
    sql_.reset();
    try {
      admin("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
    } catch (const std::exception& e) {
      ADD_FAILURE() << "cleanup: " << e.what();
    }
  }

  // The test's conninfo with this test's schema as search_path.
  std::string conninfo() const { return pg_ + " options='-c search_path=" + schema_ + "'"; }
  // Runs `sql` on a new plain libpq connection; throws std::runtime_error on an error.
  void admin(const std::string& sql) {
    PGconn* c = PQconnectdb(pg_.c_str());
    PGresult* r = PQexec(c, sql.c_str());
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    std::string err = PQresultErrorMessage(r);
    PQclear(r);
    PQfinish(c);
    if (!ok) throw std::runtime_error(err);
  }

  std::string prefix_;
  std::string pg_, schema_;
  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::soci::caching_factory> factory_;
  std::unique_ptr<soci::session> sql_;
  // More sessions the test opened; closed before the schema is dropped.
  std::vector<std::unique_ptr<soci::session>> sessions_;
};

}  // namespace qcache_test
