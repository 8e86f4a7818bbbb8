// Session and transaction state (CORRECTNESS.md P22) through the libpqxx adapter: the
// context a result is keyed under and the transaction a statement runs in must be the
// server's, not what qcache guessed from the statement text. Every test compares what the
// cache serves with what the database answers on the same server session (raw()) or on a
// plain connection.
//
// Each test creates its objects in fresh schemas with unique names (and roles with unique
// names) and drops them. The ALTER SYSTEM tests change server-wide settings for a moment:
// this binary is registered RUN_SERIAL.
#include <qcache/pqxx.h>

#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/pg_schema_fixture.h"

namespace {

const std::string q1 = "SELECT v FROM t WHERE id = 1";

using qcache_test::dump;

// t(id, v) in two schemas with different values: schema_ (the search_path of connect()
// without a path) and other_.
class PgSession : public qcache_test::pg_schema_fixture {
 protected:
  PgSession() : pg_schema_fixture("qss_", 36) {}

  void before_connect() override {
    other_ = schema_ + "_o";
    drop_schemas_ = {other_};
    admin("DROP SCHEMA IF EXISTS " + other_ + " CASCADE; CREATE SCHEMA " + other_);
    admin("CREATE TABLE " + schema_ + ".t (id int PRIMARY KEY, v text);"
          "INSERT INTO " + schema_ + ".t VALUES (1, 'mine'), (2, 'mine2');"
          "CREATE TABLE " + other_ + ".t (id int PRIMARY KEY, v text);"
          "INSERT INTO " + other_ + ".t VALUES (1, 'other'), (2, 'other2')");
  }

  // After the shared fixture drops schema_: the other schemas and the roles.
  void TearDown() override {
    pg_schema_fixture::TearDown();
    if (conninfo_.empty()) return;
    try {
      for (const auto& s : drop_schemas_) admin("DROP SCHEMA IF EXISTS " + s + " CASCADE");
      for (const auto& r : drop_roles_) admin("DROP ROLE IF EXISTS " + r);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "cleanup: " << e.what();
    }
  }

  // This file's own connect and another (they hide the shared ones): `path` replaces the
  // search_path (schema_ when empty), `more` is appended to the options as they are.
  std::unique_ptr<qcache::pqxx::connection> connect(const std::string& path = {},
                                                    const std::string& more = {}) {
    return std::make_unique<qcache::pqxx::connection>(
        conninfo_ + " options='-c search_path=" + (path.empty() ? schema_ : path) + more + "'",
        cache_);
  }
  qcache::pqxx::connection& another(const std::string& path = {}, const std::string& more = {}) {
    conns_.push_back(connect(path, more));
    return *conns_.back();
  }
  std::string role(const std::string& suffix) {
    std::string r = schema_.substr(0, 40) + "_" + suffix;
    drop_roles_.push_back(r);
    return r;
  }
  // What the server session behind `c` answers, bypassing the cache.
  static pqxx::result truth_on(qcache::pqxx::connection& c, const std::string& sql) {
    pqxx::nontransaction tx(c.raw());
    return tx.exec(sql);
  }
  // `sql` through qcache and directly on the same server session must agree.
  void expect_same(qcache::pqxx::connection& c, const std::string& sql) {
    std::string cached = dump(exec_on(c, sql));
    EXPECT_EQ(cached, dump(truth_on(c, sql))) << sql;
  }
  template <class Tx>
  void expect_same_in(Tx& tx, const std::string& sql) {
    std::string cached = dump(tx.exec(sql));
    EXPECT_EQ(cached, dump(tx.raw().exec(sql))) << sql;
  }

  // `a` opens a transaction, ends it with `chain` (which opens the next one), writes and
  // commits; `b` reads meanwhile and after.
  void chain(qcache::pqxx::connection& a, qcache::pqxx::connection& b, const std::string& end) {
    exec_on(a, "BEGIN");
    exec_on(a, "UPDATE t SET v = 'first' WHERE id = 2");
    exec_on(a, end);
    exec_on(a, "UPDATE t SET v = 'uncommitted' WHERE id = 1");
    expect_same(b, q1);  // the committed row (b may cache it)
    exec_on(a, "COMMIT");
    expect_same(b, q1);
    expect_same(b, "SELECT v FROM t WHERE id = 2");
  }

