// What qcache knows about a PostgreSQL database's schema: relations and how writes to
// them spread (views, FK cascades, inheritance/partitions, triggers, rules), function
// volatility, column type classes, and the identity of the database.
//
// Thread safety: a `snapshot` is immutable and safe to use from any number of threads.
// `catalog` is internally synchronised: current(), generation(), identity() and the
// value-returning lookups may be called concurrently with each other and with refresh();
// generation() is lock-free; a refresh publishes a new snapshot atomically, and readers that hold
// the old one keep a consistent view of it. Pointers returned by snapshot lookups live as long as
// the snapshot (hold the shared_ptr while you use them). The query_fn is only ever called from the
// thread that calls load()/refresh(), one statement at a time.
//
// The catalog never talks to a driver: it runs a handful of SELECTs through a callback
// (see query_fn) and builds everything in memory. It is a point-in-time picture: DDL
// (made through qcache or not) is only seen after refresh(). For a fully consistent
// picture run the queries inside one REPEATABLE READ transaction; otherwise DDL that
// races a load is handled conservatively (relations that appear mid-load are skipped or
// make the views that read them `volatile_view`). Loading needs no privileges beyond
// what PUBLIC has by default; it takes ~4 ms on a fresh database (mostly pg_proc, ~3,200
// rows). Run the queries on a connection whose search_path does not shadow pg_catalog's
// operators (pg_catalog is searched first unless the path lists it explicitly later).
//
// What is loaded (and deliberately not):
//  * Every relation that can be named in FROM (tables, partitioned tables, views,
//    materialized views, foreign tables, sequences, composite types), system catalogs
//    and information_schema included, so names resolve exactly as PostgreSQL does.
//    Columns are loaded only for relations outside pg_catalog, information_schema and
//    pg_toast*.
//  * Views outside the system schemas are expanded from their stored rule tree
//    (pg_rewrite.ev_action), not pg_depend: since PostgreSQL 14, references to pinned
//    objects (now(), random(), pg_class, ...) are not recorded in pg_depend. System views
//    are not expanded: they are marked `system` and `volatile_view` (many read volatile
//    statistics functions; all change with DDL), so anything built on them is too.
//  * Routes to user code a statement may run without naming it (operators, defaults,
//    constraints, domain checks, casts, policies, index expressions and operator classes,
//    aggregates' support functions, view bodies), resolved to the functions they reach:
//    see code_reach, relation::read_code / write_code and snapshot::statement_code().
//    Only objects with OIDs >= 16384 (created after initdb) are routes.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "pg/analyzer.h"  // qualified_name
#include "pg/plpgsql.h"   // trigger_function

