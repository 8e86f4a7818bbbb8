// Specification of qcache::cache: never stale (CORRECTNESS.md P1, P2, P11, P12, P13, P14,
// P16), bounded, counted.
//
// The deterministic interleavings use the cache's test hook, which runs inside store()
// after the reader captured its versions and before it checks them: exactly the window
// in which a stale set happens in caches without a guard.
#include <gtest/gtest.h>
#include <qcache/cache.h>
#include <qcache/key.h>
#include <qcache/tags.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <future>
#include <memory>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "versions.h"

namespace qcache {
namespace {

using namespace std::chrono_literals;

struct test_value : qcache::cached_value {
  explicit test_value(std::string v) : s(std::move(v)) {}
  std::string s;
  std::size_t bytes() const noexcept override { return s.size(); }
};

// ---- one-line helpers -------------------------------------------------------------

constexpr std::size_t kSlots = 1024;

qcache::options opts(std::size_t max_bytes = 4u << 20, std::size_t shards = 4) {
  qcache::options o;
  o.max_bytes = max_bytes;
  o.version_slots = kSlots;
  o.shards = shards;
  return o;
}

// The smallest budget the cache accepts for kSlots counters.
constexpr std::size_t kMinBytes = kSlots * 8 + (64u << 10);

key k(std::string_view sql) {
  key_builder b;
  b.start(intern_context("cache_test"), 'x', sql);
  return b.finish();
}

std::shared_ptr<const cached_value> val(std::string s) {
  return std::make_shared<test_value>(std::move(s));
}

std::string str(const std::shared_ptr<const cached_value>& v) {
  return v ? static_cast<const test_value&>(*v).s : "<miss>";
}

dependencies on(std::vector<tags::tag> t, std::vector<tags::tag> guards = {}) {
  return dependencies{std::move(t), std::move(guards), {}};
}

// A miss: capture, "execute", store. Returns whether the result was stored.
bool fill(cache& c, const key& key, const dependencies& d, std::string v) {
  snapshot s = c.capture(d);
  return c.store(key, s, val(std::move(v)));
}

// A complete write through qcache: held while "sent", released after commit.
void write(cache& c, std::vector<tags::tag> t) {
  write_hold h = c.begin_write(t, invalidation_cause::write);
  h.release(true);
}

const tags::tag t1 = tags::table("db", "t1");
const tags::tag t2 = tags::table("db", "t2");
const tags::tag t3 = tags::table("db", "t3");
const tags::tag p1 = tags::predicate("db", "t1", "id", "1");

// The tests below assume their tags do not share a version counter (a shared counter
// only causes extra misses, which would make "still a hit" assertions fail).
TEST(cache_test_setup, the_tags_used_here_have_distinct_counters) {
  detail::versions v(kSlots);
  std::set<std::uint32_t> slots;
  for (tags::tag t : {tags::global(), t1, t2, t3, p1}) slots.insert(v.slot_of(t));
  ASSERT_EQ(slots.size(), 5u);
}

// ---- hits and freshness ---------------------------------------------------------------

// The stream is followed by default; QCACHE_FOLLOW_CHANGES=0 (scripts/test sets it for the
// tests that do not test the stream) turns the default off; an explicit value wins.
TEST(cache, follow_changes_is_on_by_default_unless_the_environment_says_otherwise) {
  const char* saved = std::getenv("QCACHE_FOLLOW_CHANGES");
  std::string keep = saved ? saved : "";
  ::unsetenv("QCACHE_FOLLOW_CHANGES");
  EXPECT_TRUE(qcache::options{}.follow_changes);
  for (const char* off : {"0", "false", "off"}) {
    ::setenv("QCACHE_FOLLOW_CHANGES", off, 1);
    EXPECT_FALSE(qcache::options{}.follow_changes) << off;
  }
  ::setenv("QCACHE_FOLLOW_CHANGES", "1", 1);
  EXPECT_TRUE(qcache::options{}.follow_changes);
  ::setenv("QCACHE_FOLLOW_CHANGES", "0", 1);
  qcache::options o;
  o.follow_changes = true;
  EXPECT_TRUE(o.follow_changes);
  if (saved) ::setenv("QCACHE_FOLLOW_CHANGES", keep.c_str(), 1);
  else ::unsetenv("QCACHE_FOLLOW_CHANGES");
}

TEST(cache, a_stored_result_is_a_hit) {
  cache c(opts());
  EXPECT_EQ(c.lookup(k("q")), nullptr);
  ASSERT_TRUE(fill(c, k("q"), on({t1}), "rows"));
  EXPECT_EQ(str(c.lookup(k("q"))), "rows");
  EXPECT_EQ(c.stats().hits, 1u);
  EXPECT_EQ(c.stats().stores, 1u);
  EXPECT_EQ(c.stats().entries, 1u);
}

TEST(cache, a_result_without_dependencies_still_depends_on_the_global_tag) {
  cache c(opts());
  ASSERT_TRUE(fill(c, k("select 1"), on({}), "1"));
  EXPECT_EQ(str(c.lookup(k("select 1"))), "1");
  c.flush();
  EXPECT_EQ(c.lookup(k("select 1")), nullptr);
}

TEST(cache, a_completed_write_to_a_dependency_makes_the_entry_stale) {
  cache c(opts());
  ASSERT_TRUE(fill(c, k("q"), on({t1}), "rows"));
  write(c, {t1});
  EXPECT_EQ(c.lookup(k("q")), nullptr);
  EXPECT_EQ(c.stats().stale_rejected, 1u);
  EXPECT_EQ(c.stats().hits, 0u);
}

// P1: the reader captured, a writer committed before the reader stored; the store is
// dropped and nothing is ever served.
TEST(cache, p1_a_write_between_capture_and_store_drops_the_store) {
  cache c(opts());
  snapshot s = c.capture(on({t1}));
  ASSERT_TRUE(s.storable());
  c.set_test_hook_before_store([&] { write(c, {t1}); });
  EXPECT_FALSE(c.store(k("q"), s, val("pre-write rows")));
  c.set_test_hook_before_store(nullptr);
  EXPECT_EQ(c.lookup(k("q")), nullptr);
  EXPECT_EQ(c.stats().stores_dropped_stale, 1u);
  EXPECT_EQ(c.stats().stores, 0u);
}

// ---- fences and dependencies named from the result -------------------------------------

dependencies fenced(std::vector<tags::tag> t, std::vector<tags::tag> fences) {
  dependencies d;
  d.tags = std::move(t);
  d.fences = std::move(fences);
  return d;
}

TEST(cache, a_named_store_depends_on_the_named_tags_and_not_on_the_fence) {
  cache c(opts());
  snapshot s = c.capture(fenced({t2}, {t1}));
  const tags::tag named[] = {p1};
  ASSERT_TRUE(c.store_named(k("q"), s, val("rows"), named));
  write(c, {t1});  // the fence moves later: not a dependency
  EXPECT_EQ(str(c.lookup(k("q"))), "rows");
  write(c, {p1});
  EXPECT_EQ(c.lookup(k("q")), nullptr);
}

TEST(cache, a_fence_that_moved_before_the_store_refuses_it) {
  cache c(opts());
  snapshot s = c.capture(fenced({t2}, {t1}));
  c.set_test_hook_before_store([&] { write(c, {t1}); });
  const tags::tag named[] = {p1};
  EXPECT_FALSE(c.store_named(k("q"), s, val("rows"), named));
  EXPECT_FALSE(c.store(k("q"), s, val("rows")));
  c.set_test_hook_before_store(nullptr);
  EXPECT_EQ(c.lookup(k("q")), nullptr);
  EXPECT_EQ(c.stats().stores_dropped_stale, 2u);
}

TEST(cache, a_fence_with_a_write_in_flight_is_not_storable) {
  cache c(opts());
  write_hold h = c.begin_write(std::vector<tags::tag>{t1}, invalidation_cause::write);
  snapshot s = c.capture(fenced({t2}, {t1}));
  EXPECT_FALSE(s.storable());
  h.release(true);
}

TEST(cache, a_plain_store_keeps_the_fence_as_a_dependency) {
  cache c(opts());
  ASSERT_TRUE(fill(c, k("q"), fenced({t2}, {t1}), "rows"));
  EXPECT_EQ(str(c.lookup(k("q"))), "rows");
  write(c, {t1});
  EXPECT_EQ(c.lookup(k("q")), nullptr);
}

TEST(cache, a_named_tag_with_a_write_in_flight_refuses_the_store) {
  cache c(opts());
  snapshot s = c.capture(fenced({t2}, {t1}));
  write_hold h = c.begin_write(std::vector<tags::tag>{p1}, invalidation_cause::write);
  const tags::tag named[] = {p1};
  EXPECT_FALSE(c.store_named(k("q"), s, val("rows"), named));
  h.release(true);
  EXPECT_EQ(c.lookup(k("q")), nullptr);
}

// The same interleaving with the writer on its own thread: the reader is paused inside
// store() until the writer has committed.
TEST(cache, p1_a_reader_paused_before_store_while_another_thread_commits_stores_nothing) {
  cache c(opts());
  std::promise<void> reader_paused, writer_committed;
  c.set_test_hook_before_store([&] {
    reader_paused.set_value();
    writer_committed.get_future().wait();
  });
  std::thread reader([&] {
    snapshot s = c.capture(on({p1}, {t1}));
    EXPECT_FALSE(c.store(k("q"), s, val("pre-write rows")));
  });
  reader_paused.get_future().wait();
  write(c, {p1});
  writer_committed.set_value();
  reader.join();
  c.set_test_hook_before_store(nullptr);
  EXPECT_EQ(c.lookup(k("q")), nullptr);
  EXPECT_EQ(c.stats().stores_dropped_stale, 1u);
}

TEST(cache, p1_a_write_still_in_flight_when_the_reader_stores_drops_the_store) {
  cache c(opts());
  snapshot s = c.capture(on({t1}));
  write_hold h;
  c.set_test_hook_before_store(
      [&] { h = c.begin_write(std::vector{t1}, invalidation_cause::write); });
  EXPECT_FALSE(c.store(k("q"), s, val("rows")));
  c.set_test_hook_before_store(nullptr);
  h.release();
  EXPECT_EQ(c.lookup(k("q")), nullptr);
  EXPECT_EQ(c.stats().stores_dropped_stale, 1u);
}

// The variant where the write lands right after the store: the entry exists but is
// born stale, so the lookup refuses it.
TEST(cache, p1_a_write_right_after_the_store_makes_the_lookup_reject_the_entry) {
  cache c(opts());
  snapshot s = c.capture(on({t1}));
  ASSERT_TRUE(c.store(k("q"), s, val("rows")));
  write(c, {t1});
  EXPECT_EQ(c.lookup(k("q")), nullptr);
  EXPECT_EQ(c.stats().stale_rejected, 1u);
  EXPECT_EQ(c.stats().hits, 0u);
}

TEST(cache, a_write_to_an_unrelated_tag_between_capture_and_store_does_not_drop_it) {
  cache c(opts());
  snapshot s = c.capture(on({t1}));
  c.set_test_hook_before_store([&] { write(c, {t2}); });
  EXPECT_TRUE(c.store(k("q"), s, val("rows")));
  c.set_test_hook_before_store(nullptr);
  EXPECT_EQ(str(c.lookup(k("q"))), "rows");
}

TEST(cache, a_capture_during_an_in_flight_write_is_not_storable) {
  cache c(opts());
  write_hold h = c.begin_write(std::vector{t1}, invalidation_cause::write);
  snapshot s = c.capture(on({t2, t1}));
  EXPECT_FALSE(s.storable());
  EXPECT_FALSE(c.store(k("q"), s, val("rows")));
  EXPECT_EQ(c.stats().not_cached(uncacheable_reason::in_flight_write), 1u);
  h.release();
  EXPECT_EQ(c.lookup(k("q")), nullptr);
  EXPECT_TRUE(c.capture(on({t2, t1})).storable()) << "storable again once the write ended";
}

TEST(cache, a_default_snapshot_is_not_storable) {
  cache c(opts());
  EXPECT_FALSE(snapshot{}.storable());
  EXPECT_FALSE(c.store(k("q"), snapshot{}, val("rows")));
  EXPECT_EQ(c.lookup(k("q")), nullptr);
}

TEST(cache, a_null_value_is_not_stored) {
  cache c(opts());
  EXPECT_FALSE(c.store(k("q"), c.capture(on({t1})), nullptr));
  EXPECT_EQ(c.stats().entries, 0u);
}

// begin_write moves the version, so an entry captured before the write is dead for
// good: it is refused while the write is in flight and after it ended.
TEST(cache, entries_captured_before_a_write_began_are_dead_forever) {
  cache c(opts());
  ASSERT_TRUE(fill(c, k("q"), on({t1}), "old"));
  write_hold h = c.begin_write(std::vector{t1}, invalidation_cause::write);
  EXPECT_EQ(c.lookup(k("q")), nullptr) << "refused while the write is in flight";
  h.release(true);
  EXPECT_EQ(c.lookup(k("q")), nullptr) << "and after it committed";
  write(c, {t2});
  c.invalidate(std::vector{t3});
  EXPECT_EQ(c.lookup(k("q")), nullptr) << "and whatever happens next";
  ASSERT_TRUE(fill(c, k("q"), on({t1}), "new"));
  EXPECT_EQ(str(c.lookup(k("q"))), "new") << "a fresh fill after the write is served";
}

TEST(cache, a_write_hold_moves_versions_for_tags_added_later) {
  cache c(opts());
  ASSERT_TRUE(fill(c, k("q"), on({t2}), "rows"));
  write_hold h = c.begin_write(std::vector{t1}, invalidation_cause::write);
  EXPECT_EQ(str(c.lookup(k("q"))), "rows");
  h.add(std::vector{t2});
  EXPECT_EQ(c.lookup(k("q")), nullptr);
  EXPECT_FALSE(c.capture(on({t2})).storable());
  h.release();
  EXPECT_TRUE(c.capture(on({t2})).storable());
}

TEST(cache, overlapping_writes_keep_a_tag_in_flight_until_both_end) {
  cache c(opts());
  write_hold a = c.begin_write(std::vector{t1}, invalidation_cause::write);
  write_hold b = c.begin_write(std::vector{t1, t1}, invalidation_cause::write);
  a.release();
  EXPECT_FALSE(c.capture(on({t1})).storable());
  b.release();
  b.release();  // idempotent
  EXPECT_TRUE(c.capture(on({t1})).storable());
}

TEST(cache, a_moved_write_hold_releases_once) {
  cache c(opts());
  write_hold a = c.begin_write(std::vector{t1}, invalidation_cause::write);
  write_hold b = std::move(a);
  EXPECT_TRUE(a.empty());
  a.release();
  EXPECT_FALSE(c.capture(on({t1})).storable()) << "the moved-to hold still holds";
  { write_hold gone = std::move(b); }
  EXPECT_TRUE(c.capture(on({t1})).storable()) << "released by the destructor";
}

// ---- guards ---------------------------------------------------------------------------

TEST(cache, a_guard_with_a_write_in_flight_makes_a_capture_not_storable) {
  cache c(opts());
  write_hold h = c.begin_write(std::vector{t1}, invalidation_cause::write);
  snapshot s = c.capture(on({p1}, {t1}));
  EXPECT_FALSE(s.storable());
  EXPECT_FALSE(c.store(k("q"), s, val("rows")));
  h.release();
  EXPECT_TRUE(c.capture(on({p1}, {t1})).storable());
}

TEST(cache, a_guard_that_moves_after_the_capture_does_not_invalidate) {
  cache c(opts());
  snapshot s = c.capture(on({p1}, {t1}));
  c.set_test_hook_before_store([&] { write(c, {t1}); });
  EXPECT_TRUE(c.store(k("q"), s, val("rows"))) << "a guard is checked at capture only";
  c.set_test_hook_before_store(nullptr);
  write(c, {t1});
  c.invalidate(std::vector{t1});
  EXPECT_EQ(str(c.lookup(k("q"))), "rows");
  write(c, {p1});
  EXPECT_EQ(c.lookup(k("q")), nullptr) << "the predicate tag still invalidates";
}

// ---- flush and invalidate ------------------------------------------------------------

TEST(cache, flush_drops_every_entry) {
  cache c(opts());
  ASSERT_TRUE(fill(c, k("a"), on({t1}), "a"));
  ASSERT_TRUE(fill(c, k("b"), on({t2}), "b"));
  c.flush();
  EXPECT_EQ(c.lookup(k("a")), nullptr);
  EXPECT_EQ(c.lookup(k("b")), nullptr);
  EXPECT_EQ(c.stats().entries, 0u);
  EXPECT_EQ(c.stats().bytes, kSlots * 8) << "only the version table remains charged";
  EXPECT_EQ(c.stats().flushes, 1u);
  EXPECT_EQ(c.stats().invalidated(invalidation_cause::manual), 1u);
}

TEST(cache, flush_invalidates_results_being_computed) {
  cache c(opts());
  snapshot s = c.capture(on({t1}));
  c.flush(invalidation_cause::ddl);
  EXPECT_FALSE(c.store(k("q"), s, val("pre-flush rows")));
  EXPECT_EQ(c.lookup(k("q")), nullptr);
  EXPECT_EQ(c.stats().stores_dropped_stale, 1u);
  EXPECT_EQ(c.stats().invalidated(invalidation_cause::ddl), 1u);
  ASSERT_TRUE(fill(c, k("q"), on({t1}), "post-flush rows"));
  EXPECT_EQ(str(c.lookup(k("q"))), "post-flush rows");
}

TEST(cache, a_flush_between_store_and_lookup_leaves_nothing_to_serve) {
  cache c(opts());
  snapshot s = c.capture(on({t1}));
  c.set_test_hook_before_store([&] { c.flush(); });
  EXPECT_FALSE(c.store(k("q"), s, val("rows")));
  c.set_test_hook_before_store(nullptr);
  EXPECT_EQ(c.lookup(k("q")), nullptr);
}

TEST(cache, invalidate_kills_exactly_the_entries_that_depend_on_its_tags) {
  cache c(opts());
  ASSERT_TRUE(fill(c, k("on t1"), on({t1}), "1"));
  ASSERT_TRUE(fill(c, k("on t2"), on({t2}), "2"));
  ASSERT_TRUE(fill(c, k("on t1 and t3"), on({t3, t1}), "13"));
  ASSERT_TRUE(fill(c, k("on p1"), on({p1}), "p"));
  c.invalidate(std::vector{t1});
  EXPECT_EQ(c.lookup(k("on t1")), nullptr);
  EXPECT_EQ(c.lookup(k("on t1 and t3")), nullptr);
  EXPECT_EQ(str(c.lookup(k("on t2"))), "2");
  EXPECT_EQ(str(c.lookup(k("on p1"))), "p");
  EXPECT_EQ(c.stats().stale_rejected, 2u);
  EXPECT_EQ(c.stats().invalidated(invalidation_cause::manual), 1u);
  c.invalidate(std::vector{t2, p1}, invalidation_cause::external);
  EXPECT_EQ(c.lookup(k("on t2")), nullptr);
  EXPECT_EQ(c.lookup(k("on p1")), nullptr);
  EXPECT_EQ(c.stats().invalidated(invalidation_cause::external), 1u);
}

// P2: version counters are shared by hash; sharing can only cost a miss.
TEST(cache, tags_sharing_a_counter_cost_a_miss_never_a_stale_hit) {
  detail::versions table(kSlots);
  tags::tag other = 0;
  for (int i = 0; other == 0; ++i) {
    tags::tag t = tags::predicate("db", "t9", "id", std::to_string(i));
    if (t != p1 && table.slot_of(t) == table.slot_of(p1)) other = t;
  }
  cache c(opts());
  ASSERT_TRUE(fill(c, k("q"), on({p1}), "rows"));
  write(c, {other});
  EXPECT_EQ(c.lookup(k("q")), nullptr);
}

// ---- keys ----------------------------------------------------------------------------

// P11 at the cache level: a key that shares another's 128-bit hash is never served the
// other's result.
TEST(cache, a_forced_hash_collision_is_a_miss_never_the_other_result) {
  cache c(opts());
  key a = k("select * from a");
  key b = k("select * from b");
  b.hash = a.hash;
  ASSERT_TRUE(fill(c, a, on({t1}), "a rows"));
  EXPECT_EQ(c.lookup(b), nullptr);
  EXPECT_EQ(c.stats().stale_rejected, 0u);
  ASSERT_TRUE(fill(c, b, on({t1}), "b rows"));
  EXPECT_EQ(c.lookup(a), nullptr);
  EXPECT_EQ(str(c.lookup(b)), "b rows");
}

TEST(cache, the_same_sql_in_another_context_is_another_entry) {
  cache c(opts());
  key_builder kb;
  kb.start(intern_context("role=alice"), 'x', "select * from secrets");
  key alice = kb.finish();
  kb.start(intern_context("role=bob"), 'x', "select * from secrets");
  key bob = kb.finish();
  ASSERT_TRUE(fill(c, alice, on({t1}), "alice's rows"));
  EXPECT_EQ(c.lookup(bob), nullptr);
}

// ---- options and budget ----------------------------------------------------------------

TEST(cache_options, a_budget_smaller_than_the_version_table_is_refused_naming_max_bytes) {
  qcache::options o = opts(kMinBytes - 1);
  try {
    cache c(o);
    FAIL() << "constructed with max_bytes below the version table + 64 KiB";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("max_bytes"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(cache{opts(kMinBytes)});
}

TEST(cache_options, the_default_version_table_needs_a_budget_above_2_mib) {
  qcache::options o;
  o.max_bytes = 1u << 20;
  EXPECT_THROW(cache{o}, std::invalid_argument);
}

TEST(cache_options, zero_version_slots_is_refused) {
  qcache::options o = opts();
  o.version_slots = 0;
  EXPECT_THROW(cache{o}, std::invalid_argument);
}

TEST(cache_options, zero_shards_means_one) {
  cache c(opts(4u << 20, 0));
  EXPECT_TRUE(fill(c, k("q"), on({t1}), "rows"));
  EXPECT_EQ(str(c.lookup(k("q"))), "rows");
}

TEST(cache_options, default_options_construct) {
  cache c;
  EXPECT_EQ(c.stats().max_bytes, qcache::options{}.max_bytes);
  EXPECT_LE(c.stats().bytes, c.stats().max_bytes);
}

TEST(cache, max_entry_bytes_defaults_to_a_sixteenth_of_the_budget) {
  cache c(opts(4u << 20, 1));
  EXPECT_EQ(c.max_entry_bytes(), (4u << 20) / 16);
}

TEST(cache, max_entry_bytes_never_exceeds_what_a_shard_can_hold) {
  cache c(opts(kMinBytes, 64));
  EXPECT_EQ(c.max_entry_bytes(), (kMinBytes - kSlots * 8) / 64);
}

TEST(cache, a_result_above_max_entry_bytes_is_not_stored_and_counted_too_large) {
  qcache::options o = opts();
  o.max_entry_bytes = 100;
  cache c(o);
  EXPECT_EQ(c.max_entry_bytes(), 100u);
  EXPECT_FALSE(fill(c, k("big"), on({t1}), std::string(101, 'x')));
  EXPECT_EQ(c.lookup(k("big")), nullptr);
  EXPECT_EQ(c.stats().not_cached(uncacheable_reason::too_large), 1u);
  EXPECT_EQ(c.stats().uncacheable, 1u);
  EXPECT_TRUE(fill(c, k("fits"), on({t1}), std::string(100, 'x')));
  EXPECT_EQ(c.stats().not_cached(uncacheable_reason::too_large), 1u);
}

TEST(cache, a_result_whose_entry_exceeds_its_shard_is_counted_too_large) {
  cache c(opts(kMinBytes, 64));
  EXPECT_FALSE(fill(c, k("big"), on({t1}), std::string(c.max_entry_bytes(), 'x')))
      << "key, dependencies and bookkeeping push the entry over the shard budget";
  EXPECT_EQ(c.stats().not_cached(uncacheable_reason::too_large), 1u);
  EXPECT_EQ(c.stats().entries, 0u);
}

// P14: the budget covers the version table and every entry; the cache evicts to stay
// within it.
TEST(cache, never_charges_more_than_max_bytes) {
  cache c(opts(kMinBytes, 2));
  EXPECT_EQ(c.stats().bytes, kSlots * 8) << "the version table is charged from the start";
  for (int i = 0; i < 500; ++i) {
    fill(c, k("q" + std::to_string(i)), on({t1, t2}), std::string(100 + i * 7 % 1500, 'v'));
    qcache::stats s = c.stats();
    ASSERT_LE(s.bytes, s.max_bytes) << "after store " << i;
  }
  qcache::stats s = c.stats();
  EXPECT_EQ(s.max_bytes, kMinBytes);
  EXPECT_GT(s.evictions, 0u);
  EXPECT_EQ(s.stores, 500u);
  EXPECT_EQ(s.entries, s.stores - s.evictions);
  EXPECT_GT(s.bytes, kSlots * 8);
}

TEST(cache, a_hit_entry_survives_eviction_that_takes_unvisited_ones) {
  cache c(opts(kMinBytes, 1));
  ASSERT_TRUE(fill(c, k("hot"), on({t1}), std::string(1000, 'h')));
  for (int i = 0; i < 300; ++i) {
    ASSERT_NE(c.lookup(k("hot")), nullptr) << "evicted after " << i << " cold stores";
    fill(c, k("cold" + std::to_string(i)), on({t1}), std::string(1000, 'c'));
  }
  EXPECT_GT(c.stats().evictions, 200u);
}

// ---- counters -----------------------------------------------------------------------

TEST(cache_stats, count_what_happened) {
  cache c(opts());
  c.count_miss();
  c.count_miss();
  ASSERT_TRUE(fill(c, k("q"), on({t1}), "rows"));
  c.lookup(k("q"));
  c.count_uncacheable(uncacheable_reason::volatile_function);
  c.count_invalidation(invalidation_cause::ddl, 3);
  write_hold h = c.begin_write(std::vector{t2}, invalidation_cause::write);
  h.release(true);
  qcache::stats s = c.stats();
  EXPECT_EQ(s.misses, 2u);
  EXPECT_EQ(s.hits, 1u);
  EXPECT_DOUBLE_EQ(s.hit_ratio(), 1.0 / 3.0);
  EXPECT_EQ(s.stores, 1u);
  EXPECT_EQ(s.entries, 1u);
  EXPECT_EQ(s.not_cached(uncacheable_reason::volatile_function), 1u);
  EXPECT_EQ(s.uncacheable, 1u);
  EXPECT_EQ(s.invalidated(invalidation_cause::ddl), 3u);
  EXPECT_EQ(s.invalidated(invalidation_cause::write), 1u);
  EXPECT_EQ(s.invalidated(invalidation_cause::commit), 1u);
  EXPECT_EQ(s.invalidations, 5u);
  EXPECT_EQ(s.flushes, 0u);
  EXPECT_EQ(qcache::stats{}.hit_ratio(), 0.0);
}

TEST(cache_stats, counters_from_many_threads_add_up) {
  cache c(opts());
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&c] {
      for (int i = 0; i < 1000; ++i) c.count_miss();
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(c.stats().misses, 8000u);
}

TEST(cache_stats, every_reason_and_cause_has_a_name) {
  std::set<std::string> names;
  for (int r = 0; r < static_cast<int>(uncacheable_reason::count_); ++r)
    names.insert(to_string(static_cast<uncacheable_reason>(r)));
  EXPECT_EQ(names.size(), static_cast<std::size_t>(uncacheable_reason::count_));
  EXPECT_EQ(names.count("?"), 0u);
  names.clear();
  for (int i = 0; i < static_cast<int>(invalidation_cause::count_); ++i)
    names.insert(to_string(static_cast<invalidation_cause>(i)));
  EXPECT_EQ(names.size(), static_cast<std::size_t>(invalidation_cause::count_));
  EXPECT_EQ(names.count("?"), 0u);
}

// ---- single flight (P13) ---------------------------------------------------------------

// Waits until `n` callers are waiting on a flight (or 10 s passed).
void await_waiters(cache& c, std::uint64_t n) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (c.stats().single_flight_waits < n && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
}

qcache::options flight_opts(std::chrono::milliseconds wait) {
  qcache::options o = opts();
  o.single_flight_wait = wait;
  return o;
}

TEST(cache_single_flight, concurrent_misses_elect_exactly_one_leader_whose_result_the_others_get) {
  constexpr int n = 8;
  cache c(flight_opts(30s));
  std::atomic<int> leaders{0}, served{0};
  std::promise<void> go;
  std::shared_future<void> start = go.get_future().share();
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&] {
      start.wait();
      cache::ticket t = c.join_flight(k("q"), on({t1}));
      if (t.leader()) {
        ++leaders;
        await_waiters(c, n - 1);
        EXPECT_TRUE(fill(c, k("q"), on({t1}), "leader's rows"));
        t.done();
      } else {
        EXPECT_EQ(str(t.value()), "leader's rows");
        if (t.value()) ++served;
      }
    });
  go.set_value();
  for (auto& th : threads) th.join();
  EXPECT_EQ(leaders.load(), 1);
  EXPECT_EQ(served.load(), n - 1);
  EXPECT_EQ(c.stats().single_flight_waits, static_cast<std::uint64_t>(n - 1));
  EXPECT_EQ(c.stats().stores, 1u);
}

TEST(cache_single_flight, after_done_the_next_miss_leads_a_new_flight) {
  cache c(flight_opts(30s));
  {
    cache::ticket t = c.join_flight(k("q"), on({t1}));
    ASSERT_TRUE(t.leader());
    t.done();
    t.done();  // idempotent
  }
  EXPECT_TRUE(c.join_flight(k("q"), on({t1})).leader());
  EXPECT_EQ(c.stats().single_flight_waits, 0u);
}

TEST(cache_single_flight, different_keys_fly_independently) {
  cache c(flight_opts(30s));
  cache::ticket a = c.join_flight(k("a"), on({t1}));
  cache::ticket b = c.join_flight(k("b"), on({t1}));
  EXPECT_TRUE(a.leader());
  EXPECT_TRUE(b.leader());
}

TEST(cache_single_flight, a_key_sharing_the_flight_slot_executes_without_waiting) {
  cache c(flight_opts(30s));
  key a = k("a");
  key b = k("b");
  b.hash = a.hash;
  cache::ticket leader = c.join_flight(a, on({t1}));
  ASSERT_TRUE(leader.leader());
  cache::ticket other = c.join_flight(b, on({t1}));
  EXPECT_FALSE(other.leader());
  EXPECT_EQ(other.value(), nullptr);
  EXPECT_EQ(c.stats().single_flight_waits, 0u);
}

// Runs `n` callers of join_flight(k("q")) while the test holds the leader ticket, calls
// `finish` once all of them are waiting, and returns the tickets they got.
std::vector<cache::ticket> wait_while(cache& c, int n, std::function<void()> finish) {
  std::vector<cache::ticket> got(n);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] { got[i] = c.join_flight(k("q"), on({t1})); });
  await_waiters(c, n);
  finish();
  for (auto& th : threads) th.join();
  return got;
}

