// Specification of cache::memoize (issue 12), database-free: reads are simulated with the
// adapter interface exactly as the engines use it (lookup, capture, store / store_named,
// count_uncacheable, begin_write), so every rule is checked at the one place both engines
// pass through.
#include <gtest/gtest.h>
#include <qcache/cache.h>
#include <qcache/memoize.h>
#include <qcache/tags.h>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace qcache {
namespace {

struct text_value : cached_value {
  explicit text_value(std::string v) : s(std::move(v)) {}
  std::string s;
  std::size_t bytes() const noexcept override { return s.size(); }
};

std::shared_ptr<cache> make_cache() {
  options o;
  o.max_bytes = 8u << 20;
  o.version_slots = 1024;
  o.shards = 4;
  return std::make_shared<cache>(o);
}

key stmt_key(std::string_view sql) {
  key_builder b;
  b.start(intern_context("memoize_test"), 'x', sql);
  return b.finish();
}

tags::tag t(std::string_view name) { return tags::table("db", name); }

// A read as an engine makes it: a hit, or capture, "run", store. Returns the value.
std::string read(cache& c, std::string_view sql, std::vector<tags::tag> deps) {
  key k = stmt_key(sql);
  if (auto v = c.lookup(k)) return static_cast<const text_value&>(*v).s;
  dependencies d;
  d.tags = std::move(deps);
  snapshot s = c.capture(d);
  c.count_miss();
  auto v = std::make_shared<text_value>(std::string(sql) + "#result");
  c.store(k, s, v);
  return v->s;
}

// Moves `tag` from another thread, as another connection's write would (a write on the
// memo's own thread makes it unstorable by itself, which is a different rule).
void write_elsewhere(cache& c, tags::tag tag) {
  std::thread([&] { c.invalidate(std::span<const tags::tag>(&tag, 1)); }).join();
}

struct Memoize : ::testing::Test {
  std::shared_ptr<cache> c = make_cache();
  int runs = 0;
  std::string page(int id) {
    return c->memoize("page", id, [&] {
      ++runs;
      return read(*c, "posts " + std::to_string(id), {t("posts")}) + "|" +
             read(*c, "comments " + std::to_string(id), {t("comments")});
    });
  }
};

TEST_F(Memoize, SecondCallIsAHitAndRunsNothing) {
  std::string a = page(1);
  auto before = c->stats();
  EXPECT_EQ(page(1), a);
  EXPECT_EQ(runs, 1);
  auto after = c->stats();
  EXPECT_EQ(after.hits, before.hits) << "a page hit makes no statement lookup";
  EXPECT_EQ(after.memo_hits, 1u);
  EXPECT_EQ(after.memo_misses, 1u);
  EXPECT_EQ(after.memo_stores, 1u);
}

TEST_F(Memoize, AWriteToAnyReadDependencyInvalidates) {
  page(1);
  write_elsewhere(*c, t("comments"));
  page(1);
  EXPECT_EQ(runs, 2);
  page(1);
  EXPECT_EQ(runs, 2);
  write_elsewhere(*c, t("posts"));
  page(1);
  EXPECT_EQ(runs, 3);
}

TEST_F(Memoize, AWriteToSomethingElseLeavesItAHit) {
  page(1);
  write_elsewhere(*c, t("users"));
  page(1);
  EXPECT_EQ(runs, 1);
}

TEST_F(Memoize, ReadsThatHitPassTheirEntriesVersions) {
  read(*c, "posts 1", {t("posts")});  // cached before the page
  page(1);
  EXPECT_EQ(c->stats().memo_stores, 1u);
  write_elsewhere(*c, t("posts"));
  page(1);
  EXPECT_EQ(runs, 2);
}

TEST_F(Memoize, KeyPartsAreTypedAndTheTypeIsPartOfTheKey) {
  int n = 0;
  auto a = c->memoize("k", 1, [&] { return ++n; });
  auto b = c->memoize("k", "1", [&] { return ++n; });
  auto d = c->memoize("k", 1, [&] { return std::to_string(++n); });
  auto e = c->memoize("k", 1, std::string("x"), [&] { return ++n; });
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 2);
  EXPECT_EQ(d, "3");
  EXPECT_EQ(e, 4);
  EXPECT_EQ(c->memoize("k", 1, [&] { return ++n; }), 1);
  EXPECT_EQ(c->memoize("k", 1, [&] { return std::to_string(++n); }), "3");
}