namespace qcache::pg {

// One result row, in text format; nullopt is SQL NULL.
using row = std::vector<std::optional<std::string>>;
// Runs one SQL statement (no parameters) and returns all its rows. May throw: the
// exception propagates out of catalog::load()/refresh() unchanged.
using query_fn = std::function<std::vector<row>(const std::string& sql)>;

// `s` between two `q` characters, each `q` inside doubled: a string literal (q = '\'',
// under standard_conforming_strings) or a quoted identifier (q = '"') for SQL that qcache
// writes itself.
std::string quoted(std::string_view s, char q);

// pg_trigger.tgtype bits (PostgreSQL's TRIGGER_TYPE_*). Events use the same bits.
inline constexpr unsigned trigger_row = 1, trigger_before = 2, trigger_insert = 4,
                          trigger_delete = 8, trigger_update = 16, trigger_truncate = 32,
                          trigger_instead = 64;
inline constexpr unsigned trigger_dml = trigger_insert | trigger_delete | trigger_update;

// A trigger that may fire: enabled in some session_replication_role (tgenabled 'O', 'R' or
// 'A'; which of them fires depends on a setting any session may change, so all are
// assumed to). Disabled triggers ('D') never fire and are not loaded, nor are the
// internal triggers PostgreSQL creates for foreign keys (their effects are
// relation::cascade_targets) and deferrable unique constraints (they only check).
// WHEN conditions are ignored (the trigger may fire) unless they call a volatile function,
// which makes the function `unknown`. UPDATE OF column lists are ignored likewise.
struct trigger {
  std::string name;
  unsigned type = 0;  // pg_trigger.tgtype
  // What the function does. Never null; `unknown` is set for languages other than PL/pgSQL,
  // functions with their own search_path, and volatile WHEN conditions.
  std::shared_ptr<const trigger_function> body;
  bool fires_on(unsigned events) const {
    return (type & events & (trigger_dml | trigger_truncate)) != 0;
  }
};

// Type classes of a column, for comparing values written and values filtered on.
//  'i'  int2/int4/int8: equal iff the integers are equal.
//  't'  text/varchar with a deterministic collation: equal iff the bytes are equal (in
//       one client encoding); varchar(n) is also in relation::trims_on_write.
//  'o'  anything else (bpchar pads, numeric scales, nondeterministic collations, domains,
//       floats, generated columns, ...): no textual equality may be assumed.
inline constexpr char column_int = 'i';
inline constexpr char column_text = 't';
inline constexpr char column_other = 'o';

// What user code a route reaches (functions run without being named by the statement:
// operators, defaults, constraints, domain checks, casts, policies, aggregates' support
// functions, view bodies). `volatility` is the most volatile function reached ('\0' when
// none, else 'i' < 's' < 'v'); `writes` says one of them may write (see may_write());
// `function` names one deciding function, for reasons.
struct code_reach {
  char volatility = '\0';
  bool writes = false;
  std::string function;
  void merge(const code_reach& o);
};

// A function that may change table data: VOLATILE and not one of pg_catalog's volatile
// functions that only touch sequences, session state, locks or randomness.
bool may_write(const qualified_name& f, char volatility);

struct relation {
  std::uint32_t oid = 0;
  std::string schema, name;
  // pg_class.relkind: 'r' table, 'p' partitioned table, 'v' view, 'm' materialized view,
  // 'f' foreign table (data changes outside PostgreSQL), 'S' sequence (changes with every
  // nextval), 'c' composite type. Indexes and TOAST tables are not loaded.
  char kind = 'r';
  // pg_class.relpersistence: 'p' permanent, 'u' unlogged, 't' temporary (lives in one
  // session's pg_temp_N; a result read from it must never be shared across sessions).
  char persistence = 'p';
  bool system = false;  // in pg_catalog, information_schema or pg_toast*: changes with DDL
  bool rls = false;     // relrowsecurity: rows visible depend on role and policy inputs
  // An enabled (tgenabled <> 'D'), non-internal trigger (incl. INSTEAD OF and user
  // constraint triggers). Triggers PostgreSQL creates for foreign keys do not count.
  // Writes to such a relation may write anywhere: callers must flush conservatively.
  bool user_triggers = false;
  // An enabled rewrite rule other than a view's _RETURN rule (CREATE RULE ... DO
  // ALSO/INSTEAD), on a table or a view. Same consequence as user_triggers.
  bool rules = false;
  // Every trigger that may fire on this relation (see `trigger`), incl. partition clones.
  std::vector<trigger> triggers;
  // Relations whose rows this one reads. Table-like relations (incl. materialized views,
  // whose contents change only on REFRESH): {oid}. User views: the non-view relations
  // their rule reads, expanded through nested views (never contains a view except system
  // views, which are not expanded). Composite types: {}.
  std::vector<std::uint32_t> base_tables;
  // A view that calls (directly or through nested views) a function, operator, aggregate
  // or window function that is not IMMUTABLE, uses CURRENT_DATE/CURRENT_TIME/LOCALTIME/
  // CURRENT_TIMESTAMP/LOCALTIMESTAMP, TABLESAMPLE or nextval; every system view. Its
  // result must not be cached as if deterministic.
  bool volatile_view = false;
  // Tables whose rows change when rows of this one are UPDATEd or DELETEd, through foreign
  // keys with ON UPDATE / ON DELETE CASCADE, SET NULL or SET DEFAULT, transitively
  // (RESTRICT / NO ACTION never change rows). Excludes this relation. Sorted.
  // Note: the closure follows FKs only; combine with `family` of each table for
  // inheritance (partitioned FKs are cloned per partition by PostgreSQL and so appear).
  std::vector<std::uint32_t> cascade_targets;
  // The foreign keys referencing this relation (confrelid = oid) whose ON UPDATE or ON
  // DELETE action changes rows: `child` (conrelid), the actions (pg_constraint
  // confupdtype / confdeltype: 'c' CASCADE, 'n' SET NULL, 'd' SET DEFAULT, 'a' NO ACTION,
  // 'r' RESTRICT) and `key`, the names of this relation's referenced columns (confkey).
  // See snapshot::fk_action_targets.
  struct fk_action {
    std::uint32_t child = 0;
    char on_update = 'a', on_delete = 'a';
    std::vector<std::string> key;
    bool any_column = false;  // a key column is generated: any UPDATE may change it
  };
  std::vector<fk_action> fk_actions;
  // Every table with a foreign key to this one, transitively: what TRUNCATE ... CASCADE
  // also truncates. Excludes this relation. Sorted.
  std::vector<std::uint32_t> referencing;
  // Inheritance / partition ancestors and descendants, transitively; excludes this
  // relation. Sorted. (Reading a parent reads its descendants; writing a child changes
  // what its ancestors return.) Siblings are not family.
  std::vector<std::uint32_t> family;
  // User code run by reading this relation (row-security policies, the I/O, cast and
  // operator functions of user-defined column types; for views also every function the
  // body calls, through nested views) and by writing it (also defaults and generated
  // columns, CHECK and EXCLUDE constraints, domain checks, index expressions, predicates
  // and user operator classes). Triggers and rules are `user_triggers` / `rules`.
  code_reach read_code, write_code;
  bool user_typed = false;  // a column's type is a user type (implicit casts may apply)
  // Column name -> type class (column_int / column_text / column_other). Empty for
  // system relations.
  std::map<std::string, char, std::less<>> columns;
  // Columns that alone are a key (a valid, non-partial unique index on just that column):
  // `c = v` selects at most one row.
  std::set<std::string, std::less<>> unique_columns;
  // varchar(n) columns (class 't'): a written value longer than n whose excess is spaces
  // is stored with them cut off, so a value written with trailing spaces may not be the
  // value stored. (One without them is stored as written, or rejected when too long.)
  std::set<std::string, std::less<>> trims_on_write;