TEST(cache_single_flight, when_the_leader_gives_up_the_waiters_execute_themselves) {
  cache c(flight_opts(30s));
  cache::ticket lead = c.join_flight(k("q"), on({t1}));
  ASSERT_TRUE(lead.leader());
  auto t0 = std::chrono::steady_clock::now();
  auto got = wait_while(c, 3, [&] { lead.done(); });
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s) << "woken by done(), not the timeout";
  for (const auto& t : got) {
    EXPECT_FALSE(t.leader());
    EXPECT_EQ(t.value(), nullptr);
  }
}

TEST(cache_single_flight, a_leader_ticket_destroyed_by_an_exception_wakes_the_waiters) {
  cache c(flight_opts(30s));
  auto lead = std::make_unique<cache::ticket>(c.join_flight(k("q"), on({t1})));
  ASSERT_TRUE(lead->leader());
  auto t0 = std::chrono::steady_clock::now();
  auto got = wait_while(c, 3, [&] {
    try {
      auto owned = std::move(lead);
      throw std::runtime_error("driver error");
    } catch (const std::runtime_error&) {
    }
  });
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s) << "woken by the destructor";
  for (const auto& t : got) {
    EXPECT_FALSE(t.leader());
    EXPECT_EQ(t.value(), nullptr);
  }
  EXPECT_TRUE(c.join_flight(k("q"), on({t1})).leader()) << "the flight is gone";
}

