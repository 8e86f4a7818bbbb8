// Session and transaction state (CORRECTNESS.md P22) through SOCI's postgresql backend:
// the same engine as libpqxx, reading what libpq reports through SOCI's PGconn. Every
// test compares what the cache serves with what the same server session answers when
// asked directly (the native PGconn, bypassing the cache).
//
// Each test works in fresh schemas with unique names (and roles with unique names). The
// ALTER SYSTEM test changes a server-wide setting for a moment: RUN_SERIAL.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <qcache/soci.h>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/soci.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/soci_pg_schema_fixture.h"

namespace {

const std::string q1 = "SELECT v FROM t WHERE id = 1";

// t(id, v) in two schemas with different values: schema_ (the search_path of open()
// without a path) and other_.
class SociPgSession : public qcache_test::soci_pg_schema_fixture {
 protected:
  SociPgSession() : soci_pg_schema_fixture("qsss_") {}

  void before_connect() override {
    other_ = schema_ + "_o";
    drop_schemas_ = {other_};
    admin("DROP SCHEMA IF EXISTS " + other_ + " CASCADE; CREATE SCHEMA " + other_ +
          "; CREATE TABLE " + schema_ +
          ".t (id int PRIMARY KEY, v text);"
          "INSERT INTO " +
          schema_ +
          ".t VALUES (1, 'mine'), (2, 'mine2');"
          "CREATE TABLE " +
          other_ +
          ".t (id int PRIMARY KEY, v text);"
          "INSERT INTO " +
          other_ + ".t VALUES (1, 'other'), (2, 'other2')");
  }
  // After the shared fixture closes the sessions and drops schema_: the server setting a
  // test changed, the other schemas and the roles.
  void TearDown() override {
    soci_pg_schema_fixture::TearDown();
    if (pg_.empty()) return;
    try {
      if (!reset_.empty()) {
        admin("ALTER SYSTEM RESET " + reset_);
        admin("SELECT pg_reload_conf()");
      }
      for (const auto& s : drop_schemas_) admin("DROP SCHEMA IF EXISTS " + s + " CASCADE");
      for (const auto& r : drop_roles_) admin("DROP ROLE IF EXISTS " + r);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "cleanup: " << e.what();
    }
  }

  // This file's own open and another: `path` replaces the search_path (schema_ when empty),
  // `more` is appended to the options as they are.
  std::unique_ptr<soci::session> open(const std::string& path = {}, const std::string& more = {}) {
    return std::make_unique<soci::session>(
        *factory_,
        pg_ + " options='-c search_path=" + (path.empty() ? schema_ : path) + more + "'");
  }
  soci::session& another(const std::string& path = {}, const std::string& more = {}) {
    sessions_.push_back(open(path, more));
    return *sessions_.back();
  }
  std::string role(const std::string& suffix) {
    std::string r = schema_ + "_" + suffix;
    drop_roles_.push_back(r);
    return r;
  }
  // One text value (or "<none>" / "<null>") through the cache.
  static std::string get(soci::session& s, const std::string& sql) {
    std::string v;
    soci::indicator ind = soci::i_ok;
    s << sql, soci::into(v, ind);
    return s.got_data() ? (ind == soci::i_null ? "<null>" : v) : "<none>";
  }
  // The same, asked of the same server session directly (no cache).
  static std::string truth(soci::session& s, const std::string& sql) {
    auto* be = static_cast<soci::postgresql_session_backend*>(qcache::soci::native_backend(s));
    PGresult* r = PQexec(be->conn_, sql.c_str());
    std::string out = PQresultStatus(r) != PGRES_TUPLES_OK
                          ? "<error " + std::string(PQresultErrorMessage(r)) + ">"
                      : PQntuples(r) == 0    ? "<none>"
                      : PQgetisnull(r, 0, 0) ? "<null>"
                                             : PQgetvalue(r, 0, 0);
    PQclear(r);
    return out;
  }
  void expect_same(soci::session& s, const std::string& sql) {
    std::string cached = get(s, sql);
    EXPECT_EQ(cached, truth(s, sql)) << sql;
  }