  // The column's class, or '\0' when there is no such column (or it was not loaded).
  char column_class(std::string_view column) const;
};

// An immutable picture of the catalog. Lookups are cheap (hash maps, no locks).
class snapshot {
 public:
  // The relation `name` denotes for a session whose current_schemas(true) is `schemas`
  // (in order; it lists pg_temp_N when the session has a temp schema, and pg_catalog).
  // Unqualified names are looked up in that order; qualified names in their schema only,
  // where schema "pg_temp" means the session's pg_temp_N. nullptr when not found.
  // The pointer is valid while this snapshot is alive.
  const relation* resolve(const qualified_name& name,
                          const std::vector<std::string>& schemas) const;
  const relation* by_oid(std::uint32_t oid) const;  // nullptr when unknown

  // Tables whose rows FK referential actions may change when a statement deletes rows of
  // `r` (`deletes`) or updates them (`updates`; `columns` lists the columns it may set,
  // nullptr for any). ON DELETE actions fire on deletes only; ON UPDATE actions only when
  // a referenced key column may change. Transitive (a table changed by CASCADE on delete
  // counts as deleted, one changed otherwise as updated in any column), through each
  // table's `family` too (a write through an inheritance parent changes its children; an
  // UPDATE of a partition key column may move rows, which releases before 15 fired ON
  // DELETE actions for). Sorted; may contain `r` (self-references) and oids of relations
  // not loaded (callers treat those as unknown).
  std::vector<std::uint32_t> fk_action_targets(const relation& r, bool deletes, bool updates,
                                               const std::vector<std::string>* columns) const;

  // 'i' immutable, 's' stable, 'v' volatile for the function `name` (any argument types:
  // the most volatile overload wins). Unqualified: the most volatile across every schema
  // of `schemas` that has a function of that name (temp schemas are never searched for
  // functions, as in PostgreSQL). Qualified: that schema only. 'v' when unknown.
  char function_volatility(const qualified_name& name,
                           const std::vector<std::string>& schemas) const;
  // Whether `name` may denote a function outside pg_catalog (user code, which may change
  // session state: SET, set_config): qualified with another schema, found in a schema of
  // `schemas` other than pg_catalog, or not found at all.
  bool user_function(const qualified_name& name, const std::vector<std::string>& schemas) const;

