// What a PL/pgSQL trigger function may do, read from its source with libpg_query's PL/pgSQL
// parser (pg_query_parse_plpgsql) and the statement analyzer (analyzer.h) for every SQL
// statement and expression in it.
//
// Thread safety: read_trigger_function() may be called from any thread, concurrently; the
// parse runs on the parser thread (parser_thread.h). Results are immutable and shared.
//
// The reading is syntactic, like analyze(): table and function names are as written, to be
// resolved with the search_path of the session whose statement fires the trigger. Anything
// the reader cannot follow makes `unknown` non-empty, and the caller must then assume the
// function may write anything: dynamic SQL (EXECUTE, FOR ... IN EXECUTE, OPEN ... FOR
// EXECUTE), CALL, COMMIT/ROLLBACK, DDL or other utility statements (NOTIFY excepted), SET or
// set_config() (they change name resolution for the statements after them), assignment to
// subscripted targets, declared cursors (the parser cannot type them), any text that does
// not parse.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pg/analyzer.h"

namespace qcache::pg {

// A table a trigger body writes, as written.
struct body_write {
  qualified_name table;
  write_op op = write_op::insert;
  bool upsert = false;   // INSERT ... ON CONFLICT DO UPDATE (also fires UPDATE triggers)
  bool cascade = false;  // TRUNCATE ... CASCADE
};

struct trigger_function {
  std::string unknown;  // non-empty: why the body cannot be read; it may do anything
  std::vector<body_write> writes;
  std::vector<qualified_name> functions;  // every function any statement or expression calls
  std::vector<qualified_name> reads;      // every relation a statement reads (views may call)
  // Every statement and expression of the body as analysed, for the user code they reach
  // without naming it (operators, casts, views, defaults: snapshot::statement_code).
  std::vector<statement> statements;
  bool changes_session = false;           // SET / RESET / set_config(): session settings change
  // NEW as a whole may be replaced (NEW := ..., SELECT ... INTO NEW, FOR NEW IN ...), or the
  // function returns a record other than NEW, OLD or NULL: a BEFORE ROW trigger may then
  // store any values in any column.
  bool replaces_new = false;
  std::vector<std::string> new_columns;  // NEW.c assigned (names folded as PostgreSQL does)
};

// Reads `body` (pg_proc.prosrc of a LANGUAGE plpgsql function returning trigger). Memoized
// per body text.
std::shared_ptr<const trigger_function> read_trigger_function(std::string_view body);

// Same without the memo (for tests).
trigger_function read_trigger_function_uncached(std::string_view body);

}  // namespace qcache::pg
