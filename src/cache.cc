// The cache: version table + entry store + single flight + counters.
//
// Invariants:
//  * every snapshot includes the global tag, so flush() invalidates everything,
//    including results being computed while it runs;
//  * a stored entry's dependency versions were captured before its statement was sent
//    and had no writer in flight; a hit requires each to be unchanged;
//  * counters are striped per thread to keep the hit path free of shared writes other
//    than the shard's reader lock.
#include <qcache/cache.h>
#include <qcache/explain.h>

#include "memo.h"
#include "store.h"
#include "versions.h"

#include <algorithm>
#include <bit>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <unordered_map>

namespace qcache {

bool follow_changes_default() noexcept {
  const char* v = std::getenv("QCACHE_FOLLOW_CHANGES");
  if (!v) return true;
  std::string_view s(v);
  return !(s == "0" || s == "false" || s == "off");
}

const char* to_string(uncacheable_reason r) {
  switch (r) {
    case uncacheable_reason::parse_error: return "parse_error";
    case uncacheable_reason::not_a_read: return "not_a_read";
    case uncacheable_reason::volatile_function: return "volatile_function";
    case uncacheable_reason::stable_function: return "stable_function";
    case uncacheable_reason::time_literal: return "time_literal";
    case uncacheable_reason::locking: return "locking";
    case uncacheable_reason::system_relation: return "system_relation";
    case uncacheable_reason::row_security: return "row_security";
    case uncacheable_reason::transaction_local: return "transaction_local";
    case uncacheable_reason::isolation: return "isolation";
    case uncacheable_reason::multi_statement: return "multi_statement";
    case uncacheable_reason::unknown_relation: return "unknown_relation";
    case uncacheable_reason::annotated: return "annotated";
    case uncacheable_reason::too_large: return "too_large";
    case uncacheable_reason::in_flight_write: return "in_flight_write";
    case uncacheable_reason::stream_down: return "stream_down";
    case uncacheable_reason::stream_unconfirmed: return "stream_unconfirmed";
    case uncacheable_reason::other: return "other";
    case uncacheable_reason::count_: break;
  }
  return "?";
}

const char* to_string(invalidation_cause c) {
  switch (c) {
    case invalidation_cause::write: return "write";
    case invalidation_cause::commit: return "commit";
    case invalidation_cause::ddl: return "ddl";
    case invalidation_cause::flush: return "flush";
    case invalidation_cause::manual: return "manual";
    case invalidation_cause::external: return "external";
    case invalidation_cause::stream: return "stream";
    case invalidation_cause::count_: break;
  }
  return "?";
}

namespace {

constexpr int kStripes = 16;
constexpr int kReasons = static_cast<int>(uncacheable_reason::count_);
constexpr int kCauses = static_cast<int>(invalidation_cause::count_);

struct alignas(64) stripe {
  std::atomic<std::uint64_t> hits{0}, misses{0}, stores{0}, dropped{0}, stale{0}, waits{0},
      flushes{0};
  std::atomic<std::uint64_t> memo_hits{0}, memo_misses{0}, memo_stores{0}, memo_not_stored{0},
      memo_stale{0};
  std::atomic<std::uint64_t> uncacheable[kReasons] = {};
  std::atomic<std::uint64_t> invalidations[kCauses] = {};
};

int my_stripe() noexcept {
  static std::atomic<int> next{0};
  thread_local int s = next.fetch_add(1, std::memory_order_relaxed) % kStripes;
  return s;
}

}  // namespace

class cache::flight {
 public:
  std::string key;
  std::uint64_t slot = 0;  // the key's hash.low: its place in the flights map
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
};

struct cache::impl {
  impl(const qcache::options& o, std::size_t entry_budget)
      : vers(o.version_slots), entries(entry_budget, o.shards) {}
  detail::versions vers;
  detail::store entries;
  std::uint32_t global_slot = 0;
  stripe stripes[kStripes];
  std::mutex flights_mu;
  std::unordered_map<std::uint64_t, std::shared_ptr<flight>> flights;
  std::mutex hook_mu;
  std::function<void()> hook;
  std::atomic<bool> has_hook{false};