TEST_F(Memoize, SharedValueIsTheStoredObject) {
  auto a = c->memoize_shared("v", 7, [] { return std::vector<int>{1, 2, 3}; });
  auto b = c->memoize_shared("v", 7, [] { return std::vector<int>{}; });
  EXPECT_EQ(a.get(), b.get());
  EXPECT_EQ(b->size(), 3u);
}

TEST_F(Memoize, NestingPassesInnerDependenciesToTheOuter) {
  int outer = 0, inner = 0;
  auto frag = [&] {
    return c->memoize("comments_fragment", 1, [&] {
      ++inner;
      return read(*c, "comments 1", {t("comments")});
    });
  };
  auto whole = [&] {
    return c->memoize("whole", 1, [&] {
      ++outer;
      return read(*c, "posts 1", {t("posts")}) + frag();
    });
  };
  whole();
  whole();
  EXPECT_EQ(outer, 1);
  write_elsewhere(*c, t("comments"));
  whole();
  EXPECT_EQ(outer, 2) << "the outer value depends on the inner's reads";
  EXPECT_EQ(inner, 2);
  // An outer value built on an inner hit depends on it too.
  int other = 0;
  auto whole2 = [&] {
    return c->memoize("whole2", 1, [&] {
      ++other;
      return frag();
    });
  };
  whole2();
  EXPECT_EQ(inner, 2);
  write_elsewhere(*c, t("comments"));
  whole2();
  EXPECT_EQ(other, 2);
}

TEST_F(Memoize, AnExceptionStoresNothingAndPropagatesUnchanged) {
  struct boom : std::runtime_error {
    using std::runtime_error::runtime_error;
  };
  EXPECT_THROW(c->memoize("x", 1,
                          [&]() -> std::string {
                            read(*c, "posts 1", {t("posts")});
                            throw boom("b");
                          }),
               boom);
  EXPECT_EQ(c->stats().memo_stores, 0u);
  EXPECT_EQ(c->memoize("x", 1, [] { return std::string("ok"); }), "ok");
  // An outer scope that catches the inner's exception depends on what the inner read.
  int outer = 0;
  auto whole = [&] {
    return c->memoize("catching", 1, [&] {
      ++outer;
      try {
        return c->memoize("throws", 1, [&]() -> std::string {
          read(*c, "comments 1", {t("comments")});
          throw boom("b");
        });
      } catch (const boom&) {
        return std::string("fallback");
      }
    });
  };
  EXPECT_EQ(whole(), "fallback");
  EXPECT_EQ(whole(), "fallback");
  EXPECT_EQ(outer, 1);
  write_elsewhere(*c, t("comments"));
  whole();
  EXPECT_EQ(outer, 2);
}

TEST_F(Memoize, AWriteInsideTheFunctionIsReturnedNotStored) {
  int n = 0;
  auto f = [&] {
    return c->memoize("w", 1, [&] {
      ++n;
      tags::tag x = t("audit");
      auto h = c->begin_write(std::span<const tags::tag>(&x, 1), invalidation_cause::write);
      return read(*c, "posts 1", {t("posts")});
    });
  };
  EXPECT_EQ(f(), "posts 1#result");
  EXPECT_EQ(f(), "posts 1#result");
  EXPECT_EQ(n, 2);
  EXPECT_EQ(c->stats().memo_not_stored, 2u);
}

