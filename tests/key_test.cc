// Specification of cache keys and invalidation tags (CORRECTNESS.md P11).
//
// A key is the exact bytes of (context, kind, SQL, typed parameters). Two different
// statements must never share key bytes, so every ambiguity that has bitten other
// caches (NULL vs '', 1 vs '1', ('ab','c') vs ('a','bc'), hash-only keys) is a case here.
#include <gtest/gtest.h>
#include <qcache/key.h>
#include <qcache/tags.h>

#include <algorithm>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace qcache {
namespace {

using param = std::pair<param_type, std::string>;

struct statement {
  std::uint32_t context = 1;
  char kind = 'x';
  std::string sql;
  std::vector<param> params;
};

key key_of(const statement& s) {
  key_builder b;
  b.start(s.context, s.kind, s.sql);
  for (const auto& [t, v] : s.params) b.add(t, v);
  return b.finish();
}

key key_of(std::string_view sql, std::vector<param> params = {}) {
  return key_of(statement{1, 'x', std::string(sql), std::move(params)});
}

param null_p() { return {param_type::null, ""}; }
param text(std::string s) { return {param_type::text, std::move(s)}; }
param integer(std::string s) { return {param_type::integer, std::move(s)}; }

// ---- keys -----------------------------------------------------------------------

TEST(key, equal_statements_give_equal_bytes_and_hash) {
  key a = key_of("select * from t where id = $1", {integer("1")});
  key b = key_of("select * from t where id = $1", {integer("1")});
  EXPECT_EQ(a.bytes, b.bytes);
  EXPECT_EQ(a.hash, b.hash);
  EXPECT_EQ(a.hash, hash_bytes(a.bytes));
}

// Every pair in this table differs in exactly one way that a careless encoding loses.
TEST(key, statements_that_differ_never_share_bytes) {
  const std::string sql = "select * from t where a = $1";
  const std::vector<std::pair<const char*, std::pair<statement, statement>>> cases = {
      {"NULL vs ''", {{1, 'x', sql, {null_p()}}, {1, 'x', sql, {text("")}}}},
      {"NULL vs missing", {{1, 'x', sql, {null_p()}}, {1, 'x', sql, {}}}},
      {"'' vs missing", {{1, 'x', sql, {text("")}}, {1, 'x', sql, {}}}},
      {"integer 1 vs text '1'", {{1, 'x', sql, {integer("1")}}, {1, 'x', sql, {text("1")}}}},
      {"('ab','c') vs ('a','bc')",
       {{1, 'x', sql, {text("ab"), text("c")}}, {1, 'x', sql, {text("a"), text("bc")}}}},
      {"('a','') vs ('','a')",
       {{1, 'x', sql, {text("a"), text("")}}, {1, 'x', sql, {text(""), text("a")}}}},
      {"(NULL,'') vs ('',NULL)",
       {{1, 'x', sql, {null_p(), text("")}}, {1, 'x', sql, {text(""), null_p()}}}},
      {"one param vs two params",
       {{1, 'x', sql, {text("ab")}}, {1, 'x', sql, {text("a"), text("b")}}}},
      {"SQL/param boundary", {{1, 'x', "select $1", {text("x")}}, {1, 'x', "select $1x", {}}}},
      {"same SQL, different context",
       {{1, 'x', sql, {integer("1")}}, {2, 'x', sql, {integer("1")}}}},
      {"same SQL, different kind", {{1, 'x', sql, {integer("1")}}, {1, 'y', sql, {integer("1")}}}},
      {"kind byte NUL vs 'x'", {{1, '\0', sql, {}}, {1, 'x', sql, {}}}},
      {"boolean vs integer",
       {{1, 'x', sql, {{param_type::boolean, "1"}}}, {1, 'x', sql, {integer("1")}}}},
      {"binary vs text", {{1, 'x', sql, {{param_type::binary, "a"}}}, {1, 'x', sql, {text("a")}}}},
      {"date vs other",
       {{1, 'x', sql, {{param_type::date, "2024-01-01"}}},
        {1, 'x', sql, {{param_type::other, "2024-01-01"}}}}},
      {"floating vs text",
       {{1, 'x', sql, {{param_type::floating, "1.5"}}}, {1, 'x', sql, {text("1.5")}}}},
      {"embedded NUL in SQL",
       {{1, 'x', std::string("select 1\0 ", 10), {}},
        {1, 'x', std::string("select 1\0x", 10), {}}}},
      {"SQL with trailing NUL vs without",
       {{1, 'x', std::string("select 1\0", 9), {}}, {1, 'x', "select 1", {}}}},
      {"embedded NUL in a parameter",
       {{1, 'x', sql, {text(std::string("a\0b", 3))}},
        {1, 'x', sql, {text(std::string("a\0c", 3))}}}},
      {"parameter NUL vs empty",
       {{1, 'x', sql, {text(std::string("\0", 1))}}, {1, 'x', sql, {text("")}}}},
      {"SQL whitespace", {{1, 'x', "select 1", {}}, {1, 'x', "select  1", {}}}},
      {"SQL case", {{1, 'x', "select 1", {}}, {1, 'x', "SELECT 1", {}}}},
  };
  for (const auto& [name, pair] : cases) {
    key a = key_of(pair.first);
    key b = key_of(pair.second);
    EXPECT_NE(a.bytes, b.bytes) << name;
    EXPECT_NE(a.hash, b.hash) << name;
  }
}

// The pairwise table above, generalised: every statement of a product of small choices
// gets its own key.
TEST(key, a_product_of_small_variations_gives_pairwise_distinct_keys) {
  const std::vector<std::vector<param>> param_lists = {
      {},
      {null_p()},
      {text("")},
      {text("1")},
      {integer("1")},
      {text("ab"), text("c")},
      {text("a"), text("bc")},
      {text("abc")},
      {null_p(), null_p()},
      {text(std::string(1, '\0'))},
      {text(std::string(127, 'z'))},
      {text(std::string(128, 'z'))},
  };
  std::set<std::string> seen;
  std::size_t n = 0;
  for (std::uint32_t ctx : {1u, 2u, 256u})
    for (char kind : {'a', 'b', '\0'})
      for (const std::string& sql :
           std::vector<std::string>{"", "s", "select $1", std::string("s\0", 2)})
        for (const auto& ps : param_lists) {
          seen.insert(key_of(statement{ctx, kind, sql, ps}).bytes);
          ++n;
        }
  EXPECT_EQ(seen.size(), n);
}

TEST(key, one_mebibyte_texts_that_differ_in_their_last_byte_get_different_keys) {
  std::string big(1u << 20, 'q');
  std::string big2 = big;
  big2.back() = 'r';
  EXPECT_EQ(key_of(big).bytes, key_of(big).bytes);
  EXPECT_NE(key_of(big).bytes, key_of(big2).bytes);
  EXPECT_NE(key_of(big).hash, key_of(big2).hash);
  EXPECT_NE(key_of("s", {text(big)}).bytes, key_of("s", {text(big2)}).bytes);
}

TEST(key, one_mebibyte_parameters_keep_their_boundaries) {
  std::string big(1u << 20, 'q');
  // (big + "q", "") vs (big, "q"): same concatenation, different parameters.
  key a = key_of("s", {text(big + "q"), text("")});
  key b = key_of("s", {text(big), text("q")});
  EXPECT_NE(a.bytes, b.bytes);
  // A 1 MiB SQL text vs the same text split between SQL and a parameter.
  EXPECT_NE(key_of(big + "q").bytes, key_of(big, {text("q")}).bytes);
  // The whole payload is in the key, not a digest of it.
  EXPECT_GT(a.bytes.size(), big.size());
}

TEST(key, parameter_count_is_part_of_the_key) {
  std::set<std::string> seen;
  for (int n = 0; n < 300; ++n) {
    std::vector<param> ps(n, null_p());
    EXPECT_TRUE(seen.insert(key_of("s", ps).bytes).second) << n << " NULL parameters";
  }
}

TEST(key, a_reused_builder_gives_the_same_keys_as_a_fresh_one) {
  key_builder reused;
  reused.start(7, 'k', "first statement, with a long text that leaves capacity behind");
  reused.add(param_type::text, std::string(1000, 'x'));
  reused.add_null();
  key first = reused.finish();

  reused.start(1, 'x', "s");
  reused.add(param_type::integer, "1");
  key second = reused.finish();
  EXPECT_EQ(second.bytes, key_of("s", {integer("1")}).bytes);
  EXPECT_EQ(second.hash, key_of("s", {integer("1")}).hash);

  // Started again without parameters: no parameter of the previous key leaks in.
  reused.start(1, 'x', "s");
  EXPECT_EQ(reused.finish().bytes, key_of("s").bytes);

  // finish_into reuses the output's storage and gives the same key as finish().
  key out = first;
  reused.start(1, 'x', "s");
  reused.add(param_type::integer, "1");
  reused.finish_into(out);
  EXPECT_EQ(out.bytes, second.bytes);
  EXPECT_EQ(out.hash, second.hash);

  statement s{7,
              'k',
              "first statement, with a long text that leaves capacity behind",
              {text(std::string(1000, 'x')), null_p()}};
  EXPECT_EQ(first.bytes, key_of(s).bytes);
}

TEST(key, finishing_twice_gives_the_same_key) {
  key_builder b;
  b.start(3, 'p', "select $1");
  b.add(param_type::text, "v");
  key a = b.finish();
  key c = b.finish();
  EXPECT_EQ(a.bytes, c.bytes);
  EXPECT_EQ(a.hash, c.hash);
}

// ---- contexts -------------------------------------------------------------------

TEST(intern_context, equal_texts_get_equal_ids_and_different_texts_different_ids) {
  std::uint32_t a = intern_context("db=app role=alice search_path=public");
  std::uint32_t b = intern_context("db=app role=bob search_path=public");
  EXPECT_EQ(a, intern_context("db=app role=alice search_path=public"));
  EXPECT_NE(a, b);
  EXPECT_NE(intern_context(""), intern_context(std::string_view("\0", 1)));
  EXPECT_NE(intern_context("ab"), intern_context(std::string_view("ab\0", 3)));
}

TEST(intern_context, threads_interning_the_same_texts_agree_on_every_id) {
  constexpr int kThreads = 8;
  constexpr int kTexts = 500;
  std::vector<std::vector<std::uint32_t>> ids(kThreads, std::vector<std::uint32_t>(kTexts));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &ids] {
      // Each thread walks the texts in its own order so first sightings race.
      for (int i = 0; i < kTexts; ++i) {
        int j = (t % 2) ? kTexts - 1 - i : (i * 7 + t) % kTexts;
        ids[t][j] = intern_context("intern-thread-test-" + std::to_string(j));
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 1; t < kThreads; ++t) EXPECT_EQ(ids[t], ids[0]) << "thread " << t;
  std::set<std::uint32_t> distinct(ids[0].begin(), ids[0].end());
  EXPECT_EQ(distinct.size(), static_cast<std::size_t>(kTexts));
}

// ---- tags -----------------------------------------------------------------------

TEST(tags, are_deterministic) {
  EXPECT_EQ(tags::global(), tags::global());
  EXPECT_EQ(tags::table("db", "t"), tags::table("db", "t"));
  EXPECT_EQ(tags::predicate("db", "t", "c", "1"), tags::predicate("db", "t", "c", "1"));
}

// Different kinds, and parts split at different places, never give the same tag.
// (A shared tag would only cost misses, but these are the collisions an ambiguous
// encoding would produce systematically.)
TEST(tags, distinct_kinds_and_parts_never_share_a_tag) {
  const std::vector<std::pair<std::string, tags::tag>> table = {
      {"global()", tags::global()},
      {"database('')", tags::database("")},
      {"database('a')", tags::database("a")},
      {"database('abc')", tags::database("abc")},
      {"table('a','bc')", tags::table("a", "bc")},
      {"table('ab','c')", tags::table("ab", "c")},
      {"table('abc','')", tags::table("abc", "")},
      {"table('','abc')", tags::table("", "abc")},
      {"table('','')", tags::table("", "")},
      {"table_epoch('a','bc')", tags::table_epoch("a", "bc")},
      {"table_epoch('ab','c')", tags::table_epoch("ab", "c")},
      {"table_epoch('','')", tags::table_epoch("", "")},
      {"column_epoch('a','b','c')", tags::column_epoch("a", "b", "c")},
      {"column_epoch('ab','','c')", tags::column_epoch("ab", "", "c")},
      {"column_epoch('a','bc','')", tags::column_epoch("a", "bc", "")},
      {"column_epoch('','','')", tags::column_epoch("", "", "")},
      {"predicate('a','b','c','d')", tags::predicate("a", "b", "c", "d")},
      {"predicate('a','b','cd','')", tags::predicate("a", "b", "cd", "")},
      {"predicate('a','b','','cd')", tags::predicate("a", "b", "", "cd")},
      {"predicate('ab','','c','d')", tags::predicate("ab", "", "c", "d")},
      {"predicate('a','b','c','')", tags::predicate("a", "b", "c", "")},
      {"predicate('a','b','c',NUL)", tags::predicate("a", "b", "c", std::string_view("\0", 1))},
      {"predicate('','','','')", tags::predicate("", "", "", "")},
  };
  for (std::size_t i = 0; i < table.size(); ++i)
    for (std::size_t j = i + 1; j < table.size(); ++j)
      EXPECT_NE(table[i].second, table[j].second) << table[i].first << " vs " << table[j].first;
}

}  // namespace
}  // namespace qcache