  std::string other_;
  std::vector<std::string> drop_schemas_, drop_roles_;
};

// ---- 3: multi-statement strings ------------------------------------------------------

TEST_F(PgSession, MultiStatement_SetConfigInsideChangesTheContext) {
  expect_same(*conn_, q1);
  expect_same(*conn_, q1);  // a hit of 'mine'
  exec("SELECT set_config('search_path', '" + other_ + "', false); SELECT 1");
  expect_same(*conn_, q1);  // the server now reads other.t
}

TEST_F(PgSession, MultiStatement_SetInsideChangesTheContext) {
  expect_same(*conn_, q1);
  exec("SELECT 1; SET search_path = " + other_);
  expect_same(*conn_, q1);
}

// User code the statement reaches may run set_config() or SET: an IMMUTABLE function
// (PERFORM is a read), a trigger, a view over a volatile function.
// f is STABLE: a function declared IMMUTABLE is trusted not to change settings, as it is
// trusted to return the same result for the same arguments (reads calling it are cached).
TEST_F(PgSession, MultiStatement_UserCodeThatSetsSearchPath) {
  admin("CREATE FUNCTION " + schema_ +
        ".f() RETURNS int LANGUAGE plpgsql STABLE AS $$"
        "BEGIN PERFORM set_config('search_path', '" +
        other_ +
        "', false); RETURN 1; END $$;"
        "CREATE FUNCTION " +
        schema_ +
        ".g() RETURNS trigger LANGUAGE plpgsql AS $$"
        "BEGIN PERFORM set_config('search_path', '" +
        other_ +
        "', false); RETURN NEW; END $$;"
        "CREATE TABLE " +
        schema_ +
        ".log (x int);"
        "CREATE TRIGGER g BEFORE INSERT ON " +
        schema_ + ".log FOR EACH ROW EXECUTE FUNCTION " + schema_ +
        ".g();"
        "CREATE FUNCTION " +
        schema_ +
        ".h() RETURNS int LANGUAGE plpgsql AS $$"
        "BEGIN PERFORM set_config('search_path', '" +
        other_ +
        "', false); RETURN 1; END $$;"
        "CREATE VIEW " +
        schema_ + ".vh AS SELECT " + schema_ + ".h() AS x");
  const std::vector<std::string> setters = {"SELECT f() FROM t WHERE id = 2",
                                            "INSERT INTO log VALUES (1)", "SELECT x FROM vh"};
  for (const std::string& setter : setters) {
    auto c = connect();
    expect_same(*c, q1);
    expect_same(*c, q1);
    exec_on(*c, setter);
    SCOPED_TRACE(setter);
    expect_same(*c, q1);
  }
}

// ---- 8: prepared statement names rebound through SQL -----------------------------------

TEST_F(PgSession, Prepared_RePreparedBySqlRunsTheNewStatement) {
  conn_->prepare("q", q1);
  auto run = [&] {
    qcache::pqxx::nontransaction tx(*conn_);
    return tx.exec_prepared("q");
  };
  EXPECT_EQ(dump(run()), "'mine',\n");
  EXPECT_EQ(dump(run()), "'mine',\n");  // a hit
  exec("DEALLOCATE q");
  exec("PREPARE q AS UPDATE t SET v = 'written' WHERE id = 1 RETURNING v");
  EXPECT_EQ(dump(run()), "'written',\n");
  EXPECT_EQ(dump(truth_on(*conn_, q1)), "'written',\n");  // the UPDATE ran
  expect_same(another(), q1);
}

TEST_F(PgSession, Prepared_DeallocatedBySqlRaisesDoesNotExist) {
  for (std::string drop : {"DEALLOCATE q", "DEALLOCATE ALL", "DISCARD ALL"}) {
    // A cache of its own: the first call must prepare the statement on the server (a hit
    // would skip libpqxx's lazy prepare, and then nothing would be deallocated).
    auto c = std::make_unique<qcache::pqxx::connection>(
        conninfo_ + " options='-c search_path=" + schema_ + "'",
        std::make_shared<qcache::cache>(qcache::options{}));
    c->prepare("q", q1);
    auto run = [&] {
      qcache::pqxx::nontransaction tx(*c);
      return tx.exec_prepared("q");
    };
    EXPECT_EQ(dump(run()), "'mine',\n");
    EXPECT_EQ(dump(run()), "'mine',\n");
    exec_on(*c, drop);
    EXPECT_THROW(run(), pqxx::sql_error) << drop;
  }
}

TEST_F(PgSession, Prepared_NameTakenBySqlBeforePrepareIsNeverServedFromTheCache) {
  auto& b = another();
  for (int i = 0; i < 2; ++i) {
    qcache::pqxx::nontransaction tx(b);
    EXPECT_EQ(dump(tx.exec_params(q1)), "'mine',\n");  // cached by another connection
  }
  const std::string sneaky = "PREPARE q AS UPDATE t SET v = 'sneaky' WHERE id = 1 RETURNING v";
  // What the server does: the same steps on a plain connection, rolled back.
  std::string server;
  {
    pqxx::connection plain(conninfo_ + " options='-c search_path=" + schema_ + "'");
    pqxx::work w(plain);
    w.exec(sneaky);
    plain.prepare("q", q1);
    try {
      server = dump(w.exec_prepared("q"));
    } catch (const pqxx::sql_error& e) {
      server = std::string("error: ") + e.what();
    }
  }
  exec(sneaky);
  conn_->prepare("q", q1);
  std::string cached;
  try {
    qcache::pqxx::nontransaction tx(*conn_);
    cached = dump(tx.exec_prepared("q"));
  } catch (const pqxx::sql_error& e) {
    cached = std::string("error: ") + e.what();
  }
  EXPECT_EQ(cached, server);  // whatever the server does with the name, not the cache
}

// ---- 9: ROLLBACK TO SAVEPOINT undoes SET ------------------------------------------------

TEST_F(PgSession, Savepoint_RollbackToUndoesSetSearchPath) {
  expect_same(another(other_), q1);  // other.t's row cached under the other context
  qcache::pqxx::work tx(*conn_);
  tx.exec("SAVEPOINT s");
  tx.exec("SET search_path = " + other_);
  expect_same_in(tx, q1);
  tx.exec("ROLLBACK TO SAVEPOINT s");
  expect_same_in(tx, q1);
  tx.commit();
  expect_same(*conn_, q1);
}

TEST_F(PgSession, Savepoint_RollbackToUndoesSetRoleNoPrivilegeBypass) {
  std::string low = role("low");
  admin("CREATE ROLE " + low + "; GRANT USAGE ON SCHEMA " + schema_ + " TO " + low);
  const std::string secret = "SELECT v FROM t WHERE id = 2";
  exec("BEGIN");
  exec("SAVEPOINT s");
  exec("SET ROLE " + low);
  EXPECT_THROW(exec("SELECT 1 FROM t WHERE id = 0"), pqxx::insufficient_privilege);
  exec("ROLLBACK TO SAVEPOINT s");
  expect_same(*conn_, secret);  // read as the superuser again
  exec("COMMIT");
  auto& c = another();
  exec_on(c, "SET ROLE " + low);
  EXPECT_THROW(exec_on(c, secret), pqxx::insufficient_privilege);
}

TEST_F(PgSession, Savepoint_RollbackToAfterFailureUndoesSet) {
  exec("BEGIN");
  exec("SAVEPOINT s");
  exec("SET search_path = " + other_);
  expect_same(*conn_, q1);
  EXPECT_THROW(exec("SELECT 1/0"), pqxx::sql_error);
  exec("ROLLBACK TO SAVEPOINT s");
  expect_same(*conn_, q1);
  exec("COMMIT");
  expect_same(*conn_, q1);
}

// ---- 10: COMMIT AND CHAIN / ROLLBACK AND CHAIN -----------------------------------------

TEST_F(PgSession, Chain_CommitAndChainKeepsATransactionOpen) {
  chain(*conn_, another(), "COMMIT AND CHAIN");
  EXPECT_EQ(dump(truth_on(*conn_, q1)), "'uncommitted',\n");
}

TEST_F(PgSession, Chain_RollbackAndChainKeepsATransactionOpen) {
  chain(*conn_, another(), "ROLLBACK AND CHAIN");
  EXPECT_EQ(dump(truth_on(*conn_, "SELECT v FROM t WHERE id = 2")), "'mine2',\n");
}

TEST_F(PgSession, Chain_InsideAWorkTransaction) {
  auto& b = another();
  {
    qcache::pqxx::work tx(*conn_);
    tx.exec("COMMIT AND CHAIN");
    tx.exec("UPDATE t SET v = 'uncommitted' WHERE id = 1");
    expect_same(b, q1);
    tx.commit();
  }
  expect_same(b, q1);
}

// libpqxx aborts a transaction when exec() fails, but not when exec_params() fails: the
// wrapper follows the server, and later writes in that transaction still invalidate.
TEST_F(PgSession, Tx_FailedExecParamsKeepsTheTransactionAndItsWritesInvalidate) {
  auto& b = another();
  expect_same(b, q1);
  {
    qcache::pqxx::work tx(*conn_);
    tx.exec("SAVEPOINT s");
    EXPECT_THROW(tx.exec_params("SELECT 1 / $1::int", 0), pqxx::data_exception);
    tx.exec("ROLLBACK TO SAVEPOINT s");
    tx.exec("UPDATE t SET v = 'written' WHERE id = 1");
    expect_same(b, q1);
    tx.commit();
  }
  expect_same(b, q1);
  EXPECT_EQ(dump(truth_on(b, q1)), "'written',\n");
}

// ---- 11: SELECT INTO TEMP shadows a permanent table ------------------------------------

TEST_F(PgSession, TempTable_SelectIntoTempIsNeverSharedAcrossSessions) {
  auto& b = another();
  expect_same(b, q1);
  exec("SELECT 1 AS id, 'temp'::text AS v INTO TEMP t");
  expect_same(*conn_, q1);  // the temporary table
  expect_same(*conn_, q1);
  expect_same(b, q1);  // the permanent one
  exec("CREATE TEMP TABLE t2 AS SELECT 1");  // another temp relation: nothing changes
  expect_same(*conn_, q1);
  expect_same(b, q1);
}

// ---- 12: SET transaction_isolation -----------------------------------------------------

TEST_F(PgSession, Isolation_SetTransactionIsolationSettingIsRecognised) {
  auto& w = another();
  auto& c = another();
  // {set before BEGIN, set as the transaction's first statement}
  const std::vector<std::pair<std::string, std::string>> forms = {
      {"", "SET transaction_isolation = 'repeatable read'"},
      {"", "SET transaction_isolation TO 'serializable'"},
      {"SET default_transaction_isolation = 'repeatable read'", ""},
      {"SELECT set_config('default_transaction_isolation', 'repeatable read', false)", ""},
      {"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ", ""}};
  for (const auto& [before, inside] : forms) {
    exec_on(w, "UPDATE t SET v = 'mine' WHERE id = 1");
    if (!before.empty()) {
      exec(before);
      exec_on(c, before);
    }
    {
      qcache::pqxx::work tx(*conn_);
      if (!inside.empty()) tx.exec(inside);
      expect_same_in(tx, q1);  // the snapshot is taken
      exec_on(w, "UPDATE t SET v = 'newer' WHERE id = 1");
      expect_same_in(tx, q1);  // the snapshot's old row
      {
        qcache::pqxx::work t2(c);
        if (!inside.empty()) t2.exec(inside);
        expect_same_in(t2, q1);  // a newer snapshot: the new row
        t2.commit();
      }
      tx.commit();
    }
    expect_same(c, q1);
    exec("RESET default_transaction_isolation");
    exec_on(c, "RESET default_transaction_isolation");
  }
}

// ---- 13: set_config(..., true) in a write, in a transaction ----------------------------

TEST_F(PgSession, SetConfig_LocalInsideAWriteEndsAtCommit) {
  auto& o = another(other_);
  expect_same(o, q1);  // other.t's row cached under the other context
  {
    qcache::pqxx::work tx(*conn_);
    tx.exec("UPDATE t SET v = v WHERE id = 2 AND set_config('search_path', '" + other_ +
            "', true) IS NOT NULL");
    expect_same_in(tx, q1);
    tx.commit();
  }
  expect_same(*conn_, q1);  // the setting ended with the transaction
  expect_same(o, q1);
}

// ---- 14: a schema created later enters another session's search_path ---------------------

TEST_F(PgSession, SearchPath_SchemaCreatedLaterByAnotherSession) {
  std::string later = schema_ + "_l";
  drop_schemas_.push_back(later);
  auto& a = another(later + "," + schema_);
  auto& b = another();
  expect_same(a, q1);
  expect_same(a, q1);
  exec_on(b, "CREATE SCHEMA " + later + "; CREATE TABLE " + later +
                 ".t (id int PRIMARY KEY, v text); INSERT INTO " + later + ".t VALUES (1, 'later')");
  expect_same(a, q1);  // now later.t
  exec_on(b, "UPDATE " + later + ".t SET v = 'later2' WHERE id = 1");
  expect_same(a, q1);
  exec_on(b, "UPDATE t SET v = 'mine3' WHERE id = 1");
  expect_same(a, q1);
  expect_same(b, q1);
}

// ALTER ROLE / ALTER DATABASE ... SET apply to sessions that start later: a session started
// after the change reads its own context.
TEST_F(PgSession, RoleSettings_ApplyToSessionsStartedAfterTheChange) {
  std::string r = role("login");
  admin("CREATE ROLE " + r + " LOGIN; GRANT USAGE ON SCHEMA " + schema_ + ", " + other_ + " TO " +
        r + "; GRANT SELECT ON " + schema_ + ".t, " + other_ + ".t TO " + r);
  auto as_role = [&] {
    return std::make_unique<qcache::pqxx::connection>(conninfo_ + " user=" + r, cache_);
  };
  admin("ALTER ROLE " + r + " SET search_path = " + schema_);
  auto a = as_role();
  expect_same(*a, q1);
  expect_same(*a, q1);
  admin("ALTER ROLE " + r + " SET search_path = " + other_);
  auto b = as_role();
  expect_same(*b, q1);
  expect_same(*a, q1);
  exec_on(*a, "RESET ALL");
  expect_same(*a, q1);
}

// ---- 15: ALTER SYSTEM + reload ---------------------------------------------------------

class PgReload : public PgSession {
 protected:
  void TearDown() override {
    if (!conninfo_.empty() && !reset_.empty()) {
      try {
        admin("ALTER SYSTEM RESET " + reset_);
        admin("SELECT pg_reload_conf()");
      } catch (const std::exception& e) {
        ADD_FAILURE() << "reset: " << e.what();
      }
    }
    PgSession::TearDown();
  }
  static void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(300)); }
  std::string current(const std::string& name) {
    pqxx::connection c(conninfo_);
    pqxx::nontransaction tx(c);
    return tx.exec("SELECT current_setting('" + name + "')")[0][0].c_str();
  }
  std::string reset_;
};

