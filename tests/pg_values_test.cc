// The stored value is not the written one (CORRECTNESS.md P20) and lexing with the
// session's settings (P19), against the real PostgreSQL: each test caches a read, runs a
// write whose stored value differs from the value as written (or whose text the server
// lexes differently from the defaults), and checks the read then returns what the database
// says. Precision tests check that ordinary values keep their predicate tags.
//
// Each test works in a fresh schema with a unique name, so tests may run in parallel.
#include <gtest/gtest.h>
#include <qcache/pqxx.h>
#include <unistd.h>

#include <cctype>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "pg/analyzer.h"
#include "support/pg_schema_fixture.h"

namespace {

using qcache_test::dump;

class PgValues : public qcache_test::pg_schema_fixture {
 protected:
  PgValues() : pg_schema_fixture("qcv_") {}
};

// ---- P19: standard_conforming_strings = off ----------------------------------------

// Under standard_conforming_strings = off, `'x\' , '` is one string and the UPDATE after
// it runs; read as if the setting were on, the whole text is one SELECT of two strings.
constexpr const char* kHiddenUpdate = "SELECT 'x\\' , ' ; UPDATE t SET v = 2 WHERE id = 1; -- '";

class Scs : public PgValues {
 protected:
  void SetUp() override {
    PgValues::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    exec("CREATE TABLE t (id int PRIMARY KEY, v int, k text)");
    exec("INSERT INTO t VALUES (1, 1, 'one')");
  }
  // Caches a read of row 1 on `c`, runs the hidden UPDATE there, checks the read again.
  void hidden_update_on(qcache::pqxx::connection& c) { hidden_update_on_text(c, kHiddenUpdate); }
  void hidden_update_on_text(qcache::pqxx::connection& c, const std::string& text) {
    const std::string q = "SELECT v FROM t WHERE id = 1";
    cache_on(c, q);
    exec_on(c, text);
    ASSERT_EQ(dump(direct(q)), "'2',\n") << "the server did not run the hidden UPDATE";
    expect_fresh_on(c, q, "'2',\n");
  }
};

TEST_F(Scs, OffFromConnectionOptionsHiddenUpdateInvalidates) {
  hidden_update_on(another("-c standard_conforming_strings=off"));
}

TEST_F(Scs, OffBySetHiddenUpdateInvalidates) {
  exec("SET standard_conforming_strings = off");
  hidden_update_on(*conn_);
}

TEST_F(Scs, OffBySetConfigHiddenUpdateInvalidates) {
  exec("SELECT set_config('standard_conforming_strings', 'off', false)");
  hidden_update_on(*conn_);
}

TEST_F(Scs, OffBySetConfigInAMultiStatementStringHiddenUpdateInvalidates) {
  exec("SELECT set_config('standard_conforming_strings', 'off', false); SELECT 1");
  hidden_update_on(*conn_);
}

TEST_F(Scs, OffBySetInsideATransactionHiddenUpdateInvalidates) {
  const std::string q = "SELECT v FROM t WHERE id = 1";
  cache_it(q);
  {
    qcache::pqxx::work tx(*conn_);
    tx.exec("SET LOCAL standard_conforming_strings = off");
    tx.exec(kHiddenUpdate);
    tx.commit();
  }
  expect_fresh_on(*conn_, q, "'2',\n");
  exec("UPDATE t SET v = 1 WHERE id = 1");
  cache_it(q);
  exec_on(*conn_, kHiddenUpdate);  // SET LOCAL ended with the transaction: one SELECT
  expect_hit(q);
}

TEST_F(Scs, RollbackToSavepointRestoresTheSettingAndItsLexing) {
  // Off inside a savepoint, on again after ROLLBACK TO: the INSERT stores a\tb literally.
  const std::string q = "SELECT count(*) FROM t WHERE k = 'a\\tb'";
  cache_it(q);
  {
    qcache::pqxx::work tx(*conn_);
    tx.exec("SAVEPOINT s");
    tx.exec("SET standard_conforming_strings = off");
    tx.exec("SELECT 1");
    tx.exec("ROLLBACK TO SAVEPOINT s");
    tx.exec("INSERT INTO t (id, v, k) VALUES (2, 2, 'a\\tb')");
    tx.commit();
  }
  expect_fresh_on(*conn_, q, "'1',\n");
}

TEST_F(Scs, OffByAlterRoleSetHiddenUpdateInvalidates) {
  // ALTER ROLE/DATABASE SET apply from the next connection on, like PGOPTIONS.
  std::string role = schema_ + "_r";
  admin("CREATE ROLE " + role + " LOGIN; GRANT ALL ON SCHEMA " + schema_ + " TO " + role +
        "; GRANT ALL ON ALL TABLES IN SCHEMA " + schema_ + " TO " + role + "; ALTER ROLE " + role +
        " SET standard_conforming_strings = off");
  {
    auto c = std::make_unique<qcache::pqxx::connection>(
        conninfo_ + " user=" + role + " options='-c search_path=" + schema_ + "'", cache_);
    hidden_update_on(*c);
  }
  admin("DROP OWNED BY " + role + "; DROP ROLE " + role);
}

TEST_F(Scs, OffLiteralsThatCannotBeRewrittenFlush) {
  // N'...' and a continuation line: no E'...' form exists, so the text is not analysed.
  auto& off = another("-c standard_conforming_strings=off");
  const std::string q = "SELECT v FROM t WHERE id = 1";
  cache_on(off, q);
  exec_on(off, "SELECT N'x\\' , ' ; UPDATE t SET v = 2 WHERE id = 1; -- '");
  expect_fresh_on(off, q, "'2',\n");
  cache_on(off, q);
  exec_on(off, "SELECT 'a'\n'x\\' , ' ; UPDATE t SET v = 3 WHERE id = 1; -- '");
  expect_fresh_on(off, q, "'3',\n");
  cache_on(off, q);
  exec_on(off, "SELECT E'x\\' , ' ; UPDATE t SET v = 4 WHERE id = 1; -- '");
  expect_fresh_on(off, q, "'4',\n");
}

TEST_F(Scs, OffBackslashEscapeInWrittenValueInvalidatesTheStoredValue) {
  auto& off = another("-c standard_conforming_strings=off");
  const std::string q = "SELECT id FROM t WHERE k = 'azb'";
  cache_it(q);
  exec_on(off, "INSERT INTO t (id, v, k) VALUES (2, 2, 'a\\zb')");  // stores azb
  expect_fresh(q);
}

TEST_F(Scs, OffReadsAreCachedAndTaggedByTheValueTheServerSees) {
  auto& off = another("-c standard_conforming_strings=off");
  const std::string q = "SELECT id FROM t WHERE k = 'a\\tb'";  // a<TAB>b under off
  cache_on(off, q);
  exec("INSERT INTO t (id, v, k) VALUES (2, 2, E'a\\tb')");
  expect_fresh_on(off, q, "'2',\n");
  // And a write of another value leaves it a hit.
  exec_on(off, q);
  auto hits = cache_->stats().hits;
  exec_on(off, "INSERT INTO t (id, v, k) VALUES (3, 3, 'a\\\\tb')");  // a\tb, literally
  expect_fresh_on(off, q, "'2',\n");
  EXPECT_EQ(cache_->stats().hits, hits + 1) << "a write of another value invalidated";
}

TEST_F(Scs, OffBackslashQuoteStringPassesThroughAndIsSeen) {
  auto& off = another("-c standard_conforming_strings=off -c backslash_quote=on");
  const std::string q = "SELECT id FROM t WHERE k = 'it''s'";
  cache_it(q);
  exec_on(off, "INSERT INTO t (id, v, k) VALUES (2, 2, 'it\\'s')");
  expect_fresh(q);
}

TEST_F(Scs, PreparedBeforeTheSettingChangedKeepsItsLexing) {
  // The server lexed the statement when it was prepared (on); run after SET ... off, the
  // text still means what it meant then.
  conn_->prepare("ins", "INSERT INTO t (id, v, k) VALUES ($1, 2, 'a\\tb')");
  {
    qcache::pqxx::nontransaction tx(*conn_);
    tx.exec_prepared("ins", 2);
  }
  auto& on = another();
  const std::string q = "SELECT count(*) FROM t WHERE k = 'a\\tb'";  // a\tb literally
  cache_on(on, q);
  exec("SET standard_conforming_strings = off");
  {
    qcache::pqxx::nontransaction tx(*conn_);
    tx.exec_prepared("ins", 3);
  }
  expect_fresh_on(on, q, "'2',\n");
}

TEST_F(Scs, OnPreparedAndParamsWithBackslashLiteralsStayCached) {
  // A session that never ran with the setting off lexed every prepared statement with it on.
  const std::string q = "SELECT id FROM t WHERE k = 'a\\tb' AND v = $1";
  qcache::pqxx::nontransaction tx(*conn_);
  tx.exec_params(q, 1);
  auto hits = cache_->stats().hits;
  tx.exec_params(q, 1);
  EXPECT_EQ(cache_->stats().hits, hits + 1);
  tx.exec("INSERT INTO t (id, v, k) VALUES (2, 1, 'a\\tb')");
  EXPECT_EQ(tx.exec_params(q, 1).size(), 1u);
}

TEST_F(Scs, ClientEncodingWithBackslashTrailBytesHidesNoStatement) {
  // In SJIS, 0x95 0x5C is one character whose second byte is a backslash in ASCII. The
  // server converts the text to UTF8 before lexing it: it sees the string end, then the
  // UPDATE. Bytes read as ASCII, the backslash escapes the quote.
  auto& sjis = another("-c client_encoding=SJIS");
  hidden_update_on_text(sjis, "SELECT E'\x95\x5C' ; UPDATE t SET v = 2 WHERE id = 1; -- '");
}

TEST_F(Scs, PreimageQuotesParametersSafelyInClientOnlyEncodings) {
  // qcache's pre-image quotes a parameter into E'...' by doubling ' and \. In SJIS the
  // character 0x95 0x5C ends in a backslash byte: doubling it would leave the server (which
  // converts before lexing) an escaped quote, closing the literal early and running the
  // rest of the parameter as SQL. (backslash_quote's default, safe_encoding, makes the
  // server refuse \' in such encodings; on, it accepts it.)
  auto& sjis = another("-c client_encoding=SJIS -c backslash_quote=on");
  exec("UPDATE t SET k = 'one' WHERE id = 1");
  cache_on(sjis, "SELECT id FROM t WHERE v = 1");  // registers v: writes name its values
  const std::string evil = "\x95\x5C') ; UPDATE t SET v = 99 ; SELECT (1 --";
  {
    qcache::pqxx::nontransaction tx(sjis);
    tx.exec_params("UPDATE t SET k = 'z' WHERE k = $1", evil);
  }
  EXPECT_EQ(dump(direct("SELECT v FROM t ORDER BY id")), "'1',\n") << "the parameter ran as SQL";
}

TEST_F(Scs, OnEscapeStringsAreDecoded) {
  const std::string q = "SELECT id FROM t WHERE k = 'a\\zb'";  // a\zb literally
  cache_it(q);
  exec("INSERT INTO t (id, v, k) VALUES (2, 2, E'a\\\\zb')");
  expect_fresh(q);
  const std::string q2 = "SELECT id FROM t WHERE k = E'x\\ny'";
  cache_it(q2);
  exec("INSERT INTO t (id, v, k) VALUES (3, 3, 'x\ny')");
  expect_fresh(q2);
}

TEST_F(Scs, OffWithoutBackslashesStaysPrecise) {
  auto& off = another("-c standard_conforming_strings=off");
  const std::string q = "SELECT v FROM t WHERE k = 'one'";
  cache_on(off, q);
  exec_on(off, "INSERT INTO t (id, v, k) VALUES (2, 2, 'two')");
  auto hits = cache_->stats().hits;
  expect_fresh_on(off, q, "'1',\n");
  EXPECT_EQ(cache_->stats().hits, hits + 1);
}

// What the analyzer reads of text sent with standard_conforming_strings = off.
TEST(AsEscapeStrings, RewritesOnlyPlainLiteralsWithBackslashes) {
  using qcache::pg::as_escape_strings;
  struct row {
    const char* off;
    std::optional<std::string> on;
  };
  const row rows[] = {
      {"SELECT 'a', 'b''c'", "SELECT 'a', 'b''c'"},
      {"SELECT 'a\\tb'", "SELECT E'a\\tb'"},
      {"SELECT 'x\\' , ' ; UPDATE t SET v = 2; -- '",
       "SELECT E'x\\' , ' ; UPDATE t SET v = 2; -- '"},
      {"SELECT E'a\\'' , 'b\\c'", "SELECT E'a\\'' , E'b\\c'"},
      {"SELECT $$a\\b$$, \"q\\\", 'c' -- 'd\\e'", "SELECT $$a\\b$$, \"q\\\", 'c' -- 'd\\e'"},
      {"SELECT 'a\\\\' /* 'x\\' */", "SELECT E'a\\\\' /* 'x\\' */"},
      {"SELECT N'a\\b'", std::nullopt},
      {"SELECT U&'a\\0061'", std::nullopt},
      {"SELECT 'a'\n'b\\c'", std::nullopt},
      {"SELECT 'a\\", std::nullopt},
      {"SELECT 'a' -- c\n 'b\\c'", std::nullopt},
      {"SELECT 'a\\b'\n'c'", "SELECT E'a\\b'\n'c'"},
  };
  for (const row& r : rows) EXPECT_EQ(as_escape_strings(r.off), r.on) << r.off;
}

// ---- P20: varchar(n) and char(n) -------------------------------------------------------

class Strings : public PgValues {
 protected:
  void SetUp() override {
    PgValues::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    exec("CREATE TABLE t (id int PRIMARY KEY, v varchar(3), c char(3), x text)");
    exec("INSERT INTO t VALUES (1, 'a', 'a', 'a')");
  }
};

TEST_F(Strings, VarcharTrailingSpacesTrimmedToFitOnInsert) {
  const std::string q = "SELECT id FROM t WHERE v = 'abc'";
  cache_it(q);
  exec("INSERT INTO t (id, v, c, x) VALUES (2, 'abc   ', 'b', 'b')");
  expect_fresh(q);
}

TEST_F(Strings, VarcharTrailingSpacesTrimmedToFitOnUpdateAndParams) {
  const std::string q = "SELECT id FROM t WHERE v = 'xyz'";
  cache_it(q);
  exec_params("UPDATE t SET v = $1 WHERE id = $2", "xyz  ", 1);
  expect_fresh(q);
  const std::string q2 = "SELECT id FROM t WHERE v = 'pq'";
  cache_it(q2);
  exec_params("INSERT INTO t (id, v) VALUES ($1, $2)", 3, "pq ");
  expect_fresh(q2);
}

TEST_F(Strings, VarcharValueThatFitsStaysPrecise) {
  const std::string q = "SELECT id FROM t WHERE v = 'a'";
  cache_it(q);
  exec("INSERT INTO t (id, v, c, x) VALUES (2, 'abc', 'b', 'b')");
  expect_hit(q);
  exec("UPDATE t SET v = 'bb' WHERE id = 2");
  expect_hit(q);
}

TEST_F(Strings, CharPadsAndComparesWithoutTrailingSpaces) {
  const std::string q = "SELECT id FROM t WHERE c = 'ab'";
  cache_it(q);
  exec("INSERT INTO t (id, v, c, x) VALUES (2, 'b', 'ab ', 'b')");
  expect_fresh(q);
  const std::string q2 = "SELECT id FROM t WHERE c = 'cd '";
  cache_it(q2);
  exec("INSERT INTO t (id, v, c, x) VALUES (3, 'c', 'cd', 'c')");
  expect_fresh(q2);
}

// ---- P20: casts -------------------------------------------------------------------------

TEST_F(Strings, CharCastOnReadValueComparesTrimmed) {
  const std::string q = "SELECT id FROM t WHERE x = 'ab '::char(3)";  // compares 'ab'
  cache_it(q);
  exec("UPDATE t SET x = 'ab' WHERE id = 1");
  expect_fresh(q);
}

TEST_F(Strings, VarcharTypmodCastOnWrittenParamTruncates) {
  const std::string q = "SELECT id FROM t WHERE x = 'xy'";
  cache_it(q);
  exec_params("INSERT INTO t (id, x) VALUES (2, $1::varchar(2))", "xyzzy");  // stores xy
  expect_fresh(q);
}

TEST_F(Strings, NameCastTruncatesTo63Bytes) {
  std::string a63(63, 'a'), a70(70, 'a');
  const std::string q = "SELECT id FROM t WHERE x = '" + a70 + "'::name";
  cache_it(q);
  exec("INSERT INTO t (id, x) VALUES (2, '" + a63 + "')");
  expect_fresh(q);
}

TEST_F(Strings, BpcharTypedParamOnReadComparesTrimmed) {
  const std::string q = "SELECT id FROM t WHERE x = $1::bpchar";
  qcache::pqxx::nontransaction tx(*conn_);
  tx.exec_params(q, "zz ");
  auto hits = cache_->stats().hits;
  EXPECT_TRUE(tx.exec_params(q, "zz ").empty());
  ASSERT_EQ(cache_->stats().hits, hits + 1);
  tx.exec("UPDATE t SET x = 'zz' WHERE id = 1");
  EXPECT_EQ(tx.exec_params(q, "zz ").size(), 1u) << "stale";
}

TEST_F(Strings, TransparentCastsKeepPrecision) {
  const std::string q = "SELECT id FROM t WHERE x = 'a'::text AND id = '1'::bigint";
  const std::string q1 = "SELECT id FROM t WHERE id = $1::integer";
  cache_it(q);
  {
    qcache::pqxx::nontransaction tx(*conn_);
    tx.exec_params(q1, "1");
  }
  exec("INSERT INTO t (id, v, c, x) VALUES (2, 'b', 'b', 'b')");
  expect_hit(q);
  {
    qcache::pqxx::nontransaction tx(*conn_);
    auto hits = cache_->stats().hits;
    EXPECT_EQ(tx.exec_params(q1, "1").size(), 1u);
    EXPECT_EQ(cache_->stats().hits, hits + 1);
  }
  const std::string q2 = "SELECT id FROM t WHERE x = 'q'::varchar";
  cache_it(q2);
  exec("INSERT INTO t (id, x) VALUES (3, 'q'::varchar)");
  expect_fresh(q2);
}

TEST_F(Strings, UnqualifiedCastToATypeNameThatSearchPathShadows) {
  // With pg_catalog listed after this schema, `text` is this schema's domain, whose
  // explicit cast cuts to two characters: the read compares 'ab'.
  exec("CREATE DOMAIN text AS varchar(2)");
  auto& c = another("-c search_path=" + schema_ + ",pg_catalog");
  const std::string q = "SELECT id FROM t WHERE x = 'abc'::text";
  cache_on(c, q);
  exec("UPDATE t SET x = 'ab' WHERE id = 1");
  expect_fresh_on(c, q, "'1',\n");
}

// ---- P20: generated columns, defaults, identity, conflicts -------------------------------

TEST_F(PgValues, GeneratedColumnFollowsItsInputs) {
  exec(
      "CREATE TABLE t (id int PRIMARY KEY, a int, g int GENERATED ALWAYS AS (a * 2) STORED,"
      " gt text GENERATED ALWAYS AS ('v' || a) STORED)");
  exec("INSERT INTO t (id, a) VALUES (1, 1)");
  const std::string q = "SELECT id FROM t WHERE g = 10";
  const std::string q2 = "SELECT id FROM t WHERE gt = 'v5'";
  cache_it(q);
  cache_it(q2);
  exec("UPDATE t SET a = 5 WHERE id = 1");
  expect_fresh(q);
  expect_fresh(q2);
}

TEST_F(PgValues, GeneratedOnlyInAnInheritanceChild) {
  // PostgreSQL 15 lets a child generate a column its parent stores plainly. (A write to
  // a parent with children moves the parent's table epoch through the children's family.)
  exec("CREATE TABLE par (id int PRIMARY KEY, a int, g int)");
  exec("CREATE TABLE ch (g int GENERATED ALWAYS AS (a * 2) STORED) INHERITS (par)");
  exec("INSERT INTO ch (id, a) VALUES (1, 1)");
  const std::string q = "SELECT id FROM par WHERE g = 10";
  cache_it(q);
  exec("UPDATE par SET a = 5 WHERE id = 1");
  expect_fresh(q);
}

TEST_F(PgValues, DefaultsIdentityAndSerialNameNoValue) {
  exec(
      "CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, s serial,"
      " k text DEFAULT 'dflt', v text)");
  const std::string q1 = "SELECT v FROM t WHERE id = 1";
  const std::string q2 = "SELECT v FROM t WHERE s = 1";
  const std::string q3 = "SELECT v FROM t WHERE k = 'dflt'";
  for (const auto& q : {q1, q2, q3}) cache_it(q);
  exec("INSERT INTO t (v) VALUES ('x')");
  for (const auto& q : {q1, q2, q3}) expect_fresh(q);
  exec("UPDATE t SET k = DEFAULT, v = 'y' WHERE k = 'other'");
  cache_it(q3);
  exec("UPDATE t SET k = 'zz' WHERE id = 1");
  exec("UPDATE t SET k = DEFAULT WHERE id = 1");
  expect_fresh(q3);
}

TEST_F(PgValues, OverridingUserValueIgnoresTheWrittenIdentity) {
  exec("CREATE TABLE t (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text)");
  const std::string q1 = "SELECT v FROM t WHERE id = 1";
  cache_it(q1);
  exec("INSERT INTO t (id, v) OVERRIDING USER VALUE VALUES (50, 'x')");  // stores id 1
  expect_fresh(q1);
}

TEST_F(PgValues, OnConflictDoUpdateChangesTheExistingRow) {
  exec("CREATE TABLE t (id int PRIMARY KEY, k text)");
  exec("INSERT INTO t (id, k) VALUES (1, 'old')");
  const std::string q = "SELECT id FROM t WHERE k = 'old'";
  const std::string q2 = "SELECT id FROM t WHERE k = 'new'";
  cache_it(q);
  cache_it(q2);
  exec("INSERT INTO t (id, k) VALUES (1, 'other') ON CONFLICT (id) DO UPDATE SET k = 'new'");
  expect_fresh(q);
  expect_fresh(q2);
}

TEST_F(PgValues, BeforeTriggerThatChangesNewFlushes) {
  exec("CREATE TABLE t (id int PRIMARY KEY, k text)");
  exec(
      "CREATE FUNCTION up() RETURNS trigger LANGUAGE plpgsql AS "
      "$$BEGIN NEW.k := upper(NEW.k); RETURN NEW; END$$");
  exec("CREATE TRIGGER tr BEFORE INSERT OR UPDATE ON t FOR EACH ROW EXECUTE FUNCTION up()");
  const std::string q = "SELECT id FROM t WHERE k = 'AB'";
  cache_it(q);
  exec("INSERT INTO t (id, k) VALUES (1, 'ab')");
  expect_fresh(q);
}

TEST_F(PgValues, PartitionRoutingInvalidatesThePartitionRead) {
  exec("CREATE TABLE p (id int, k text) PARTITION BY LIST (k)");
  exec("CREATE TABLE p_a PARTITION OF p FOR VALUES IN ('a')");
  exec("CREATE TABLE p_b PARTITION OF p FOR VALUES IN ('b')");
  const std::string q = "SELECT id FROM p_b WHERE id = 1";
  const std::string q2 = "SELECT id FROM p WHERE k = 'b'";
  cache_it(q);
  cache_it(q2);
  exec("INSERT INTO p (id, k) VALUES (1, 'b')");
  expect_fresh(q);
  expect_fresh(q2);
  exec("UPDATE p SET k = 'a' WHERE id = 1");  // moves the row to p_a
  expect_fresh(q);
  expect_fresh(q2);
}

// ---- P20: integer input and numeric/time/float types -------------------------------------

TEST_F(PgValues, IntegerColumnsGivenTextAreTaggedByTheirValue) {
  exec("CREATE TABLE t (id int PRIMARY KEY, s smallint, b bigint)");
  const std::string q1 = "SELECT id FROM t WHERE s = 5";
  const std::string q2 = "SELECT id FROM t WHERE b = '07'";
  const std::string q3 = "SELECT id FROM t WHERE id = 3";
  for (const auto& q : {q1, q2, q3}) cache_it(q);
  exec("INSERT INTO t (id, s, b) VALUES (' 3', '+5', ' 007 ')");
  for (const auto& q : {q1, q2, q3}) expect_fresh(q);
  EXPECT_EQ(exec("SELECT id FROM t WHERE s = 5").size(), 1u);
  // Text PostgreSQL rejects for an integer passes through as its error.
  EXPECT_THROW(exec("INSERT INTO t (id, s, b) VALUES (4, '5.0', 1)"), pqxx::data_exception);
  EXPECT_THROW(exec("INSERT INTO t (id, s, b) VALUES (4, '1_000', 1)"), pqxx::data_exception);
  EXPECT_THROW(exec("INSERT INTO t (id, s, b) VALUES (4, '0x10', 1)"), pqxx::data_exception);
  exec_params("UPDATE t SET s = $1 WHERE id = $2", "-0", "3");
  const std::string q4 = "SELECT id FROM t WHERE s = 0";
  cache_it(q4);
  exec_params("UPDATE t SET s = $1 WHERE id = $2", " +6 ", "3");
  cache_it(q1);
  exec_params("UPDATE t SET s = $1 WHERE id = $2", "05", "3");
  expect_fresh(q1);
  expect_fresh(q4);
}

TEST_F(PgValues, NumericTimestampAndFloatRoundingAreSeen) {
  exec("CREATE TABLE t (id int PRIMARY KEY, n numeric(5,2), ts timestamp(0), r real)");
  const std::string q1 = "SELECT id FROM t WHERE n = 1.01";
  const std::string q2 = "SELECT id FROM t WHERE ts = '2020-01-01 00:00:01'";
  const std::string q3 = "SELECT id FROM t WHERE r = 0.1::real";
  for (const auto& q : {q1, q2, q3}) cache_it(q);
  exec("INSERT INTO t (id, n, ts, r) VALUES (1, 1.005, '2020-01-01 00:00:00.7', 0.1000000001)");
  for (const auto& q : {q1, q2, q3}) expect_fresh(q);
}

// ---- P20: domains, enums, collations, citext -------------------------------------------

TEST_F(PgValues, DomainsOverTextAndInt) {
  exec("CREATE DOMAIN d3 AS varchar(3)");
  exec("CREATE DOMAIN dt AS text CHECK (VALUE <> 'bad')");
  exec("CREATE DOMAIN di AS int");
  exec("CREATE TABLE t (id int PRIMARY KEY, a d3, b dt, c di)");
  const std::string q1 = "SELECT id FROM t WHERE a = 'abc'";
  const std::string q2 = "SELECT id FROM t WHERE b = 'x'";
  const std::string q3 = "SELECT id FROM t WHERE c = 5";
  for (const auto& q : {q1, q2, q3}) cache_it(q);
  exec("INSERT INTO t (id, a, b, c) VALUES (1, 'abc  ', 'x', '05')");
  for (const auto& q : {q1, q2, q3}) expect_fresh(q);
}

TEST_F(PgValues, EnumsCompareByLabel) {
  exec("CREATE TYPE e AS ENUM ('a', 'b')");
  exec("CREATE TABLE t (id int PRIMARY KEY, k e)");
  const std::string q = "SELECT id FROM t WHERE k = 'b'";
  cache_it(q);
  exec("INSERT INTO t (id, k) VALUES (1, 'b')");
  expect_fresh(q);
}

TEST_F(PgValues, NondeterministicCollationMatchesOtherCase) {
  exec("CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)");
  exec("CREATE TABLE t (id int PRIMARY KEY, c text COLLATE ci, d text COLLATE \"C\")");
  const std::string q = "SELECT id FROM t WHERE c = 'a'";
  const std::string q2 = "SELECT id FROM t WHERE d = 'a' COLLATE ci";
  const std::string q3 = "SELECT id FROM t WHERE d COLLATE ci = 'b'";
  for (const auto& x : {q, q2, q3}) cache_it(x);
  exec("INSERT INTO t (id, c, d) VALUES (1, 'A', 'A'), (2, 'x', 'B')");
  for (const auto& x : {q, q2, q3}) expect_fresh(x);
}

TEST_F(PgValues, DeterministicNonDefaultCollationStaysPrecise) {
  exec("CREATE TABLE t (id int PRIMARY KEY, d text COLLATE \"C\")");
  const std::string q = "SELECT id FROM t WHERE d = 'a'";
  cache_it(q);
  exec("INSERT INTO t (id, d) VALUES (1, 'A')");
  expect_hit(q);
  exec("INSERT INTO t (id, d) VALUES (2, 'a')");
  expect_fresh(q);
}

TEST_F(PgValues, CitextMatchesOtherCase) {
  exec("CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA " + schema_);
  exec("CREATE TABLE t (id int PRIMARY KEY, c citext)");
  const std::string q = "SELECT id FROM t WHERE c = 'a'";
  cache_it(q);
  exec("INSERT INTO t (id, c) VALUES (1, 'A')");
  expect_fresh(q);
}

// ---- P20: client encodings --------------------------------------------------------------

TEST_F(PgValues, ClientEncodingsOtherThanUtf8ShareNoNonAsciiTags) {
  exec("CREATE TABLE t (id int PRIMARY KEY, k text)");
  auto& latin1 = another("-c client_encoding=LATIN1");
  const std::string q = "SELECT id FROM t WHERE k = '\xE9'";  // é in LATIN1
  cache_on(latin1, q);
  exec("INSERT INTO t (id, k) VALUES (1, '\xC3\xA9')");  // é in UTF-8
  expect_fresh_on(latin1, q, "'1',\n");
}

// A sibling found on the way: a string of SELECTs is a read only when none calls a function
// that may write.
TEST_F(PgValues, MultiStatementSelectsCallingAWritingFunctionFlush) {
  exec("CREATE TABLE t (id int PRIMARY KEY, v int)");
  exec("INSERT INTO t VALUES (1, 1)");
  exec("CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS 'UPDATE t SET v = v + 1 RETURNING v'");
  const std::string q = "SELECT v FROM t WHERE id = 1";
  cache_it(q);
  exec("SELECT 1; SELECT bump()");
  expect_fresh(q);
}

// ---- annotations name values the same way as statements -------------------------------

TEST_F(PgValues, AnnotatedRowDependencyIsInvalidatedByWritesOfThatValue) {
  exec("CREATE TABLE t (id int PRIMARY KEY, k int, x text)");
  exec("CREATE TABLE o (id int PRIMARY KEY)");
  exec("INSERT INTO o VALUES (1)");
  exec("INSERT INTO t (id, k, x) VALUES (1, 1, 'a')");
  auto run = [&] {
    qcache::pqxx::nontransaction tx(*conn_);
    return tx.exec(
        qcache::pqxx::annotated{"SELECT id FROM o WHERE id = 1"}.depends_on("t", "k", "05"));
  };
  run();
  auto before = cache_->stats();
  run();
  ASSERT_EQ(cache_->stats().hits, before.hits + 1);
  exec("UPDATE t SET k = 5 WHERE id = 1");
  before = cache_->stats();
  run();
  EXPECT_EQ(cache_->stats().hits, before.hits) << "stale: a write of k = 5 left it a hit";
  // Writes of other values keep it; invalidate_row of its value does not.
  run();
  exec("INSERT INTO t (id, k, x) VALUES (2, 9, 'b')");
  before = cache_->stats();
  run();
  EXPECT_EQ(cache_->stats().hits, before.hits + 1) << "a write of k = 9 invalidated";
  conn_->invalidate_row("t", "k", "+5");
  before = cache_->stats();
  run();
  EXPECT_EQ(cache_->stats().hits, before.hits) << "invalidate_row left it a hit";
}

}  // namespace
