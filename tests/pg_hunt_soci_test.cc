// Adversarial hunt through SOCI's postgresql backend (qcache::soci::caching_factory):
// each test caches a read, writes through qcache in this process, and compares the read
// with a plain SOCI session on the same database.
//
// Each test works in a fresh schema with a unique name, so tests may run in parallel.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <qcache/soci.h>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/soci.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/soci_pg_schema_fixture.h"

namespace {

// t(id, v, k) = (1, 1, 'a'), (2, 2, 'b').
class SociHunt : public qcache_test::soci_pg_schema_fixture {
 protected:
  SociHunt() : soci_pg_schema_fixture("qchs_") {}

  void before_connect() override {
    admin("CREATE TABLE " + schema_ + ".t (id int PRIMARY KEY, v int, k text);" +
          "INSERT INTO " + schema_ + ".t VALUES (1, 1, 'a'), (2, 2, 'b')");
  }

  // Every row of `q` (one int column, NULL as "NULL"), through `s`.
  static std::string ints(soci::session& s, const std::string& q) {
    std::string out;
    soci::rowset<soci::row> rs = s.prepare << q;
    for (const auto& row : rs) {
      out += row.get_indicator(0) == soci::i_null ? "NULL" : std::to_string(row.get<int>(0));
      out += "\n";
    }
    return out;
  }
  // Caches `q` (the second run must be a hit).
  void cache_it(const std::string& q) {
    ints(*sql_, q);
    auto before = cache_->stats().hits;
    ints(*sql_, q);
    ASSERT_EQ(cache_->stats().hits, before + 1) << "not cached: " << q;
  }
  void expect_fresh(const std::string& q) {
    soci::session plain(soci::postgresql, conninfo());
    EXPECT_EQ(ints(*sql_, q), ints(plain, q)) << "stale: " << q;
  }
};

TEST_F(SociHunt, BulkInsertNamesEveryRow) {
  const std::string q = "SELECT id FROM t WHERE k = 'y' ORDER BY id";
  cache_it(q);
  std::vector<int> ids{5, 6};
  std::vector<std::string> ks{"x", "y"};
  *sql_ << "INSERT INTO t (id, k) VALUES (:id, :k)", soci::use(ids), soci::use(ks);
  expect_fresh(q);
}

TEST_F(SociHunt, BulkUpdateByKeyNamesEveryRow) {
  const std::string q = "SELECT v FROM t WHERE id = 2";
  cache_it(q);
  std::vector<int> ids{1, 2};
  std::vector<int> vs{10, 20};
  *sql_ << "UPDATE t SET v = :v WHERE id = :id", soci::use(vs), soci::use(ids);
  expect_fresh(q);
}

TEST_F(SociHunt, BulkDeleteByKeyNamesEveryRow) {
  const std::string q = "SELECT v FROM t WHERE id = 2";
  cache_it(q);
  std::vector<int> ids{1, 2};
  *sql_ << "DELETE FROM t WHERE id = :id", soci::use(ids);
  expect_fresh(q);
}

TEST_F(SociHunt, BulkDeleteReadByAnotherColumn) {
  const std::string q = "SELECT id FROM t WHERE k = 'b'";
  cache_it(q);
  std::vector<int> ids{1, 2};
  *sql_ << "DELETE FROM t WHERE id = :id", soci::use(ids);
  expect_fresh(q);
}

// A vector into smaller than the result fetches one batch: the rest was never read, so
// that batch must not be stored as the whole result.
TEST_F(SociHunt, VectorIntoSmallerThanTheResultIsNotStoredAsComplete) {
  const std::string q = "SELECT id FROM t ORDER BY id";
  std::vector<int> one(1);
  *sql_ << q, soci::into(one);
  ASSERT_EQ(one.size(), 1u);
  std::vector<int> all(10);
  *sql_ << q, soci::into(all);
  std::vector<int> again(10);
  *sql_ << q, soci::into(again);
  EXPECT_EQ(all.size(), 2u);
  EXPECT_EQ(again.size(), 2u);
}

TEST_F(SociHunt, RowsetAbandonedAfterTheFirstRowIsNotStoredAsComplete) {
  const std::string q = "SELECT id FROM t ORDER BY id";
  {
    soci::rowset<int> rs = (sql_->prepare << q);
    auto it = rs.begin();
    ASSERT_EQ(*it, 1);
  }
  std::string a = ints(*sql_, q);
  std::string b = ints(*sql_, q);
  EXPECT_EQ(a, "1\n2\n");
  EXPECT_EQ(b, "1\n2\n");
}

TEST_F(SociHunt, StatementFetchedInBatchesThenReRun) {
  const std::string q = "SELECT id FROM t ORDER BY id";
  std::vector<int> got(1);
  soci::statement st = (sql_->prepare << q, soci::into(got));
  st.execute();
  std::string seen;
  while (st.fetch())
    for (int x : got) seen += std::to_string(x) + ",";
  std::vector<int> all(10);
  *sql_ << q, soci::into(all);
  EXPECT_EQ(all.size(), 2u);
  *sql_ << "UPDATE t SET id = 3 WHERE id = 2";
  std::vector<int> after(10);
  *sql_ << q, soci::into(after);
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[1], 3);
}

TEST_F(SociHunt, ScalarIntoOfSeveralRowsThenAVector) {
  const std::string q = "SELECT id FROM t ORDER BY id";
  int first = 0;
  *sql_ << q, soci::into(first);
  *sql_ << q, soci::into(first);
  std::vector<int> all(10);
  *sql_ << q, soci::into(all);
  EXPECT_EQ(all.size(), 2u);
}

TEST_F(SociHunt, PreparedStatementReExecutedWithNewParametersAfterAWrite) {
  int id = 1, v = 0;
  soci::statement st = (sql_->prepare << "SELECT v FROM t WHERE id = :id", soci::use(id), soci::into(v));
  st.execute(true);
  st.execute(true);
  EXPECT_EQ(v, 1);
  int nv = 50;
  *sql_ << "UPDATE t SET v = :v WHERE id = 1", soci::use(nv);
  st.execute(true);
  EXPECT_EQ(v, 50);
  id = 2;
  st.execute(true);
  EXPECT_EQ(v, 2);
}

// reconnect() opens a new server session with the connection string's settings: what the
// old session SET no longer applies.
TEST_F(SociHunt, ReconnectDropsTheOldSessionsSearchPath) {
  admin("DROP SCHEMA IF EXISTS " + schema_ + "_o CASCADE; CREATE SCHEMA " + schema_ +
        "_o; CREATE TABLE " + schema_ + "_o.t (id int PRIMARY KEY, v int, k text);" +
        "INSERT INTO " + schema_ + "_o.t VALUES (1, 100, 'o')");
  const std::string q = "SELECT v FROM t WHERE id = 1";
  *sql_ << "SET search_path = " + schema_ + "_o";
  cache_it(q);
  EXPECT_EQ(ints(*sql_, q), "100\n");
  sql_->reconnect();
  std::string after = ints(*sql_, q);
  admin("DROP SCHEMA IF EXISTS " + schema_ + "_o CASCADE");
  EXPECT_EQ(after, "1\n");
}

TEST_F(SociHunt, ReconnectInsideATransaction) {
  const std::string q = "SELECT v FROM t WHERE id = 1";
  cache_it(q);
  sql_->begin();
  *sql_ << "UPDATE t SET v = 5 WHERE id = 1";
  sql_->reconnect();  // the server rolls the transaction back
  expect_fresh(q);
  *sql_ << "UPDATE t SET v = 6 WHERE id = 1";
  expect_fresh(q);
  cache_it(q);
}

}  // namespace
