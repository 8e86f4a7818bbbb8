// Micro-benchmarks of the libpqxx adapter against plain libpqxx, same run, same server.
//
// Workloads (table qb_mb: 100 000 rows of (id integer primary key, v text), unix socket):
//   hit/qcache            SELECT v FROM qb_mb WHERE id = $1, one key, always a hit
//   lookup/plain          the same prepared lookup through plain libpqxx
//   miss/qcache           the same statement over 100 000 keys in sequence, through a
//                         cache too small to hold them (4 MiB budget): every call misses,
//                         runs the query and stores the result (evicting another)
//   miss/plain            plain libpqxx, same key sequence
//   write/qcache          UPDATE qb_mb SET v = $2 WHERE id = $1 through qcache (analysis
//                         memo, write hold, RETURNING of the key, version bumps)
//   write/plain           the same UPDATE through plain libpqxx
// Everything runs through nontransaction + exec_prepared. Ratios (lookup/plain over
// hit/qcache, miss overhead, write overhead) are printed as labels and in a closing table.
//
// Needs QCACHE_PG (a libpq connection string; scripts/pg start DIR writes it to DIR/env).
// Without it, prints why and exits 0. Refuses to report from a build without NDEBUG.
#include <qcache/pqxx.h>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "machine.h"

namespace {

constexpr int kRows = 100000;
const char* const kLookup = "SELECT v FROM qb_mb WHERE id = $1";
const char* const kUpdate = "UPDATE qb_mb SET v = $2 WHERE id = $1";

std::string conninfo() {
  const char* s = std::getenv("QCACHE_PG");
  return s ? s : "";
}

// ns per call of each benchmark, measured by the benchmarks themselves (last run wins).
std::map<std::string, double>& per_call() {
  static std::map<std::string, double> m;
  return m;
}

void setup_table() {
  pqxx::connection c(conninfo());
  pqxx::work w(c);
  w.exec("DROP TABLE IF EXISTS qb_mb");
  w.exec("CREATE TABLE qb_mb (id integer PRIMARY KEY, v text NOT NULL)");
  w.exec("INSERT INTO qb_mb SELECT g, 'value ' || g FROM generate_series(1, " +
         std::to_string(kRows) + ") g");
  w.exec("ANALYZE qb_mb");
  w.commit();
}

struct plain_fixture {
  pqxx::connection conn{conninfo()};
  plain_fixture() {
    conn.prepare("lookup", kLookup);
    conn.prepare("update", kUpdate);
  }
};

struct cached_fixture {
  std::shared_ptr<qcache::cache> cache;
  qcache::pqxx::connection conn;
  explicit cached_fixture(qcache::options o = {})
      : cache(std::make_shared<qcache::cache>(o)), conn(conninfo(), cache) {
    conn.prepare("lookup", kLookup);
    conn.prepare("update", kUpdate);
  }
};

// Times `f` over the benchmark loop in batches of `batch` calls; records the median
// batch mean as "p50_ns" and the overall mean in per_call()[name].
template <class F>
void timed_loop(benchmark::State& st, const std::string& name, int batch, F&& f) {
  using clk = std::chrono::steady_clock;
  std::vector<double> batches;
  auto start = clk::now();
  std::int64_t n = 0;
  int in_batch = 0;
  auto t0 = start;
  for (auto _ : st) {
    f(n++);
    if (++in_batch == batch) {
      auto t1 = clk::now();
      batches.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / batch);
      t0 = t1;
      in_batch = 0;
    }
  }
  double total = std::chrono::duration<double, std::nano>(clk::now() - start).count();
  if (n > 0) per_call()[name] = total / double(n);
  if (!batches.empty()) {
    std::nth_element(batches.begin(), batches.begin() + batches.size() / 2, batches.end());
    st.counters["p50_ns"] = batches[batches.size() / 2];
  }
}

// Labels `self` with its speed-up over `base` (speedup) or its overhead over it.
void label_ratio(benchmark::State& st, const std::string& self, const std::string& base,
                 bool speedup) {
  auto& m = per_call();
  if (m.count(self) && m.count(base) && m[self] > 0) {
    char buf[128];
    if (speedup)
      std::snprintf(buf, sizeof buf, "%.1fx faster than %s", m[base] / m[self], base.c_str());
    else
      std::snprintf(buf, sizeof buf, "overhead %+.1f%% over %s", (m[self] / m[base] - 1) * 100,
                    base.c_str());
    st.SetLabel(buf);
  }
}

