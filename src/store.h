// The entry store: a sharded hash table of immutable entries with SIEVE eviction.
//
// Thread safety: every member is safe from any thread. Each shard has a reader-writer
// lock; a hit takes it shared and writes only the entry's atomic `visited` bit.
//
// Invariants (per shard, under its lock):
//  * every entry in `map` is in the SIEVE queue exactly once, and vice versa;
//  * `bytes` is the sum of the charges of the entries in the shard, and never exceeds
//    `budget` after an insert returns;
//  * an entry is immutable once inserted except for `visited`; readers receive its
//    value as a shared_ptr, so unlinking an entry never invalidates what they hold.
#pragma once

#include <qcache/cache.h>
#include <qcache/key.h>

#include <boost/unordered/unordered_flat_map.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <utility>
#include <vector>

namespace qcache::detail {

using dep_versions = std::vector<std::pair<std::uint32_t, std::uint64_t>>;

struct entry {
  std::string key;
  hash128 hash;
  std::shared_ptr<const cached_value> value;
  dep_versions deps;
  std::size_t charge = 0;
  std::atomic<bool> visited{false};
  entry* newer = nullptr;  // toward the head of the SIEVE queue
  entry* older = nullptr;  // toward the tail
};

struct hash128_hasher {
  using is_avalanching = void;
  std::size_t operator()(const hash128& h) const noexcept { return h.low; }
};

class store {
 public:
  // Bookkeeping charged per entry in addition to key, value and dependency bytes.
  static constexpr std::size_t entry_overhead = sizeof(entry) + 48;

  store(std::size_t budget_bytes, std::size_t shards);
  ~store();

  // Finds `k`; returns its value when the full key matches and `valid(deps)` holds.
  // Sets `stale` when an entry matched but was not valid.
  template <class Valid>
  std::shared_ptr<const cached_value> lookup(const key& k, Valid&& valid, bool& stale) {
    shard& s = shard_for(k.hash);
    std::shared_lock lock(s.mu);
    auto it = s.map.find(k.hash);
    if (it == s.map.end()) return nullptr;
    entry& e = *it->second;
    if (e.key != k.bytes) return nullptr;  // a 128-bit hash collision: never served
    if (!valid(e.deps)) {
      stale = true;
      return nullptr;
    }
    if (!e.visited.load(std::memory_order_relaxed)) e.visited.store(true, std::memory_order_relaxed);
    return e.value;
  }

  // Inserts or replaces. Returns false when the charge exceeds a shard's budget.
  bool insert(const key& k, std::shared_ptr<const cached_value> v, dep_versions deps,
              std::size_t value_bytes);

  void clear();

  std::uint64_t bytes() const noexcept { return bytes_.load(std::memory_order_relaxed); }
  std::uint64_t entries() const noexcept { return entries_.load(std::memory_order_relaxed); }
  std::uint64_t evictions() const noexcept { return evictions_.load(std::memory_order_relaxed); }
  std::size_t shard_budget() const noexcept { return shard_budget_; }

 private:
  struct alignas(64) shard {
    std::shared_mutex mu;
    boost::unordered_flat_map<hash128, std::unique_ptr<entry>, hash128_hasher> map;
    entry* head = nullptr;  // newest
    entry* tail = nullptr;  // oldest
    entry* hand = nullptr;
    std::size_t bytes = 0;
  };

  shard& shard_for(const hash128& h) noexcept { return shards_[(h.high >> 7) & shard_mask_]; }
  void unlink(shard& s, entry* e) noexcept;
  void evict_one(shard& s) noexcept;

  std::unique_ptr<shard[]> shards_;
  std::size_t shard_mask_ = 0;
  std::size_t shard_budget_ = 0;
  std::atomic<std::uint64_t> bytes_{0};
  std::atomic<std::uint64_t> entries_{0};
  std::atomic<std::uint64_t> evictions_{0};
};

}  // namespace qcache::detail