  // User code `s` may reach without naming it: its operators (user-defined ones: the
  // operator or its function outside pg_catalog; every schema for unqualified names),
  // functional notation (`x.f` where a user function f of one composite, pseudo-type or
  // domain argument exists in `schemas`), casts to user types (or to built-in types a
  // user cast converts to or from), implicit user casts (when the statement has a value
  // to coerce: a function, operator, cast, write, or a column of a user type), and the read_code of
  // the relations it reads and the write_code of those it writes (with their families and FK
  // cascade targets). Relations that do not resolve add nothing (the caller refuses them);
  // an operator or cast type unknown to the snapshot (created since by another session)
  // counts as a volatile function that may write, like an unknown function.
  code_reach statement_code(const statement& s, const std::vector<std::string>& schemas) const;

  // Some relation's write_code may write (e.g. an index expression whose function became
  // VOLATILE): VACUUM FULL, CLUSTER and ANALYZE evaluate index expressions too.
  bool any_writing_write_code() const { return any_writing_write_code_; }

  // Equal for any two connections to the same database of the same running server,
  // whatever the connection string (unix socket or TCP, host alias, pooler). Made of
  // pg_control_system().system_identifier (when the role may call it), the server's
  // port, its postmaster start time, whether it is in recovery, and the database's OID.
  // It changes when the server restarts or is promoted: a cache keyed by it then starts
  // cold rather than risk serving results of a different server (a restored copy or a
  // streaming replica shares the system identifier with its origin). If EXECUTE on
  // pg_control_system() is revoked from some roles, their identity differs (sysid empty):
  // they do not share entries, which costs hits, never correctness.
  const std::string& identity() const { return identity_; }
  std::uint64_t generation() const { return generation_; }  // 1 for the first load
  std::size_t relation_count() const { return relations_.size(); }

 private:
  friend class catalog;
  friend struct code_loader;
  friend std::shared_ptr<const snapshot> load_snapshot(const query_fn&, std::uint64_t);
  using name_map = std::unordered_map<std::string, std::size_t>;  // name -> relations_ index
  using proc_map = std::unordered_map<std::string, char>;         // name -> max volatility
  const std::string* temp_schema(const std::vector<std::string>& schemas) const;
  const relation* find(const std::string& schema, const std::string& name) const;
  char proc_volatility(const std::string& schema, const std::string& name) const;

  std::vector<relation> relations_;
  std::unordered_map<std::uint32_t, std::size_t> by_oid_;
  std::unordered_map<std::string, name_map> by_name_;  // schema -> name -> index
  std::unordered_map<std::string, proc_map> procs_;    // schema -> name -> volatility
  using code_map = std::unordered_map<std::string, code_reach>;
  code_reach name_code(const std::unordered_map<std::string, code_map>& m,
                       const qualified_name& name, const std::vector<std::string>& schemas,
                       bool all_schemas) const;
  void relation_code(const qualified_name& name, const std::vector<std::string>& schemas,
                     bool write, code_reach& out) const;
  // User routes by name: schema -> name -> code. Operators, user functions (outside the
  // system schemas, for functional notation), user types (casts to them).
  std::unordered_map<std::string, code_map> operators_, user_functions_, types_;
  code_reach implicit_casts_;  // every implicit cast whose function is a user function
  bool any_writing_write_code_ = false;
  // Every operator name; every type name by schema (for names newer than the snapshot).
  std::unordered_set<std::string> operator_names_;
  std::unordered_map<std::string, std::unordered_set<std::string>> type_names_;
  bool known_type(const qualified_name& t, const std::vector<std::string>& schemas) const;
  std::string identity_;
  std::uint64_t generation_ = 0;
};

class catalog {
 public:
  // Reads the catalog through `query` (13 SELECTs). Throws whatever `query` throws, and
  // std::runtime_error when a result has an unexpected shape.
  static std::shared_ptr<catalog> load(const query_fn& query);

  // Reads the catalog again and publishes it with generation() + 1. On an exception the
  // current snapshot stays. Concurrent refreshes are serialised.
  void refresh(const query_fn& query);