TEST(cache_single_flight, a_leader_result_invalidated_before_done_is_not_handed_to_waiters) {
  cache c(flight_opts(30s));
  cache::ticket lead = c.join_flight(k("q"), on({t1}));
  ASSERT_TRUE(lead.leader());
  auto got = wait_while(c, 2, [&] {
    ASSERT_TRUE(fill(c, k("q"), on({t1}), "rows"));
    write(c, {t1});
    lead.done();
  });
  for (const auto& t : got) EXPECT_EQ(t.value(), nullptr);
}

TEST(cache_single_flight, a_waiter_gives_up_after_single_flight_wait) {
  cache c(flight_opts(50ms));
  cache::ticket lead = c.join_flight(k("q"), on({t1}));
  ASSERT_TRUE(lead.leader());
  auto t0 = std::chrono::steady_clock::now();
  cache::ticket waiter = c.join_flight(k("q"), on({t1}));
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_FALSE(waiter.leader());
  EXPECT_EQ(waiter.value(), nullptr);
  EXPECT_GE(waited, 50ms);
  EXPECT_LT(waited, 5s);
  // The slow leader finishes later; its result is served to later callers as usual.
  ASSERT_TRUE(fill(c, k("q"), on({t1}), "slow rows"));
  lead.done();
  EXPECT_EQ(str(c.lookup(k("q"))), "slow rows");
}

