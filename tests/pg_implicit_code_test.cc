// User code a statement runs without naming it (CORRECTNESS.md P18), PostgreSQL through
// libpqxx: views whose bodies call functions, user operators, functional notation,
// column defaults, CHECK and domain constraints, aggregates' support functions, casts,
// row-security policies, and function calls hidden in multi-statement strings.
//
// Each test: t(v int) holds one row; f_bump() (VOLATILE) increments it. A read of t is
// cached, a statement that reaches f_bump() only through the catalog runs through qcache,
// and the read must then return what the database says. Stable routes: a STABLE function
// reads t, and a statement reaching it must not be cached (default options).
//
// Like pqxx_test.cc, every test works in its own schema, dropped afterwards.
#include <gtest/gtest.h>
#include <qcache/pqxx.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "pg/analyzer.h"
#include "support/pg_schema_fixture.h"

namespace {

using qcache_test::dump;

// t(v) = 1 and the functions below exist before the qcache connection opens.
class ImplicitCode : public qcache_test::pg_schema_fixture {
 protected:
  ImplicitCode() : pg_schema_fixture("qci_", 36) {}

  void before_connect() override {
    direct(
        "CREATE TABLE t (v int); INSERT INTO t VALUES (1);"
        "CREATE FUNCTION f_bump() RETURNS int VOLATILE LANGUAGE sql AS"
        " 'UPDATE t SET v = v + 1; SELECT 1';"
        "CREATE FUNCTION f_bump2(int, int) RETURNS int VOLATILE LANGUAGE sql AS"
        " 'UPDATE t SET v = v + 1; SELECT 1';"
        "CREATE FUNCTION f_bump3(int, int) RETURNS bool VOLATILE LANGUAGE sql AS"
        " 'UPDATE t SET v = v + 1; SELECT true';"
        "CREATE FUNCTION f_check(int) RETURNS bool VOLATILE LANGUAGE sql AS"
        " 'UPDATE t SET v = v + 1; SELECT true';"
        "CREATE FUNCTION f_read(int, int) RETURNS int STABLE LANGUAGE sql AS"
        " 'SELECT v FROM t'");
  }

  // The shared helpers, reading t by default.
  void cache_it(const std::string& sql = "SELECT v FROM t") { pg_schema_fixture::cache_it(sql); }
  void expect_fresh(const std::string& sql = "SELECT v FROM t") {
    pg_schema_fixture::expect_fresh(sql);
  }
  // Runs `stmt` through qcache (it reaches f_bump), then checks that t is read fresh.
  void expect_bump_seen(const std::string& stmt) {
    cache_it();
    std::string before = dump(direct("SELECT v FROM t"));
    exec(stmt);
    ASSERT_NE(before, dump(direct("SELECT v FROM t"))) << "the statement did not write: " << stmt;
    expect_fresh();
  }
  // `sql` reaches a STABLE function reading t: after t changes, it must not be stale.
  void expect_stable_not_stale(const std::string& sql) {
    exec(sql);
    exec(sql);
    exec("UPDATE t SET v = v + 10");
    expect_fresh(sql);
  }

