// PostgreSQL statement analysis on libpg_query (the real PostgreSQL 15 parser).
//
// Thread safety: analyze() is safe to call from any thread. It never parses on the
// caller's thread: every parse runs on one long-lived parser thread (libpg_query uses
// up a pthread key for each thread that ever parses; see DEPENDENCIES.md), and results
// are memoized per exact SQL text, so repeated statements never parse again.
//
// The analysis is purely syntactic: names are as written (not resolved through
// search_path), views are not expanded, and function volatility is not known. The
// catalog (src/pg/catalog.h) turns this into dependencies.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include <utility>

namespace qcache::pg {

enum class stmt_kind : std::uint8_t {
  read,          // SELECT / VALUES / TABLE / SHOW without side effects (may still be uncacheable)
  write,         // INSERT, UPDATE, DELETE, MERGE, COPY FROM, TRUNCATE, SELECT INTO, writable CTE
  ddl,           // CREATE/ALTER/DROP/COMMENT/GRANT/REVOKE/REFRESH/CREATE TABLE AS/... (schema change)
  txn_begin,     // BEGIN / START TRANSACTION
  txn_commit,    // COMMIT / END (COMMIT PREPARED is `other`: see analyzer.cc)
  txn_rollback,  // ROLLBACK / ABORT
  savepoint,     // SAVEPOINT x
  release,       // RELEASE [SAVEPOINT] x
  rollback_to,   // ROLLBACK TO [SAVEPOINT] x
  txn_set,       // SET TRANSACTION ... / SET SESSION CHARACTERISTICS AS TRANSACTION ...
  session_set,   // SET / RESET / SET ROLE / SET SESSION AUTHORIZATION / SET LOCAL
  session_reset, // DISCARD ALL|PLANS|SEQUENCES|TEMP, RESET ALL
  copy_to,       // COPY ... TO (reads; never cached)
  other,         // anything else (DO, CALL, EXECUTE, PREPARE, LOCK, VACUUM, LISTEN, NOTIFY, ...)
};

const char* to_string(stmt_kind k);

struct qualified_name {
  std::string schema;  // empty when unqualified
  std::string name;    // lower-cased unless quoted, exactly as PostgreSQL folds it
  bool operator==(const qualified_name&) const = default;
};

// A constant or parameter on the right side of an equality (`col = <value>`).
struct eq_value {
  enum class kind : std::uint8_t { param, integer, string, other } k = kind::other;
  int param = 0;     // 1-based $n when k == param
  std::string text;  // literal text: integers as written in the SQL (e.g. "-5", "0"),
                     // strings decoded ('it''s' -> it's); empty for param/other
  // Under a cast to a built-in type written without pg_catalog (`'x'::text`): the value
  // is this one only when search_path finds pg_catalog's types before any other schema's.
  // (A cast that may change the value, `::char(3)`, `::name`, `::varchar(2)`, makes none.)
  bool unqualified_cast = false;
  bool operator==(const eq_value&) const = default;
};

// `column = v1` or `column IN (v1, v2, ...)`, one conjunct of a top-level AND.
struct eq_conjunct {
  std::string column;
  std::vector<eq_value> values;  // every value is param/integer/string; otherwise no conjunct
  bool operator==(const eq_conjunct&) const = default;
};

// One occurrence of a relation read by a statement.
struct read_ref {
  qualified_name table;
  // Equality conjuncts that restrict *this occurrence*: only for relations in the FROM
  // list (incl. inner/outer joins) of the outermost SELECT, taken from its WHERE clause's
  // top-level AND; columns must be qualified by this occurrence's alias/name, or
  // unqualified when it is the only relation in that FROM. Empty otherwise.
  std::vector<eq_conjunct> conjuncts;
  // Set when this occurrence is the only relation of a scalar subquery in the outermost
  // SELECT's target list, correlated by a top-level `column = outer.outer_column`, where
  // that outer column is also plain output column `output` (0-based) of the statement:
  //   SELECT p.id, (SELECT count(*) FROM c WHERE c.post_id = p.id) FROM p ...
  // For each result row, the subquery read only rows whose `column` equals the row's
  // output value. Only when nothing else can make the subquery's value matter to which
  // rows the statement returns (no DISTINCT, GROUP BY, HAVING, window, set operation,
  // ORDER BY other than qualified columns, no `*` in the target list).
  //
  // Also set (join == true) for a relation of the outermost FROM joined by an inner-join
  // or WHERE equality `this.column = outer.outer_column`, where the outer relation is
  // restricted by `k = <one value>` for each column k in outer_keys, and one side of the
  // equality is plain output column `output`: when one of those k is a key of the outer
  // relation (the engine checks), at most one outer row qualifies, and a non-empty result
  // names the only value of `column` this relation was read through.
  struct correlation {
    std::string column;          // of this relation
    int output = -1;             // result column holding the outer value
    qualified_name outer_table;  // the outer relation, as written
    std::string outer_column;
    bool join = false;
    std::vector<std::string> outer_keys;
    bool operator==(const correlation&) const = default;
  };
  std::optional<correlation> by_output;
};

enum class write_op : std::uint8_t { insert, update, del, merge, truncate, copy_from, select_into };

struct write_ref {
  qualified_name table;
  write_op op = write_op::insert;
  // UPDATE/DELETE: equality conjuncts of the WHERE clause's top-level AND on this target
  // (qualified by its alias/name, or unqualified). Empty for others or when absent.
  std::vector<eq_conjunct> where;
  // UPDATE: every assigned column; value set only when it is a constant or parameter.
  std::vector<std::pair<std::string, std::optional<eq_value>>> set;
  // INSERT: target columns as written (empty when the list is omitted) and, for
  // INSERT ... VALUES, one vector per row aligned with `columns` (nullopt = an expression
  // or DEFAULT). `rows_known` is false for INSERT ... SELECT / DEFAULT VALUES / no list.
  std::vector<std::string> columns;
  std::vector<std::vector<std::optional<eq_value>>> rows;
  bool rows_known = false;
  enum class conflict : std::uint8_t { none, nothing, update } on_conflict = conflict::none;
  std::vector<std::string> conflict_columns;  // inference columns of ON CONFLICT (...)
  bool only = false;  // ONLY t (no inheritance children)
  // UPDATE/DELETE of one table as the whole statement (no WITH, FROM or USING, not WHERE
  // CURRENT OF, no subquery in the WHERE): the WHERE condition exactly as written, $n
  // parameters included, and the
  // target's alias (empty when none). Empty when the statement has no such WHERE. Lets
  // the engine read the rows' current values before the write (a pre-image).
  std::string where_sql;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> where_params;  // $n in where_sql: offset, length
  std::string alias;
  // Functions and SQL value functions (CURRENT_TIMESTAMP...) the WHERE above calls.
  std::vector<qualified_name> where_functions;
  bool where_value_function = false;
  bool cascade = false;  // TRUNCATE ... CASCADE
};

struct statement {
  stmt_kind kind = stmt_kind::other;
  std::string node;  // libpg_query node type, e.g. "SelectStmt", "DoStmt"
  std::vector<read_ref> reads;     // every relation read, CTE names removed (scoped)
  std::vector<write_ref> writes;   // every relation written (incl. data-modifying CTEs)
  std::vector<qualified_name> ddl_targets;  // relations named by DDL (may be empty)
  std::vector<qualified_name> functions;  // every FuncCall, incl. table functions, as named
  std::vector<std::string> value_functions;  // SQLValueFunction ops, e.g. "CURRENT_TIMESTAMP"
  bool locking = false;        // FOR UPDATE/SHARE/NO KEY UPDATE/KEY SHARE anywhere
  bool time_literal = false;   // a constant 'now'/'today'/'tomorrow'/'yesterday' anywhere
  bool tablesample = false;    // TABLESAMPLE anywhere
  bool has_returning = false;  // top-level RETURNING
  bool has_params = false;     // any $n
  int max_param = 0;
  // txn_begin / txn_set: isolation as written, lower-case ("repeatable read", ...), or empty.
  std::string isolation;
  bool read_only = false;       // BEGIN READ ONLY / SET TRANSACTION READ ONLY
  // session_set: the variable ("search_path", "role", "session_authorization", "timezone"...)
  // lower-cased; empty for RESET ALL. `local` for SET LOCAL.
  std::string variable;
  bool local = false;
};

struct analysis {
  bool ok = false;
  std::string error;  // the parser's message when !ok (e.g. "syntax error at or near ...")
  std::vector<statement> statements;  // one per statement in a multi-statement string
};

// Analyzes `sql` (PostgreSQL dialect, $n parameters). Never throws for bad SQL: returns
// ok == false with the parser's message. The returned object is shared and immutable.
// Statements longer than 64 KiB are not memoized (each call returns a fresh result).
std::shared_ptr<const analysis> analyze(std::string_view sql);

// `sql` as a session with standard_conforming_strings = off sends it, rewritten so that the
// analyzer (which lexes with it on) reads what the server reads: every plain '...' literal
// that contains a backslash becomes E'...' (off, the server takes backslash escapes in
// plain literals too). Text without such a literal comes back unchanged. nullopt when the
// text cannot be rewritten so (such a literal right after N, U&, B, X or an identifier, a
// string continuation, or an unterminated literal): the caller must then not trust any
// analysis of it. backslash_quote needs nothing: where it forbids \' the server fails.
std::optional<std::string> as_escape_strings(std::string_view sql);

// Same as analyze() but bypasses the memo (for tests and the fuzzer).
analysis analyze_uncached(std::string_view sql);

}  // namespace qcache::pg