  // The current snapshot; hold it for as long as you use pointers obtained from it.
  // Takes a short internal lock (a reference-count increment): a session should keep
  // its snapshot and fetch a new one only when generation() has moved on.
  std::shared_ptr<const snapshot> current() const {
    std::lock_guard lock(current_mu_);
    return current_;
  }
  // The current snapshot's generation: one atomic load, no lock.
  std::uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  std::string identity() const { return current()->identity(); }
  char function_volatility(const qualified_name& name,
                           const std::vector<std::string>& schemas) const {
    return current()->function_volatility(name, schemas);
  }

  catalog(const catalog&) = delete;
  catalog& operator=(const catalog&) = delete;

 private:
  explicit catalog(std::shared_ptr<const snapshot> s)
      : current_(std::move(s)), generation_(current_->generation()) {}
  // Not std::atomic<std::shared_ptr>: libstdc++ 12's load() releases its lock bit with a
  // relaxed store, which ThreadSanitizer rightly reports as a race.
  mutable std::mutex current_mu_;
  std::shared_ptr<const snapshot> current_;  // guarded by current_mu_
  std::atomic<std::uint64_t> generation_;    // == current_->generation(), published after it
  std::mutex refresh_mu_;                    // serialises refresh()
};

// Builds a snapshot from query results (exposed for tests).
std::shared_ptr<const snapshot> load_snapshot(const query_fn& query, std::uint64_t generation);

// Everything about a session that must be part of a cache key, read in one round trip.
struct session_context {
  // Every value below plus the extra settings, length-prefixed (`name=len:value;`), so
  // two contexts have the same key_text iff all values are equal.
  std::string key_text;
  std::vector<std::string> schemas;   // current_schemas(true), in search order
  std::string database;               // current_database()
  std::string current_user;           // effective role (SET ROLE changes it)
  std::string session_user;           // SET SESSION AUTHORIZATION changes it
  std::string search_path;            // as set (current_setting('search_path'))
  std::string isolation;              // default_transaction_isolation, e.g. "read committed"
  std::string transaction_isolation;  // the current transaction's (or the default outside one)
  bool default_read_only = false;     // default_transaction_read_only
  bool row_security = true;           // row_security: off makes queries on RLS tables fail
  std::string client_encoding;        // e.g. "UTF8": the encoding of every text sent and received
  // off: a plain '...' literal takes backslash escapes, as E'...' does (the analyzer lexes
  // with it on; see analyzer.h's as_escape_strings).
  bool standard_conforming_strings = true;

  // ONE statement returning one row with everything above. `extra_settings` are more
  // GUC names to put in the key (e.g. "app.tenant_id" read by RLS policies; placeholder
  // variables cannot be enumerated from SQL); an unset one reads as NULL.
  // The fixed part covers: current_database, current_user, session_user,
  // current_schemas(true), and the settings that change the value or text of a SELECT:
  // search_path, TimeZone, DateStyle, IntervalStyle, extra_float_digits, bytea_output,
  // client_encoding, standard_conforming_strings, lc_monetary, lc_numeric, lc_time,
  // default_text_search_config, xmlbinary, xmloption, transform_null_equals, array_nulls,
  // row_security, default_transaction_isolation, transaction_isolation,
  // default_transaction_read_only, timezone_abbreviations (timestamp input),
  // quote_all_identifiers (quote_ident, format('%I'), pg_get_*def), gin_fuzzy_search_limit
  // (GIN scans return a random subset when > 0), lo_compat_privileges (large object
  // reads), and pg_trgm's similarity thresholds (the % operators), NULL unless loaded.
  // Deliberately not: planner settings (enable_*, geqo, work_mem: plans, not results),
  // lc_messages, statement_timeout, backslash_quote, escape_string_warning.
  static std::string context_query(const std::vector<std::string>& extra_settings = {});

  // Parses the row context_query(extra_settings) returned. Throws std::invalid_argument
  // when the row does not have its shape.
  static session_context parse(const row& r, const std::vector<std::string>& extra_settings = {});
};

// Parses a one-dimensional PostgreSQL array literal ("{a,\"b c\",NULL}"); NULL elements
// become empty strings. Throws std::invalid_argument on malformed input.
std::vector<std::string> parse_text_array(std::string_view text);

}  // namespace qcache::pg
