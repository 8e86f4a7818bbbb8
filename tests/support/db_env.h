// Test support: where the real databases are.
//
// scripts/test starts a throwaway PostgreSQL 15 and exports QCACHE_PG (a libpq
// conninfo over the unix socket) and QCACHE_PG_TCP (the same over 127.0.0.1).
// Without them a PostgreSQL test is skipped on a developer's machine, and FAILS
// under CI=true: a test that needs a database never passes without one.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace qcache::testing {

inline bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci && std::string(ci) == "true";
}

inline std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

}  // namespace qcache::testing

// Sets `var` to the PostgreSQL conninfo, or skips (fails under CI=true) when absent.
#define QCACHE_REQUIRE_PG(var)                                                  \
  std::string var = ::qcache::testing::env_or_empty("QCACHE_PG");              \
  if (var.empty()) {                                                            \
    if (::qcache::testing::in_ci()) FAIL() << "QCACHE_PG is not set under CI"; \
    GTEST_SKIP() << "QCACHE_PG not set: run through scripts/test";              \
  }