TEST(cache_single_flight, a_moved_leader_ticket_ends_the_flight_once) {
  cache c(flight_opts(50ms));
  cache::ticket a = c.join_flight(k("q"), on({t1}));
  cache::ticket b = std::move(a);
  EXPECT_TRUE(b.leader());
  a.done();  // the moved-from ticket no longer leads
  cache::ticket assigned;
  assigned = std::move(b);
  EXPECT_TRUE(assigned.leader());
  assigned.done();
  EXPECT_TRUE(c.join_flight(k("q"), on({t1})).leader());
}

// ---- concurrency torture ------------------------------------------------------------
//
// A "database" of rows, each an atomic counter bumped by every write to it. Writes go
// through qcache as an adapter's would: begin_write (before sending) on the table tag
// and the tags of what they change, the change, release (after commit), then the write
// is recorded as completed. Reads use the tags an analyzer would give them: a point or
// range read depends on its rows' predicate tags and the table epoch, guarded by the
// table tag; a read without a usable predicate depends on the table tag. Their values
// carry the row versions they saw. Checked on every hit: no row version in the value is
// older than a write to that row that completed before the lookup began. After the
// writers stop, every cached read equals a direct read.

struct rows_value : cached_value {
  int query = 0;
  std::vector<std::pair<int, std::uint64_t>> rows;  // (row, version read)
  std::size_t bytes() const noexcept override { return 512 + rows.size() * 16; }
};

