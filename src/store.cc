#include "store.h"

#include <bit>

namespace qcache::detail {

store::store(std::size_t budget_bytes, std::size_t shards) {
  shards = std::bit_ceil(shards < 1 ? std::size_t{1} : shards);
  shards_ = std::make_unique<shard[]>(shards);
  shard_mask_ = shards - 1;
  shard_budget_ = budget_bytes / shards;
}

store::~store() { clear(); }

void store::unlink(shard& s, entry* e) noexcept {
  if (s.hand == e) s.hand = e->newer;
  if (e->newer) e->newer->older = e->older; else s.head = e->older;
  if (e->older) e->older->newer = e->newer; else s.tail = e->newer;
  e->newer = e->older = nullptr;
  s.bytes -= e->charge;
  bytes_.fetch_sub(e->charge, std::memory_order_relaxed);
  entries_.fetch_sub(1, std::memory_order_relaxed);
}

// SIEVE: the hand walks from the oldest entry toward the newest, clearing visited
// bits, and evicts the first entry that was not visited since the hand last passed.
void store::evict_one(shard& s) noexcept {
  entry* e = s.hand ? s.hand : s.tail;
  while (e && e->visited.load(std::memory_order_relaxed)) {
    e->visited.store(false, std::memory_order_relaxed);
    e = e->newer ? e->newer : s.tail;
  }
  if (!e) return;
  entry* next_hand = e->newer;
  auto it = s.map.find(e->hash);
  unlink(s, e);
  s.hand = next_hand;
  if (it != s.map.end() && it->second.get() == e) s.map.erase(it);
  evictions_.fetch_add(1, std::memory_order_relaxed);
}

bool store::insert(const key& k, std::shared_ptr<const cached_value> v, dep_versions deps,
                   std::size_t value_bytes) {
  std::size_t charge = entry_overhead + k.bytes.size() + value_bytes +
                       deps.size() * sizeof(dep_versions::value_type);
  if (charge > shard_budget_) return false;
  auto e = std::make_unique<entry>();
  e->key = k.bytes;
  e->hash = k.hash;
  e->value = std::move(v);
  e->deps = std::move(deps);
  e->charge = charge;

  shard& s = shard_for(k.hash);
  std::unique_lock lock(s.mu);
  auto it = s.map.find(k.hash);
  if (it != s.map.end()) {
    unlink(s, it->second.get());
    s.map.erase(it);
  }
  while (s.bytes + charge > shard_budget_ && s.tail) evict_one(s);
  entry* raw = e.get();
  s.map.emplace(k.hash, std::move(e));
  raw->older = s.head;
  if (s.head) s.head->newer = raw; else s.tail = raw;
  s.head = raw;
  s.bytes += charge;
  bytes_.fetch_add(charge, std::memory_order_relaxed);
  entries_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void store::clear() {
  for (std::size_t i = 0; i <= shard_mask_; ++i) {
    shard& s = shards_[i];
    std::unique_lock lock(s.mu);
    while (s.head) unlink(s, s.head);
    s.map.clear();
    s.hand = nullptr;
  }
}

}  // namespace qcache::detail
