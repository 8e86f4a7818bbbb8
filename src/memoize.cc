// Memo scopes: the statement protocol (capture before, store only if nothing moved, serve
// only if nothing moved) applied to any value computed from reads.
//
// Invariants:
//  * a frame is on exactly one thread's stack (tl_memo, linked through parent) from its
//    construction to its destruction, and only that thread touches it (a carry's sink has
//    its own mutex);
//  * a frame's deps hold, per version slot, the version captured before the first read that
//    used it; a second read that captured another version of the same slot makes the frame
//    unstorable (a write landed between the two reads);
//  * a memoized value is stored only if its frame stayed storable, every read it captured
//    was settled by a store of that read, and every dependency is still at its version: so
//    each read's result was, at the moment of the check, what the database would return.
#include <qcache/explain.h>
#include <qcache/memoize.h>

#include <algorithm>

#include "memo.h"
#include "store.h"
#include "versions.h"

namespace qcache {
namespace detail {

constinit thread_local memo_frame* tl_memo = nullptr;

namespace {

constinit thread_local std::uint64_t tl_serial = 0;
constexpr std::size_t kMaxReadsListed = 64;
constexpr std::string_view kNames = "qcache:names";  // the tag space of depends_on() names

std::uint32_t read_varint(std::string_view b, std::size_t& pos) {
  std::uint32_t n = 0;
  for (int shift = 0; pos < b.size() && shift < 35; shift += 7) {
    auto c = static_cast<unsigned char>(b[pos++]);
    n |= static_cast<std::uint32_t>(c & 0x7f) << shift;
    if (!(c & 0x80)) break;
  }
  return n;
}

}  // namespace

struct memo_sink {
  std::mutex mu;
  memo_data data;
  int active = 0;  // adopt scopes still open
  cache* owner = nullptr;
};

void memo_data::spoil(std::string_view why) {
  if (storable) why_not = std::string(why);
  storable = false;
}

void memo_data::add(std::uint32_t slot, std::uint64_t version) {
  for (const auto& [s, v] : deps) {
    if (s != slot) continue;
    if (v != version) spoil("a dependency moved between two reads of the function");
    return;
  }
  deps.emplace_back(slot, version);
}

void memo_data::note_read(std::string text) {
  if (reads.size() >= kMaxReadsListed) return;
  if (std::find(reads.begin(), reads.end(), text) == reads.end()) reads.push_back(std::move(text));
}

void memo_data::merge(const memo_data& o) {
  for (const auto& [s, v] : o.deps) add(s, v);
  for (const auto& r : o.reads) note_read(r);
  for (const auto& n : o.names)
    if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  for (const auto& c : o.checks)
    if (std::find(checks.begin(), checks.end(), c) == checks.end()) checks.push_back(c);
  if (!o.storable) spoil(o.why_not);
}

memo_frame::memo_frame(cache& c, std::shared_ptr<memo_sink> s) : sink(std::move(s)) {
  c.memo_begin(*this);
}

memo_frame::~memo_frame() {
  if (owner) owner->memo_end(*this);
}

memo_frame* memo_current() noexcept { return tl_memo; }

memo_frame* memo_frame_of(const cache* c) noexcept {
  memo_frame* f = tl_memo;
  if (!f) return nullptr;
  if (f->owner == c) return f;
  f->data.spoil("a read through another cache");
  return nullptr;
}

void memo_spoil(std::string_view why) noexcept {
  try {
    if (memo_frame* f = tl_memo) f->data.spoil(why);
  } catch (...) {
    if (memo_frame* f = tl_memo) f->data.storable = false;
  }
}

std::size_t memo_on_capture(memo_frame& f, const memo_versions& slots, const memo_versions& fences,
                            bool storable) noexcept {
  try {
    if (!storable) f.data.spoil("a write was in flight on a dependency when a read started");
    for (const auto& [s, v] : slots) f.data.add(s, v);
    f.pending.push_back(fences);
    f.settled.push_back(false);
  } catch (...) {
    f.data.storable = false;
  }
  return f.pending.size() - 1;
}

void memo_on_store(memo_frame* f, std::uint64_t serial, std::size_t index, memo_settle how,
                   const std::pair<std::uint32_t, std::uint64_t>* named,
                   std::size_t n_named) noexcept {
  // The frame must still be open on this thread; a read stored after its frame closed was
  // counted unsettled there (the frame was not stored).
  memo_frame* x = tl_memo;
  while (x && !(x == f && x->serial == serial)) x = x->parent;
  if (!x || index >= x->pending.size() || x->settled[index]) return;
  try {
    x->settled[index] = true;
    if (how == memo_settle::refused) {
      x->data.spoil("a read was not stored (a dependency moved or had a write in flight)");
    } else if (how == memo_settle::named) {
      for (std::size_t i = 0; i < n_named; ++i) x->data.add(named[i].first, named[i].second);
    } else {
      for (const auto& [s, v] : x->pending[index]) x->data.add(s, v);
    }
    x->pending[index].clear();
  } catch (...) {
    x->data.storable = false;
  }
}

memo_txn memo_txn_begun() noexcept {
  memo_frame* f = tl_memo;
  if (!f) return {};
  ++f->open_txns;
  return {f, f->serial};
}

void memo_txn_ended(const memo_txn& t) noexcept {
  memo_frame* f = tl_memo;
  // (Serials are per thread: open_txns > 0 also rules out a same-address frame of another
  // thread with an equal serial.)
  if (f && t.frame == f && t.serial == f->serial && f->open_txns > 0) {
    --f->open_txns;  // begun and ended in the same function: a hit skips both
    return;
  }
  // Ended in another scope than it began (or than none): the frame it began in keeps
  // open_txns > 0 (not stored); the current one skipped a COMMIT/ROLLBACK it did not own.
  memo_spoil("the function ended a transaction begun outside it");
}

namespace {
thread_local std::shared_ptr<std::atomic<int>> tl_snapshots;
std::atomic<int> g_snapshots{0};  // holds that could not allocate their thread's counter
}  // namespace

void memo_snapshot_hold::set(bool on) noexcept {
  if (on == static_cast<bool>(counter_)) return;
  if (!on) {
    counter_->fetch_sub(1, std::memory_order_acq_rel);
    counter_.reset();
    return;
  }
  try {
    if (!tl_snapshots) tl_snapshots = std::make_shared<std::atomic<int>>(0);
    counter_ = tl_snapshots;
  } catch (...) {
    static auto fallback = std::shared_ptr<std::atomic<int>>(&g_snapshots, [](auto*) {});
    counter_ = fallback;
  }
  counter_->fetch_add(1, std::memory_order_acq_rel);
}

bool memo_in_snapshot() noexcept {
  return (tl_snapshots && tl_snapshots->load(std::memory_order_acquire) > 0) ||
         g_snapshots.load(std::memory_order_acquire) > 0;
}

std::string memo_describe(const key& k) {
  std::string_view b = k.bytes;
  if (b.size() < 6) return "?";
  char kind = b[4];
  std::size_t pos = 5;
  std::uint32_t n = read_varint(b, pos);
  std::string text(b.substr(pos, std::min<std::size_t>(n, 300)));
  return kind == 'M' ? "memo " + text : text;
}

std::uint32_t memo_context() noexcept {
  static const std::uint32_t id = intern_context("\x01qcache:memoize");
  return id;
}

}  // namespace detail

// ---- cache members -------------------------------------------------------------------

void cache::memo_begin(detail::memo_frame& f) noexcept {
  f.owner = this;
  f.parent = detail::tl_memo;
  f.serial = ++detail::tl_serial;
  detail::tl_memo = &f;
  if (f.sink) {
    std::lock_guard lock(f.sink->mu);
    ++f.sink->active;
  }
  // A value computed from no read at all still goes with a flush.
  std::uint32_t g = slot_of(tags::global());
  std::uint64_t v = impl_vers_load(g);
  if (detail::versions::in_flight(v)) f.data.spoil("a flush was in flight");
  try {
    f.data.add(g, v);
  } catch (...) {
    f.data.storable = false;
  }
}

void cache::memo_end(detail::memo_frame& f) noexcept {
  if (detail::tl_memo == &f) detail::tl_memo = f.parent;
  try {
    if (std::find(f.settled.begin(), f.settled.end(), false) != f.settled.end())
      f.data.spoil("a read did not finish inside the function");
    if (f.open_txns > 0) f.data.spoil("the function left a transaction open");
    if (f.sink) {
      std::lock_guard lock(f.sink->mu);
      f.sink->data.merge(f.data);
      --f.sink->active;
    } else if (f.parent && f.parent->owner == this) {
      f.parent->data.merge(f.data);  // nesting: the outer value depends on the inner's reads
    } else if (f.parent) {
      f.parent->data.spoil("a nested memo of another cache");
    }
  } catch (...) {
    if (f.parent) f.parent->data.storable = false;
  }
}

bool cache::memo_store(const key& k, detail::memo_frame& f,
                       std::shared_ptr<const cached_value> v) noexcept {
  detail::memo_data& d = f.data;
  try {
    if (std::find(f.settled.begin(), f.settled.end(), false) != f.settled.end())
      d.spoil("a read did not finish inside the function");
    if (f.carries > 0) d.spoil("a memo_carry was still open");
    if (f.open_txns > 0) d.spoil("the function left a transaction open");
    std::size_t bytes = v ? v->bytes() : 0;
    if (d.storable && (!v || bytes > max_entry_bytes_)) d.spoil("too large");
    if (d.storable) {
      run_test_hook_before_store();
      for (const auto& [slot, ver] : d.deps)
        if (impl_vers_load(slot) != ver) {
          d.spoil("a dependency moved while the function ran");
          break;
        }
    }
    if (d.storable && impl_entries_insert(k, std::move(v), d.deps, bytes)) {
      count_memo(memo_counter::stores);
      return true;
    }
    if (d.storable) d.spoil("too large");
  } catch (...) {
    d.storable = false;
  }
  count_memo(memo_counter::not_stored);
  return false;
}

void cache::memo_add_check(const std::shared_ptr<memo_check>& c) {
  if (!detail::tl_memo || !c) return;
  detail::memo_frame* f = detail::memo_frame_of(this);
  if (f && std::find(f->data.checks.begin(), f->data.checks.end(), c) == f->data.checks.end())
    f->data.checks.push_back(c);
}

void cache::memo_refuse(std::string_view why) noexcept {
  if (detail::tl_memo) detail::memo_spoil(why);
}

void cache::depends_on(std::string_view name) {
  tags::tag t = tags::table(detail::kNames, name);
  memo_depend(std::span<const tags::tag>(&t, 1), "name " + std::string(name));
}

void cache::depends_on(std::string_view name, std::string_view column, std::string_view value) {
  tags::tag t[2] = {tags::predicate(detail::kNames, name, column, value),
                    tags::table_epoch(detail::kNames, name)};
  memo_depend(t,
              "name " + std::string(name) + "." + std::string(column) + " = " + std::string(value));
}

void cache::invalidate_name(std::string_view name) {
  tags::tag t[2] = {tags::table(detail::kNames, name), tags::table_epoch(detail::kNames, name)};
  invalidate(t, invalidation_cause::manual);
}

void cache::invalidate_name(std::string_view name, std::string_view column,
                            std::string_view value) {
  tags::tag t = tags::predicate(detail::kNames, name, column, value);
  invalidate(std::span<const tags::tag>(&t, 1), invalidation_cause::manual);
}

void cache::memo_depend(std::span<const tags::tag> tags, std::string text) {
  detail::memo_frame* f = detail::memo_frame_of(this);
  if (!f) return;
  for (tags::tag t : tags) {
    std::uint32_t slot = slot_of(t);
    std::uint64_t v = impl_vers_load(slot);
    if (detail::versions::in_flight(v)) f->data.spoil("a named dependency was being invalidated");
    f->data.add(slot, v);
  }
  if (std::find(f->data.names.begin(), f->data.names.end(), text) == f->data.names.end())
    f->data.names.push_back(std::move(text));
}

// ---- free functions ------------------------------------------------------------------

void depends_on(std::string_view name) {
  if (detail::memo_frame* f = detail::tl_memo) f->owner->depends_on(name);
}

void depends_on(std::string_view name, std::string_view column, std::string_view value) {
  if (detail::memo_frame* f = detail::tl_memo) f->owner->depends_on(name, column, value);
}

memo_carry::memo_carry() {
  frame_ = detail::tl_memo;
  if (!frame_) return;
  serial_ = frame_->serial;
  sink_ = std::make_shared<detail::memo_sink>();
  sink_->owner = frame_->owner;
  ++frame_->carries;
}

memo_carry::~memo_carry() {
  if (!sink_) return;
  detail::memo_frame* x = detail::tl_memo;
  while (x && !(x == frame_ && x->serial == serial_)) x = x->parent;
  if (!x) return;  // the frame closed first: it was not stored (carries > 0)
  --x->carries;
  try {
    std::lock_guard lock(sink_->mu);
    if (sink_->active > 0) x->data.spoil("a memo_carry::adopt outlived its carry");
    x->data.merge(sink_->data);
  } catch (...) {
    x->data.storable = false;
  }
}

memo_carry::adopt::adopt(const memo_carry& c) {
  if (c.sink_) frame_ = std::make_unique<detail::memo_frame>(*c.sink_->owner, c.sink_);
}

memo_carry::adopt::~adopt() = default;

}  // namespace qcache