TEST(cache_concurrency, readers_never_see_a_row_older_than_a_completed_write) {
  constexpr int kRows = 48;
  constexpr int kQueries = 2 * kRows;  // a point read and a 4-row range read per row
  qcache::options o = opts(kMinBytes, 4);
  o.single_flight_wait = 20ms;
  cache c(o);

  std::atomic<std::uint64_t> db[kRows];
  std::atomic<std::uint64_t> completed[kRows];
  for (int r = 0; r < kRows; ++r) {
    db[r] = 0;
    completed[r] = 0;
  }
  auto row_tag = [](int r) { return tags::predicate("db", "t", "id", std::to_string(r)); };
  const tags::tag table = tags::table("db", "t");
  const tags::tag epoch = tags::table_epoch("db", "t");
  auto query_rows = [](int q) {
    std::vector<int> rows;
    if (q < kRows)
      rows.push_back(q);
    else
      for (int i = 0; i < 4; ++i) rows.push_back((q - kRows + i) % kRows);
    return rows;
  };
  std::vector<key> keys;
  std::vector<dependencies> deps;
  for (int q = 0; q < kQueries; ++q) {
    keys.push_back(k("torture " + std::to_string(q)));
    dependencies d;
    if (q % 5 == 0) {  // no usable predicate: depends on every write to the table
      d.tags = {table, epoch};
    } else {
      for (int r : query_rows(q)) d.tags.push_back(row_tag(r));
      d.tags.push_back(epoch);
      d.guards.push_back(table);
    }
    deps.push_back(d);
  }
  auto complete = [&](int r, std::uint64_t v) {
    std::uint64_t cur = completed[r].load();
    while (cur < v && !completed[r].compare_exchange_weak(cur, v)) {
    }
  };
  auto execute = [&](int q) {
    auto v = std::make_shared<rows_value>();
    v->query = q;
    for (int r : query_rows(q)) v->rows.emplace_back(r, db[r].load());
    return v;
  };

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> checked_hits{0}, violations{0};
  std::vector<std::thread> threads;

  // Five readers; odd ones go through single flight.
  for (int t = 0; t < 5; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      while (!stop.load(std::memory_order_relaxed)) {
        int q = rng() % kQueries;
        std::vector<int> rows = query_rows(q);
        std::vector<std::uint64_t> floor;
        for (int r : rows) floor.push_back(completed[r].load());
        std::shared_ptr<const cached_value> got = c.lookup(keys[q]);
        if (!got && t % 2) {
          cache::ticket tk = c.join_flight(keys[q], deps[q]);
          got = tk.value();
          if (!got) {
            snapshot s = c.capture(deps[q]);
            c.store(keys[q], s, execute(q));
          }
        } else if (!got) {
          c.count_miss();
          snapshot s = c.capture(deps[q]);
          c.store(keys[q], s, execute(q));
        }
        if (!got) continue;
        const auto& v = static_cast<const rows_value&>(*got);
        bool ok = v.query == q && v.rows.size() == rows.size();
        for (std::size_t i = 0; ok && i < rows.size(); ++i)
          ok = v.rows[i].first == rows[i] && v.rows[i].second >= floor[i];
        if (!ok) ++violations;
        ++checked_hits;
      }
    });

  // Two writers: single-row writes, and now and then a write to rows it cannot name
  // (held under the table epoch), like an UPDATE without a usable predicate.
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(200 + t);
      while (!stop.load(std::memory_order_relaxed)) {
        if (rng() % 20 == 0) {
          write_hold h = c.begin_write(std::vector{table, epoch}, invalidation_cause::write);
          std::vector<std::uint64_t> after(kRows);
          for (int r = 0; r < kRows; ++r) after[r] = db[r].fetch_add(1) + 1;
          h.release(true);
          for (int r = 0; r < kRows; ++r) complete(r, after[r]);
        } else {
          int r = rng() % kRows;
          write_hold h = c.begin_write(std::vector{table, row_tag(r)}, invalidation_cause::write);
          std::uint64_t after = db[r].fetch_add(1) + 1;
          if (rng() % 4 == 0) std::this_thread::yield();  // a slow statement
          h.release(true);
          complete(r, after);
        }
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 200));
      }
    });

  // One thread flushes and invalidates (neither changes the database).
  threads.emplace_back([&] {
    std::mt19937 rng(300);
    for (int i = 0; !stop.load(std::memory_order_relaxed); ++i) {
      if (i % 50 == 49)
        c.flush();
      else
        c.invalidate(std::vector{row_tag(rng() % kRows)});
      std::this_thread::sleep_for(1ms);
    }
  });

  std::this_thread::sleep_for(1s);
  stop = true;
  for (auto& th : threads) th.join();

  qcache::stats s = c.stats();
  EXPECT_EQ(violations.load(), 0u) << "a reader was served a row older than a completed write";
  EXPECT_GT(checked_hits.load(), 100u) << "the test must exercise hits";
  EXPECT_GT(s.evictions, 0u) << "the budget must be tight enough to evict";
  EXPECT_GT(s.stale_rejected + s.stores_dropped_stale, 0u);
  EXPECT_LE(s.bytes, s.max_bytes);

  // Quiescent: whatever is still cached equals a direct read.
  for (int q = 0; q < kQueries; ++q) {
    auto got = c.lookup(keys[q]);
    if (!got) continue;
    const auto& v = static_cast<const rows_value&>(*got);
    for (const auto& [r, ver] : v.rows) EXPECT_EQ(ver, db[r].load()) << "query " << q;
  }
}

}  // namespace
}  // namespace qcache
