// Private hooks between the cache's statement protocol (cache.cc) and memo scopes
// (memoize.cc): every read, store and write of any engine passes through the cache, so
// these are the only places a memo scope learns about them.
//
// Thread safety: each function touches only the calling thread's memo scopes.
#pragma once

#include <qcache/memoize.h>

#include <atomic>
#include <memory>

namespace qcache::detail {

// The calling thread's innermost memo frame. Constant-initialized, so reading it costs a
// thread-local load: the statement hit path checks it and nothing else.
extern constinit thread_local memo_frame* tl_memo;

// The innermost frame when it belongs to `c`; otherwise marks the innermost frame (of
// another cache) unstorable, since a read through `c` is invisible to it, and returns null.
memo_frame* memo_frame_of(const cache* c) noexcept;
// Marks the innermost frame unstorable (a write, an uncached read, a flush).
void memo_spoil(std::string_view why) noexcept;
// A miss captured these versions: they join the frame, its fences wait for the store.
// Returns the read's index among the frame's pending reads.
std::size_t memo_on_capture(memo_frame& f, const memo_versions& slots, const memo_versions& fences,
                            bool storable) noexcept;
// How the store of a read captured in frame (f, serial) at `index` ended: plain (its fences
// are dependencies), named (the tags named from its result replace its fences) or refused.
enum class memo_settle { plain, named, refused };
void memo_on_store(memo_frame* f, std::uint64_t serial, std::size_t index, memo_settle how,
                   const std::pair<std::uint32_t, std::uint64_t>* named,
                   std::size_t n_named) noexcept;
// Session effects a hit would skip (memo_txn_begun/ended, memo_spoil for SET): a
// transaction begun in the function must end there, and one begun outside must not end
// there, or a hit would leave the session in another transaction state than a recompute.
struct memo_txn {
  memo_frame* frame = nullptr;  // compared only (with serial) against this thread's frames
  std::uint64_t serial = 0;
};
memo_txn memo_txn_begun() noexcept;
void memo_txn_ended(const memo_txn& t) noexcept;
// A transaction whose reads are not the shared, latest committed state (REPEATABLE READ,
// SERIALIZABLE, isolation not yet known, aborted): while one is open, memo hits on the
// thread that began it are refused, since recomputing there would read the snapshot (or
// fail). Held by the engine's transaction state; released when it ends or is destroyed.
class memo_snapshot_hold {
 public:
  memo_snapshot_hold() = default;
  memo_snapshot_hold(memo_snapshot_hold&& o) noexcept : counter_(std::move(o.counter_)) {}
  memo_snapshot_hold& operator=(memo_snapshot_hold&& o) noexcept {
    if (this != &o) {
      set(false);
      counter_ = std::move(o.counter_);
    }
    return *this;
  }
  ~memo_snapshot_hold() { set(false); }
  void set(bool on) noexcept;

 private:
  std::shared_ptr<std::atomic<int>> counter_;  // the beginning thread's (any thread ends it)
};
// Whether a snapshot transaction is open on this thread.
bool memo_in_snapshot() noexcept;
// A human-readable name of what a key reads: its SQL, or "memo <name>".
std::string memo_describe(const key& k);

}  // namespace qcache::detail