TEST_F(PgReload, Reload_ReportedTimeZoneChangeIsSeenAfterTheNextStatement) {
  admin("CREATE TABLE " + schema_ + ".tz (id int PRIMARY KEY, ts timestamptz);"
        "INSERT INTO " + schema_ + ".tz VALUES (1, '2024-01-01 12:00:00+00')");
  const std::string q = "SELECT ts::text FROM tz WHERE id = 1";
  std::string old_tz = current("TimeZone");
  std::string new_tz = old_tz == "Asia/Tokyo" ? "America/Lima" : "Asia/Tokyo";
  auto& b = another();  // follows the server default
  exec_on(b, "SELECT now()");
  reset_ = "TimeZone";
  admin("ALTER SYSTEM SET TimeZone = '" + new_tz + "'");
  admin("SELECT pg_reload_conf()");
  settle();
  expect_same(b, q);  // runs under the new zone
  auto& c = another({}, " -c TimeZone=" + old_tz);  // pinned to the old zone
  expect_same(c, q);
  exec_on(b, "SELECT now()");
  expect_same(b, q);
}

TEST_F(PgReload, Reload_ThroughQcacheRereadsUnreportedSettings) {
  admin("CREATE TABLE " + schema_ + ".bt (id int PRIMARY KEY, b bytea);"
        "INSERT INTO " + schema_ + ".bt VALUES (1, '\\x41ff')");
  const std::string q = "SELECT b FROM bt WHERE id = 1";
  std::string old_v = current("bytea_output");
  std::string new_v = old_v == "hex" ? "escape" : "hex";
  auto& b = another();
  expect_same(b, q);
  reset_ = "bytea_output";
  exec("ALTER SYSTEM SET bytea_output = '" + new_v + "'");
  exec("SELECT pg_reload_conf()");
  settle();
  expect_same(b, q);
  auto& c = another({}, " -c bytea_output=" + old_v);
  expect_same(c, q);
  expect_same(b, q);
}

TEST_F(PgReload, Reload_DefaultIsolationThroughQcacheIsSeenAtBegin) {
  auto& b = another();
  auto& w = another();
  exec_on(b, "SELECT 1");
  reset_ = "default_transaction_isolation";
  exec("ALTER SYSTEM SET default_transaction_isolation = 'repeatable read'");
  exec("SELECT pg_reload_conf()");
  settle();
  auto& c = another({}, " -c default_transaction_isolation=read\\\\ committed");
  {
    qcache::pqxx::work tx(b);
    expect_same_in(tx, q1);
    exec_on(w, "UPDATE t SET v = 'newer' WHERE id = 1");
    expect_same_in(tx, q1);  // the snapshot's row
    tx.commit();
  }
  expect_same(c, q1);
}

}  // namespace
