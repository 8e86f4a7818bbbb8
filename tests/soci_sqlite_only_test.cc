// qcache::soci_sqlite, the SOCI adapter built without qcache's PostgreSQL analyzer (no
// libpg_query, no libpq): SQLite reads are cached and kept fresh through rowid predicates
// and table tags; column-equality reads fall back to the table. Every value read through the
// cache is compared with a plain SOCI session.
#include <gtest/gtest.h>
#include <qcache/soci.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>

namespace {

namespace fs = std::filesystem;

class SociSqliteOnly : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("qcache_soci_sqlite_only_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "app.db").string();
    cache_ = std::make_shared<qcache::cache>(qcache::options{});
    factory_ = std::make_unique<qcache::soci::caching_factory>(cache_, soci::sqlite3);
    sql_ = std::make_unique<soci::session>(*factory_, "db=" + path_ + " timeout=5");
    *sql_ << "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, k TEXT)";
    *sql_ << "INSERT INTO t VALUES (1, 'v1', 'a'), (2, 'v2', 'b'), (3, 'v3', 'a')";
  }
  void TearDown() override {
    sql_.reset();
    fs::remove_all(dir_);
  }

  // The first v of `q` with :x bound to `x` (an int binds as an integer: rowid predicates), through the cache (checked against a plain
  // session); `hit` says whether the cache served it.
  template <class T>
  std::string read(const std::string& q, const T& x, bool& hit) {
    auto before = cache_->stats().hits;
    std::string v = first(*sql_, q, x);
    hit = cache_->stats().hits == before + 1;
    soci::session plain(soci::sqlite3, "db=" + path_ + " timeout=5");
    EXPECT_EQ(v, first(plain, q, x)) << "stale: " << q;
    return v;
  }
  template <class T>
  static std::string first(soci::session& s, const std::string& q, const T& x) {
    std::string v;
    soci::indicator ind = soci::i_ok;
    s << q, soci::use(x, "x"), soci::into(v, ind);
    return s.got_data() ? v : "<none>";
  }

  fs::path dir_;
  std::string path_;
  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::soci::caching_factory> factory_;
  std::unique_ptr<soci::session> sql_;
};

TEST_F(SociSqliteOnly, RowidReadIsCachedAndOnlyItsRowInvalidates) {
  bool hit = false;
  read("SELECT v FROM t WHERE id = :x", 1, hit);
  read("SELECT v FROM t WHERE id = :x", 1, hit);
  EXPECT_TRUE(hit);
  *sql_ << "UPDATE t SET v = 'new' WHERE id = 1";
  EXPECT_EQ(read("SELECT v FROM t WHERE id = :x", 1, hit), "new");
  EXPECT_FALSE(hit);
}

TEST_F(SociSqliteOnly, ColumnEqualityReadDependsOnTheTable) {
  const std::string q = "SELECT v FROM t WHERE k = :x ORDER BY id";
  bool hit = false;
  read(q, std::string("a"), hit);
  read(q, std::string("a"), hit);
  EXPECT_TRUE(hit);
  *sql_ << "UPDATE t SET v = 'other' WHERE id = 2";  // a row with k = 'b'
  read(q, std::string("a"), hit);
  EXPECT_FALSE(hit) << "without the analyzer a column read depends on the whole table";
  *sql_ << "UPDATE t SET v = 'first' WHERE id = 1";
  EXPECT_EQ(read(q, std::string("a"), hit), "first");
}

TEST_F(SociSqliteOnly, ExplainShowsTableDependencyWithoutColumnPredicate) {
  qcache::explanation e = qcache::soci::explain(*sql_, "SELECT v FROM t WHERE k = :x");
  EXPECT_TRUE(e.cacheable) << e.to_string();
  EXPECT_NE(std::find(e.tags.begin(), e.tags.end(), "reads main.t"), e.tags.end());
  for (const auto& t : e.tags) EXPECT_EQ(t.find("predicate"), std::string::npos) << t;
}

TEST_F(SociSqliteOnly, ManualInvalidationWorks) {
  bool hit = false;
  read("SELECT v FROM t WHERE id = :x", 2, hit);
  read("SELECT v FROM t WHERE id = :x", 3, hit);
  qcache::soci::invalidate_row(*sql_, "t", "id", "2");
  read("SELECT v FROM t WHERE id = :x", 2, hit);
  EXPECT_FALSE(hit);
  read("SELECT v FROM t WHERE id = :x", 3, hit);
  EXPECT_TRUE(hit);
  qcache::soci::invalidate_table(*sql_, "t");
  read("SELECT v FROM t WHERE id = :x", 3, hit);
  EXPECT_FALSE(hit);
}

}  // namespace
