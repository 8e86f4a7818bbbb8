// Test support: a SQLite database file of one's own, opened through qcache::soci and plainly.
//
// Thread safety: none. A fixture and the sessions it opens belong to the test's thread (SOCI's
// rule: one session, one thread at a time); a test that starts threads opens a session per
// thread.
//
// Each test gets a fresh directory under the system's temp directory, named from `prefix`,
// the process id and the test's name, removed at the end; `path_` is "app.db" in it. Every
// session through `open()` shares one qcache::cache (`cache_`), and `fresh()` compares a read
// through the cache with the same read on a new plain session opened on the file at that
// moment, so a stale hit fails whatever the counters say.
#pragma once

#include <gtest/gtest.h>
#include <qcache/soci.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

// Not in namespace qcache: there `soci::` and `pqxx::` would name qcache's adapters.
namespace qcache_test {

class sqlite_file_fixture : public ::testing::Test {
 protected:
  // `prefix` names the test directory (e.g. "qcache_sqlite_stale_").
  explicit sqlite_file_fixture(std::string prefix) : prefix_(std::move(prefix)) {}

  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           (prefix_ + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    path_ = file("app.db");
    cache_ = std::make_shared<qcache::cache>(qcache::options{});
    factory_ = std::make_unique<qcache::soci::caching_factory>(cache_, soci::sqlite3);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string file(const std::string& name) const { return (dir_ / name).string(); }
  std::unique_ptr<soci::session> open(const std::string& path = {}) {
    return std::make_unique<soci::session>(*factory_,
                                           "db=" + (path.empty() ? path_ : path) + " timeout=5");
  }
  std::unique_ptr<soci::session> plain(const std::string& path = {}) {
    return std::make_unique<soci::session>(soci::sqlite3,
                                           "db=" + (path.empty() ? path_ : path) + " timeout=5");
  }
  static ::sqlite_api::sqlite3* native(soci::session& s) {
    auto* b = qcache::soci::native_backend(s);
    if (!b) b = s.get_backend();
    return static_cast<soci::sqlite3_session_backend*>(b)->conn_;
  }

  // Every row of `q` as text ("a|b|\n" per row), NULL as "NULL".
  static std::string rows(soci::session& s, const std::string& q) {
    std::string r;
    soci::rowset<soci::row> rs = s.prepare << q;
    for (const auto& row : rs) {
      for (std::size_t i = 0; i < row.size(); ++i) {
        if (row.get_indicator(i) == soci::i_null)
          r += "NULL";
        else if (row.get_properties(i).get_data_type() == soci::dt_string)
          r += row.get<std::string>(i);
        else if (row.get_properties(i).get_data_type() == soci::dt_double)
          r += std::to_string(row.get<double>(i));
        else if (row.get_properties(i).get_data_type() == soci::dt_integer)
          r += std::to_string(row.get<int>(i));
        else if (row.get_properties(i).get_data_type() == soci::dt_blob)
          r += "<blob>";
        else
          r += std::to_string(row.get<long long>(i));
        r += '|';
      }
      r += '\n';
    }
    return r;
  }
  // `q` through `s` and through a fresh plain session on `path`: expects equal rows and
  // returns whether the cached read was a hit.
  bool fresh(soci::session& s, const std::string& q, const std::string& path = {},
             const std::vector<std::string>& plain_setup = {}) {
    auto before = cache_->stats().hits;
    std::string cached = rows(s, q);
    bool hit = cache_->stats().hits > before;
    auto p = plain(path);
    for (const auto& x : plain_setup) *p << x;
    EXPECT_EQ(cached, rows(*p, q)) << q << (hit ? " (a hit)" : " (a miss)");
    return hit;
  }
  bool twice(soci::session& s, const std::string& q, const std::string& path = {}) {
    fresh(s, q, path);
    return fresh(s, q, path);
  }

  // A differential script: before each write every read is primed through `s`, after it
  // every read must equal plain SOCI (a missing invalidation returns the primed result).
  void script(soci::session& s, const std::vector<std::string>& reads,
              const std::vector<std::string>& writes,
              const std::vector<std::string>& plain_setup = {}) {
    for (const auto& w : writes) {
      for (const auto& r : reads) rows(s, r);
      s << w;
      for (const auto& r : reads) {
        SCOPED_TRACE("after: " + w);
        fresh(s, r, {}, plain_setup);
      }
    }
  }

  std::string prefix_;
  std::filesystem::path dir_;
  std::string path_;
  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::soci::caching_factory> factory_;
};

}  // namespace qcache_test
