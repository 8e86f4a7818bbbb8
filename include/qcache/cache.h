// qcache::cache — an in-process cache of query results that is never stale with
// respect to the writes made through qcache.
//
// Thread safety: a cache has internal synchronization and may be shared by any number
// of connections on any number of threads (typically one std::shared_ptr<cache> per
// process). Connections themselves follow their driver's rule: one thread at a time.
//
// How freshness works. Every result is stored with the versions of the tags it depends
// on (tags.h), read *before* the statement was sent. A write moves the versions of the
// tags it may affect before it is sent and again after it has committed; while it is
// in flight, nothing depending on those tags can be stored or served. A hit checks
// that every version is still what it was, so an entry that raced a write is never
// served (it is "born stale") and no wall clock is involved. Version counters live in
// a fixed table: a lost or shared counter can only cause a miss, never a stale hit.
//
// Most programs only construct a cache, hand it to an adapter (qcache/pqxx.h,
// qcache/soci.h) and read stats(). The members under "Adapter interface" are what an
// adapter uses; applications rarely need them.
#pragma once

#include <qcache/key.h>
#include <qcache/tags.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace qcache {

struct explanation;
namespace detail {
class memo_frame;
}

// The default of options::follow_changes: true, unless the environment variable
// QCACHE_FOLLOW_CHANGES is "0", "false" or "off" when the options are made (for programs
// that must not follow, e.g. a test suite whose tests create and alter tables of one
// database in parallel: every follower flushes on another's DDL). An explicit assignment
// overrides it.
bool follow_changes_default() noexcept;

struct options {
  // Hard limit on memory used by the cache: entries (keys, results, dependency lists,
  // bookkeeping) and the version table. Least valuable entries are evicted (SIEVE).
  std::size_t max_bytes = 256u << 20;
  // A result larger than this is returned to the caller but not stored.
  // 0 means max_bytes / 16.
  std::size_t max_entry_bytes = 0;
  // Number of version counters (rounded up to a power of two). More counters mean fewer
  // false invalidations; each costs 8 bytes of the budget.
  std::size_t version_slots = 1u << 18;
  // Number of independently locked shards (rounded up to a power of two).
  std::size_t shards = 64;
  // Concurrent misses of one key: one caller runs the query, the others wait this long
  // for its result, then run the query themselves.
  std::chrono::milliseconds single_flight_wait{2000};
  // ... but only for statements that recently took at least this long on the connection
  // (and for any statement before it was first measured): waking a waiter costs more
  // than running a fast query twice.
  std::chrono::microseconds single_flight_min_latency{500};
  // Cache results of statements calling STABLE functions (now(), current_setting()...).
  // Off by default: such results may change without any write.
  bool cache_stable_functions = false;
  // PostgreSQL: before an UPDATE or DELETE that runs outside an explicit transaction and
  // does not name, in its WHERE clause, the values of the columns cached reads filter on
  // (`DELETE FROM comments WHERE id = $1` vs reads by post_id), read those values from
  // the rows it may touch (one extra SELECT, same connection), so that only the reads of
  // those values are invalidated. false, inside a transaction, or when that SELECT fails:
  // such a write invalidates every cached read filtering on the column.
  bool write_preimage = true;
  // PostgreSQL: follow each database's change stream (logical replication, pgoutput) so
  // that commits made by anyone (other processes, psql, raw() connections) invalidate
  // what they change, within the stream's lag; sync() on a connection waits for it.
  // Needs wal_level = logical, a role with REPLICATION, a free wal sender and slot per
  // (cache, database), and the publication below (created FOR ALL TABLES at the first
  // connection when missing, which needs a superuser). Connecting fails with a message
  // naming what is missing. false: only writes made through this cache invalidate.
  // The stream's copy of a transaction this cache wrote in is recognised by its xid and
  // moves nothing (the write already invalidated what it changed); for that, a plain
  // autocommit INSERT/UPDATE/DELETE/MERGE (libpqxx or SOCI, READ COMMITTED sessions) is
  // sent inside BEGIN ... COMMIT (two more round trips). Costs CPU per commit in the wal
  // sender and the follower thread (see README).
  bool follow_changes = follow_changes_default();
  // The publication the stream reads (see follow_changes).
  std::string publication = "qcache";
  // How long the first connection to a database waits for the stream to start (slot
  // creation waits for open write transactions). Until it is up, that database is
  // bypassed: no hits, no stores.
  std::chrono::milliseconds stream_start_wait{3000};
  // sync() waits this long for the stream to catch up, then declares it lost (the cache
  // bypasses the database until it is back) and returns.
  std::chrono::milliseconds sync_timeout{2000};
};