  std::string copy_file_;
};

// ---- Writes hidden behind implicit calls -------------------------------------------

TEST_F(ImplicitCode, ViewBodyCallingAWritingFunctionFlushes) {
  direct("CREATE VIEW vb AS SELECT f_bump() AS x");
  expect_bump_seen("SELECT * FROM vb");
}

// A view created by another client after qcache read the catalog is a relation the
// catalog does not know: the statement is judged again with a fresh catalog (here: it
// reaches f_bump, a flush), not run as an uncacheable read. Without the change stream, so
// that nothing else reports f_bump's write.
TEST_F(ImplicitCode, ViewCreatedByAnotherClientAfterTheCatalogWasReadIsJudgedFresh) {
  qcache::options o;
  o.follow_changes = false;
  auto own = std::make_shared<qcache::cache>(o);
  qcache::pqxx::connection c(conninfo_ + " options='-c search_path=" + schema_ + "'", own);
  exec_on(c, "SELECT v FROM t");
  exec_on(c, "SELECT v FROM t");
  ASSERT_EQ(own->stats().hits, 1u);
  direct("CREATE VIEW v_late AS SELECT f_bump() AS x");
  exec_on(c, "SELECT * FROM v_late");
  expect_fresh_on(c, "SELECT v FROM t", dump(direct("SELECT v FROM t")));
  // A relation that does not exist at all: the server's error, unchanged.
  EXPECT_THROW(exec_on(c, "SELECT * FROM no_such_relation"), pqxx::undefined_table);
}

TEST_F(ImplicitCode, ViewOverAViewCallingAWritingFunctionFlushes) {
  direct("CREATE VIEW vb AS SELECT f_bump() AS x; CREATE VIEW vv AS SELECT x FROM vb");
  expect_bump_seen("SELECT * FROM vv");
}

TEST_F(ImplicitCode, UserOperatorImplementedByAWritingFunctionFlushes) {
  direct("CREATE OPERATOR ### (leftarg = int, rightarg = int, function = f_bump2)");
  expect_bump_seen("SELECT 1 ### 1");
}

TEST_F(ImplicitCode, QualifiedOperatorSyntaxFlushes) {
  direct("CREATE OPERATOR ### (leftarg = int, rightarg = int, function = f_bump2)");
  expect_bump_seen("SELECT 1 OPERATOR(" + schema_ + ".###) 1");
}

TEST_F(ImplicitCode, UserOperatorThroughAnyFlushes) {
  direct("CREATE OPERATOR ### (leftarg = int, rightarg = int, function = f_bump3);");
  expect_bump_seen("SELECT 1 ### ANY (ARRAY[1, 2])");
}

TEST_F(ImplicitCode, UserOperatorInsideAViewFlushes) {
  direct(
      "CREATE OPERATOR ### (leftarg = int, rightarg = int, function = f_bump2);"
      "CREATE VIEW vo AS SELECT 1 ### 1 AS x");
  expect_bump_seen("SELECT * FROM vo");
}

TEST_F(ImplicitCode, UserOperatorInAWriteFlushes) {
  direct(
      "CREATE OPERATOR ### (leftarg = int, rightarg = int, function = f_bump2);"
      "CREATE TABLE w (x int)");
  expect_bump_seen("INSERT INTO w VALUES (1 ### 1)");
}

TEST_F(ImplicitCode, FunctionalNotationFlushes) {
  direct(
      "CREATE TABLE s (id int); INSERT INTO s VALUES (1);"
      "CREATE FUNCTION f_fn(s) RETURNS int VOLATILE LANGUAGE sql AS"
      " 'UPDATE t SET v = v + 1; SELECT 1'");
  expect_bump_seen("SELECT x.f_fn FROM s x");
}

TEST_F(ImplicitCode, FunctionalNotationWithParenthesesFlushes) {
  direct(
      "CREATE TABLE s (id int); INSERT INTO s VALUES (1);"
      "CREATE FUNCTION f_fn(s) RETURNS int VOLATILE LANGUAGE sql AS"
      " 'UPDATE t SET v = v + 1; SELECT 1'");
  expect_bump_seen("SELECT (x).f_fn FROM s x");
}

TEST_F(ImplicitCode, ColumnDefaultCallingAWritingFunctionFlushes) {
  direct("CREATE TABLE d (id int, c int DEFAULT f_bump())");
  expect_bump_seen("INSERT INTO d (id) VALUES (1)");
}

TEST_F(ImplicitCode, CheckConstraintCallingAWritingFunctionFlushes) {
  direct("CREATE TABLE c (id int CHECK (f_check(id)))");
  expect_bump_seen("INSERT INTO c VALUES (1)");
}

TEST_F(ImplicitCode, DomainCheckOnAColumnFlushes) {
  direct("CREATE DOMAIN dpos AS int CHECK (f_check(VALUE)); CREATE TABLE dd (x dpos)");
  expect_bump_seen("INSERT INTO dd VALUES (1)");
}

TEST_F(ImplicitCode, UpdateCheckedByADomainOverADomainFlushes) {
  direct(
      "CREATE DOMAIN dpos AS int CHECK (f_check(VALUE)); CREATE DOMAIN dpos2 AS dpos;"
      "CREATE TABLE dd (id int, x dpos2); INSERT INTO dd VALUES (1, 1)");
  expect_bump_seen("UPDATE dd SET x = 2 WHERE id = 1");
}

TEST_F(ImplicitCode, ArrayOfADomainWithACheckFlushes) {
  direct("CREATE DOMAIN dpos AS int CHECK (f_check(VALUE)); CREATE TABLE da (x dpos[])");
  expect_bump_seen("INSERT INTO da VALUES (ARRAY[1, 2])");
}

TEST_F(ImplicitCode, CopyIntoATableWithAWritingDefaultFlushes) {
  direct("CREATE TABLE d (id int, c int DEFAULT f_bump())");
  copy_file_ = "/tmp/" + schema_ + ".csv";
  {
    std::ofstream f(copy_file_);
    f << "7\n";
  }
  ASSERT_EQ(chmod(copy_file_.c_str(), 0644), 0);
  expect_bump_seen("COPY d (id) FROM '" + copy_file_ + "' WITH (FORMAT csv)");
  std::remove(copy_file_.c_str());
}

TEST_F(ImplicitCode, CascadeSetDefaultRunsTheReferencingDefaultAndFlushes) {
  direct(
      "CREATE TABLE par (id int PRIMARY KEY); INSERT INTO par VALUES (0), (1);"
      "CREATE TABLE ch (id int, pid int DEFAULT (f_bump() - 1)"
      " REFERENCES par ON DELETE SET DEFAULT); INSERT INTO ch VALUES (1, 1)");
  expect_bump_seen("DELETE FROM par WHERE id = 1");
}

TEST_F(ImplicitCode, EventTriggerOnDdlIsCoveredByTheDdlFlush) {
  std::string trig = schema_ + "_et";
  direct(
      "CREATE FUNCTION f_et() RETURNS event_trigger LANGUAGE plpgsql AS"
      " 'BEGIN UPDATE t SET v = v + 1; END'");
  admin("CREATE EVENT TRIGGER " + trig +
        " ON ddl_command_end WHEN TAG IN ('CREATE SEQUENCE')"
        " EXECUTE FUNCTION " +
        schema_ + ".f_et()");
  expect_bump_seen("CREATE SEQUENCE sq");
  admin("DROP EVENT TRIGGER " + trig);
}

// An exclusion constraint (and any index) on a user operator class runs the class's
// operators and support functions on every insert.
TEST_F(ImplicitCode, ExclusionConstraintOnAUserOperatorClassFlushes) {
  direct(
      "CREATE FUNCTION my_eq(int, int) RETURNS bool VOLATILE LANGUAGE sql AS"
      " 'UPDATE t SET v = v + 1; SELECT false';"
      "CREATE OPERATOR === (leftarg = int, rightarg = int, function = my_eq,"
      " commutator = ===);"
      "CREATE OPERATOR CLASS my_ops FOR TYPE int USING btree AS OPERATOR 1 pg_catalog.<,"
      " OPERATOR 2 pg_catalog.<=, OPERATOR 3 ===, OPERATOR 4 pg_catalog.>=,"
      " OPERATOR 5 pg_catalog.>, FUNCTION 1 pg_catalog.btint4cmp(int, int);"
      "CREATE TABLE ex (x int, EXCLUDE USING btree (x my_ops WITH ===));"
      "INSERT INTO ex VALUES (1)");
  expect_bump_seen("INSERT INTO ex VALUES (1)");
}

TEST_F(ImplicitCode, CastToADomainWithACheckFlushes) {
  direct("CREATE DOMAIN dpos AS int CHECK (f_check(VALUE))");
  expect_bump_seen("SELECT 5::dpos");
}

TEST_F(ImplicitCode, UserAggregateWithAWritingStateFunctionFlushes) {
  direct(
      "CREATE TABLE s (id int); INSERT INTO s VALUES (1);"
      "CREATE FUNCTION f_sfunc(int, int) RETURNS int VOLATILE LANGUAGE sql AS"
      " 'UPDATE t SET v = v + 1; SELECT $1 + $2';"
      "CREATE AGGREGATE agg_bump(int) (sfunc = f_sfunc, stype = int, initcond = '0')");
  expect_bump_seen("SELECT agg_bump(id) FROM s");
}

TEST_F(ImplicitCode, ExplicitUserCastFlushes) {
  direct(
      "CREATE TYPE pair AS (a int, b int);"
      "CREATE FUNCTION f_cast(int) RETURNS pair VOLATILE LANGUAGE sql AS"
      " 'UPDATE t SET v = v + 1; SELECT ROW($1, $1)::pair';"
      "CREATE CAST (int AS pair) WITH FUNCTION f_cast(int) AS ASSIGNMENT");
  expect_bump_seen("SELECT (1::pair).a");
}

TEST_F(ImplicitCode, AssignmentCastIntoAColumnFlushes) {
  direct(
      "CREATE TYPE pair AS (a int, b int);"
      "CREATE FUNCTION f_cast(int) RETURNS pair VOLATILE LANGUAGE sql AS"
      " 'UPDATE t SET v = v + 1; SELECT ROW($1, $1)::pair';"
      "CREATE CAST (int AS pair) WITH FUNCTION f_cast(int) AS ASSIGNMENT;"
      "CREATE TABLE tp (p pair)");
  expect_bump_seen("INSERT INTO tp VALUES (1)");
}

TEST_F(ImplicitCode, UserCastFromAUserTypeToABuiltInTypeFlushes) {
  direct(
      "CREATE TYPE pair AS (a int, b int); CREATE TABLE tp (p pair);"
      "INSERT INTO tp VALUES (ROW(1, 2));"
      "CREATE FUNCTION f_uncast(pair) RETURNS int VOLATILE LANGUAGE sql AS"
      " 'UPDATE t SET v = v + 1; SELECT ($1).a';"
      "CREATE CAST (pair AS int) WITH FUNCTION f_uncast(pair)");
  expect_bump_seen("SELECT p::int FROM tp");
}

TEST_F(ImplicitCode, ImplicitUserCastInAFunctionArgumentFlushes) {
  direct(
      "CREATE TYPE pair AS (a int, b int);"
      "CREATE FUNCTION f_cast(int) RETURNS pair VOLATILE LANGUAGE sql AS"
      " 'UPDATE t SET v = v + 1; SELECT ROW($1, $1)::pair';"
      "CREATE CAST (int AS pair) WITH FUNCTION f_cast(int) AS IMPLICIT;"
      "CREATE FUNCTION first_of(pair) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT ($1).a'");
  expect_bump_seen("SELECT first_of(1)");
}

// Sorting a user type runs the comparison function of its default operator class.
TEST_F(ImplicitCode, OrderByAUserTypeWithAWritingComparisonFlushes) {
  direct(
      "CREATE TYPE pair AS (a int, b int); CREATE TABLE tp (p pair);"
      "INSERT INTO tp VALUES (ROW(1, 2)), (ROW(2, 1));"
      "CREATE FUNCTION pair_cmp(pair, pair) RETURNS int VOLATILE LANGUAGE sql AS"
      " 'UPDATE t SET v = v + 1; SELECT pg_catalog.btint4cmp(($1).a, ($2).a)';"
      "CREATE FUNCTION pair_lt(pair, pair) RETURNS bool IMMUTABLE LANGUAGE sql AS"
      " 'SELECT ($1).a < ($2).a';"
      "CREATE FUNCTION pair_eq(pair, pair) RETURNS bool IMMUTABLE LANGUAGE sql AS"
      " 'SELECT ($1).a = ($2).a';"
      "CREATE OPERATOR <# (leftarg = pair, rightarg = pair, function = pair_lt);"
      "CREATE OPERATOR =# (leftarg = pair, rightarg = pair, function = pair_eq);"
      "CREATE OPERATOR CLASS pair_ops DEFAULT FOR TYPE pair USING btree AS"
      " OPERATOR 1 <#, OPERATOR 3 =#, FUNCTION 1 pair_cmp(pair, pair)");
  expect_bump_seen("SELECT p FROM tp ORDER BY p");
}

// Reading a column of a user type runs its output function, not its casts: still cached.
TEST_F(ImplicitCode, ReadingAColumnWhoseTypeHasAWritingCastStillHits) {
  direct(
      "CREATE TYPE pair AS (a int, b int);"
      "CREATE FUNCTION f_cast(int) RETURNS pair VOLATILE LANGUAGE sql AS"
      " 'UPDATE t SET v = v + 1; SELECT ROW($1, $1)::pair';"
      "CREATE CAST (int AS pair) WITH FUNCTION f_cast(int) AS ASSIGNMENT;"
      "CREATE TABLE tp (id int, p pair); INSERT INTO tp VALUES (1, ROW(1, 2))");
  cache_it("SELECT p FROM tp WHERE id = 1");
  exec("UPDATE tp SET p = ROW(3, 4) WHERE id = 1");
  expect_fresh("SELECT p FROM tp WHERE id = 1");
}

TEST_F(ImplicitCode, RowSecurityPolicyCallingAWritingFunctionFlushes) {
  direct(
      "CREATE TABLE r (id int); INSERT INTO r VALUES (1);"
      "ALTER TABLE r ENABLE ROW LEVEL SECURITY; ALTER TABLE r FORCE ROW LEVEL SECURITY;"
      "CREATE POLICY p ON r USING (f_check(id))");
  // Superusers bypass row security: read as a plain role.
  std::string role = schema_.substr(0, 40) + "_r";
  admin("DROP ROLE IF EXISTS " + role + "; CREATE ROLE " + role);
  admin("GRANT USAGE ON SCHEMA " + schema_ + " TO " + role +
        "; GRANT ALL ON ALL TABLES IN SCHEMA " + schema_ + " TO " + role);
  exec("SET ROLE " + role);
  expect_bump_seen("SELECT * FROM r");
  exec("RESET ROLE");
  conn_.reset();
  admin("DROP SCHEMA " + schema_ + " CASCADE; DROP ROLE " + role);
}

TEST_F(ImplicitCode, OnConflictUpdateCallingAWritingFunctionFlushes) {
  direct("CREATE TABLE u (id int PRIMARY KEY, x int); INSERT INTO u VALUES (1, 0)");
  expect_bump_seen("INSERT INTO u VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET x = f_bump()");
}

TEST_F(ImplicitCode, UpdateThroughAViewWhoseConditionCallsAWritingFunctionFlushes) {
  direct(
      "CREATE TABLE b (id int, x int); INSERT INTO b VALUES (1, 0);"
      "CREATE VIEW vw AS SELECT id, x FROM b WHERE f_check(id)");
  expect_bump_seen("UPDATE vw SET x = 1 WHERE id = 1");
}

TEST_F(ImplicitCode, InsertSelectFromAWritingViewFlushes) {
  direct("CREATE VIEW vb AS SELECT f_bump() AS x; CREATE TABLE w (x int)");
  expect_bump_seen("INSERT INTO w SELECT x FROM vb");
}

// PostgreSQL refuses non-immutable functions in generated columns, index expressions
// and partial index predicates at creation, but ALTER FUNCTION ... VOLATILE afterwards
// is allowed, and then every write runs (and may write through) them.
class ImplicitCodeLaterVolatile : public ImplicitCode {
 protected:
  void SetUp() override {
    ImplicitCode::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    direct(
        "CREATE FUNCTION f_imm(int) RETURNS int IMMUTABLE LANGUAGE sql AS"
        " 'UPDATE t SET v = v + 1; SELECT $1'");
  }
  void make_volatile() { direct("ALTER FUNCTION f_imm(int) VOLATILE"); }
};

TEST_F(ImplicitCodeLaterVolatile, GeneratedColumnFlushes) {
  direct("CREATE TABLE g (id int, c int GENERATED ALWAYS AS (f_imm(id)) STORED)");
  make_volatile();
  expect_bump_seen("INSERT INTO g (id) VALUES (1)");
}

TEST_F(ImplicitCodeLaterVolatile, IndexExpressionFlushes) {
  direct("CREATE TABLE ix (id int); CREATE INDEX ON ix ((f_imm(id)))");
  make_volatile();
  expect_bump_seen("INSERT INTO ix VALUES (1)");
}

TEST_F(ImplicitCodeLaterVolatile, PartialIndexPredicateFlushes) {
  direct("CREATE TABLE ix (id int); CREATE INDEX ON ix (id) WHERE f_imm(id) > 0");
  make_volatile();
  expect_bump_seen("INSERT INTO ix VALUES (1)");
}

TEST_F(ImplicitCodeLaterVolatile, AnalyzeEvaluatingAWritingIndexExpressionFlushes) {
  direct("CREATE TABLE ix (id int); CREATE INDEX ON ix ((f_imm(id)))");
  make_volatile();
  direct("INSERT INTO ix VALUES (1)");
  expect_bump_seen("ANALYZE ix");
}

TEST_F(ImplicitCodeLaterVolatile, VacuumFullRebuildingAWritingIndexFlushes) {
  direct("CREATE TABLE ix (id int); CREATE INDEX ON ix ((f_imm(id)))");
  make_volatile();
  direct("INSERT INTO ix VALUES (1)");
  expect_bump_seen("VACUUM FULL ix");
}

TEST_F(ImplicitCode, RuleOnAWrittenTableFlushes) {
  direct("CREATE TABLE w (x int); CREATE RULE r AS ON INSERT TO w DO ALSO SELECT f_bump()");
  expect_bump_seen("INSERT INTO w VALUES (1)");
}

TEST_F(ImplicitCode, UserOperatorThroughInSubqueryFlushes) {
  direct("CREATE OPERATOR ### (leftarg = int, rightarg = int, function = f_bump3)");
  expect_bump_seen("SELECT 1 ### ANY (SELECT 1)");
}

TEST_F(ImplicitCode, UserEqualityOperatorOfASimpleCaseFlushes) {
  // A user `=` on int resolves before pg_catalog's only when the path says so.
  direct("CREATE OPERATOR = (leftarg = int, rightarg = int, function = f_bump3)");
  conn_ = std::make_unique<qcache::pqxx::connection>(
      conninfo_ + " options='-c search_path=" + schema_ + ",pg_catalog'", cache_);
  expect_bump_seen("SELECT CASE 1 WHEN 1 THEN 'x' END");
}

// `x.f` only means f(x) for a function of one row-typed argument: a same-named function
// of an int does not make qualified column references uncacheable.
TEST_F(ImplicitCode, QualifiedColumnNamedLikeAScalarFunctionStillHits) {
  direct(
      "CREATE FUNCTION v(int) RETURNS int VOLATILE LANGUAGE sql AS"
      " 'UPDATE t SET v = v + 1; SELECT 1'");
  cache_it("SELECT t.v FROM t");
  exec("UPDATE t SET v = 5");
  expect_fresh("SELECT t.v FROM t");
}

// ---- Stable functions reached implicitly are not cached -----------------------------

TEST_F(ImplicitCode, UserOperatorWithAStableFunctionIsNotCached) {
  direct("CREATE OPERATOR #~# (leftarg = int, rightarg = int, function = f_read)");
  expect_stable_not_stale("SELECT 1 #~# 1");
}

TEST_F(ImplicitCode, AggregateWithAStableFinalFunctionIsNotCached) {
  direct(
      "CREATE FUNCTION f_final(int) RETURNS int STABLE LANGUAGE sql AS"
      " 'SELECT v FROM t';"
      "CREATE AGGREGATE agg_read(int) (sfunc = int4pl, stype = int, initcond = '0',"
      " finalfunc = f_final)");
  expect_stable_not_stale("SELECT agg_read(1)");
}

TEST_F(ImplicitCode, FunctionalNotationWithAStableFunctionIsNotCached) {
  direct(
      "CREATE TABLE s (id int); INSERT INTO s VALUES (1);"
      "CREATE FUNCTION f_fr(s) RETURNS int STABLE LANGUAGE sql AS 'SELECT v FROM t'");
  expect_stable_not_stale("SELECT x.f_fr FROM s x");
}

// ---- Names newer than the catalog snapshot ------------------------------------------

// Created by another session after qcache loaded its catalog: unknown, so it may write.
TEST_F(ImplicitCode, OperatorCreatedByAnotherSessionFlushes) {
  cache_it();
  direct("CREATE OPERATOR ### (leftarg = int, rightarg = int, function = f_bump2)");
  expect_bump_seen("SELECT 1 ### 1");
}

TEST_F(ImplicitCode, DomainCreatedByAnotherSessionFlushesOnCast) {
  cache_it();
  direct("CREATE DOMAIN dpos AS int CHECK (f_check(VALUE))");
  expect_bump_seen("SELECT 5::dpos");
}

// ---- Multi-statement strings --------------------------------------------------------

TEST_F(ImplicitCode, MultiStatementSelectsCallingAWritingFunctionFlush) {
  expect_bump_seen("SELECT 1; SELECT f_bump()");
}

TEST_F(ImplicitCode, MultiStatementSelectsThroughAWritingViewFlush) {
  direct("CREATE VIEW vb AS SELECT f_bump() AS x");
  expect_bump_seen("SELECT 1; SELECT * FROM vb");
}

// ---- Precision: plain statements keep caching -----------------------------------------

TEST_F(ImplicitCode, PlainTableWithBuiltInOperatorsStillHits) {
  direct(
      "CREATE OPERATOR ### (leftarg = int, rightarg = int, function = f_bump2);"
      "CREATE TABLE p (id int PRIMARY KEY, x text DEFAULT 'a' CHECK (x <> ''));"
      "INSERT INTO p VALUES (1, 'a')");
  cache_it("SELECT x FROM p WHERE id = 1 AND x IN ('a', 'b') ORDER BY x");
  cache_it("SELECT p.x FROM p p WHERE p.id = 1");
  cache_it(
      "SELECT x::text, id::bigint, '1.5'::numeric(10, 2), 1::double precision, 1::real,"
      " '2020-01-01'::date, '{1}'::int[], interval '1 day', 'a'::char(3), true::bool,"
      " 'x'::bytea, '{}'::jsonb, 'a'::varchar(5), CAST(id AS smallint),"
      " '2020-01-01 00:00'::timestamp(3), 'p'::regclass, pg_catalog.int4 '7' FROM p"
      " WHERE id BETWEEN 1 AND 2 AND id NOT BETWEEN SYMMETRIC 5 AND 4 AND x LIKE 'a%'"
      " AND x NOT ILIKE 'b%' AND x IS DISTINCT FROM 'c' AND x NOT SIMILAR TO 'd'"
      " AND NULLIF(x, 'e') IS NOT NULL AND id NOT IN (7) AND id = ANY (ARRAY[1]) ORDER BY x");
  exec("INSERT INTO p VALUES (2, 'b')");
  cache_it("SELECT x FROM p WHERE id = 1 AND x IN ('a', 'b') ORDER BY x");
}

// ---- What the analyzer reports (SQL in, routes out) ----------------------------------

struct routes_case {
  const char* sql;
  std::vector<qcache::pg::qualified_name> operators;
  std::vector<std::string> field_names;
  std::vector<qcache::pg::qualified_name> cast_types;
};

TEST(ImplicitCodeAnalyzer, ReportsOperatorsFieldsAndCasts) {
  const routes_case cases[] = {
      {"SELECT v FROM t WHERE id = 1", {{"", "="}}, {}, {}},
      {"SELECT 1 ### 2", {{"", "###"}}, {}, {}},
      {"SELECT 1 OPERATOR(s.###) 2", {{"s", "###"}}, {}, {}},
      {"SELECT x FROM t WHERE x IN (1, 2) OR x <> ALL (ARRAY[3])", {{"", "="}, {"", "<>"}}, {}, {}},
      {"SELECT x FROM t WHERE x BETWEEN 1 AND 2", {{"", ">="}, {"", "<="}}, {}, {}},
      {"SELECT x FROM t WHERE x NOT BETWEEN SYMMETRIC 1 AND 2", {{"", ">="}, {"", "<="}}, {}, {}},
      {"SELECT x FROM t ORDER BY x USING <<<", {{"", "<<<"}}, {}, {}},
      {"SELECT 1 WHERE 1 ### ANY (SELECT 1)", {{"", "###"}}, {}, {}},
      {"SELECT CASE x WHEN 1 THEN 2 END FROM t", {{"", "="}}, {}, {}},
      {"SELECT CASE WHEN true THEN 2 END", {}, {}, {}},
      {"SELECT t.f, (t).g, x FROM t", {}, {"f", "g"}, {}},
      {"SELECT s.t.c FROM s.t", {}, {"c"}, {}},
      {"SELECT 1::pair, CAST(2 AS s.dom), int4 '3'",
       {},
       {},
       {{"", "pair"}, {"s", "dom"}, {"", "int4"}}},
      {"SELECT 1::int", {}, {}, {{"pg_catalog", "int4"}}},
      {"INSERT INTO w VALUES (1 ### 2)", {{"", "###"}}, {}, {}},
  };
  for (const routes_case& c : cases) {
    auto a = qcache::pg::analyze_uncached(c.sql);
    ASSERT_TRUE(a.ok) << c.sql << ": " << a.error;
    ASSERT_EQ(a.statements.size(), 1u) << c.sql;
    const auto& st = a.statements[0];
    EXPECT_EQ(st.operators, c.operators) << c.sql;
    EXPECT_EQ(st.field_names, c.field_names) << c.sql;
    EXPECT_EQ(st.cast_types, c.cast_types) << c.sql;
  }
}

}  // namespace
