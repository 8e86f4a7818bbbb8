// The state of one database's change stream as the engine sees it: whether the stream is
// up, which commits it applied, which of those every new snapshot is known to see.
//
// Thread safety: every member is safe from any thread. One follower thread (stream.h)
// writes; sessions read.
//
// Lifetime: a feed lives as long as its cache (feed_for's registry holds it; it holds the
// cache weakly), not only while sessions use it: a program that closes every connection
// between requests keeps its entries, and the stream keeps following meanwhile. Once the
// cache is gone the follower stops by itself and the registry drops the feed.
//
// Why the ring (STREAM.md §5): a commit can be decoded (and its tags moved) before new
// snapshots see it. A reader that captured its versions after the move would compute its
// result from a snapshot without that commit and store it as current. So the follower
// numbers every commit it applies (seq), records (seq, xid, tags) in a ring BEFORE it
// moves the tags, and later confirms (pg_current_snapshot() on a plain connection) that
// every commit up to seq W is visible to any snapshot taken from then on. A reader takes
// a mark (W, A = last applied seq) AFTER capturing its versions and BEFORE sending its
// query; at store it refuses when a commit in (W, A] shares a tag with the entry (that
// commit may be missing from its snapshot) or when the ring no longer reaches back to W.
// Commits after A moved their tags after the capture: the version check refuses those.
#pragma once

#include <qcache/cache.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "pg/catalog.h"

namespace qcache::pg {

// What the follower needs to know about the database from the engine (engine.cc).
class stream_schema {
 public:
  virtual ~stream_schema() = default;
  // The tag space of the database (tags.h's db argument).
  virtual const std::string& tag_space() const = 0;
  // Columns predicate reads of `oid` use (the engine's registry).
  virtual std::vector<std::string> predicate_columns(std::uint32_t oid) const = 0;
  // The class of `column` of relation `oid` (catalog.h: column_int, column_text, or
  // anything else), or 0 when the catalog does not know the relation.
  virtual char column_class(std::uint32_t oid, const std::string& column) const = 0;
  // Whether the catalog knows relation `oid`.
  virtual bool knows(std::uint32_t oid) const = 0;
  // Its inheritance / partition ancestors and descendants (catalog.h relation::family).
  virtual std::vector<std::uint32_t> family(std::uint32_t oid) const = 0;
  // `text` (UTF8, as the server prints it) canonical for a column of class `cls`, as the
  // engine's predicate tags hold it; nullopt when equality cannot be decided textually.
  virtual std::optional<std::string> canonical(char cls, std::string_view text) const = 0;
  // The catalog may be out of date (a relation it does not know changed).
  virtual void mark_catalog_stale() = 0;
  // Reads the catalog again through `run` (a relation created by another client, or
  // another process, is then known). May throw what `run` throws.
  virtual void refresh(const query_fn& run) = 0;
};

struct stream_mark {
  std::uint64_t state = 0;      // the feed's state when taken (odd: up)
  std::uint64_t confirmed = 0;  // W
  std::uint64_t applied = 0;    // A
};

class feed {
 public:
  feed(std::shared_ptr<cache> c, std::shared_ptr<stream_schema> schema);
  virtual ~feed() = default;
  feed(const feed&) = delete;
  feed& operator=(const feed&) = delete;

  // ---- Readers -------------------------------------------------------------------
  // The stream is up: hits may be served and results stored. One acquire load.
  bool serving() const noexcept { return (state_.load(std::memory_order_acquire) & 1) != 0; }
  // Taken after cache::capture and before the query is sent.
  stream_mark mark() const noexcept;
  // Whether a result read under `m` with snapshot `s` may be stored (see above).
  bool may_store(const stream_mark& m, const qcache::snapshot& s) const;

  // ---- sync() --------------------------------------------------------------------
  // Waits until the stream has processed everything up to `lsn` (commits applied,
  // keepalives past it outside a transaction). False on timeout or when the stream is
  // down; on timeout the stream is declared lost: down before this returns (no hit is
  // served after it), then the follower reconnects.
  bool wait_processed(std::uint64_t lsn, std::chrono::milliseconds timeout);
  std::uint64_t processed() const noexcept { return processed_.load(std::memory_order_acquire); }
  // The server's current WAL write position (pg_current_wal_lsn() on a connection of the
  // follower's), or nullopt when it cannot be read. Any commit that has returned to its
  // client is below it.
  virtual std::optional<std::uint64_t> current_lsn() noexcept { return std::nullopt; }
  // After a write through this cache committed: waits until its echo from the stream
  // was applied and confirmed visible, so that the echo cannot invalidate what is stored
  // from now on (own writes must not cost hit ratio) and sync() is implied for it.
  // Used only for own writes whose transaction could not be registered (own_register).
  void await_echo(std::chrono::milliseconds timeout) noexcept;