TEST_F(Memoize, AnUncachedReadMakesItUnstorableAndSoDoesAnOuter) {
  int n = 0;
  auto f = [&] {
    return c->memoize("u", 1, [&] {
      ++n;
      return c->memoize("inner", 1, [&] {
        c->count_uncacheable(uncacheable_reason::volatile_function);
        return std::string("random");
      });
    });
  };
  f();
  f();
  EXPECT_EQ(n, 2);
  EXPECT_EQ(c->stats().memo_stores, 0u);
}

TEST_F(Memoize, AReadThatNeverStoredMakesItUnstorable) {
  int n = 0;
  auto f = [&] {
    return c->memoize("unsettled", 1, [&] {
      ++n;
      dependencies d;
      d.tags = {t("posts")};
      snapshot s = c->capture(d);  // then an error: the engine never stores
      return 1;
    });
  };
  f();
  f();
  EXPECT_EQ(n, 2);
}

TEST_F(Memoize, StaleSetRaceAWriteBetweenTwoReadsLeavesNothingStored) {
  // Read 1 captures comments; another session writes comments; read 2 (same tag) captures
  // the new version. The page mixes the old and the new state: it must not be stored.
  int n = 0;
  auto f = [&] {
    return c->memoize("race", 1, [&] {
      ++n;
      std::string a = read(*c, "comments count 1", {t("comments")});
      if (n == 1) write_elsewhere(*c, t("comments"));
      return a + read(*c, "comments list 1", {t("comments")});
    });
  };
  f();
  EXPECT_EQ(c->stats().memo_stores, 0u);
  f();
  EXPECT_EQ(n, 2);
  EXPECT_EQ(c->stats().memo_stores, 1u);
}

TEST_F(Memoize, ADependencyMovedWhileItRanLeavesNothingStored) {
  c->set_test_hook_before_store([&] {});
  int n = 0;
  auto f = [&] {
    return c->memoize("moved", 1, [&] {
      ++n;
      std::string a = read(*c, "posts 1", {t("posts")});
      if (n == 1) write_elsewhere(*c, t("posts"));  // after the read stored
      return a;
    });
  };
  f();
  f();
  EXPECT_EQ(n, 2);
  f();
  EXPECT_EQ(n, 2);
}

TEST_F(Memoize, InFlightWriteAtCaptureMakesItUnstorable) {
  tags::tag x = t("posts");
  write_hold h;
  std::thread([&] {
    h = c->begin_write(std::span<const tags::tag>(&x, 1), invalidation_cause::write);
  }).join();
  int n = 0;
  auto f = [&] {
    return c->memoize("inflight", 1, [&] {
      ++n;
      return read(*c, "posts 1", {t("posts")});
    });
  };
  f();
  h.release(true);
  f();
  f();
  EXPECT_EQ(n, 2);
}

TEST_F(Memoize, NamedResultDependenciesReplaceTheFences) {
  // A read whose rows are named from its result (store_named): the memo keeps the named
  // tags, not the table fence, exactly like the statement entry.
  auto f = [&] {
    return c->memoize("named", 1, [&] {
      key k = stmt_key("join");
      if (auto v = c->lookup(k)) return static_cast<const text_value&>(*v).s;
      dependencies d;
      d.tags = {tags::table_epoch("db", "users")};
      d.fences = {t("users")};
      snapshot s = c->capture(d);
      tags::tag named = tags::predicate("db", "users", "id", "7");
      c->store_named(k, s, std::make_shared<text_value>("alice"),
                     std::span<const tags::tag>(&named, 1));
      return std::string("alice");
    });
  };
  f();
  EXPECT_EQ(c->stats().memo_stores, 1u);
  write_elsewhere(*c, t("users"));  // a write to another user's row moves only the fence
  f();
  EXPECT_EQ(c->stats().memo_hits, 1u);
  write_elsewhere(*c, tags::predicate("db", "users", "id", "7"));
  f();
  EXPECT_EQ(c->stats().memo_hits, 1u);
  EXPECT_EQ(c->stats().memo_stores, 2u);
}

