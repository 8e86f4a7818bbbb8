// The PostgreSQL session engine: decides, for each statement a connection runs, whether
// it may be served from the cache, what it depends on, and what it invalidates. Shared by
// every PostgreSQL adapter (libpqxx, SOCI's postgresql backend).
//
// Thread safety: a pg::session belongs to one connection and is used by one thread at a
// time, like the connection. Everything it shares (the cache, the catalog, the
// predicate-column registry) is internally synchronised.
//
// How an adapter uses it, for every statement text `sql` with parameters `params`:
//
//   auto run = [&](const std::string& q) { ... run q uncached on this connection, in
//                                              the current transaction, return rows ... };
//   pg::call c = session.begin(sql, params, kind, run);
//   if (c.hit) return c.hit;                      // served from the cache
//   try { result = execute(sql, params); } catch (...) { session.failed(c); throw; }
//   session.succeeded(c, make_value(result));    // stores / releases / tracks state
//
// Driver errors pass through unchanged: begin() only runs its own bookkeeping queries
// (catalog, session context) when it needs them, and never runs them inside a failed
// transaction.
#pragma once

#include <qcache/cache.h>
#include <qcache/explain.h>

#include "pg/analyzer.h"
#include "pg/catalog.h"
#include "pg/feed.h"

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace qcache::pg {

// Runs one bookkeeping statement uncached on the adapter's connection, in its current
// transaction, and returns all rows as text (catalog.h's query_fn).
using run_fn = query_fn;

// One parameter as the driver will send it.
struct param {
  param_type type = param_type::null;
  std::string_view text;  // the text the driver sends (or raw bytes for binary)
};

// Per-statement annotations from the application (qcache::annotation).
struct hints {
  bool uncacheable = false;
  std::vector<std::vector<std::string>> depends_on;  // {table} or {table, column, value}
};

// What the server reported with the response to the last command on the adapter's
// connection (libpq: PQtransactionStatus, PQparameterStatus). The engine reads it after
// every statement it saw executed, so that transaction and session state come from the
// server rather than from statement text. Implementations must be cheap: no round trip.
class server_status {
 public:
  virtual ~server_status() = default;
  // 'I' idle (no transaction), 'T' in a transaction block, 'E' in a failed one, '?' unknown
  // (e.g. no connection): the engine then keeps what it inferred.
  virtual char transaction() const noexcept = 0;
  // The last reported value of a GUC_REPORT setting (TimeZone, DateStyle, ...), or
  // nullptr when the server has not reported it.
  virtual const char* parameter(const char* name) const noexcept = 0;
  // The connection's parameters as a conninfo string (host, port, user, dbname,
  // password, ...: libpq's PQconninfo), for the change stream's own connections. Empty
  // when not known (follow_changes then cannot start).
  virtual std::string conninfo() const { return {}; }
};

struct plan;  // memoized analysis of one SQL text for one catalog generation

// The decision for one call, returned by session::begin.
struct call {
  std::shared_ptr<const cached_value> hit;  // non-null: serve this, do not execute
  bool store = false;                       // store the result on success
  key k;
  qcache::snapshot snap;
  cache::ticket flight;
  write_hold statement_hold;  // held for an autocommit write, released after it
  std::chrono::steady_clock::time_point started;  // a miss: when execution began
  std::uint64_t ddl_seen = 0;  // database DDL counter when the write was planned
  bool ddl_quiet = true;       // no other DDL in flight then
  bool ddl_owned = false;      // an autocommit DDL statement: finished in succeeded/failed
  std::shared_ptr<const plan> p;
  // Indexes into the plan's predicate dependencies named by this result's values.
  std::vector<std::uint16_t> by_result;
  // A miss with the change stream followed: its position when the versions were captured.
  std::shared_ptr<feed> stream;
  stream_mark mark;
  // An autocommit write wrapped in BEGIN ... COMMIT so that its xid could be registered
  // with the stream (feed::own_register) before COMMIT: that xid, and where COMMIT or
  // ROLLBACK run. Or, inside a transaction, `own_run` alone: the xid is asked for after
  // the write succeeded.
  std::uint64_t own_xid = 0;
  run_fn own_run;
};

class session {
 public:
  explicit session(std::shared_ptr<cache> c);
  ~session();
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  // `kind` distinguishes entry points whose results differ for the same SQL.
  call begin(std::string_view sql, std::span<const param> params, char kind, const run_fn& run,
             const hints* h = nullptr);
  // After the statement succeeded. `value` may be null when the adapter cannot or need
  // not build one (writes, or a result that is not fully drained). After
  // allow_autocommit_wrap() it may throw the driver's error of the COMMIT that ends a
  // wrapped autocommit write (call::own_xid): the statement's error, as autocommit would
  // have raised it, for the adapter to pass on (the engine already did what failed() does).
  void succeeded(call& c, std::shared_ptr<const cached_value> value);
  // After the statement threw. Nothing is stored; the error is the caller's to rethrow.
  void failed(call& c) noexcept;

  // The adapter's own transaction objects report their boundaries here (libpqxx's
  // work sends BEGIN/COMMIT itself). `isolation` as in SQL, lower-case, empty = default.
  void transaction_begun(std::string_view isolation = {});
  void transaction_committed();
  void transaction_rolled_back();
  bool in_transaction() const noexcept;
  // The adapter passes what succeeded() throws to its caller: with follow_changes, a
  // plain autocommit INSERT/UPDATE/DELETE/MERGE is then sent inside BEGIN ... COMMIT (run
  // by begin() and succeeded() through `run`) so that the stream's copy of it is skipped.
  void allow_autocommit_wrap() noexcept;
  // The application reached the driver's connection (raw()): statements the engine never
  // sees may join the current transaction, which is then not registered with the stream
  // (its copy invalidates as another client's would).
  void raw_access() noexcept;
  // The same for a driver transaction object handed out (open) until it ends (closed):
  // no transaction is registered meanwhile.
  void raw_exposed(bool open) noexcept;
  // Where to read what the server reports (must outlive the session; nullptr: nothing is
  // reported, and the engine relies on the statements it analysed alone).
  void attach(const server_status* status) noexcept;
  // Moves whenever a statement that may create, replace or drop prepared statements ran
  // through this session (PREPARE, DEALLOCATE, DISCARD, multi-statement strings, DO,
  // CALL, functions that may run anything). An adapter that maps a prepared statement's
  // name to its SQL must re-check the mapping with the server once this moved.
  std::uint64_t prepared_epoch() const noexcept;
  // The adapter saw a new server session (reconnection): forget the context, catalog
  // binding and transaction state.
  void connection_reset();

  // At connection: binds the database and, with options::follow_changes, starts (or
  // joins) the change stream of (cache, database). Throws when the server cannot stream,
  // naming what is missing. `run` must not be inside an application transaction.
  void connect(const run_fn& run);
  // Waits until every commit visible on the server now (pg_current_wal_lsn() on `run`'s
  // connection) has been applied from the change stream. False when the stream is not
  // following (follow_changes off: nothing to wait for, true), or is down, or did not
  // catch up within options::sync_timeout (it is then declared lost: the database is
  // bypassed until it is back).
  bool sync(const run_fn& run);

  // Manual invalidation and annotations.
  void invalidate_table(std::string_view table, const run_fn& run);
  void invalidate_row(std::string_view table, std::string_view column, std::string_view value,
                      const run_fn& run);
  explanation explain(std::string_view sql, const run_fn& run);

  const std::shared_ptr<cache>& shared_cache() const noexcept { return cache_; }

  struct state;  // engine.cc only

 private:
  std::shared_ptr<cache> cache_;
  std::unique_ptr<state> st_;
};

}  // namespace qcache::pg