  // ---- This cache's own transactions ---------------------------------------------
  // A session of this cache wrote in the transaction whose top-level xid is `xid8`
  // (pg_current_xact_id()) and holds the write's tags until its COMMIT returned: the
  // stream's copy of that commit is then skipped (apply() moves none of its tags), since
  // the hold's release already invalidates a superset of it once the commit is visible.
  // Call before COMMIT (or PREPARE) can be sent. The stream's xid has 32 bits: the low 32
  // bits are compared; an entry lives at most `own_ttl`, far less than the 2^32 xids
  // after which a different transaction could share them. False when not registered
  // (the set is at `own_cap`): the copy then invalidates as another client's would.
  bool own_register(std::uint64_t xid8);
  // The transaction will not, or may not, commit with every change covered by the hold
  // released after its COMMIT returned (ROLLBACK, PREPARE TRANSACTION, a statement the
  // engine cannot follow, raw() access, a lost connection): its copy, if any, is applied.
  // Must be called before the hold is released.
  void own_forget(std::uint64_t xid8) noexcept;
  // COMMIT failed without the server's word (the connection broke): the commit may
  // become visible after the hold is released. Forgets the xid and takes the stream down
  // now (the follower reconnects; a new slot waits for that transaction to end, and the
  // database tag moves again before anything is served).
  void own_outcome_unknown(std::uint64_t xid8) noexcept;
  // How many own transactions are registered and not yet seen (tests).
  std::size_t own_pending() const;
  // How many commits were skipped as this cache's own (tests: unlike the cache's stream
  // invalidation count, other clients' commits in the same database do not move it).
  std::uint64_t own_skipped() const noexcept { return own_skipped_.load(std::memory_order_acquire); }
  static constexpr std::size_t own_cap = 16384;
  static constexpr std::chrono::seconds own_ttl{60};

  // ---- The follower --------------------------------------------------------------
  // Down: stop serving, then move the database tag (entries and reads in progress die).
  // Any thread may call it; go_up only the follower.
  void go_down() noexcept;
  // Up (after the slot exists and the database tag moved again).
  void go_up() noexcept;
  // A committed transaction: recorded (seq, xid) then its tags moved; returns its seq.
  // An own transaction (own_register) is recorded without tags and moves none.
  std::uint64_t apply(std::uint64_t xid, std::vector<tags::tag> tags);
  // Commits with seq <= `seq` are visible to every snapshot taken from now on.
  void confirm(std::uint64_t seq) noexcept;
  // Everything up to `lsn` was processed.
  void set_processed(std::uint64_t lsn) noexcept;
  // A new slot exists, with consistent point `lsn`: processed is `lsn` from now on, even
  // when lower than before (another system or timeline answers on the same address: its
  // positions are not comparable with the old ones, and counting the old ones would let
  // sync() return before the new stream delivered anything). Only while down.
  void restart_processed(std::uint64_t lsn) noexcept;
  // The applied commits not yet confirmed: (seq, xid); xid 0 for those that need no
  // confirmation (own commits: no tags, nothing for may_store to refuse).
  std::vector<std::pair<std::uint64_t, std::uint64_t>> unconfirmed() const;
  // sync() asks for an immediate reply / declares the stream lost: the follower reads.
  std::atomic<bool> reply_wanted{false};
  std::atomic<bool> lost_wanted{false};
  // Called (if set) to wake the follower thread when reply_wanted/lost_wanted is set.
  std::function<void()> wake;

  // The cache was destroyed: the follower stops, nothing is invalidated any more.
  bool orphaned() const noexcept { return cache_.expired(); }
  stream_schema& schema() noexcept { return *schema_; }
  std::uint64_t applied() const noexcept { return applied_.load(std::memory_order_acquire); }

  // How many entries the ring keeps; older unconfirmed commits make stores refuse.
  static constexpr std::size_t ring_size = 4096;

 protected:
  std::weak_ptr<cache> cache_;
  std::shared_ptr<stream_schema> schema_;

 private:
  struct applied_commit {
    std::uint64_t seq;
    std::uint64_t xid;
    std::vector<tags::tag> tags;
  };
  std::atomic<std::uint64_t> state_{0};  // even: down, odd: up; +1 at each transition
  std::atomic<std::uint64_t> applied_{0};
  std::atomic<std::uint64_t> confirmed_{0};
  std::atomic<std::uint64_t> processed_{0};
  mutable std::mutex mu_;  // ring_
  std::deque<applied_commit> ring_;
  std::mutex wait_mu_;
  std::condition_variable wait_cv_;
  // Own transactions: low 32 bits of the xid -> when registered; `own_order_` in
  // registration order, for the cap and the ttl (entries erased meanwhile are skipped).
  bool own_take(std::uint32_t xid) noexcept;
  void own_clear() noexcept;
  mutable std::mutex own_mu_;
  std::atomic<std::uint64_t> own_skipped_{0};
  std::unordered_map<std::uint32_t, std::chrono::steady_clock::time_point> own_;
  std::deque<std::pair<std::uint32_t, std::chrono::steady_clock::time_point>> own_order_;
};

// Creates and starts the follower of one database for one cache (stream.h). Installed by
// the PostgreSQL adapters (they link libpq; the engine does not).
struct follow_request {
  std::shared_ptr<cache> owner;
  std::shared_ptr<stream_schema> schema;
  std::string conninfo;     // the application connection's (PQconninfo), as key=value
  std::string publication;  // options::publication
};
using follower_factory = std::shared_ptr<feed> (*)(const follow_request&);
void install_follower_factory(follower_factory f) noexcept;

// The feed of (cache, tag space): the running one, or a new one from the factory (which
// throws when the server cannot stream, naming what is missing). Throws when no factory
// was installed.
std::shared_ptr<feed> feed_for(const follow_request& r);

// The running feeds of cache `c`, one per database it follows (tests, diagnostics).
std::vector<std::shared_ptr<feed>> feeds_of(const cache* c);

}  // namespace qcache::pg
