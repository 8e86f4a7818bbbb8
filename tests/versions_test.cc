// Specification of the version table (CORRECTNESS.md P1, P2, P14, P16).
//
// Each counter packs a version and a count of writers in flight. Every operation moves
// the version forward, so a value captured before any begin/end/bump never reads as
// current again; a counter with a writer in flight says so.
#include "versions.h"

#include <qcache/tags.h>
#include <string>

#include <gtest/gtest.h>

#include <random>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

namespace qcache::detail {
namespace {

using V = versions;

TEST(versions, start_at_zero_with_no_writer_in_flight) {
  versions v(1024);
  for (std::uint32_t s = 0; s < v.size(); ++s) {
    ASSERT_EQ(v.load(s), 0u) << s;
    ASSERT_FALSE(V::in_flight(v.load(s)));
  }
}

TEST(versions, begin_moves_the_version_and_marks_a_writer_in_flight) {
  versions v(1024);
  v.begin(5);
  EXPECT_EQ(v.load(5), V::version_one + V::writer_one);
  EXPECT_TRUE(V::in_flight(v.load(5)));
  EXPECT_EQ(v.load(6), 0u) << "other counters do not move";
}

TEST(versions, end_moves_the_version_again_and_removes_the_writer) {
  versions v(1024);
  v.begin(5);
  std::uint64_t during = v.load(5);
  v.end(5);
  EXPECT_EQ(v.load(5), 2 * V::version_one);
  EXPECT_FALSE(V::in_flight(v.load(5)));
  EXPECT_NE(v.load(5), during);
  EXPECT_NE(v.load(5), 0u);
}

TEST(versions, bump_moves_the_version_like_begin_then_end_without_a_writer) {
  versions a(1024), b(1024);
  a.bump(3);
  b.begin(3);
  b.end(3);
  EXPECT_EQ(a.load(3), b.load(3));
  EXPECT_FALSE(V::in_flight(a.load(3)));
  EXPECT_NE(a.load(3), 0u);
}

TEST(versions, a_counter_stays_in_flight_until_its_last_writer_ends) {
  versions v(1024);
  v.begin(1);
  v.begin(1);
  v.end(1);
  EXPECT_TRUE(V::in_flight(v.load(1))) << "one writer still holds the counter";
  v.bump(1);
  EXPECT_TRUE(V::in_flight(v.load(1))) << "a bump does not end a writer";
  v.end(1);
  EXPECT_FALSE(V::in_flight(v.load(1)));
}

// A captured value never reads as current again, whatever sequence of operations
// follows (no ABA): the counter is strictly increasing.
TEST(versions, every_operation_gives_a_value_never_seen_before) {
  versions v(1024);
  std::set<std::uint64_t> seen{v.load(0)};
  std::mt19937 rng(42);
  int writers = 0;
  for (int i = 0; i < 10000; ++i) {
    std::uint64_t before = v.load(0);
    switch (rng() % 3) {
      case 0:
        if (writers < 100) {
          v.begin(0);
          ++writers;
        } else {
          v.bump(0);
        }
        break;
      case 1:
        if (writers > 0) {
          v.end(0);
          --writers;
        } else {
          v.bump(0);
        }
        break;
      default:
        v.bump(0);
    }
    ASSERT_GT(v.load(0), before);
    ASSERT_TRUE(seen.insert(v.load(0)).second);
    ASSERT_EQ(V::in_flight(v.load(0)), writers > 0);
    ASSERT_EQ(v.load(0) & V::writer_mask, static_cast<std::uint64_t>(writers));
  }
}

// Packing: many overlapping writers on one counter neither leak into the version nor
// lose the in-flight mark.
TEST(versions, many_overlapping_writers_pack_without_overflow) {
  versions v(1024);
  constexpr int n = 60000;  // below the 16-bit writer field's capacity
  for (int i = 0; i < n; ++i) v.begin(9);
  EXPECT_EQ(v.load(9) & V::writer_mask, static_cast<std::uint64_t>(n));
  EXPECT_EQ(v.load(9) / V::version_one, static_cast<std::uint64_t>(n));
  for (int i = 0; i < n; ++i) {
    v.end(9);
    ASSERT_EQ(V::in_flight(v.load(9)), i + 1 < n) << i;
  }
  EXPECT_EQ(v.load(9), 2ull * n * V::version_one);
}

TEST(versions, concurrent_begins_and_ends_balance_out) {
  versions v(1024);
  constexpr int kThreads = 4, kOps = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&v] {
      for (int i = 0; i < kOps; ++i) {
        v.begin(7);
        EXPECT_TRUE(V::in_flight(v.load(7)));
        v.end(7);
        v.bump(8);
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(v.load(7), 2ull * kThreads * kOps * V::version_one);
  EXPECT_EQ(v.load(8), 2ull * kThreads * kOps * V::version_one);
}

TEST(versions, size_is_rounded_up_to_a_power_of_two_of_at_least_1024) {
  EXPECT_EQ(versions(1).size(), 1024u);
  EXPECT_EQ(versions(1024).size(), 1024u);
  EXPECT_EQ(versions(1025).size(), 2048u);
  EXPECT_EQ(versions(3000).size(), 4096u);
  EXPECT_EQ(versions(4096).bytes(), 4096u * 8);
}

TEST(versions, more_than_2_pow_30_slots_is_refused) {
  EXPECT_THROW(versions((std::size_t{1} << 30) + 1), std::invalid_argument);
}

TEST(versions, slot_of_any_tag_is_within_the_table) {
  for (std::size_t n : {1024u, 2048u, 1u << 16}) {
    versions v(n);
    std::mt19937_64 rng(n);
    std::vector<std::uint64_t> tags = {0, 1, ~0ull, 1ull << 63, 0xffffffffull};
    for (int i = 0; i < 10000; ++i) tags.push_back(rng());
    for (std::uint64_t t : tags) ASSERT_LT(v.slot_of(t), v.size()) << t;
  }
}

// Each kind of tag has its own region: the global tag alone, database tags, table-level
// tags, predicate tags; within a region tags spread over every slot.
TEST(versions, slot_of_keeps_tag_kinds_apart_and_spreads_each_over_its_region) {
  versions v(1u << 14);
  std::set<std::uint32_t> db, table_level, pred;
  for (int i = 0; i < 4000; ++i) {
    std::string n = std::to_string(i);
    db.insert(v.slot_of(tags::database("db" + n)));
    table_level.insert(v.slot_of(tags::table("db", n)));
    table_level.insert(v.slot_of(tags::table_epoch("db", n)));
    table_level.insert(v.slot_of(tags::column_epoch("db", "t", n)));
  }
  for (int i = 0; i < 100000; ++i) pred.insert(v.slot_of(tags::predicate("db", "t", "c", std::to_string(i))));
  std::uint32_t g = v.slot_of(tags::global());
  EXPECT_EQ(g, 0u);
  EXPECT_EQ(db.size(), (1u << 14) / 256 - 1);        // [1, 64): every slot used
  EXPECT_EQ(table_level.size(), (1u << 14) / 16);    // [64, 1088)
  EXPECT_GT(pred.size(), 15000u);                    // of the remaining 15296
  EXPECT_EQ(*db.begin(), 1u);
  EXPECT_LT(*db.rbegin(), *table_level.begin());
  EXPECT_LT(*table_level.rbegin(), *pred.begin());
  EXPECT_LT(*pred.rbegin(), 1u << 14);
  EXPECT_EQ(v.slot_of(12345), v.slot_of(12345));
}

}  // namespace
}  // namespace qcache::detail