  stripe& st() noexcept { return stripes[my_stripe()]; }
};

cache::cache(qcache::options opts) : opts_(opts) {
  if (opts_.version_slots == 0) throw std::invalid_argument("qcache: options.version_slots is 0");
  std::size_t version_bytes = std::bit_ceil(std::max<std::size_t>(opts_.version_slots, 1024)) * 8;
  if (opts_.max_bytes < version_bytes + (64u << 10)) {
    throw std::invalid_argument(
        "qcache: options.max_bytes (" + std::to_string(opts_.max_bytes) +
        ") must exceed the version table (" + std::to_string(version_bytes) +
        " bytes) by at least 64 KiB; raise max_bytes or lower version_slots");
  }
  if (opts_.shards == 0) opts_.shards = 1;
  std::size_t entry_budget = opts_.max_bytes - version_bytes;
  impl_ = std::make_unique<impl>(opts_, entry_budget);
  impl_->global_slot = impl_->vers.slot_of(tags::global());
  max_entry_bytes_ = opts_.max_entry_bytes ? opts_.max_entry_bytes : opts_.max_bytes / 16;
  max_entry_bytes_ = std::min(max_entry_bytes_, impl_->entries.shard_budget());
}

cache::~cache() = default;

std::uint32_t cache::slot_of(tags::tag t) const noexcept { return impl_->vers.slot_of(t); }
void cache::bump_begin(std::uint32_t slot) noexcept { impl_->vers.begin(slot); }
void cache::bump_end(std::uint32_t slot) noexcept { impl_->vers.end(slot); }

qcache::stats cache::stats() const {
  qcache::stats s;
  for (const stripe& x : impl_->stripes) {
    s.hits += x.hits.load(std::memory_order_relaxed);
    s.misses += x.misses.load(std::memory_order_relaxed);
    s.stores += x.stores.load(std::memory_order_relaxed);
    s.stores_dropped_stale += x.dropped.load(std::memory_order_relaxed);
    s.stale_rejected += x.stale.load(std::memory_order_relaxed);
    s.single_flight_waits += x.waits.load(std::memory_order_relaxed);
    s.flushes += x.flushes.load(std::memory_order_relaxed);
    s.memo_hits += x.memo_hits.load(std::memory_order_relaxed);
    s.memo_misses += x.memo_misses.load(std::memory_order_relaxed);
    s.memo_stores += x.memo_stores.load(std::memory_order_relaxed);
    s.memo_not_stored += x.memo_not_stored.load(std::memory_order_relaxed);
    s.memo_stale_rejected += x.memo_stale.load(std::memory_order_relaxed);
    for (int i = 0; i < kReasons; ++i)
      s.uncacheable_by_reason[i] += x.uncacheable[i].load(std::memory_order_relaxed);
    for (int i = 0; i < kCauses; ++i)
      s.invalidations_by_cause[i] += x.invalidations[i].load(std::memory_order_relaxed);
  }
  for (int i = 0; i < kReasons; ++i) s.uncacheable += s.uncacheable_by_reason[i];
  for (int i = 0; i < kCauses; ++i) s.invalidations += s.invalidations_by_cause[i];
  s.evictions = impl_->entries.evictions();
  s.entries = impl_->entries.entries();
  s.bytes = impl_->entries.bytes() + impl_->vers.bytes();
  s.max_bytes = opts_.max_bytes;
  return s;
}

void cache::flush(invalidation_cause cause) {
  if (detail::tl_memo && cause != invalidation_cause::external) [[unlikely]]
    detail::memo_spoil("a flush inside the function");
  impl_->vers.bump(impl_->global_slot);
  impl_->entries.clear();
  impl_->st().flushes.fetch_add(1, std::memory_order_relaxed);
  count_invalidation(cause);
}

void cache::invalidate(std::span<const tags::tag> tags, invalidation_cause cause) {
  if (detail::tl_memo && cause != invalidation_cause::external) [[unlikely]]
    detail::memo_spoil("an invalidation inside the function");
  for (tags::tag t : tags) impl_->vers.bump(slot_of(t));
  count_invalidation(cause);
}

std::shared_ptr<const cached_value> cache::lookup(const key& k) {
  bool stale = false;
  const detail::versions& v = impl_->vers;
  // Inside a memo scope a hit passes its entry's versions to the scope (under the shard
  // lock, so they are the versions the value was stored with). Outside: one TLS load.
  detail::memo_frame* memo = detail::tl_memo;
  if (memo) [[unlikely]]
    memo = detail::memo_frame_of(this);
  auto value = impl_->entries.lookup(
      k,
      [&v, memo](const detail::dep_versions& deps) {
        for (const auto& [slot, ver] : deps)
          if (v.load(slot) != ver) return false;
        if (memo) [[unlikely]]
          for (const auto& [slot, ver] : deps) memo->data.add(slot, ver);
        return true;
      },
      stale);
  if (value) {
    impl_->st().hits.fetch_add(1, std::memory_order_relaxed);
  } else if (stale) {
    impl_->st().stale.fetch_add(1, std::memory_order_relaxed);
  }
  if (memo) [[unlikely]]
    memo->data.note_read(detail::memo_describe(k));
  return value;
}

std::shared_ptr<const cached_value> cache::memo_lookup(const key& k) {
  bool stale = false;
  const detail::versions& v = impl_->vers;
  // The entry's versions, copied under the shard lock (reused buffer: a hit allocates
  // nothing here). Not re-entered: checks and frames do not look values up.
  thread_local detail::dep_versions deps;
  deps.clear();
  auto valid = [&v](const detail::dep_versions& d) {
    for (const auto& [slot, ver] : d)
      if (v.load(slot) != ver) return false;
    deps.assign(d.begin(), d.end());
    return true;
  };
  // A snapshot transaction open on this thread would recompute from its snapshot.
  auto value = detail::memo_in_snapshot() ? nullptr : impl_->entries.lookup(k, valid, stale);
  if (value) {
    // Engines' freshness checks first (they may invalidate), then the versions again.
    auto m = std::dynamic_pointer_cast<const detail::memo_base>(value);
    if (m && !m->checks.empty()) {
      for (const auto& c : m->checks) c->run();
      for (const auto& [slot, ver] : deps)
        if (v.load(slot) != ver) {
          value = nullptr;
          stale = true;
          break;
        }
    }
  }
  stripe& st = impl_->st();
  (value ? st.memo_hits : st.memo_misses).fetch_add(1, std::memory_order_relaxed);
  if (stale) st.memo_stale.fetch_add(1, std::memory_order_relaxed);
  detail::memo_frame* memo = detail::tl_memo ? detail::memo_frame_of(this) : nullptr;
  if (memo && value) {
    for (const auto& [slot, ver] : deps) memo->data.add(slot, ver);
    memo->data.note_read(detail::memo_describe(k));
    if (auto m = std::dynamic_pointer_cast<const detail::memo_base>(value))
      for (const auto& c : m->checks) memo_add_check(c);
  }
  return value;
}

explanation cache::memo_explain(const key& k) {
  explanation e;
  e.kind = "memo";
  bool stale = false;
  const detail::versions& v = impl_->vers;
  auto value = impl_->entries.lookup(
      k,
      [&v](const detail::dep_versions& deps) {
        for (const auto& [slot, ver] : deps)
          if (v.load(slot) != ver) return false;
        return true;
      },
      stale);
  auto m = std::dynamic_pointer_cast<const detail::memo_base>(value);
  if (!m) {
    e.reason = stale ? "stored, but a dependency moved since" : "not stored";
    return e;
  }
  e.cacheable = true;
  e.reads = m->reads;
  e.tags = m->names;
  e.tags.push_back("version counters: " + std::to_string(m->counters));
  return e;
}

snapshot cache::capture(const dependencies& deps) const {
  snapshot s;
  s.storable_ = true;
  s.slots_.reserve(deps.tags.size() + 1);
  auto add = [&](std::uint32_t slot) {
    for (const auto& p : s.slots_)
      if (p.first == slot) return;
    std::uint64_t ver = impl_->vers.load(slot);
    if (detail::versions::in_flight(ver)) s.storable_ = false;
    s.slots_.emplace_back(slot, ver);
  };
  add(impl_->global_slot);
  for (tags::tag t : deps.tags) add(slot_of(t));
  for (tags::tag t : deps.guards)
    if (detail::versions::in_flight(impl_->vers.load(slot_of(t)))) s.storable_ = false;
  for (tags::tag t : deps.fences) {
    std::uint32_t slot = slot_of(t);
    std::uint64_t ver = impl_->vers.load(slot);
    if (detail::versions::in_flight(ver)) s.storable_ = false;
    s.fences_.emplace_back(slot, ver);
  }
  if (detail::tl_memo) [[unlikely]] {
    if (detail::memo_frame* f = detail::memo_frame_of(this)) {
      s.memo_read_ = detail::memo_on_capture(*f, s.slots_, s.fences_, s.storable_);
      s.memo_ = f;
      s.memo_serial_ = f->serial;
    }
  }
  return s;
}

bool cache::store(const key& k, const snapshot& snap,
                  std::shared_ptr<const cached_value> v) noexcept {
  return store_impl(k, snap, std::move(v), nullptr);
}

bool cache::store_named(const key& k, const snapshot& snap, std::shared_ptr<const cached_value> v,
                        std::span<const tags::tag> named) noexcept {
  return store_impl(k, snap, std::move(v), &named);
}

bool cache::store_impl(const key& k, const snapshot& snap, std::shared_ptr<const cached_value> v,
                       const std::span<const tags::tag>* named) noexcept {
  if (!v) return false;
  if (!snap.storable_ || snap.slots_.empty()) {
    count_uncacheable(uncacheable_reason::in_flight_write);
    return false;
  }
  // A read captured in a memo scope tells it how it ended (memo.h).
  auto settle = [&snap](detail::memo_settle how, const detail::dep_versions* named_deps = nullptr,
                        std::size_t from = 0) {
    if (!snap.memo_) [[likely]]
      return;
    std::size_t n = named_deps ? named_deps->size() - from : 0;
    detail::memo_on_store(snap.memo_, snap.memo_serial_, snap.memo_read_, how,
                          named_deps ? named_deps->data() + from : nullptr, n);
  };
  std::size_t bytes = v->bytes();
  if (bytes > max_entry_bytes_) {
    count_uncacheable(uncacheable_reason::too_large);
    settle(detail::memo_settle::plain);
    return false;
  }
  run_test_hook_before_store();
  try {
    detail::dep_versions deps = snap.slots_;
    if (!named) {
      // Without named dependencies, the fences are the entry's dependencies.
      deps.insert(deps.end(), snap.fences_.begin(), snap.fences_.end());
    } else {
      // Named versions first, then the fences: a write that moves a named tag after it
      // was read here either moved a fence before the check below (refused) or
      // invalidates the entry afterwards.
      for (tags::tag t : *named) {
        std::uint32_t slot = slot_of(t);
        if (std::any_of(deps.begin(), deps.end(), [&](const auto& p) { return p.first == slot; }))
          continue;
        std::uint64_t ver = impl_->vers.load(slot);
        if (detail::versions::in_flight(ver)) {
          count_uncacheable(uncacheable_reason::in_flight_write);
          return false;
        }
        deps.emplace_back(slot, ver);
      }
    }
    for (const auto* list : {&snap.fences_, &snap.slots_})
      for (const auto& [slot, ver] : *list)
        if (impl_->vers.load(slot) != ver) {
          impl_->st().dropped.fetch_add(1, std::memory_order_relaxed);
          settle(detail::memo_settle::refused);
          return false;
        }
    if (snap.memo_) [[unlikely]] {
      // The memo takes the entry's dependencies: named tags replace the fences.
      if (named) settle(detail::memo_settle::named, &deps, snap.slots_.size());
      else settle(detail::memo_settle::plain);
    }
    if (!impl_->entries.insert(k, std::move(v), std::move(deps), bytes)) {
      count_uncacheable(uncacheable_reason::too_large);
      return false;
    }
  } catch (...) {  // allocation failure: not stored, nothing else changes
    settle(detail::memo_settle::refused);
    return false;
  }
  impl_->st().stores.fetch_add(1, std::memory_order_relaxed);
  return true;
}

cache::ticket& cache::ticket::operator=(ticket&& o) noexcept {
  if (this != &o) {
    done();
    cache_ = o.cache_;
    flight_ = std::move(o.flight_);
    value_ = std::move(o.value_);
    leader_ = o.leader_;
    o.leader_ = false;
  }
  return *this;
}

cache::ticket::~ticket() { done(); }

void cache::ticket::done() noexcept {
  if (!leader_ || !flight_) return;
  leader_ = false;
  {
    std::lock_guard lock(cache_->impl_->flights_mu);
    auto it = cache_->impl_->flights.find(flight_->slot);
    if (it != cache_->impl_->flights.end() && it->second == flight_)
      cache_->impl_->flights.erase(it);
  }
  {
    std::lock_guard lock(flight_->mu);
    flight_->done = true;
  }
  flight_->cv.notify_all();
  flight_.reset();
}

cache::ticket cache::join_flight(const key& k, const dependencies&) {
  ticket t;
  t.cache_ = this;
  std::shared_ptr<flight> f;
  {
    std::lock_guard lock(impl_->flights_mu);
    auto it = impl_->flights.find(k.hash.low);
    if (it == impl_->flights.end()) {
      f = std::make_shared<flight>();
      f->key = k.bytes;
      f->slot = k.hash.low;
      impl_->flights.emplace(k.hash.low, f);
      t.flight_ = std::move(f);
      t.leader_ = true;
      return t;
    }
    f = it->second;
  }
  if (f->key != k.bytes) return t;  // another key shares the slot: just execute
  impl_->st().waits.fetch_add(1, std::memory_order_relaxed);
  {
    std::unique_lock lock(f->mu);
    f->cv.wait_for(lock, opts_.single_flight_wait, [&] { return f->done; });
  }
  t.value_ = lookup(k);
  return t;
}

write_hold::write_hold(write_hold&& o) noexcept
    : cache_(o.cache_), slots_(std::move(o.slots_)), cause_(o.cause_) {
  o.slots_.clear();
}

write_hold& write_hold::operator=(write_hold&& o) noexcept {
  if (this != &o) {
    release();
    cache_ = o.cache_;
    slots_ = std::move(o.slots_);
    cause_ = o.cause_;
    o.slots_.clear();
  }
  return *this;
}

void write_hold::add(std::span<const tags::tag> tags) {
  if (!cache_) return;
  if (detail::tl_memo && !tags.empty()) [[unlikely]]
    detail::memo_spoil("the function wrote");
  for (tags::tag t : tags) {
    std::uint32_t slot = cache_->slot_of(t);
    if (std::find(slots_.begin(), slots_.end(), slot) != slots_.end()) continue;
    slots_.push_back(slot);
    cache_->bump_begin(slot);
  }
}

void write_hold::release(bool commit) noexcept {
  if (!cache_ || slots_.empty()) return;
  for (std::uint32_t slot : slots_) cache_->bump_end(slot);
  slots_.clear();
  if (commit) cache_->count_invalidation(invalidation_cause::commit);
}

write_hold cache::begin_write(std::span<const tags::tag> tags, invalidation_cause cause) {
  if (detail::tl_memo) [[unlikely]]
    detail::memo_spoil("the function wrote");
  write_hold h;
  h.cache_ = this;
  h.cause_ = cause;
  h.add(tags);
  count_invalidation(cause);
  return h;
}

void cache::count_memo(memo_counter c) noexcept {
  stripe& st = impl_->st();
  (c == memo_counter::stores ? st.memo_stores : st.memo_not_stored)
      .fetch_add(1, std::memory_order_relaxed);
}

std::uint64_t cache::impl_vers_load(std::uint32_t slot) const noexcept {
  return impl_->vers.load(slot);
}

bool cache::impl_entries_insert(const key& k, std::shared_ptr<const cached_value> v,
                                const detail::dep_versions& deps, std::size_t bytes) {
  return impl_->entries.insert(k, std::move(v), deps, bytes);
}

bool cache::shares_counter(const snapshot& s, std::span<const tags::tag> t) const noexcept {
  for (tags::tag x : t) {
    std::uint32_t slot = slot_of(x);
    for (const auto* list : {&s.slots_, &s.fences_})
      for (const auto& p : *list)
        if (p.first == slot) return true;
  }
  return false;
}

void cache::count_miss() noexcept { impl_->st().misses.fetch_add(1, std::memory_order_relaxed); }

void cache::count_uncacheable(uncacheable_reason r) noexcept {
  // A read that runs uncached gives a memo scope nothing to check: not storable. (A result
  // too large to store was still captured like any other.)
  if (detail::tl_memo && r != uncacheable_reason::too_large) [[unlikely]]
    detail::memo_spoil(to_string(r));
  impl_->st().uncacheable[static_cast<int>(r)].fetch_add(1, std::memory_order_relaxed);
}

void cache::count_invalidation(invalidation_cause c, std::uint64_t n) noexcept {
  impl_->st().invalidations[static_cast<int>(c)].fetch_add(n, std::memory_order_relaxed);
}

void cache::set_test_hook_before_store(std::function<void()> f) {
  std::lock_guard lock(impl_->hook_mu);
  impl_->hook = std::move(f);
  impl_->has_hook.store(static_cast<bool>(impl_->hook), std::memory_order_release);
}

void cache::run_test_hook_before_store() {
  if (!impl_->has_hook.load(std::memory_order_acquire)) return;
  std::function<void()> f;
  {
    std::lock_guard lock(impl_->hook_mu);
    f = impl_->hook;
  }
  if (f) f();
}

}  // namespace qcache

#include <qcache/explain.h>

namespace qcache {

std::string explanation::to_string() const {
  auto join = [](const std::vector<std::string>& v) {
    std::string r;
    for (const auto& x : v) r += (r.empty() ? "" : ", ") + x;
    return r;
  };
  std::string s = "kind: " + kind + "\ncacheable: " + (cacheable ? "yes" : "no") + "\n";
  if (!reason.empty()) s += "reason: " + reason + "\n";
  if (!error.empty()) s += "error: " + error + "\n";
  s += "reads: " + join(reads) + "\nwrites: " + join(writes) + "\ntags: " + join(tags) + "\n";
  return s;
}

}  // namespace qcache