  std::string other_, reset_;
  std::vector<std::string> drop_schemas_, drop_roles_;
};

TEST_F(SociPgSession, MultiStatement_SetConfigInsideChangesTheContext) {
  expect_same(*sql_, q1);
  expect_same(*sql_, q1);
  *sql_ << "SELECT set_config('search_path', '" + other_ + "', false); SELECT 1";
  expect_same(*sql_, q1);
}

TEST_F(SociPgSession, Prepared_DeallocatedBySqlRaisesDoesNotExist) {
  for (std::string drop : {"DEALLOCATE ALL", "DISCARD ALL"}) {
    auto s = open();
    std::string v;
    soci::statement st = (s->prepare << q1, soci::into(v));
    st.execute(true);
    EXPECT_EQ(v, "mine");
    st.execute(true);  // a hit
    EXPECT_EQ(v, "mine");
    *s << drop;
    EXPECT_THROW(st.execute(true), soci::soci_error) << drop;
  }
}

TEST_F(SociPgSession, Savepoint_RollbackToUndoesSetSearchPath) {
  expect_same(another(other_), q1);
  sql_->begin();
  *sql_ << "SAVEPOINT s";
  *sql_ << "SET search_path = " + other_;
  expect_same(*sql_, q1);
  *sql_ << "ROLLBACK TO SAVEPOINT s";
  expect_same(*sql_, q1);
  sql_->commit();
  expect_same(*sql_, q1);
}

TEST_F(SociPgSession, Savepoint_RollbackToUndoesSetRoleNoPrivilegeBypass) {
  std::string low = role("low");
  admin("CREATE ROLE " + low + "; GRANT USAGE ON SCHEMA " + schema_ + " TO " + low);
  const std::string secret = "SELECT v FROM t WHERE id = 2";
  sql_->begin();
  *sql_ << "SAVEPOINT s";
  *sql_ << "SET ROLE " + low;
  *sql_ << "ROLLBACK TO SAVEPOINT s";
  expect_same(*sql_, secret);
  sql_->commit();
  auto& c = another();
  c << "SET ROLE " + low;
  EXPECT_THROW(get(c, secret), soci::soci_error);
}

TEST_F(SociPgSession, Chain_CommitAndChainKeepsATransactionOpen) {
  auto& b = another();
  sql_->begin();
  *sql_ << "UPDATE t SET v = 'first' WHERE id = 2";
  *sql_ << "COMMIT AND CHAIN";
  *sql_ << "UPDATE t SET v = 'uncommitted' WHERE id = 1";
  expect_same(b, q1);
  sql_->commit();
  expect_same(b, q1);
  EXPECT_EQ(get(b, q1), "uncommitted");
}

TEST_F(SociPgSession, TempTable_SelectIntoTempIsNeverSharedAcrossSessions) {
  auto& b = another();
  expect_same(b, q1);
  *sql_ << "SELECT 1 AS id, 'temp'::text AS v INTO TEMP t";
  expect_same(*sql_, q1);
  expect_same(*sql_, q1);
  expect_same(b, q1);
}

TEST_F(SociPgSession, Isolation_SetTransactionIsolationSettingIsRecognised) {
  auto& w = another();
  auto& c = another();
  sql_->begin();
  *sql_ << "SET transaction_isolation = 'repeatable read'";
  expect_same(*sql_, q1);
  w << "UPDATE t SET v = 'newer' WHERE id = 1";
  expect_same(*sql_, q1);  // the snapshot's old row
  c.begin();
  c << "SET transaction_isolation = 'repeatable read'";
  expect_same(c, q1);
  c.commit();
  sql_->commit();
  expect_same(c, q1);
}

TEST_F(SociPgSession, SetConfig_LocalInsideAWriteEndsAtCommit) {
  auto& o = another(other_);
  expect_same(o, q1);
  sql_->begin();
  *sql_ << "UPDATE t SET v = v WHERE id = 2 AND set_config('search_path', '" + other_ +
               "', true) IS NOT NULL";
  expect_same(*sql_, q1);
  sql_->commit();
  expect_same(*sql_, q1);
  expect_same(o, q1);
}

TEST_F(SociPgSession, SearchPath_SchemaCreatedLaterByAnotherSession) {
  std::string later = schema_ + "_l";
  drop_schemas_.push_back(later);
  auto& a = another(later + "," + schema_);
  auto& b = another();
  expect_same(a, q1);
  expect_same(a, q1);
  b << "CREATE SCHEMA " + later;
  b << "CREATE TABLE " + later + ".t (id int PRIMARY KEY, v text)";
  b << "INSERT INTO " + later + ".t VALUES (1, 'later')";
  expect_same(a, q1);
  b << "UPDATE " + later + ".t SET v = 'later2' WHERE id = 1";
  expect_same(a, q1);
}

TEST_F(SociPgSession, Reload_ReportedTimeZoneChangeIsSeenAfterTheNextStatement) {
  admin("CREATE TABLE " + schema_ +
        ".tz (id int PRIMARY KEY, ts timestamptz);"
        "INSERT INTO " +
        schema_ + ".tz VALUES (1, '2024-01-01 12:00:00+00')");
  const std::string q = "SELECT ts::text FROM tz WHERE id = 1";
  auto& b = another();
  std::string old_tz = truth(b, "SELECT current_setting('TimeZone')");
  std::string new_tz = old_tz == "Asia/Tokyo" ? "America/Lima" : "Asia/Tokyo";
  b << "SELECT 1 FROM tz WHERE id = 0";
  reset_ = "TimeZone";
  admin("ALTER SYSTEM SET TimeZone = '" + new_tz + "'");
  admin("SELECT pg_reload_conf()");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  expect_same(b, q);
  auto& c = another({}, " -c TimeZone=" + old_tz);
  expect_same(c, q);
}

}  // namespace