// Why a statement was not cached. Counted in stats::uncacheable.
enum class uncacheable_reason : std::uint8_t {
  parse_error,        // the analyzer could not parse it: run uncached
  not_a_read,         // writes, DDL, transaction control, session changes
  volatile_function,  // random(), nextval(), clock_timestamp(), user volatile functions
  stable_function,    // now(), CURRENT_TIMESTAMP, current_setting() (see options)
  time_literal,       // 'now'/'today'/... constants or parameters
  locking,            // FOR UPDATE / FOR SHARE
  system_relation,    // pg_catalog, information_schema, sequences, temp/foreign tables
  row_security,       // a table with row level security
  transaction_local,  // reads a table this transaction wrote
  isolation,          // inside REPEATABLE READ / SERIALIZABLE
  multi_statement,    // several statements in one string
  unknown_relation,   // a name that does not resolve (the database will say why)
  annotated,          // marked uncacheable by the application
  too_large,          // result above max_entry_bytes
  in_flight_write,    // a write to a dependency was in flight: served but not stored
  stream_down,        // the database's change stream is not up: bypassed
  stream_unconfirmed, // a commit the stream applied may be missing from the read's
                      // snapshot (decoded before visible): served but not stored
  other,
  count_  // number of reasons; not a reason
};

const char* to_string(uncacheable_reason r);

// Why versions moved. Counted in stats::invalidations.
enum class invalidation_cause : std::uint8_t {
  write,   // a write statement
  commit,  // the end of a transaction that wrote
  ddl,     // schema changes, GRANT/REVOKE, ... (flushes)
  flush,   // a write whose targets are unknown, a trigger or rule, an explicit flush()
  manual,  // invalidate() called by the application
  external,  // a change detected in the database itself (e.g. another SQLite connection)
  stream,    // a commit read from PostgreSQL's change stream, or the stream's loss
  count_
};

const char* to_string(invalidation_cause c);

// A point-in-time copy of the cache's counters.
struct stats {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t stores = 0;              // results stored
  std::uint64_t stores_dropped_stale = 0;  // results not stored: a dependency moved meanwhile
  std::uint64_t stale_rejected = 0;     // entries found but not served: a dependency moved
  std::uint64_t single_flight_waits = 0;  // misses that waited for another caller's query
  std::uint64_t evictions = 0;
  std::uint64_t invalidations = 0;      // sum of by_cause
  std::uint64_t invalidations_by_cause[static_cast<int>(invalidation_cause::count_)] = {};
  std::uint64_t flushes = 0;            // whole-cache flushes (subset of invalidations)
  std::uint64_t uncacheable = 0;        // sum of by_reason
  std::uint64_t uncacheable_by_reason[static_cast<int>(uncacheable_reason::count_)] = {};
  std::uint64_t entries = 0;
  std::uint64_t bytes = 0;              // bytes charged to the budget, version table included
  std::uint64_t max_bytes = 0;
  // Memoized values (memoize.h), counted apart from statements.
  std::uint64_t memo_hits = 0;
  std::uint64_t memo_misses = 0;            // the function ran
  std::uint64_t memo_stores = 0;
  std::uint64_t memo_not_stored = 0;        // returned but not stored (a write, an uncached
                                            // read, a dependency moved, an exception, too large)
  std::uint64_t memo_stale_rejected = 0;    // found but not served: a dependency moved

  double memo_hit_ratio() const {
    return memo_hits + memo_misses ? double(memo_hits) / double(memo_hits + memo_misses) : 0.0;
  }
  std::uint64_t invalidated(invalidation_cause c) const {
    return invalidations_by_cause[static_cast<int>(c)];
  }
  std::uint64_t not_cached(uncacheable_reason r) const {
    return uncacheable_by_reason[static_cast<int>(r)];
  }
  double hit_ratio() const {
    return hits + misses ? double(hits) / double(hits + misses) : 0.0;
  }
};

// A stored result. Adapters derive from it; the cache only needs its size. Stored
// values are immutable and shared: a hit hands out the same object to every reader.
class cached_value {
 public:
  virtual ~cached_value() = default;
  // Bytes this value owns (rows, strings, driver buffers), for the byte budget.
  virtual std::size_t bytes() const noexcept = 0;
  // The values of result column `col` (0-based) of every row as text, NULL as nullopt,
  // for dependencies named by a result's values. Adapters that cannot say return false
  // (such reads then depend on whole tables).
  virtual bool column_text(std::size_t col, std::vector<std::optional<std::string>>& out) const {
    (void)col;
    (void)out;
    return false;
  }
};