void BM_lookup_plain(benchmark::State& st) {
  plain_fixture f;
  pqxx::nontransaction tx(f.conn);
  timed_loop(st, "lookup/plain", 16, [&](std::int64_t) {
    pqxx::result r = tx.exec_prepared("lookup", 42);
    benchmark::DoNotOptimize(r[0][0].c_str());
  });
}

// The same hit with options::follow_changes off (no change stream followed): what the
// stream's up check costs on the hit path.
void BM_hit_qcache_nostream(benchmark::State& st) {
  qcache::options o;
  o.follow_changes = false;
  cached_fixture f(o);
  qcache::pqxx::nontransaction tx(f.conn);
  tx.exec_prepared("lookup", 42);
  timed_loop(st, "hit/qcache_nostream", 256, [&](std::int64_t) {
    pqxx::result r = tx.exec_prepared("lookup", 42);
    benchmark::DoNotOptimize(r[0][0].c_str());
  });
}

void BM_hit_qcache(benchmark::State& st) {
  cached_fixture f;
  qcache::pqxx::nontransaction tx(f.conn);
  tx.exec_prepared("lookup", 42);  // the one miss
  auto before = f.cache->stats();
  timed_loop(st, "hit/qcache", 256, [&](std::int64_t) {
    pqxx::result r = tx.exec_prepared("lookup", 42);
    benchmark::DoNotOptimize(r[0][0].c_str());
  });
  auto after = f.cache->stats();
  st.counters["hit_ratio"] = double(after.hits - before.hits) /
                             double(std::max<std::uint64_t>(1, st.iterations()));
  label_ratio(st, "hit/qcache", "lookup/plain", true);
}

void BM_miss_plain(benchmark::State& st) {
  plain_fixture f;
  pqxx::nontransaction tx(f.conn);
  timed_loop(st, "miss/plain", 16, [&](std::int64_t i) {
    pqxx::result r = tx.exec_prepared("lookup", int(i % kRows) + 1);
    benchmark::DoNotOptimize(r[0][0].c_str());
  });
}

void BM_miss_qcache(benchmark::State& st) {
  qcache::options o;
  o.max_bytes = 4u << 20;  // version table (2 MiB) + room for a few thousand entries
  cached_fixture f(o);
  qcache::pqxx::nontransaction tx(f.conn);
  auto before = f.cache->stats();
  timed_loop(st, "miss/qcache", 16, [&](std::int64_t i) {
    pqxx::result r = tx.exec_prepared("lookup", int(i % kRows) + 1);
    benchmark::DoNotOptimize(r[0][0].c_str());
  });
  auto after = f.cache->stats();
  double calls = double(std::max<std::uint64_t>(1, st.iterations()));
  st.counters["miss_ratio"] = double(after.misses - before.misses) / calls;
  st.counters["stores"] = double(after.stores - before.stores) / calls;
  label_ratio(st, "miss/qcache", "miss/plain", false);
}

void BM_write_plain(benchmark::State& st) {
  plain_fixture f;
  pqxx::nontransaction tx(f.conn);
  timed_loop(st, "write/plain", 16, [&](std::int64_t i) {
    tx.exec_prepared("update", int(i % kRows) + 1, "w");
  });
}

void BM_write_qcache(benchmark::State& st) {
  cached_fixture f;
  qcache::pqxx::nontransaction tx(f.conn);
  auto before = f.cache->stats();
  timed_loop(st, "write/qcache", 16, [&](std::int64_t i) {
    tx.exec_prepared("update", int(i % kRows) + 1, "w");
  });
  auto after = f.cache->stats();
  st.counters["invalidations"] = double(after.invalidations - before.invalidations) /
                                 double(std::max<std::uint64_t>(1, st.iterations()));
  label_ratio(st, "write/qcache", "write/plain", false);
}

// Interleaved pairs: each iteration makes one plain and one qcache call on the same key and
// times both, so load changes on a shared machine hit both sides alike. Reports the medians
// of the per-call times and the qcache overhead in percent of plain.
template <class Plain, class Cached>
void pair_loop(benchmark::State& st, const char* what, Plain&& plain, Cached&& cached) {
  using clk = std::chrono::steady_clock;
  std::vector<double> a, b;
  std::int64_t i = 0;
  for (auto _ : st) {
    auto t0 = clk::now();
    plain(i);
    auto t1 = clk::now();
    cached(i);
    auto t2 = clk::now();
    a.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
    b.push_back(std::chrono::duration<double, std::nano>(t2 - t1).count());
    ++i;
  }
  auto median = [](std::vector<double>& v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  };
  if (a.empty()) return;
  double ma = median(a), mb = median(b);
  st.counters["plain_p50_ns"] = ma;
  st.counters["qcache_p50_ns"] = mb;
  st.counters["overhead_pct"] = (mb / ma - 1) * 100;
  per_call()[std::string(what) + "/pair_overhead_pct"] = (mb / ma - 1) * 100;
  per_call()[std::string(what) + "/pair_speedup"] = ma / mb;
}