TEST_F(Memoize, DependsOnNamesAreInvalidatedByName) {
  int n = 0;
  auto f = [&] {
    return c->memoize("tpl", 1, [&] {
      ++n;
      depends_on("template:post.html");
      c->depends_on("flag", "name", "dark_mode");
      return 1;
    });
  };
  f();
  f();
  EXPECT_EQ(n, 1);
  c->invalidate_name("other");
  c->invalidate_name("flag", "name", "beta");
  f();
  EXPECT_EQ(n, 1);
  c->invalidate_name("template:post.html");
  f();
  EXPECT_EQ(n, 2);
  c->invalidate_name("flag", "name", "dark_mode");
  f();
  EXPECT_EQ(n, 3);
  c->invalidate_name("flag");
  f();
  EXPECT_EQ(n, 4);
}

TEST_F(Memoize, FlushInvalidatesAndAFlushInsideIsNotStored) {
  page(1);
  c->flush();
  page(1);
  EXPECT_EQ(runs, 2);
  int n = 0;
  auto f = [&] {
    return c->memoize("fl", 1, [&] {
      ++n;
      c->flush();
      return 0;
    });
  };
  f();
  f();
  EXPECT_EQ(n, 2);
}

TEST_F(Memoize, ReadsOnOtherThreadsAreSeenOnlyThroughACarry) {
  // Without a carry, a worker's read is invisible: the memo stays a hit after it moves
  // (the documented limitation).
  int n = 0;
  auto blind = [&] {
    return c->memoize("blind", 1, [&] {
      ++n;
      std::string r;
      std::thread([&] { r = read(*c, "comments 9", {t("comments")}); }).join();
      return r;
    });
  };
  blind();
  write_elsewhere(*c, t("comments"));
  blind();
  EXPECT_EQ(n, 1);
  // With a carry the worker's reads are the memo's.
  int m = 0;
  auto carried = [&] {
    return c->memoize("carried", 1, [&] {
      ++m;
      std::string r;
      memo_carry carry;
      std::thread([&] {
        memo_carry::adopt in(carry);
        r = read(*c, "comments 10", {t("comments")});
      }).join();
      return r;
    });
  };
  carried();
  carried();
  EXPECT_EQ(m, 1);
  write_elsewhere(*c, t("comments"));
  carried();
  EXPECT_EQ(m, 2);
  // A worker that writes makes the memo unstorable too.
  int w = 0;
  auto writes = [&] {
    return c->memoize("carried_write", 1, [&] {
      ++w;
      memo_carry carry;
      std::thread([&] {
        memo_carry::adopt in(carry);
        tags::tag x = t("audit");
        c->begin_write(std::span<const tags::tag>(&x, 1), invalidation_cause::write);
      }).join();
      return 0;
    });
  };
  writes();
  writes();
  EXPECT_EQ(w, 2);
}

TEST_F(Memoize, ExplainListsWhatAValueDependsOn) {
  c->memoize("ex", 3, [&] {
    depends_on("template:post.html");
    return read(*c, "SELECT * FROM posts WHERE id = $1", {t("posts")});
  });
  explanation e = c->explain_memo<std::string>("ex", 3);
  EXPECT_EQ(e.kind, "memo");
  EXPECT_TRUE(e.cacheable);
  ASSERT_EQ(e.reads.size(), 1u);
  EXPECT_EQ(e.reads[0], "SELECT * FROM posts WHERE id = $1");
  ASSERT_GE(e.tags.size(), 2u);
  EXPECT_EQ(e.tags[0], "name template:post.html");
  write_elsewhere(*c, t("posts"));
  e = c->explain_memo<std::string>("ex", 3);
  EXPECT_FALSE(e.cacheable);
  EXPECT_EQ(c->explain_memo<int>("ex", 3).reason, "not stored");
}

TEST_F(Memoize, AReadThroughAnotherCacheIsNotTracked) {
  auto other = make_cache();
  int n = 0;
  auto f = [&] {
    return c->memoize("two_caches", 1, [&] {
      ++n;
      return read(*other, "posts 1", {t("posts")});
    });
  };
  f();
  f();
  EXPECT_EQ(n, 2);
}

}  // namespace
}  // namespace qcache
