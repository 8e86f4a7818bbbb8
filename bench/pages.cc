// qcache-bench --pages: the blog workload rendering real pages (issue 12).
//
// Workload: the blog data set (workloads.cc) on a SQLite file. An operation is a post page
// view (Zipf-popular post: the post and its author, its first 50 comments with their
// authors, the comment count, rendered to an HTML string) or, with --write-ratio, a write
// (a new comment on a Zipf-popular post, 3 in 4; an edit of a post, 1 in 4). Three modes,
// each on freshly loaded data, one thread, same seed: uncached (plain SOCI), cached queries
// (qcache, each page's statements cached), cached pages (the whole page memoized).
//
// Reported per mode: operations/s, mean page view time, and for cached pages the page hit
// ratio beside the ideal one (a page view must miss the first time and after a write to
// its post: the --oracle of pages, computed from the writes the run made), and
// stale_entries: at the end every page viewed is served from the cache when stored and
// compared with a fresh render on a plain connection; any difference is a stale entry.
#include <qcache/memoize.h>
#include <qcache/soci.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "bench.h"

namespace qcache::bench {
namespace {

using clock_type = std::chrono::steady_clock;

std::string esc(const std::string& s) {
  std::string r;
  r.reserve(s.size());
  for (char c : s) {
    if (c == '<')
      r += "&lt;";
    else if (c == '>')
      r += "&gt;";
    else if (c == '&')
      r += "&amp;";
    else
      r += c;
  }
  return r;
}

std::string text(const ::soci::row& r, std::size_t i) {
  if (r.get_indicator(i) == ::soci::i_null) return "";
  switch (r.get_properties(i).get_data_type()) {
    case ::soci::dt_string:
      return r.get<std::string>(i);
    case ::soci::dt_integer:
      return std::to_string(r.get<int>(i));
    case ::soci::dt_long_long:
      return std::to_string(r.get<long long>(i));
    case ::soci::dt_unsigned_long_long:
      return std::to_string(r.get<unsigned long long>(i));
    case ::soci::dt_double:
      return std::to_string(r.get<double>(i));
    default:
      return "?";
  }
}

// The post page, from its three queries.
std::string render(::soci::session& s, long long id) {
  std::string h = "<html><body><article>";
  {
    ::soci::rowset<::soci::row> rs =
        (s.prepare << "SELECT p.id, p.title, p.body, p.created_at, u.id, u.name FROM qb_posts p "
                      "JOIN qb_users u ON u.id = p.author_id WHERE p.id = :id",
         ::soci::use(id, "id"));
    for (const auto& r : rs)
      h += "<h1>" + esc(text(r, 1)) + "</h1><p class=by>by <a href=/u/" + text(r, 4) + ">" +
           esc(text(r, 5)) + "</a> at " + text(r, 3) + "</p><div>" + esc(text(r, 2)) + "</div>";
  }
  long long count = 0;
  s << "SELECT count(*) FROM qb_comments WHERE post_id = :id", ::soci::into(count),
      ::soci::use(id, "id");
  h += "<h2>" + std::to_string(count) + " comments</h2><ol>";
  ::soci::rowset<::soci::row> rs =
      (s.prepare << "SELECT c.id, c.body, c.created_at, u.name FROM qb_comments c "
                    "JOIN qb_users u ON u.id = c.author_id WHERE c.post_id = :id "
                    "ORDER BY c.id LIMIT 50",
       ::soci::use(id, "id"));
  for (const auto& r : rs)
    h += "<li id=c" + text(r, 0) + "><b>" + esc(text(r, 3)) + "</b> " + esc(text(r, 1)) + " <i>" +
         text(r, 2) + "</i></li>";
  return h + "</ol></article></body></html>";
}

enum class page_mode { uncached, queries, pages };
const char* name_of(page_mode m) {
  return m == page_mode::uncached  ? "uncached"
         : m == page_mode::queries ? "cached-queries"
                                   : "cached-pages";
}

struct result {
  double seconds = 0;
  std::uint64_t ops = 0, views = 0, writes = 0;
  double view_ns = 0, hit_view_ns = 0, miss_view_ns = 0;
  std::uint64_t hit_views = 0;
  std::uint64_t ideal_misses = 0;
  std::uint64_t stale = 0, checked = 0;
  std::uint64_t page_bytes = 0;
  qcache::stats st;
};

struct run_env {
  const pages_config& c;
  std::int64_t posts, users, comments;
};

result run_mode(const run_env& e, page_mode m, workload& wl) {
  {  // fresh data for every mode
    target_config tc;
    tc.sqlite_file = e.c.sqlite_file;
    auto t = make_sqlite_target(tc);
    t->set_statements(wl.statements());
    auto direct = t->connect_direct();
    wl.load(*direct, dialect::sqlite);
  }
  const std::string conn = "db=" + e.c.sqlite_file + " timeout=5";
  auto cache = std::make_shared<qcache::cache>(qcache::options{});
  qcache::soci::caching_factory factory(cache, ::soci::sqlite3);
  auto sp = m == page_mode::uncached ? std::make_unique<::soci::session>(::soci::sqlite3, conn)
                                     : std::make_unique<::soci::session>(factory, conn);
  ::soci::session& s = *sp;
  s << "PRAGMA synchronous = NORMAL";  // as the other SQLite targets (targets_soci.cc)
  s << "PRAGMA busy_timeout = 10000";
  zipf pop(static_cast<std::size_t>(e.posts), e.c.zipf_s);
  std::mt19937_64 rng(e.c.seed);
  std::int64_t next_comment = e.comments + 1;
  std::unordered_map<std::int64_t, bool> clean;  // oracle: viewed since the last write to it
  result r;

  // A view hands the page out (its size, as a server writing it would): the memoized page
  // is the stored immutable string, shared, not copied.
  auto view = [&](std::int64_t id) -> std::size_t {
    if (m != page_mode::pages) return render(s, id).size();
    return cache->memoize_shared("post_page", id, [&] { return render(s, id); })->size();
  };
  auto one = [&](bool measured) {
    std::int64_t post = static_cast<std::int64_t>(pop(rng)) + 1;
    if (std::uniform_real_distribution<double>(0, 1)(rng) < e.c.write_ratio) {
      if (rng() % 4) {
        long long id = next_comment++, author = static_cast<long long>(rng() % e.users) + 1,
                  p = post, at = 3000000 + id;
        std::string body = "comment " + std::to_string(id);
        s << "INSERT INTO qb_comments (id, post_id, author_id, body, created_at) VALUES "
             "(:a, :b, :c, :d, :e)",
            ::soci::use(id), ::soci::use(p), ::soci::use(author), ::soci::use(body),
            ::soci::use(at);
      } else {
        long long p = post;
        std::string title = "edited " + std::to_string(rng() % 1000);
        s << "UPDATE qb_posts SET title = :t WHERE id = :id", ::soci::use(title), ::soci::use(p);
      }
      clean[post] = false;
      if (measured) ++r.writes;
      return;
    }
    auto hits = cache->stats().memo_hits;
    auto t0 = clock_type::now();
    std::size_t bytes = view(post);
    r.page_bytes += bytes;
    double ns = std::chrono::duration<double, std::nano>(clock_type::now() - t0).count();
    bool& c = clean[post];
    if (!measured) {
      c = true;
      return;
    }
    ++r.views;
    r.view_ns += ns;
    if (!c) ++r.ideal_misses;
    c = true;
    if (m == page_mode::pages && cache->stats().memo_hits > hits) {
      ++r.hit_views;
      r.hit_view_ns += ns;
    } else {
      r.miss_view_ns += ns;
    }
  };
  auto run_for = [&](double seconds, bool measured) {
    auto start = clock_type::now();
    auto end = start + std::chrono::duration<double>(seconds);
    std::uint64_t n = 0;
    while (clock_type::now() < end) {
      one(measured);
      ++n;
    }
    if (measured) {
      r.ops = n;
      r.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
    }
  };
  run_for(e.c.warmup, false);
  run_for(e.c.duration, true);
  r.st = cache->stats();
  if (m == page_mode::pages) {  // stale_entries: every stored page against a fresh render
    ::soci::session plain(::soci::sqlite3, conn);
    for (const auto& [post, c] : clean) {
      (void)c;
      bool ran = false;
      auto v = cache->memoize_shared("post_page", post, [&] {
        ran = true;
        return std::string();
      });
      if (ran) continue;  // not stored (or no longer current): nothing to serve
      ++r.checked;
      if (*v != render(plain, post)) ++r.stale;
    }
  }
  return r;
}

}  // namespace

int run_pages(const pages_config& c) {
  workload_config wc;
  wc.scale = c.scale;
  wc.zipf_s = c.zipf_s;
  wc.seed = c.seed;
  wc.write_ratio = c.write_ratio;
  auto wl = make_workload("blog", wc);
  run_env e{c, std::max<std::int64_t>(10, std::llround(10000 * c.scale)),
            std::max<std::int64_t>(10, std::llround(1000 * c.scale)),
            std::max<std::int64_t>(10, std::llround(50000 * c.scale))};
  std::printf(
      "pages: blog post pages on SQLite (%s), %.0f %% writes, zipf %.2f, %lld posts, "
      "%.1f s per mode after %.1f s warm-up, 1 thread\n",
      c.sqlite_file.c_str(), c.write_ratio * 100, c.zipf_s, static_cast<long long>(e.posts),
      c.duration, c.warmup);
  std::printf("%-15s %10s %10s %12s %12s %10s %10s %14s\n", "mode", "ops/s", "views/s", "view_us",
              "hit_view_us", "page_hits", "ideal", "stale_entries");
  result res[3];
  int rc = 0;
  for (page_mode m : {page_mode::uncached, page_mode::queries, page_mode::pages}) {
    result& r = res[static_cast<int>(m)];
    r = run_mode(e, m, *wl);
    double ideal = r.views ? 1.0 - double(r.ideal_misses) / double(r.views) : 0;
    std::string hits = "-", stale = "-", hit_us = "-";
    char buf[64];
    if (m == page_mode::pages) {
      std::snprintf(buf, sizeof buf, "%.3f", r.views ? double(r.hit_views) / double(r.views) : 0);
      hits = buf;
      std::snprintf(buf, sizeof buf, "%.2f", r.hit_views ? r.hit_view_ns / r.hit_views / 1e3 : 0);
      hit_us = buf;
      stale = std::to_string(r.stale) + "/" + std::to_string(r.checked);
      if (r.stale) rc = 2;
    } else if (m == page_mode::queries) {
      std::snprintf(buf, sizeof buf, "q%.3f", r.st.hit_ratio());
      hits = buf;
    }
    std::printf("%-15s %10.0f %10.0f %12.2f %12s %10s %10.3f %14s\n", name_of(m), r.ops / r.seconds,
                r.views / r.seconds, r.views ? r.view_ns / r.views / 1e3 : 0, hit_us.c_str(),
                hits.c_str(), ideal, stale.c_str());
    std::fflush(stdout);
  }
  const result &u = res[0], &q = res[1], &p = res[2];
  double uncached_view = u.views ? u.view_ns / u.views : 0;
  double hit_view = p.hit_views ? p.hit_view_ns / p.hit_views : 0;
  std::printf("cached pages vs cached queries: %.2fx operations/s\n",
              (p.ops / p.seconds) / (q.ops / q.seconds));
  std::printf("page hit vs uncached page: %.0fx faster (%.2f us vs %.2f us)\n",
              hit_view > 0 ? uncached_view / hit_view : 0, hit_view / 1e3, uncached_view / 1e3);
  std::printf(
      "memo counters: hits %llu, misses %llu, stores %llu, not stored %llu, "
      "stale rejected %llu\n",
      static_cast<unsigned long long>(p.st.memo_hits),
      static_cast<unsigned long long>(p.st.memo_misses),
      static_cast<unsigned long long>(p.st.memo_stores),
      static_cast<unsigned long long>(p.st.memo_not_stored),
      static_cast<unsigned long long>(p.st.memo_stale_rejected));
  std::printf("stale_entries (pages): %llu\n", static_cast<unsigned long long>(p.stale));
  return rc;
}

}  // namespace qcache::bench