// What a read depends on.
struct dependencies {
  // Tags whose versions must not move for the entry to stay valid.
  std::vector<tags::tag> tags;
  // Tags that must not have a write in flight when the read starts, but whose later
  // moves do not invalidate the entry (a predicate read's table tag: a write to the
  // table that is still in flight may touch the predicate's rows in ways it has not
  // announced yet).
  std::vector<tags::tag> guards;
  // Tags that, like guards, must have no write in flight when the read starts, and whose
  // versions must not move until the result is stored (store() refuses otherwise), but
  // which the entry does not keep when the read's remaining dependencies are named from
  // its result (store_named). Used for a relation read only through rows whose key values
  // appear in the result: no write to it between capture and store, so tags read at store
  // time still describe the state the result was computed from.
  std::vector<tags::tag> fences;
};

class cache;

// A freshness check an engine attaches to a memoized value whose reads it validates by
// looking at the database at every read (a SQLite file written by other programs): a memo
// hit runs it first, and it invalidates whatever it finds changed. Must be thread-safe.
class memo_check {
 public:
  virtual ~memo_check() = default;
  virtual void run() noexcept = 0;
};

// Versions of a read's dependencies, captured before the read is sent.
class snapshot {
 public:
  snapshot() = default;
  // False when a dependency had a write in flight: the result may be served but must
  // not be stored.
  bool storable() const noexcept { return storable_; }

 private:
  friend class cache;
  std::vector<std::pair<std::uint32_t, std::uint64_t>> slots_;
  std::vector<std::pair<std::uint32_t, std::uint64_t>> fences_;
  bool storable_ = false;
  // The memo scope (memoize.h) this read was captured in, if any, and its pending index.
  detail::memo_frame* memo_ = nullptr;
  std::uint64_t memo_serial_ = 0;
  std::size_t memo_read_ = 0;
};

// Held while a write is in flight: moves the versions of its tags when created and
// again when released (after the write committed or rolled back). Movable, not
// copyable; releasing happens in the destructor or in release().
class write_hold {
 public:
  write_hold() = default;
  write_hold(write_hold&& o) noexcept;
  write_hold& operator=(write_hold&& o) noexcept;
  write_hold(const write_hold&) = delete;
  write_hold& operator=(const write_hold&) = delete;
  ~write_hold() { release(); }

  // Adds tags to this hold (each counter is held at most once).
  void add(std::span<const tags::tag> tags);
  // Moves the versions again and ends the hold. Idempotent. When `commit` is true the
  // release is counted as a commit-time invalidation.
  void release(bool commit = false) noexcept;
  bool empty() const noexcept { return slots_.empty(); }

 private:
  friend class cache;
  cache* cache_ = nullptr;  // the cache must outlive its holds
  std::vector<std::uint32_t> slots_;
  invalidation_cause cause_ = invalidation_cause::write;
};

class cache : public std::enable_shared_from_this<cache> {
 public:
  // Throws std::invalid_argument when the options cannot work (e.g. a budget smaller
  // than the version table).
  explicit cache(qcache::options opts = {});
  ~cache();
  cache(const cache&) = delete;
  cache& operator=(const cache&) = delete;

  qcache::stats stats() const;
  const qcache::options& settings() const noexcept { return opts_; }

  // Drops every entry and invalidates every result being computed. Counted as a flush.
  void flush(invalidation_cause cause = invalidation_cause::manual);

  // Invalidates everything that depends on any of `tags` (see tags.h to build them;
  // adapters offer friendlier table/row forms).
  void invalidate(std::span<const tags::tag> tags,
                  invalidation_cause cause = invalidation_cause::manual);

  // ---- Memoization (defined in qcache/memoize.h: include it to use these) ----------

  // memoize(name, parts..., fn): returns fn()'s value, from the cache when none of the
  // reads fn made last time (on this thread, through this cache) would now return something
  // else. The key is name, the parts (integers, floats, bool, strings, optionals) and the
  // value's type. See memoize.h for what makes a value unstorable.
  template <class... A>
  auto memoize(std::string_view name, A&&... parts_then_fn);
  // The same, returning the stored immutable value shared (no copy on a hit).
  template <class... A>
  auto memoize_shared(std::string_view name, A&&... parts_then_fn);
  // What the memoized value of type T under (name, parts) depends on: kind "memo",
  // cacheable = stored and current, reads = statements and nested memos it read,
  // tags = its depends_on() names and its number of version counters.
  template <class T, class... P>
  explanation explain_memo(std::string_view name, const P&... parts);

  // Named dependencies (memoize.h): adds them to this thread's innermost memo scope of
  // this cache (no-op outside one) / invalidates every memoized value that declared them.
  void depends_on(std::string_view name);
  void depends_on(std::string_view name, std::string_view column, std::string_view value);
  void invalidate_name(std::string_view name);
  void invalidate_name(std::string_view name, std::string_view column, std::string_view value);

