// A BEGIN inside an open transaction block is only a WARNING in PostgreSQL, but its
// transaction modes still apply to the open transaction (when it has not taken a snapshot
// yet): "BEGIN; BEGIN ISOLATION LEVEL REPEATABLE READ" runs a REPEATABLE READ transaction.
// Found by qcache-difftest's PostgreSQL hour run (--seed 2, scenario seed
// 11119882047002339692): a read in such a transaction was served a newer cached result
// than its snapshot holds.
#include <gtest/gtest.h>
#include <qcache/pqxx.h>

#include <string>

#include "support/pg_schema_fixture.h"

namespace {

using qcache_test::dump;

class NestedBegin : public qcache_test::pg_schema_fixture,
                    public ::testing::WithParamInterface<const char*> {
 protected:
  NestedBegin() : pg_schema_fixture("qnb_", 30) {}
  void before_connect() override {
    admin("CREATE TABLE " + schema_ + ".t (id int PRIMARY KEY, v text); INSERT INTO " + schema_ +
          ".t VALUES (1, 'old'), (2, 'two')");
  }
  // What the server returns to `sql` in conn_'s session state, bypassing qcache.
  std::string raw(const std::string& sql) {
    pqxx::nontransaction n(conn_->raw());
    return dump(n.exec(sql));
  }
};

TEST_P(NestedBegin, ItsIsolationLevelAppliesToTheOpenTransactionAndIsNeverServedNewerRows) {
  auto& w = another();
  const std::string q = "SELECT v FROM t WHERE id = 1";
  exec(q);  // the session's context is known when the transaction begins
  exec("BEGIN");
  exec(GetParam());                      // a warning, but the isolation level applies
  EXPECT_EQ(dump(exec(q)), "'old',\n");  // the snapshot is taken
  exec_on(w, "UPDATE t SET v = 'new' WHERE id = 1");
  cache_on(w, q);  // the committed state is cached
  EXPECT_EQ(raw(q), "'old',\n");
  EXPECT_EQ(dump(exec(q)), raw(q)) << "a newer cached result served in a snapshot transaction";
  exec("COMMIT");
  EXPECT_EQ(dump(exec(q)), "'new',\n");
}

INSTANTIATE_TEST_SUITE_P(Forms, NestedBegin,
                         ::testing::Values("BEGIN ISOLATION LEVEL REPEATABLE READ",
                                           "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                                           "BEGIN TRANSACTION READ WRITE, ISOLATION LEVEL "
                                           "REPEATABLE READ"));

}  // namespace
