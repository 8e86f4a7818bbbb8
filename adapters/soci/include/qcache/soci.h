// qcache::soci — SOCI with a never-stale result cache, by changing one line.
//
//   auto cache = std::make_shared<qcache::cache>(qcache::options{});
//   qcache::soci::caching_factory f{cache, soci::sqlite3};   // or soci::postgresql
//   soci::session sql(f, "db=app.db");                       // everything else unchanged
//
// A caching_factory wraps a real SOCI backend factory. Sessions it opens behave exactly like
// sessions of the real backend (same values type for type, same exceptions, same
// got_data / affected rows), except that read-only, deterministic SELECTs are answered from
// the shared qcache::cache when nothing they read has changed since. Writes made through
// any session of any caching_factory sharing the cache invalidate what they touch.
//
// Thread safety: a caching_factory is immutable and may be shared by all threads. Sessions
// follow SOCI's rule: one thread at a time per session. The cache is shared and internally
// synchronised, so one session per thread with one cache is the intended shape.
//
// Native handles: sql.get_backend_name() still names the real backend ("sqlite3",
// "postgresql") so dialect checks keep working, but sql.get_backend() is the caching
// wrapper. Code that casts it to soci::sqlite3_session_backend must use
// native_backend(sql) instead, and anything it writes through the native handle bypasses
// invalidation: call invalidate_all(sql) afterwards. See doc/soci.md.
#pragma once

#include <qcache/cache.h>
#include <qcache/explain.h>

#include <soci/soci-backend.h>
#include <soci/connection-parameters.h>
#include <soci/session.h>

#include <memory>
#include <string>
#include <vector>

namespace qcache::soci {

struct factory_options {
  // SQLite: names of application functions (registered with sqlite3_create_function on
  // every connection, identically, with SQLITE_DETERMINISTIC) whose results may be
  // cached. Any other application function makes a statement uncacheable.
  std::vector<std::string> deterministic_functions;
};

class caching_factory : public ::soci::backend_factory {
 public:
  // `real` must outlive the factory and every session it opens (SOCI's own factories are
  // static objects). Throws std::invalid_argument when `c` is null.
  caching_factory(std::shared_ptr<qcache::cache> c, const ::soci::backend_factory& real,
                  factory_options opts = {});

  // Opens the real session and wraps it. Driver errors pass through unchanged.
  ::soci::details::session_backend* make_session(
      const ::soci::connection_parameters& params) const override;

  const std::shared_ptr<qcache::cache>& shared_cache() const noexcept { return cache_; }

 private:
  std::shared_ptr<qcache::cache> cache_;
  const ::soci::backend_factory& real_;
  std::shared_ptr<const factory_options> opts_;
};

// The real backend of a session opened through a caching_factory (nullptr for any other
// session). Cast it as you would sql.get_backend() without qcache.
::soci::details::session_backend* native_backend(::soci::session& sql) noexcept;

// Invalidates every cached result of the databases this session is connected to (call it
// after writing through a native handle). No-op for other sessions.
void invalidate_all(::soci::session& sql);

// Manual invalidation by name, for writes qcache cannot see (other programs, a native
// handle), as qcache::pqxx::connection's. `table` is resolved as the database resolves it
// on this session (PostgreSQL: the search_path, case folding and quotes; SQLite: temp, main,
// then attached databases, case-insensitively; "schema.table" is accepted). A name that
// resolves to no table is not an error (nothing cached can depend on it).
// invalidate_row invalidates the reads that may include rows of `table` whose `column`
// equals `value` (the value's text as the database prints it), and every read of the whole
// table. PostgreSQL: the catalog is read when needed, in the session's current transaction;
// when it cannot be (a failed transaction, a lost connection) the cache is flushed
// instead. No-ops for sessions not opened through a caching_factory.
void invalidate_table(::soci::session& sql, const std::string& table);
void invalidate_row(::soci::session& sql, const std::string& table, const std::string& column,
                    const std::string& value);

// What qcache does with `query` on this session: cacheable or not and why, the tables read
// and written, the dependencies and invalidations (qcache/explain.h). Nothing is executed.
// `query` is written as for SOCI (`:name` placeholders). PostgreSQL: SOCI's rewrite of
// placeholders into $n is applied, and catalog queries run when needed in the session's
// current transaction (their error is thrown as std::runtime_error, e.g. in a failed
// transaction). SQLite: the statement is prepared, not run; SQL SQLite cannot prepare gives
// kind "error". A session not opened through a caching_factory gets an explanation saying so.
qcache::explanation explain(::soci::session& sql, const std::string& query);

// PostgreSQL with options::follow_changes (the default): waits until every commit visible
// on the server when called (by anyone) has reached the cache (see qcache::pqxx::
// connection::sync). Call it outside a transaction. False when the stream is down or did
// not catch up within options::sync_timeout. Other sessions: true at once.
bool sync(::soci::session& sql);

// True when `sql` was opened through a caching_factory.
bool is_caching(::soci::session& sql) noexcept;

}  // namespace qcache::soci