  // Engines: attaches `c` to this thread's innermost memo scope of this cache (no-op
  // outside one; cheap: a thread-local load).
  void memo_add_check(const std::shared_ptr<memo_check>& c);
  // Engines: a read this thread's memo scope cannot validate at a later hit: not storable.
  void memo_refuse(std::string_view why) noexcept;

  // Internal to memoize.h.
  std::shared_ptr<const cached_value> memo_lookup(const key& k);
  bool memo_store(const key& k, detail::memo_frame& f, std::shared_ptr<const cached_value> v) noexcept;
  explanation memo_explain(const key& k);
  void memo_begin(detail::memo_frame& f) noexcept;
  void memo_end(detail::memo_frame& f) noexcept;

  // ---- Adapter interface -------------------------------------------------------

  // Returns the stored value for `k` if it exists and none of its dependencies moved;
  // nullptr otherwise. Counts a hit, or nothing (the caller counts the miss when it
  // decides to execute).
  std::shared_ptr<const cached_value> lookup(const key& k);

  // Captures the current versions of `deps` (plus the global tag), before executing.
  snapshot capture(const dependencies& deps) const;

  // Stores `v` under `k` if `snap` is storable and no captured version moved. Returns
  // true when stored. Never throws.
  bool store(const key& k, const snapshot& snap, std::shared_ptr<const cached_value> v) noexcept;
  // Like store() for a read with fences: if no captured version (fences included) moved,
  // stores `v` depending on the captured tags (fences excluded) plus `named` at their
  // current versions. Refuses when a named tag has a write in flight.
  bool store_named(const key& k, const snapshot& snap, std::shared_ptr<const cached_value> v,
                   std::span<const tags::tag> named) noexcept;

  // Single flight for a miss. The first caller for a key becomes the leader (a ticket
  // with leader() == true): it executes, stores, then calls done(). Other callers wait
  // up to options.single_flight_wait, then look the key up again: they get the leader's
  // stored value if it is still valid (value() != nullptr), or else execute themselves
  // (leader() == false, value() == nullptr).
  class flight;
  class ticket {
   public:
    ticket() = default;
    ticket(ticket&&) noexcept = default;
    ticket& operator=(ticket&&) noexcept;
    ~ticket();
    bool leader() const noexcept { return leader_; }
    const std::shared_ptr<const cached_value>& value() const noexcept { return value_; }
    // Leader only: wakes the waiters (after the leader stored its result, or gave up).
    // Called by the destructor when omitted.
    void done() noexcept;

   private:
    friend class cache;
    cache* cache_ = nullptr;
    std::shared_ptr<flight> flight_;
    std::shared_ptr<const cached_value> value_;
    bool leader_ = false;
  };
  ticket join_flight(const key& k, const dependencies& deps);

  // Starts holding `tags` for a write. The returned hold moves their versions now and
  // again when released.
  write_hold begin_write(std::span<const tags::tag> tags, invalidation_cause cause);

  void count_miss() noexcept;
  void count_uncacheable(uncacheable_reason r) noexcept;
  void count_invalidation(invalidation_cause c, std::uint64_t n = 1) noexcept;

  // Whether `s` depends on (or is fenced by) the counter of any of `t`.
  bool shares_counter(const snapshot& s, std::span<const tags::tag> t) const noexcept;

  // Largest value size that may be stored.
  std::size_t max_entry_bytes() const noexcept { return max_entry_bytes_; }

  // Test hook: called after a miss captured its snapshot and before it stores.
  // Lets tests pause a reader deterministically. Not for production use.
  void set_test_hook_before_store(std::function<void()> f);
  void run_test_hook_before_store();

 private:
  friend class write_hold;
  struct impl;
  enum class memo_counter { stores, not_stored };
  void count_memo(memo_counter c) noexcept;
  std::uint64_t impl_vers_load(std::uint32_t slot) const noexcept;
  bool impl_entries_insert(const key& k, std::shared_ptr<const cached_value> v,
                           const std::vector<std::pair<std::uint32_t, std::uint64_t>>& deps,
                           std::size_t bytes);
  void memo_depend(std::span<const tags::tag> tags, std::string text);
  std::uint32_t slot_of(tags::tag t) const noexcept;
  // store() (named == nullptr: fences kept as dependencies) and store_named().
  bool store_impl(const key& k, const snapshot& snap, std::shared_ptr<const cached_value> v,
                  const std::span<const tags::tag>* named) noexcept;
  void bump_begin(std::uint32_t slot) noexcept;
  void bump_end(std::uint32_t slot) noexcept;

  qcache::options opts_;
  std::size_t max_entry_bytes_ = 0;
  std::unique_ptr<impl> impl_;
};

}  // namespace qcache
