// Specification of the entry store (CORRECTNESS.md P11, P12, P14).
//
// The store finds entries by 128-bit hash but serves one only when the full key bytes
// match; it never holds more bytes than its budget; it evicts with SIEVE.
#include "store.h"

#include <gtest/gtest.h>
#include <qcache/key.h>

#include <algorithm>
#include <iterator>
#include <list>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace qcache::detail {
namespace {

struct test_value : qcache::cached_value {
  explicit test_value(std::string v) : s(std::move(v)) {}
  std::string s;
  std::size_t bytes() const noexcept override { return s.size(); }
};

std::shared_ptr<const cached_value> val(std::string s) {
  return std::make_shared<test_value>(std::move(s));
}

std::string str(const std::shared_ptr<const cached_value>& v) {
  return v ? static_cast<const test_value&>(*v).s : "<none>";
}

key make_key(std::string_view sql) {
  key_builder b;
  b.start(1, 'x', sql);
  return b.finish();
}

std::size_t charge(const key& k, std::size_t value_bytes, std::size_t deps = 0) {
  return store::entry_overhead + k.bytes.size() + value_bytes +
         deps * sizeof(dep_versions::value_type);
}

bool insert(store& st, const key& k, std::string v, dep_versions deps = {}) {
  std::size_t n = v.size();
  return st.insert(k, val(std::move(v)), std::move(deps), n);
}

// A hit: marks the entry visited, like a cache hit.
std::shared_ptr<const cached_value> get(store& st, const key& k) {
  bool stale = false;
  return st.lookup(
      k, [](const dep_versions&) { return true; }, stale);
}

// Whether an entry with exactly these key bytes is present, without marking it
// visited (an invalid entry is not a hit).
bool present(store& st, const key& k) {
  bool stale = false;
  EXPECT_EQ(st.lookup(
                k, [](const dep_versions&) { return false; }, stale),
            nullptr);
  return stale;
}

// ---- lookup and insert -------------------------------------------------------------

TEST(store, returns_what_was_inserted) {
  store st(1 << 20, 4);
  key k = make_key("select 1");
  EXPECT_EQ(get(st, k), nullptr);
  ASSERT_TRUE(insert(st, k, "one"));
  EXPECT_EQ(str(get(st, k)), "one");
  EXPECT_EQ(get(st, make_key("select 2")), nullptr);
  EXPECT_EQ(st.entries(), 1u);
  EXPECT_EQ(st.bytes(), charge(k, 3));
}

TEST(store, hands_out_the_same_immutable_object_to_every_reader) {
  store st(1 << 20, 4);
  key k = make_key("select 1");
  auto v = val("one");
  ASSERT_TRUE(st.insert(k, v, {}, 3));
  EXPECT_EQ(get(st, k).get(), v.get());
  EXPECT_EQ(get(st, k).get(), v.get());
}

TEST(store, passes_the_inserted_dependency_versions_to_the_validity_check) {
  store st(1 << 20, 1);
  key k = make_key("select 1");
  dep_versions deps = {{3, 100}, {7, 200}};
  ASSERT_TRUE(insert(st, k, "v", deps));
  dep_versions seen;
  bool stale = false;
  auto v = st.lookup(
      k,
      [&](const dep_versions& d) {
        seen = d;
        return false;
      },
      stale);
  EXPECT_EQ(v, nullptr) << "an invalid entry is not served";
  EXPECT_TRUE(stale);
  EXPECT_EQ(seen, deps);
  EXPECT_EQ(st.bytes(), charge(k, 1, 2)) << "dependency lists are charged";
}

TEST(store, a_missing_key_is_not_reported_stale) {
  store st(1 << 20, 1);
  bool stale = false;
  EXPECT_EQ(st.lookup(
                make_key("x"), [](const dep_versions&) { return false; }, stale),
            nullptr);
  EXPECT_FALSE(stale);
}

// P11: a 128-bit hash collision (forced here) must never serve another key's value.
TEST(store, never_serves_an_entry_whose_key_bytes_differ_even_with_the_same_hash) {
  store st(1 << 20, 4);
  key a = make_key("select * from a");
  key b = make_key("select * from b");
  b.hash = a.hash;
  ASSERT_NE(a.bytes, b.bytes);

  ASSERT_TRUE(insert(st, a, "rows of a"));
  EXPECT_EQ(get(st, b), nullptr) << "b shares a's hash but not its bytes";
  bool stale = false;
  st.lookup(
      b, [](const dep_versions&) { return true; }, stale);
  EXPECT_FALSE(stale) << "a collision is a plain miss, not a stale entry";
  EXPECT_EQ(str(get(st, a)), "rows of a");

  // Storing b evicts a from the shared slot; a is then a miss, never b's rows.
  ASSERT_TRUE(insert(st, b, "rows of b"));
  EXPECT_EQ(get(st, a), nullptr);
  EXPECT_EQ(str(get(st, b)), "rows of b");
  EXPECT_EQ(st.entries(), 1u);
  EXPECT_EQ(st.bytes(), charge(b, 9));
}

TEST(store, inserting_an_existing_key_replaces_its_value_and_charge) {
  store st(1 << 20, 2);
  key k = make_key("select 1");
  ASSERT_TRUE(insert(st, k, "old value, longer"));
  ASSERT_TRUE(insert(st, k, "new", {{1, 2}}));
  EXPECT_EQ(str(get(st, k)), "new");
  EXPECT_EQ(st.entries(), 1u);
  EXPECT_EQ(st.bytes(), charge(k, 3, 1));
  EXPECT_EQ(st.evictions(), 0u) << "a replacement is not an eviction";
}

TEST(store, refuses_an_entry_larger_than_a_shard_budget) {
  store st(4 * 4096, 4);
  ASSERT_EQ(st.shard_budget(), 4096u);
  key k = make_key("select big");
  std::size_t fits = st.shard_budget() - charge(k, 0);
  EXPECT_FALSE(insert(st, k, std::string(fits + 1, 'x')));
  EXPECT_EQ(get(st, k), nullptr);
  EXPECT_EQ(st.entries(), 0u);
  EXPECT_EQ(st.bytes(), 0u);
  EXPECT_TRUE(insert(st, k, std::string(fits, 'x'))) << "exactly the shard budget fits";
  EXPECT_EQ(st.bytes(), st.shard_budget());
}

TEST(store, an_oversized_replacement_leaves_the_old_entry) {
  store st(4096, 1);
  key k = make_key("k");
  ASSERT_TRUE(insert(st, k, "small"));
  EXPECT_FALSE(insert(st, k, std::string(4096, 'x')));
  EXPECT_EQ(str(get(st, k)), "small");
}

TEST(store, clear_drops_every_entry_and_its_bytes) {
  store st(1 << 20, 4);
  std::vector<key> keys;
  for (int i = 0; i < 50; ++i) {
    keys.push_back(make_key("k" + std::to_string(i)));
    ASSERT_TRUE(insert(st, keys.back(), "v"));
  }
  get(st, keys[0]);
  st.clear();
  EXPECT_EQ(st.entries(), 0u);
  EXPECT_EQ(st.bytes(), 0u);
  EXPECT_EQ(st.evictions(), 0u) << "clear is not eviction";
  for (const key& k : keys) EXPECT_EQ(get(st, k), nullptr);
  // The store works normally afterwards (queue and hand were reset).
  ASSERT_TRUE(insert(st, keys[1], "again"));
  EXPECT_EQ(str(get(st, keys[1])), "again");
  EXPECT_EQ(st.entries(), 1u);
}

TEST(store, readers_keep_their_value_after_it_is_replaced_evicted_or_cleared) {
  store st(1 << 20, 1);
  key k = make_key("k");
  ASSERT_TRUE(insert(st, k, "first"));
  auto held = get(st, k);
  ASSERT_TRUE(insert(st, k, "second"));
  st.clear();
  EXPECT_EQ(str(held), "first");
}

// ---- byte budget ----------------------------------------------------------------------

// P14: after every insert, the bytes charged (sum of the charges of the entries present)
// never exceed the budget, and bytes()/entries() agree with what is actually present.
TEST(store, never_holds_more_bytes_than_its_budget) {
  constexpr std::size_t budget = 8 * 2048;
  store st(budget, 8);
  std::mt19937 rng(7);
  std::vector<key> keys;
  for (int i = 0; i < 120; ++i) keys.push_back(make_key("key number " + std::to_string(i)));
  for (int op = 0; op < 2000; ++op) {
    const key& k = keys[rng() % keys.size()];
    std::size_t n = rng() % 1200;
    insert(st, k, std::string(n, 'v'), dep_versions(rng() % 4, {0, 0}));
    if (rng() % 3 == 0) get(st, keys[rng() % keys.size()]);
    ASSERT_LE(st.bytes(), budget) << "after op " << op;
    if (op % 50 == 0) {
      std::uint64_t sum = 0, count = 0;
      for (const key& x : keys) {
        bool stale = false;
        std::size_t deps = 0;
        auto v = st.lookup(
            x,
            [&](const dep_versions& d) {
              deps = d.size();
              return true;
            },
            stale);
        if (v) {
          sum += charge(x, v->bytes(), deps);
          ++count;
        }
      }
      ASSERT_EQ(st.bytes(), sum) << "after op " << op;
      ASSERT_EQ(st.entries(), count) << "after op " << op;
    }
  }
  EXPECT_GT(st.evictions(), 0u);
}

TEST(store, concurrent_inserts_and_lookups_respect_the_budget) {
  constexpr std::size_t budget = 4 * 4096;
  store st(budget, 4);
  std::vector<key> keys;
  for (int i = 0; i < 64; ++i) keys.push_back(make_key("k" + std::to_string(i)));
  std::atomic<bool> over{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 5000; ++i) {
        std::size_t j = rng() % keys.size();
        if (rng() % 2) {
          insert(st, keys[j], std::to_string(j) + std::string(rng() % 300, '.'));
        } else if (auto v = get(st, keys[j])) {
          std::string s = str(v);
          EXPECT_EQ(s.substr(0, s.find('.')), std::to_string(j)) << "another key's value";
        }
        if (st.bytes() > budget) over = true;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_FALSE(over.load());
  EXPECT_LE(st.bytes(), budget);
}

// ---- SIEVE eviction ---------------------------------------------------------------------
//
// SIEVE (Zhang et al., NSDI '24): a FIFO queue, new entries at the head; a hit sets the
// entry's visited bit; to evict, a hand walks from where it last stopped (initially the
// tail) toward the head, wrapping to the tail, clearing visited bits, and evicts the
// first unvisited entry; the hand then rests on the next newer entry.

// A store that holds exactly `n` entries of equal charge, in one shard.
struct sieve_fixture {
  explicit sieve_fixture(std::size_t n) : st(n * charge(k("a"), 1), 1) {}
  static key k(std::string name) { return make_key("key " + name); }
  void put(const std::string& name) { ASSERT_TRUE(insert(st, k(name), name.substr(0, 1))); }
  void visit(const std::string& name) { ASSERT_NE(get(st, k(name)), nullptr) << name; }
  std::string contents(const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names)
      if (present(st, k(n))) out += n;
    return out;
  }
  store st;
};

TEST(store_sieve, evicts_the_oldest_unvisited_entry_and_spares_a_visited_older_one) {
  sieve_fixture f(3);
  f.put("a");
  f.put("b");
  f.put("c");
  f.visit("a");
  f.put("d");  // hand: a visited (cleared) -> b unvisited: evicted
  EXPECT_EQ(f.contents({"a", "b", "c", "d"}), "acd");
  EXPECT_EQ(f.st.evictions(), 1u);
}

TEST(store_sieve, spares_a_visited_entry_over_an_unvisited_one_inserted_later) {
  sieve_fixture f(3);
  f.put("a");
  f.put("b");
  f.put("c");
  f.visit("b");
  f.put("d");  // hand at a: unvisited, evicted; hand rests on b
  EXPECT_EQ(f.contents({"a", "b", "c", "d"}), "bcd");
  f.put("e");  // b visited (cleared) -> c unvisited: evicted although newer than b
  EXPECT_EQ(f.contents({"b", "c", "d", "e"}), "bde");
}

TEST(store_sieve, the_hand_resumes_where_it_stopped_instead_of_restarting_at_the_tail) {
  sieve_fixture f(3);
  f.put("a");
  f.put("b");
  f.put("c");
  f.visit("a");
  f.put("d");  // a cleared, b evicted, hand rests on c
  f.put("e");  // c evicted (not a, whose bit the hand already cleared)
  EXPECT_EQ(f.contents({"a", "c", "d", "e"}), "ade");
}

TEST(store_sieve, when_every_entry_was_visited_the_hand_wraps_and_evicts_the_oldest) {
  sieve_fixture f(3);
  f.put("a");
  f.put("b");
  f.put("c");
  f.visit("a");
  f.visit("b");
  f.visit("c");
  f.put("d");  // all bits cleared in one lap, then a is the first unvisited
  EXPECT_EQ(f.contents({"a", "b", "c", "d"}), "bcd");
}

// The store against a direct transcription of the SIEVE algorithm, over a random
// sequence of inserts, replacements and hits.
TEST(store_sieve, matches_a_reference_sieve_over_random_operations) {
  struct model_entry {
    std::string name;
    bool visited = false;
  };
  constexpr std::size_t capacity = 6;
  std::list<model_entry> queue;  // front = tail (oldest), back = head (newest)
  auto hand = queue.end();       // end() = no hand: start at the tail
  auto find = [&](const std::string& n) {
    return std::find_if(queue.begin(), queue.end(), [&](auto& e) { return e.name == n; });
  };
  auto remove = [&](std::list<model_entry>::iterator it) {
    if (hand == it) hand = std::next(it);
    queue.erase(it);
  };
  auto evict = [&] {
    auto o = hand != queue.end() ? hand : queue.begin();
    while (o->visited) {
      o->visited = false;
      o = std::next(o) != queue.end() ? std::next(o) : queue.begin();
    }
    auto next = std::next(o);
    queue.erase(o);
    hand = next;
  };

  sieve_fixture f(capacity);
  std::vector<std::string> names;
  for (char c = 'a'; c <= 't'; ++c) names.emplace_back(1, c);
  std::mt19937 rng(2024);
  for (int op = 0; op < 3000; ++op) {
    const std::string& n = names[rng() % names.size()];
    if (rng() % 3 == 0) {
      f.put(n);
      if (auto it = find(n); it != queue.end()) remove(it);
      if (queue.size() == capacity) evict();
      queue.push_back({n, false});
    } else {
      bool hit = get(f.st, sieve_fixture::k(n)) != nullptr;
      auto it = find(n);
      ASSERT_EQ(hit, it != queue.end()) << "op " << op << " get " << n;
      if (hit) it->visited = true;
    }
    std::string expected;
    for (const auto& name : names)
      if (find(name) != queue.end()) expected += name;
    ASSERT_EQ(f.contents(names), expected) << "after op " << op;
  }
  EXPECT_GT(f.st.evictions(), 100u);
}

}  // namespace
}  // namespace qcache::detail