void BM_pair_lookup_hit(benchmark::State& st) {
  plain_fixture p;
  cached_fixture c;
  pqxx::nontransaction ptx(p.conn);
  qcache::pqxx::nontransaction ctx(c.conn);
  ctx.exec_prepared("lookup", 42);
  pair_loop(
      st, "hit", [&](std::int64_t) { benchmark::DoNotOptimize(ptx.exec_prepared("lookup", 42)); },
      [&](std::int64_t) { benchmark::DoNotOptimize(ctx.exec_prepared("lookup", 42)); });
}

void BM_pair_miss(benchmark::State& st) {
  plain_fixture p;
  qcache::options o;
  o.max_bytes = 4u << 20;
  cached_fixture c(o);
  pqxx::nontransaction ptx(p.conn);
  qcache::pqxx::nontransaction ctx(c.conn);
  pair_loop(
      st, "miss",
      [&](std::int64_t i) { benchmark::DoNotOptimize(ptx.exec_prepared("lookup", int(i % kRows) + 1)); },
      [&](std::int64_t i) { benchmark::DoNotOptimize(ctx.exec_prepared("lookup", int(i % kRows) + 1)); });
}

void BM_pair_write(benchmark::State& st) {
  plain_fixture p;
  cached_fixture c;
  pqxx::nontransaction ptx(p.conn);
  qcache::pqxx::nontransaction ctx(c.conn);
  pair_loop(
      st, "write", [&](std::int64_t i) { ptx.exec_prepared("update", int(i % kRows) + 1, "w"); },
      [&](std::int64_t i) { ctx.exec_prepared("update", int((i + kRows / 2) % kRows) + 1, "w"); });
}

BENCHMARK(BM_pair_lookup_hit)->Name("pair/lookup_plain_vs_hit")->UseRealTime();
BENCHMARK(BM_pair_miss)->Name("pair/miss_plain_vs_qcache")->UseRealTime();
BENCHMARK(BM_pair_write)->Name("pair/write_plain_vs_qcache")->UseRealTime();
BENCHMARK(BM_lookup_plain)->Name("lookup/plain")->UseRealTime();
BENCHMARK(BM_hit_qcache)->Name("hit/qcache")->UseRealTime();
BENCHMARK(BM_hit_qcache_nostream)->Name("hit/qcache_nostream")->UseRealTime();
BENCHMARK(BM_miss_plain)->Name("miss/plain")->UseRealTime();
BENCHMARK(BM_miss_qcache)->Name("miss/qcache")->UseRealTime();
BENCHMARK(BM_write_plain)->Name("write/plain")->UseRealTime();
BENCHMARK(BM_write_qcache)->Name("write/qcache")->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  auto m = qcache::bench::describe_machine();
  std::printf("%s\n", qcache::bench::to_string(m).c_str());
  if (!qcache::bench::may_report(m)) return 1;
  if (conninfo().empty()) {
    std::printf("pqxx_bench: skipped: QCACHE_PG is not set (scripts/pg start DIR; "
                "source DIR/env)\n");
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  setup_table();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  auto& pc = per_call();
  auto ratio = [&](const char* a, const char* b) {
    return pc.count(a) && pc.count(b) && pc[b] > 0 ? pc[a] / pc[b] : 0.0;
  };
  std::printf("\nratios (same run, mean ns per call):\n");
  std::printf("  lookup/plain / hit/qcache   = %.1fx   (target >= 20x)\n",
              ratio("lookup/plain", "hit/qcache"));
  std::printf("  miss/qcache vs miss/plain   = %+.1f%%  (target <= +5%%)\n",
              (ratio("miss/qcache", "miss/plain") - 1) * 100);
  std::printf("  write/qcache vs write/plain = %+.1f%%\n",
              (ratio("write/qcache", "write/plain") - 1) * 100);
  std::printf("interleaved pairs (median per call, plain and qcache alternating):\n");
  std::printf("  lookup/plain / hit           = %.1fx\n", pc["hit/pair_speedup"]);
  std::printf("  miss overhead                = %+.1f%%  (target <= +5%%)\n",
              pc["miss/pair_overhead_pct"]);
  std::printf("  write overhead               = %+.1f%%\n", pc["write/pair_overhead_pct"]);
  std::printf("(Debian's libbenchmark says it was built as DEBUG: that concerns the harness "
              "library, not the code measured)\n");
  return 0;
}
