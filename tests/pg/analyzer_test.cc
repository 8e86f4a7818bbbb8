// Specification of the PostgreSQL statement analyzer, as tables of SQL in, facts out.
//
// Facts are rendered compactly so each row reads as a spec line:
//   reads   "users{id=-5 name='x'} orders"  (one token per occurrence, conjuncts in braces)
//   writes  "update:s.t{id=$1}"             (op:table, WHERE conjuncts in braces)
//   values  $n (param), 42 / -5 (integer as written), 'text' (decoded string)
#include "pg/analyzer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "parser_thread.h"

namespace qcache::pg {
namespace {

std::string name(const qualified_name& q) {
  return q.schema.empty() ? q.name : q.schema + "." + q.name;
}

std::string value(const std::optional<eq_value>& v) {
  if (!v) return "?";
  switch (v->k) {
    case eq_value::kind::param:
      return "$" + std::to_string(v->param);
    case eq_value::kind::integer:
      return v->text;
    case eq_value::kind::string:
      return "'" + v->text + "'";
    case eq_value::kind::other:
      return "other";
  }
  return "!";
}

std::string conjuncts(const std::vector<eq_conjunct>& cs) {
  if (cs.empty()) return "";
  std::string s = "{";
  for (const eq_conjunct& c : cs) {
    if (s.size() > 1) s += " ";
    s += c.column + "=";
    for (std::size_t i = 0; i < c.values.size(); ++i) s += (i ? "," : "") + value(c.values[i]);
  }
  return s + "}";
}

std::string reads(const statement& st) {
  std::string s;
  for (const read_ref& r : st.reads)
    s += (s.empty() ? "" : " ") + name(r.table) + conjuncts(r.conjuncts);
  return s;
}

const char* op_name(write_op op) {
  switch (op) {
    case write_op::insert:
      return "insert";
    case write_op::update:
      return "update";
    case write_op::del:
      return "delete";
    case write_op::merge:
      return "merge";
    case write_op::truncate:
      return "truncate";
    case write_op::copy_from:
      return "copy_from";
    case write_op::select_into:
      return "select_into";
  }
  return "?";
}

std::string writes(const statement& st) {
  std::string s;
  for (const write_ref& w : st.writes) {
    s += (s.empty() ? "" : " ") + std::string(op_name(w.op)) + ":" + name(w.table) +
         conjuncts(w.where);
  }
  return s;
}

std::string names(const std::vector<qualified_name>& qs) {
  std::string s;
  for (const qualified_name& q : qs) s += (s.empty() ? "" : " ") + name(q);
  return s;
}

// Analyzes a single-statement string; fails the test if it is not exactly one statement.
statement one(const std::string& sql) {
  analysis a = analyze_uncached(sql);
  EXPECT_TRUE(a.ok) << sql << ": " << a.error;
  EXPECT_EQ(a.statements.size(), 1u) << sql;
  return a.statements.empty() ? statement{} : a.statements[0];
}

// ---- statement kinds ------------------------------------------------------------------------

struct kind_case {
  const char* sql;
  stmt_kind kind;
  const char* node;
};

TEST(AnalyzerKinds, EveryStatementIsClassified) {
  const kind_case cases[] = {
      {"SELECT 1", stmt_kind::read, "SelectStmt"},
      {"VALUES (1), (2)", stmt_kind::read, "SelectStmt"},
      {"TABLE t", stmt_kind::read, "SelectStmt"},
      {"SHOW search_path", stmt_kind::read, "VariableShowStmt"},
      {"INSERT INTO t VALUES (1)", stmt_kind::write, "InsertStmt"},
      {"UPDATE t SET a = 1", stmt_kind::write, "UpdateStmt"},
      {"DELETE FROM t", stmt_kind::write, "DeleteStmt"},
      {"MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", stmt_kind::write,
       "MergeStmt"},
      {"COPY t FROM STDIN", stmt_kind::write, "CopyStmt"},
      {"COPY t TO STDOUT", stmt_kind::copy_to, "CopyStmt"},
      {"TRUNCATE t", stmt_kind::write, "TruncateStmt"},
      {"SELECT * INTO n FROM t", stmt_kind::write, "SelectStmt"},
      {"WITH d AS (DELETE FROM q RETURNING *) SELECT * FROM d", stmt_kind::write, "SelectStmt"},
      {"CREATE TABLE n AS SELECT * FROM t", stmt_kind::ddl, "CreateTableAsStmt"},
      {"CREATE MATERIALIZED VIEW mv AS SELECT 1", stmt_kind::ddl, "CreateTableAsStmt"},
      {"CREATE TABLE t (id int)", stmt_kind::ddl, "CreateStmt"},
      {"ALTER TABLE t ADD COLUMN c int", stmt_kind::ddl, "AlterTableStmt"},
      {"DROP TABLE t", stmt_kind::ddl, "DropStmt"},
      {"CREATE INDEX ON t (a)", stmt_kind::ddl, "IndexStmt"},
      {"CREATE VIEW v AS SELECT * FROM t", stmt_kind::ddl, "ViewStmt"},
      {"GRANT SELECT ON t TO bob", stmt_kind::ddl, "GrantStmt"},
      {"REVOKE SELECT ON t FROM bob", stmt_kind::ddl, "GrantStmt"},
      {"COMMENT ON TABLE t IS 'x'", stmt_kind::ddl, "CommentStmt"},
      {"REFRESH MATERIALIZED VIEW mv", stmt_kind::ddl, "RefreshMatViewStmt"},
      {"ALTER POLICY p ON t USING (true)", stmt_kind::ddl, "AlterPolicyStmt"},
      {"ALTER TABLE t RENAME TO u", stmt_kind::ddl, "RenameStmt"},
      {"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", stmt_kind::ddl,
       "CreateFunctionStmt"},
      {"BEGIN", stmt_kind::txn_begin, "TransactionStmt"},
      {"START TRANSACTION", stmt_kind::txn_begin, "TransactionStmt"},
      {"COMMIT", stmt_kind::txn_commit, "TransactionStmt"},
      {"END", stmt_kind::txn_commit, "TransactionStmt"},
      {"COMMIT PREPARED 'x'", stmt_kind::other, "TransactionStmt"},
      {"ROLLBACK", stmt_kind::txn_rollback, "TransactionStmt"},
      {"ABORT", stmt_kind::txn_rollback, "TransactionStmt"},
      {"SAVEPOINT s", stmt_kind::savepoint, "TransactionStmt"},
      {"RELEASE s", stmt_kind::release, "TransactionStmt"},
      {"RELEASE SAVEPOINT s", stmt_kind::release, "TransactionStmt"},
      {"ROLLBACK TO s", stmt_kind::rollback_to, "TransactionStmt"},
      {"ROLLBACK TO SAVEPOINT s", stmt_kind::rollback_to, "TransactionStmt"},
      {"PREPARE TRANSACTION 'x'", stmt_kind::other, "TransactionStmt"},
      {"ROLLBACK PREPARED 'x'", stmt_kind::other, "TransactionStmt"},
      {"DECLARE c CURSOR FOR SELECT 1", stmt_kind::other, "DeclareCursorStmt"},
      {"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", stmt_kind::txn_set, "VariableSetStmt"},
      {"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", stmt_kind::txn_set,
       "VariableSetStmt"},
      {"SET search_path = a", stmt_kind::session_set, "VariableSetStmt"},
      {"SET ROLE bob", stmt_kind::session_set, "VariableSetStmt"},
      {"SET SESSION AUTHORIZATION bob", stmt_kind::session_set, "VariableSetStmt"},
      {"SET LOCAL timezone = 'UTC'", stmt_kind::session_set, "VariableSetStmt"},
      {"RESET search_path", stmt_kind::session_set, "VariableSetStmt"},
      {"RESET ALL", stmt_kind::session_reset, "VariableSetStmt"},
      {"DISCARD ALL", stmt_kind::session_reset, "DiscardStmt"},
      {"DISCARD PLANS", stmt_kind::session_reset, "DiscardStmt"},
      {"DISCARD SEQUENCES", stmt_kind::session_reset, "DiscardStmt"},
      {"DISCARD TEMP", stmt_kind::session_reset, "DiscardStmt"},
      {"EXPLAIN SELECT 1", stmt_kind::other, "ExplainStmt"},
      {"EXPLAIN ANALYZE DELETE FROM t", stmt_kind::other, "ExplainStmt"},
      {"DO $$ BEGIN END $$", stmt_kind::other, "DoStmt"},
      {"CALL p(1)", stmt_kind::other, "CallStmt"},
      {"PREPARE q AS SELECT 1", stmt_kind::other, "PrepareStmt"},
      {"EXECUTE q(1)", stmt_kind::other, "ExecuteStmt"},
      {"LOCK TABLE t", stmt_kind::other, "LockStmt"},
      {"VACUUM t", stmt_kind::other, "VacuumStmt"},
      {"LISTEN c", stmt_kind::other, "ListenStmt"},
      {"NOTIFY c", stmt_kind::other, "NotifyStmt"},
  };
  for (const kind_case& c : cases) {
    statement st = one(c.sql);
    EXPECT_EQ(to_string(st.kind), std::string(to_string(c.kind))) << c.sql;
    EXPECT_EQ(st.node, c.node) << c.sql;
  }
}

// ---- read and write sets --------------------------------------------------------------------

struct rw_case {
  const char* sql;
  const char* reads;
  const char* writes;
};

TEST(AnalyzerReadWrite, RelationsReadAndWritten) {
  const rw_case cases[] = {
      // joins, subqueries everywhere, LATERAL
      {"SELECT * FROM public.users u JOIN orders AS o ON o.uid = u.id LEFT JOIN shop.products p ON "
       "true",
       "public.users orders shop.products", ""},
      {"SELECT (SELECT max(x) FROM m) FROM t WHERE id IN (SELECT id FROM bans) "
       "AND EXISTS (SELECT 1 FROM audit.log l)",
       "m t bans audit.log", ""},
      {"SELECT * FROM (SELECT * FROM t1) sub, LATERAL (SELECT * FROM t2 WHERE t2.a = sub.a) l",
       "t1 t2", ""},
      {"SELECT * FROM t, generate_series(1, 3) g", "t", ""},
      {"SELECT \"Users\".id FROM \"Users\", USERS", "Users users", ""},
      // the same table twice is two occurrences
      {"SELECT * FROM t a JOIN t b ON a.p = b.id", "t t", ""},
      // set operations
      {"SELECT a FROM x UNION SELECT a FROM y EXCEPT SELECT a FROM z", "x y z", ""},
      // CTE scoping
      {"WITH recent AS (SELECT * FROM orders), top AS (SELECT * FROM recent) "
       "SELECT * FROM top JOIN users ON true",
       "orders users", ""},
      {"WITH x AS (SELECT * FROM x) SELECT * FROM x", "x", ""},
      {"WITH x AS (SELECT 1) SELECT * FROM public.x, x", "public.x", ""},
      {"WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", "b", ""},
      {"WITH RECURSIVE tree(id) AS (SELECT id FROM nodes UNION ALL "
       "SELECT n.id FROM nodes n JOIN tree t ON n.p = t.id) SELECT * FROM tree",
       "nodes nodes", ""},
      {"SELECT * FROM (WITH c AS (SELECT 1) SELECT * FROM c) s, c", "c", ""},
      // writes
      {"INSERT INTO s.t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET b = EXCLUDED.b RETURNING id",
       "", "insert:s.t"},
      {"INSERT INTO archive SELECT * FROM orders WHERE ts < now()", "orders", "insert:archive"},
      {"UPDATE accounts a SET n = u.n FROM users u WHERE a.uid = u.id", "users", "update:accounts"},
      {"DELETE FROM sessions s USING users u WHERE s.uid = u.id", "users", "delete:sessions"},
      {"DELETE FROM t WHERE id IN (SELECT id FROM bad)", "bad", "delete:t"},
      {"MERGE INTO tgt t USING src s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v "
       "WHEN NOT MATCHED THEN INSERT (id) VALUES (s.id)",
       "src", "merge:tgt"},
      {"MERGE INTO tgt USING (SELECT * FROM a JOIN b ON true) s ON tgt.id = s.id WHEN MATCHED THEN "
       "DELETE",
       "a b", "merge:tgt"},
      {"COPY t3 FROM STDIN", "", "copy_from:t3"},
      {"COPY t4 TO STDOUT", "t4", ""},
      {"COPY (SELECT * FROM t5 JOIN t6 ON true) TO STDOUT", "t5 t6", ""},
      {"TRUNCATE a, s.b RESTART IDENTITY", "", "truncate:a truncate:s.b"},
      {"SELECT * INTO newt FROM src", "src", "select_into:newt"},
      {"CREATE TABLE newt AS SELECT * FROM src", "src", ""},
      // data-modifying CTEs; a CTE name as DML target is the real table
      {"WITH moved AS (DELETE FROM queue RETURNING *) INSERT INTO done SELECT * FROM moved", "",
       "delete:queue insert:done"},
      {"WITH d AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM d JOIN u ON true", "u",
       "update:t"},
      {"WITH t AS (SELECT 1) INSERT INTO t SELECT * FROM t", "", "insert:t"},
      {"SELECT * FROM t FOR UPDATE OF t", "t", ""},
      {"SELECT * FROM t TABLESAMPLE SYSTEM (5)", "t", ""},
  };
  for (const rw_case& c : cases) {
    statement st = one(c.sql);
    EXPECT_EQ(reads(st), c.reads) << c.sql;
    EXPECT_EQ(writes(st), c.writes) << c.sql;
  }
}

TEST(AnalyzerReadWrite, DdlTargets) {
  const rw_case cases[] = {
      // reads, then ddl_targets in the second column
      {"ALTER TABLE s.t ADD COLUMN c int", "", "s.t"},
      {"DROP TABLE IF EXISTS s.t1, t2 CASCADE", "", "s.t1 t2"},
      {"DROP VIEW v", "", "v"},
      {"DROP FUNCTION f(int)", "", ""},
      {"CREATE TABLE newt AS SELECT * FROM src", "src", "newt"},
      {"CREATE VIEW v AS SELECT * FROM t", "t", "v"},
      {"CREATE INDEX i ON s.t (lower(a))", "", "s.t"},
      {"GRANT SELECT ON t, s.u TO bob", "", "t s.u"},
      {"COMMENT ON TABLE s.t IS 'x'", "", "s.t"},
      {"COMMENT ON COLUMN s.t.c IS 'x'", "", "s.t"},
      {"REFRESH MATERIALIZED VIEW mv", "", "mv"},
      {"CREATE TABLE c (id int REFERENCES p (id))", "", "c p"},
  };
  for (const rw_case& c : cases) {
    statement st = one(c.sql);
    EXPECT_EQ(st.kind, stmt_kind::ddl) << c.sql;
    EXPECT_EQ(reads(st), c.reads) << c.sql;
    EXPECT_EQ(names(st.ddl_targets), c.writes) << c.sql;
    EXPECT_TRUE(st.writes.empty()) << c.sql;
  }
}

// ---- equality conjuncts ---------------------------------------------------------------------

struct conjunct_case {
  const char* sql;
  const char* expected;  // reads() for SELECT, writes() otherwise
};

TEST(AnalyzerConjuncts, SelectWhereRestrictsItsFromOccurrences) {
  const conjunct_case cases[] = {
      {"SELECT * FROM users WHERE id = 42", "users{id=42}"},
      {"SELECT * FROM users WHERE 42 = id", "users{id=42}"},
      {"SELECT * FROM users WHERE id = -5", "users{id=-5}"},
      {"SELECT * FROM users WHERE id = - 5", "users{id=-5}"},
      {"SELECT * FROM users WHERE id = 0", "users{id=0}"},
      {"SELECT * FROM users WHERE id = 007", "users{id=007}"},
      {"SELECT * FROM users WHERE id = $1", "users{id=$1}"},
      {"SELECT * FROM users WHERE id = $2::bigint", "users{id=$2}"},
      {"SELECT * FROM users WHERE id = CAST(-1 AS bigint)", "users{id=-1}"},
      {"SELECT * FROM users WHERE name = 'it''s'", "users{name='it's'}"},
      {"SELECT * FROM users WHERE name = ''", "users{name=''}"},
      {"SELECT * FROM users WHERE name = E'a\\'b\\n'", "users{name='a'b\n'}"},
      {"SELECT * FROM users WHERE name = $$x'y$$", "users{name='x'y'}"},
      {"SELECT * FROM users WHERE name = $q$a$$b$q$", "users{name='a$$b'}"},
      {"SELECT * FROM users WHERE name = 'x'::text", "users{name='x'}"},
      {"SELECT * FROM users WHERE name = text 'x'", "users{name='x'}"},
      {"SELECT * FROM users WHERE id IN (1, -2, 0, $1, 'x')", "users{id=1,-2,0,$1,'x'}"},
      {"SELECT * FROM users WHERE id = 1 AND (name = 'a' AND age = 3)",
       "users{id=1 name='a' age=3}"},
      {"SELECT * FROM users u WHERE u.id = 1", "users{id=1}"},
      {"SELECT * FROM s.users WHERE s.users.id = 1 AND users.k = 2", "s.users{id=1 k=2}"},
      {"SELECT count(*) FROM t WHERE id = 1 GROUP BY g HAVING count(*) > 1", "t{id=1}"},
      // joins: WHERE terms attach to the occurrence they name, ON terms never do
      {"SELECT * FROM users u JOIN orders o ON o.uid = u.id AND o.id = 3 WHERE u.id = 7 AND o.st = "
       "'x'",
       "users{id=7} orders{st='x'}"},
      {"SELECT * FROM a LEFT JOIN b ON b.id = 1 WHERE a.id = 2", "a{id=2} b"},
      {"SELECT * FROM a FULL JOIN b USING (id) WHERE b.k = 2", "a b{k=2}"},
      {"SELECT * FROM t x, t y WHERE x.id = 1", "t{id=1} t"},
      // no conjunct: not a plain equality on a known occurrence with a constant
      {"SELECT * FROM t WHERE a = 1 OR b = 2", "t"},
      {"SELECT * FROM t WHERE NOT a = 1", "t"},
      {"SELECT * FROM t WHERE a <> 1 AND b > 2 AND c NOT IN (1) AND d IS NULL", "t"},
      {"SELECT * FROM t WHERE a = b AND c = 1.5 AND d = true AND e = false AND f = NULL", "t"},
      {"SELECT * FROM t WHERE a = 1 + 1 AND b = lower('x') AND c = +3 AND d IN (1, e)", "t"},
      {"SELECT * FROM t WHERE a = U&'d\\0061t' AND b = B'101'", "t"},
      {"SELECT * FROM t WHERE a::text = 'x' AND a OPERATOR(pg_catalog.=) 1", "t"},
      {"SELECT * FROM t WHERE id IN (SELECT id FROM u) AND k = ANY('{1,2}')", "t u"},
      {"SELECT * FROM t u WHERE t.id = 1 AND nope.id = 2", "t"},
      {"SELECT * FROM a, b WHERE id = 1", "a b"},
      {"SELECT * FROM a JOIN b ON true WHERE id = 1", "a b"},
      {"SELECT * FROM a.t, b.t WHERE t.id = 1", "a.t b.t"},
      {"SELECT * FROM (a JOIN b ON true) j WHERE a.id = 1", "a b"},
      {"SELECT * FROM t, LATERAL (SELECT 1) s WHERE id = 1", "t"},
      {"SELECT * FROM t WHERE id = 1 UNION SELECT * FROM t WHERE id = 2", "t t"},
      {"WITH c AS (SELECT * FROM t WHERE id = 1) SELECT * FROM c WHERE c.id = 1", "t"},
      {"SELECT * FROM t WHERE x IN (SELECT y FROM u WHERE u.id = 1)", "t u"},
  };
  for (const conjunct_case& c : cases) EXPECT_EQ(reads(one(c.sql)), c.expected) << c.sql;
}

TEST(AnalyzerConjuncts, UpdateAndDeleteWhereRestrictTheTarget) {
  const conjunct_case cases[] = {
      {"UPDATE t SET a = 1 WHERE id = $2 AND t.k IN (1, 2)", "update:t{id=$2 k=1,2}"},
      {"UPDATE t x SET a = 1 WHERE x.id = 0 AND t.id = 9", "update:t{id=0}"},
      {"UPDATE t SET a = 1 WHERE id = 1 OR id = 2", "update:t"},
      {"UPDATE t SET a = 1 FROM u WHERE id = 9 AND t.id = 3 AND u.id = 4", "update:t{id=3}"},
      {"DELETE FROM t WHERE id = -1", "delete:t{id=-1}"},
      {"DELETE FROM s.t WHERE s.t.id = 'x'", "delete:s.t{id='x'}"},
      {"DELETE FROM t USING u WHERE id = 1 AND t.k = u.k", "delete:t"},
      {"DELETE FROM t WHERE CURRENT OF c", "delete:t"},
      {"WITH d AS (DELETE FROM q WHERE id = 4 RETURNING *) SELECT * FROM d", "delete:q{id=4}"},
  };
  for (const conjunct_case& c : cases) EXPECT_EQ(writes(one(c.sql)), c.expected) << c.sql;
}

// The WHERE text of a one-table UPDATE/DELETE, for the engine's pre-image read: exactly as
// written between the top-level WHERE and RETURNING/`;`/end, with its $n located; empty
// whenever the statement is not one table with a plain WHERE.
TEST(AnalyzerWrites, WhereTextForThePreimage) {
  struct where_case {
    const char* sql;
    const char* where;   // expected where_sql
    const char* params;  // "$2@1 $10@9": each $n with its offset in where_sql
    const char* alias;
  };
  const where_case cases[] = {
      {"DELETE FROM t WHERE id = $1", " id = $1", "$1@6", ""},
      {"UPDATE t AS x SET a = 'WHERE' WHERE x.id = $2 RETURNING a", " x.id = $2 ", "$2@8", "x"},
      {"update t set a = (select b from u where u.c = $1) where id = $10;", " id = $10", "$10@6", ""},
      {"DELETE FROM t -- WHERE not here\n WHERE /* WHERE ( */ k = $$it's WHERE$$ AND v = $3",
       " /* WHERE ( */ k = $$it's WHERE$$ AND v = $3", "$3@42", ""},
      {"DELETE FROM t WHERE k = E'a\\'b' AND \"where\" = 1 AND v = $tag$)$tag$",
       " k = E'a\\'b' AND \"where\" = 1 AND v = $tag$)$tag$", "", ""},
      {"UPDATE ONLY s.t SET a = (SELECT 1) WHERE k = $1 RETURNING *", " k = $1 ", "$1@5", ""},
      // a subquery in the WHERE may read other tables or pick rows nondeterministically
      {"UPDATE t SET a = 1 WHERE k IN (SELECT k FROM u WHERE u.z = $1)", "", "", ""},
      {"DELETE FROM t WHERE id = (SELECT id FROM t LIMIT 1)", "", "", ""},
      {"UPDATE t SET a = 1", "", "", ""},
      {"UPDATE t SET a = 1 FROM u WHERE t.id = u.id", "", "", ""},
      {"DELETE FROM t USING u WHERE t.id = u.id", "", "", ""},
      {"DELETE FROM t WHERE CURRENT OF c", "", "", ""},
      {"WITH d AS (SELECT 1) DELETE FROM t WHERE id = 1", "", "", ""},
      {"WITH d AS (DELETE FROM q WHERE id = 4 RETURNING *) SELECT * FROM d", "", "", ""},
      {"DELETE FROM t WHERE id = 1; DELETE FROM t WHERE id = 2", "", "", ""},
      {"INSERT INTO t VALUES (1)", "", "", ""},
  };
  for (const where_case& c : cases) {
    auto a = analyze_uncached(c.sql);
    ASSERT_TRUE(a.ok) << c.sql << ": " << a.error;
    std::string where, params, alias;
    for (const statement& st : a.statements)
      for (const write_ref& w : st.writes) {
        where += w.where_sql;
        alias += w.alias;
        for (auto [off, len] : w.where_params)
          params += (params.empty() ? "" : " ") + w.where_sql.substr(off, len) + "@" +
                    std::to_string(off);
      }
    EXPECT_EQ(where, c.where) << c.sql;
    EXPECT_EQ(params, c.params) << c.sql;
    EXPECT_EQ(alias, c.alias) << c.sql;
  }
}

// A scalar subquery in the target list correlated to an output column: its rows are named
// by that column's values in the result.
TEST(AnalyzerConjuncts, CorrelatedScalarSubqueryByOutputColumn) {
  struct corr_case {
    const char* sql;
    const char* expected;  // "table.column=#k(outer.column)" for each annotated read
  };
  const corr_case cases[] = {
      {"SELECT p.id, (SELECT count(*) FROM c WHERE c.post_id = p.id) AS n FROM p "
       "WHERE p.published = 1 ORDER BY p.created_at DESC, p.id LIMIT 10",
       "c.post_id=#0(p.id)"},
      {"SELECT x.title, x.id, (SELECT max(v) FROM s.c cc WHERE x.id = cc.pid AND cc.k = 2) "
       "FROM posts x JOIN users u ON u.id = x.a",
       "s.c.pid=#1(posts.id)"},
      {"SELECT id, (SELECT count(*) FROM c WHERE post_id = p.id) FROM p", "c.post_id=#0(p.id)"},
      // no output column carries the outer value
      {"SELECT p.title, (SELECT count(*) FROM c WHERE c.post_id = p.id) FROM p", ""},
      // ORDER BY the subquery (by name or position), DISTINCT, GROUP BY, *, set operations
      {"SELECT p.id, (SELECT count(*) FROM c WHERE c.post_id = p.id) AS n FROM p ORDER BY n", ""},
      {"SELECT p.id, (SELECT count(*) FROM c WHERE c.post_id = p.id) FROM p ORDER BY 2", ""},
      {"SELECT DISTINCT p.id, (SELECT count(*) FROM c WHERE c.post_id = p.id) FROM p", ""},
      {"SELECT p.id, (SELECT count(*) FROM c WHERE c.post_id = p.id) FROM p GROUP BY p.id", ""},
      {"SELECT *, (SELECT count(*) FROM c WHERE c.post_id = p.id) FROM p", ""},
      {"SELECT p.id, (SELECT count(*) FROM c WHERE c.post_id = p.id) FROM p UNION SELECT 1, 2", ""},
      // the correlation is not a top-level AND conjunct, or the subquery joins
      {"SELECT p.id, (SELECT count(*) FROM c WHERE c.post_id = p.id OR c.k = 1) FROM p", ""},
      {"SELECT p.id, (SELECT count(*) FROM c, d WHERE c.post_id = p.id) FROM p", ""},
      // the inner relation shadows the outer name: not a correlation
      {"SELECT p.id, (SELECT count(*) FROM p WHERE p.x = p.id) FROM p", ""},
      // EXISTS filters rows; only scalar subqueries in the target list qualify
      {"SELECT p.id FROM p WHERE EXISTS (SELECT 1 FROM c WHERE c.post_id = p.id)", ""},
      // joins to a relation restricted by `k = one value` (the engine checks k is a key)
      {"SELECT p.id, r.id, r.body FROM pages p JOIN revs r ON r.id = p.latest WHERE p.id = $1",
       "revs.id=#1(pages.latest) join[id]"},
      {"SELECT p.title, p.latest, r.body FROM pages p, revs r WHERE p.latest = r.id AND p.slug = 'x' AND p.n = 1",
       "revs.id=#1(pages.latest) join[slug n]"},
      {"SELECT p.id, r.id FROM pages p JOIN revs r ON r.id = p.latest WHERE p.id IN (1, 2)", ""},
      {"SELECT p.id, r.id FROM pages p LEFT JOIN revs r ON r.id = p.latest WHERE p.id = 1", ""},
      {"SELECT p.id, r.body FROM pages p JOIN revs r ON r.id = p.latest WHERE p.id = 1", ""},
  };
  for (const corr_case& c : cases) {
    std::string got;
    for (const read_ref& r : one(c.sql).reads)
      if (r.by_output)
        got += (got.empty() ? "" : " ") + name(r.table) + "." + r.by_output->column + "=#" +
               std::to_string(r.by_output->output) + "(" + name(r.by_output->outer_table) + "." +
               r.by_output->outer_column + ")";
    for (const read_ref& r : one(c.sql).reads)
      if (r.by_output && r.by_output->join) {
        got += " join[";
        for (std::size_t k = 0; k < r.by_output->outer_keys.size(); ++k)
          got += (k ? " " : "") + r.by_output->outer_keys[k];
        got += "]";
      }
    EXPECT_EQ(got, c.expected) << c.sql;
  }
}

// ---- write details ----------------------------------------------------------------------------

TEST(AnalyzerWrites, UpdateSetList) {
  statement st =
      one("UPDATE ONLY t SET a = 5, b = $1, c = 'x'::text, (d, e) = (1, 2), f = DEFAULT, "
          "g[1] = 3, h = now(), i = -7");
  ASSERT_EQ(st.writes.size(), 1u);
  const write_ref& w = st.writes[0];
  EXPECT_TRUE(w.only);
  std::string set;
  for (const auto& [col, v] : w.set) set += (set.empty() ? "" : " ") + col + "=" + value(v);
  EXPECT_EQ(set, "a=5 b=$1 c='x' d=? e=? f=? g=? h=? i=-7");
  EXPECT_EQ(one("UPDATE t SET a = 1").writes[0].only, false);
}

TEST(AnalyzerWrites, InsertColumnsRowsAndConflict) {
  statement st =
      one("INSERT INTO s.t AS z (a, b, c) VALUES (1, $1, 'q'), (DEFAULT, now(), -3) "
          "ON CONFLICT (a, lower(b)) DO UPDATE SET b = EXCLUDED.b RETURNING id");
  ASSERT_EQ(st.writes.size(), 1u);
  const write_ref& w = st.writes[0];
  EXPECT_EQ(name(w.table), "s.t");
  EXPECT_EQ(w.columns, (std::vector<std::string>{"a", "b", "c"}));
  ASSERT_TRUE(w.rows_known);
  ASSERT_EQ(w.rows.size(), 2u);
  EXPECT_EQ(value(w.rows[0][0]) + " " + value(w.rows[0][1]) + " " + value(w.rows[0][2]),
            "1 $1 'q'");
  EXPECT_EQ(value(w.rows[1][0]) + " " + value(w.rows[1][1]) + " " + value(w.rows[1][2]), "? ? -3");
  EXPECT_EQ(w.on_conflict, write_ref::conflict::update);
  EXPECT_EQ(w.conflict_columns, (std::vector<std::string>{"a"}));  // expressions are not columns
  EXPECT_TRUE(st.has_returning);
  EXPECT_TRUE(st.reads.empty());  // EXCLUDED is not a table
  EXPECT_EQ(names(st.functions), "now lower");

  const write_ref n = one("INSERT INTO t (a) VALUES (1) ON CONFLICT DO NOTHING").writes[0];
  EXPECT_EQ(n.on_conflict, write_ref::conflict::nothing);
  EXPECT_TRUE(n.conflict_columns.empty());
  EXPECT_FALSE(one("INSERT INTO t (a) VALUES (1)").has_returning);

  for (const char* sql : {"INSERT INTO t VALUES (1)", "INSERT INTO t (a) SELECT 1",
                          "INSERT INTO t DEFAULT VALUES", "INSERT INTO t (a) SELECT a FROM u"}) {
    const write_ref u = one(sql).writes.at(0);
    EXPECT_FALSE(u.rows_known) << sql;
    EXPECT_TRUE(u.rows.empty()) << sql;
    EXPECT_EQ(u.on_conflict, write_ref::conflict::none) << sql;
  }
}

TEST(AnalyzerWrites, TruncateOnlyAndCascade) {
  statement st = one("TRUNCATE ONLY a, s.b CASCADE");
  ASSERT_EQ(st.writes.size(), 2u);
  EXPECT_TRUE(st.writes[0].only);
  EXPECT_FALSE(st.writes[1].only);
  EXPECT_TRUE(st.writes[0].cascade && st.writes[1].cascade);
  EXPECT_FALSE(one("TRUNCATE a").writes[0].cascade);
  EXPECT_TRUE(one("DELETE FROM ONLY a").writes[0].only);
}

// ---- functions and flags ----------------------------------------------------------------------

struct flags_case {
  const char* sql;
  const char* functions;
  const char* value_functions;
  bool locking, time_literal, tablesample;
  int max_param;  // 0 = no params
};

TEST(AnalyzerFlags, FunctionsAndVolatilityHints) {
  const flags_case cases[] = {
      {"SELECT now(), random(), myschema.f(1), pg_catalog.clock_timestamp()",
       "now random myschema.f pg_catalog.clock_timestamp", "", false, false, false, 0},
      {"SELECT count(*), sum(x) OVER (PARTITION BY y), max(z) FILTER (WHERE lower(z) = 'a') FROM t",
       "count sum max lower", "", false, false, false, 0},
      {"SELECT * FROM generate_series(1, 3), LATERAL unnest(ARRAY[nextval('s')])",
       "generate_series unnest nextval", "", false, false, false, 0},
      {"SELECT CURRENT_TIMESTAMP, current_date, LOCALTIME, localtimestamp(3), CURRENT_USER, "
       "session_user, "
       "CURRENT_TIME(2), CURRENT_TIMESTAMP",
       "",
       "CURRENT_TIMESTAMP CURRENT_DATE LOCALTIME LOCALTIMESTAMP CURRENT_USER SESSION_USER "
       "CURRENT_TIME",
       false, false, false, 0},
      {"SELECT * FROM t WHERE x IN (SELECT y FROM u FOR SHARE)", "", "", true, false, false, 0},
      {"SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED", "", "", true, false, false, 0},
      {"SELECT * FROM t FOR KEY SHARE OF t", "", "", true, false, false, 0},
      {"SELECT 'now'::timestamptz", "", "", false, true, false, 0},
      {"SELECT * FROM t WHERE d > date ' Today '", "", "", false, true, false, 0},
      {"SELECT 'tomorrow', 'YESTERDAY'", "", "", false, true, false, 0},
      {"SELECT 'nowhere', 'now()'", "", "", false, false, false, 0},
      {"SELECT * FROM t TABLESAMPLE BERNOULLI (1) REPEATABLE (7)", "", "", false, false, true, 0},
      {"SELECT $1, $3::int FROM t WHERE a = $2", "", "", false, false, false, 3},
      {"INSERT INTO t (a) VALUES ($5) RETURNING now()", "now", "", false, false, false, 5},
  };
  for (const flags_case& c : cases) {
    statement st = one(c.sql);
    std::string vf;
    for (const std::string& f : st.value_functions) vf += (vf.empty() ? "" : " ") + f;
    EXPECT_EQ(names(st.functions), c.functions) << c.sql;
    EXPECT_EQ(vf, c.value_functions) << c.sql;
    EXPECT_EQ(st.locking, c.locking) << c.sql;
    EXPECT_EQ(st.time_literal, c.time_literal) << c.sql;
    EXPECT_EQ(st.tablesample, c.tablesample) << c.sql;
    EXPECT_EQ(st.has_params, c.max_param > 0) << c.sql;
    EXPECT_EQ(st.max_param, c.max_param) << c.sql;
  }
}

TEST(AnalyzerFlags, ReturningIsTopLevelOnly) {
  EXPECT_TRUE(one("DELETE FROM t RETURNING *").has_returning);
  EXPECT_TRUE(one("UPDATE t SET a = 1 RETURNING a").has_returning);
  EXPECT_FALSE(one("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d").has_returning);
}

// ---- transactions and session state ---------------------------------------------------------

struct txn_case {
  const char* sql;
  stmt_kind kind;
  const char* isolation;
  bool read_only;
  const char* variable;
  bool local;
};

TEST(AnalyzerSession, TransactionAndSessionDetails) {
  const txn_case cases[] = {
      {"BEGIN ISOLATION LEVEL REPEATABLE READ", stmt_kind::txn_begin, "repeatable read", false, "",
       false},
      {"BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY", stmt_kind::txn_begin, "serializable", true,
       "", false},
      {"START TRANSACTION READ WRITE", stmt_kind::txn_begin, "", false, "", false},
      {"BEGIN", stmt_kind::txn_begin, "", false, "", false},
      {"SET TRANSACTION ISOLATION LEVEL READ COMMITTED", stmt_kind::txn_set, "read committed",
       false, "", false},
      {"SET TRANSACTION READ ONLY", stmt_kind::txn_set, "", true, "", false},
      {"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
       stmt_kind::txn_set, "serializable", false, "", false},
      {"SET search_path TO a, b", stmt_kind::session_set, "", false, "search_path", false},
      {"SET LOCAL search_path = a", stmt_kind::session_set, "", false, "search_path", true},
      {"SET ROLE bob", stmt_kind::session_set, "", false, "role", false},
      {"RESET ROLE", stmt_kind::session_set, "", false, "role", false},
      {"SET SESSION AUTHORIZATION bob", stmt_kind::session_set, "", false, "session_authorization",
       false},
      {"SET TIME ZONE 'UTC'", stmt_kind::session_set, "", false, "timezone", false},
      {"SET DateStyle = ISO", stmt_kind::session_set, "", false, "datestyle", false},
      {"RESET ALL", stmt_kind::session_reset, "", false, "", false},
  };
  for (const txn_case& c : cases) {
    statement st = one(c.sql);
    EXPECT_EQ(to_string(st.kind), std::string(to_string(c.kind))) << c.sql;
    EXPECT_EQ(st.isolation, c.isolation) << c.sql;
    EXPECT_EQ(st.read_only, c.read_only) << c.sql;
    EXPECT_EQ(st.variable, c.variable) << c.sql;
    EXPECT_EQ(st.local, c.local) << c.sql;
  }
}

// ---- whole strings ----------------------------------------------------------------------------

TEST(AnalyzerStrings, MultiStatementGivesOneStatementEach) {
  analysis a =
      analyze_uncached("SELECT 1 FROM a; UPDATE t SET x = 1 WHERE id = 2; DELETE FROM t4; BEGIN");
  ASSERT_TRUE(a.ok) << a.error;
  ASSERT_EQ(a.statements.size(), 4u);
  EXPECT_EQ(a.statements[0].node, "SelectStmt");
  EXPECT_EQ(reads(a.statements[0]), "a");
  EXPECT_EQ(writes(a.statements[1]), "update:t{id=2}");
  EXPECT_EQ(writes(a.statements[2]), "delete:t4");
  EXPECT_EQ(a.statements[3].kind, stmt_kind::txn_begin);
}

TEST(AnalyzerStrings, LiteralsAreReadAtTheirOwnStatementsLocation) {
  analysis a = analyze_uncached("SELECT 'x;y'; SELECT * FROM t WHERE id = -12 AND s = 'a''b'");
  ASSERT_TRUE(a.ok) << a.error;
  ASSERT_EQ(a.statements.size(), 2u);
  EXPECT_EQ(reads(a.statements[1]), "t{id=-12 s='a'b'}");
}

TEST(AnalyzerStrings, EmptyAndCommentOnlyStringsHaveNoStatements) {
  for (const char* sql : {"", "   ", "-- nothing\n", "/* a */ ;", ";;"}) {
    analysis a = analyze_uncached(sql);
    EXPECT_TRUE(a.ok) << sql << ": " << a.error;
    EXPECT_TRUE(a.statements.empty()) << sql;
  }
}

TEST(AnalyzerStrings, SyntaxErrorsReportTheParsersMessage) {
  analysis a = analyze_uncached("SELECT FROM WHERE");
  EXPECT_FALSE(a.ok);
  EXPECT_EQ(a.error, "syntax error at or near \"WHERE\"");
  EXPECT_TRUE(a.statements.empty());

  analysis b =
      analyze_uncached("SELECT * FROM t WHERE id = :id");  // SOCI placeholders are not PostgreSQL
  EXPECT_FALSE(b.ok);
  EXPECT_EQ(b.error, "syntax error at or near \":\"");
  EXPECT_FALSE(analyze_uncached("INSERT OR REPLACE INTO t VALUES (1)").ok);
}

TEST(AnalyzerStrings, DeepNestingFailsCleanly) {
  std::string parens = "SELECT " + std::string(10000, '(') + "1" + std::string(10000, ')');
  analysis a = analyze_uncached(parens);
  EXPECT_FALSE(a.ok);
  EXPECT_NE(a.error.find("memory exhausted"), std::string::npos) << a.error;

  // Left-deep chains are not limited by the parser, and libpg_query and the walker recurse
  // once per level: they must never overflow the parser thread's stack.
  auto chain = [](int n) {
    std::string sql = "SELECT * FROM t WHERE id = 1";
    for (int i = 0; i < n; ++i) sql += "+1";
    return sql;
  };
  analysis shallow = analyze_uncached(chain(2000));
  ASSERT_TRUE(shallow.ok) << shallow.error;
  EXPECT_EQ(reads(shallow.statements.at(0)), "t");  // `id = 1+1+...` is not a constant
  analysis deep = analyze_uncached(chain(100000));  // parsed, but too deep to walk
  EXPECT_FALSE(deep.ok);
  EXPECT_EQ(deep.error, "statement is nested too deeply to analyze");
  analysis huge = analyze_uncached(chain(700000));  // refused before parsing
  EXPECT_FALSE(huge.ok);
  EXPECT_EQ(huge.error, "statement is too large or too deeply nested to analyze");

  // Moderate nesting still works.
  std::string ok =
      "SELECT * FROM t WHERE id = " + std::string(500, '(') + "1" + std::string(500, ')');
  EXPECT_TRUE(analyze_uncached(ok).ok);
}

TEST(AnalyzerStrings, LongShallowStatementsAreAnalyzed) {
  std::string sql = "INSERT INTO t (a, b) VALUES ";
  for (int i = 0; i < 40000; ++i) sql += (i ? ", (" : "(") + std::to_string(i) + ", 'v')";
  analysis a = analyze_uncached(sql);
  ASSERT_TRUE(a.ok) << a.error;
  ASSERT_EQ(a.statements.size(), 1u);
  ASSERT_TRUE(a.statements[0].writes.at(0).rows_known);
  EXPECT_EQ(a.statements[0].writes[0].rows.size(), 40000u);
  EXPECT_EQ(value(a.statements[0].writes[0].rows[39999][0]), "39999");
}

// ---- memo and parser thread -------------------------------------------------------------------

TEST(AnalyzerMemo, SameTextSharesOneResult) {
  std::string sql = "SELECT * FROM memo_test WHERE id = 1";
  std::shared_ptr<const analysis> a = analyze(sql);
  std::shared_ptr<const analysis> b = analyze(std::string(sql));
  EXPECT_EQ(a.get(), b.get());
  ASSERT_TRUE(a->ok);
  EXPECT_EQ(reads(a->statements.at(0)), "memo_test{id=1}");
  EXPECT_NE(analyze(sql + " ").get(), a.get());  // exact text, not normalized

  std::shared_ptr<const analysis> bad = analyze("SELEC 1");
  EXPECT_FALSE(bad->ok);
  EXPECT_EQ(analyze("SELEC 1").get(), bad.get());
}

TEST(AnalyzerMemo, ConcurrentCallersAgree) {
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([t, &mismatches] {
      for (int i = 0; i < 300; ++i) {
        int k = (i * 7 + t) % 50;
        std::string sql =
            "SELECT * FROM c" + std::to_string(k) + " WHERE id = " + std::to_string(-k);
        auto a = analyze(sql);
        if (!a->ok || reads(a->statements.at(0)) !=
                          "c" + std::to_string(k) + "{id=" + std::to_string(-k) + "}") {
          ++mismatches;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(ParserThread, RunsJobsOnOneThreadAndPropagatesResults) {
  std::thread::id first = detail::run_on_parser_thread([] { return std::this_thread::get_id(); });
  EXPECT_NE(first, std::this_thread::get_id());
  EXPECT_FALSE(detail::on_parser_thread());
  std::thread other([&] {
    EXPECT_EQ(detail::run_on_parser_thread([] { return std::this_thread::get_id(); }), first);
  });
  other.join();
  EXPECT_TRUE(detail::run_on_parser_thread([] { return detail::on_parser_thread(); }));
  EXPECT_THROW(detail::run_on_parser_thread([]() -> int { throw std::runtime_error("boom"); }),
               std::runtime_error);
  // Re-entrant use from a job runs inline instead of deadlocking.
  EXPECT_EQ(
      detail::run_on_parser_thread([] { return detail::run_on_parser_thread([] { return 7; }); }),
      7);
  std::vector<int> order;
  for (int i = 0; i < 5; ++i) detail::post_to_parser_thread([&order, i] { order.push_back(i); });
  detail::run_on_parser_thread([] {});  // FIFO: everything posted before has run
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

}  // namespace
}  // namespace qcache::pg
