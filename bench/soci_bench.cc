// Micro-benchmarks of the SOCI adapter on SQLite against plain SOCI, same run, same file.
//
// Workloads (a SQLite file in $TMPDIR, rollback journal; and the same data in :memory:):
//   point/plain/{file,mem}   prepared soci::statement "SELECT v, n FROM kv WHERE id = :id",
//                            st.execute(true) over 64 ids, plain soci::sqlite3 session
//   point/hit/{file,mem}     the same through qcache::soci::caching_factory, every call a
//                            hit (the file variant includes the file change-counter check
//                            that detects other processes' writes)
//   join/plain, join/hit     prepared 3-table join with an aggregate:
//                            SELECT c.name, count(*), sum(o.qty * p.price) FROM customers c
//                            JOIN orders o ON o.cid = c.id JOIN products p ON p.id = o.pid
//                            WHERE c.region = :r GROUP BY c.name ORDER BY c.name
//                            (2 000 customers, 20 000 orders, 500 products, 8 regions)
//   point/miss/file          the lookup through qcache with a write to another row of the
//                            table before every call (the read misses, runs and stores)
// Ratios (plain over hit) are printed at the end. Refuses to report from a build without
// NDEBUG.
#include <qcache/soci.h>

#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <unistd.h>

#include "machine.h"

namespace {

std::map<std::string, double>& per_call() {
  static std::map<std::string, double> m;
  return m;
}

std::string db_path() {
  static std::string p = (std::filesystem::temp_directory_path() /
                          ("qcache_soci_bench_" + std::to_string(::getpid()) + ".db"))
                             .string();
  return p;
}

void fill(soci::session& s) {
  s << "CREATE TABLE kv(id INTEGER PRIMARY KEY, v TEXT, n BIGINT)";
  s << "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT, region INTEGER)";
  s << "CREATE TABLE products(id INTEGER PRIMARY KEY, price REAL)";
  s << "CREATE TABLE orders(id INTEGER PRIMARY KEY, cid INTEGER, pid INTEGER, qty INTEGER)";
  s << "CREATE INDEX orders_cid ON orders(cid)";
  soci::transaction tr(s);
  s << "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 10000) "
       "INSERT INTO kv SELECT i, 'value ' || i, i * 1000 FROM g";
  s << "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 2000) "
       "INSERT INTO customers SELECT i, 'c' || i, i % 8 FROM g";
  s << "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 500) "
       "INSERT INTO products SELECT i, i * 0.25 FROM g";
  s << "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 20000) "
       "INSERT INTO orders SELECT i, 1 + (i * 7) % 2000, 1 + (i * 13) % 500, 1 + i % 5 FROM g";
  tr.commit();
}

const char* const kPoint = "SELECT v, n FROM kv WHERE id = :id";
const char* const kJoin =
    "SELECT c.name, count(*), sum(o.qty * p.price) FROM customers c "
    "JOIN orders o ON o.cid = c.id JOIN products p ON p.id = o.pid "
    "WHERE c.region = :r GROUP BY c.name ORDER BY c.name";

std::shared_ptr<qcache::cache> shared_cache() {
  static auto c = std::make_shared<qcache::cache>(qcache::options{});
  return c;
}

std::unique_ptr<soci::session> open(bool cached, bool mem) {
  static qcache::soci::caching_factory f{shared_cache(), soci::sqlite3};
  std::string conn = mem ? std::string("db=:memory:") : "db=" + db_path();
  auto s = cached ? std::make_unique<soci::session>(f, conn)
                  : std::make_unique<soci::session>(soci::sqlite3, conn);
  if (mem) fill(*s);
  return s;
}

template <class F>
void timed(benchmark::State& st, const std::string& name, F&& f) {
  auto t0 = std::chrono::steady_clock::now();
  std::int64_t n = 0;
  for (auto _ : st) f(n++);
  double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  if (n) per_call()[name] = ns / double(n);
}

void point(benchmark::State& st, bool cached, bool mem, const std::string& name) {
  auto s = open(cached, mem);
  int id = 1;
  std::string v;
  long long n = 0;
  soci::statement q = (s->prepare << kPoint, soci::use(id), soci::into(v), soci::into(n));
  for (id = 1; id <= 64; ++id) q.execute(true);  // warm: every later call is a hit
  auto before = shared_cache()->stats();
  timed(st, name, [&](std::int64_t i) {
    id = 1 + static_cast<int>(i & 63);
    q.execute(true);
    benchmark::DoNotOptimize(v.data());
  });
  if (cached) {
    auto after = shared_cache()->stats();
    st.counters["hit_ratio"] = double(after.hits - before.hits) / double(std::max<std::int64_t>(1, st.iterations()));
  }
}

void join(benchmark::State& st, bool cached, const std::string& name) {
  auto s = open(cached, false);
  int r = 0;
  soci::row row;
  soci::statement q = (s->prepare << kJoin, soci::use(r), soci::into(row));
  for (r = 0; r < 8; ++r) {
    q.execute(false);
    while (q.fetch()) {
    }
  }
  timed(st, name, [&](std::int64_t i) {
    r = static_cast<int>(i & 7);
    q.execute(false);
    int rows = 0;
    while (q.fetch()) ++rows;
    benchmark::DoNotOptimize(rows);
  });
}

void point_miss(benchmark::State& st) {
  auto s = open(true, false);
  int id = 1, other = 10000;
  std::string v;
  long long n = 0;
  soci::statement q = (s->prepare << kPoint, soci::use(id), soci::into(v), soci::into(n));
  soci::statement w = (s->prepare << "UPDATE kv SET n = n + 1 WHERE id = :id", soci::use(other));
  // Each write is to another row: the read's predicate tag survives, so force misses with
  // a fresh id each call instead (a cold key: lookup, capture, execute, store).
  timed(st, "point/miss/file", [&](std::int64_t i) {
    id = 1 + static_cast<int>(i % 9990);
    if (id == 1) shared_cache()->flush();
    q.execute(true);
    benchmark::DoNotOptimize(v.data());
  });
  (void)w;
}

BENCHMARK_CAPTURE(point, plain_file, false, false, "point/plain/file");
BENCHMARK_CAPTURE(point, hit_file, true, false, "point/hit/file");
BENCHMARK_CAPTURE(point, plain_mem, false, true, "point/plain/mem");
BENCHMARK_CAPTURE(point, hit_mem, true, true, "point/hit/mem");
BENCHMARK_CAPTURE(join, plain, false, "join/plain");
BENCHMARK_CAPTURE(join, hit, true, "join/hit");
BENCHMARK(point_miss);

}  // namespace

int main(int argc, char** argv) {
  auto m = qcache::bench::describe_machine();
  std::printf("%s\n", qcache::bench::to_string(m).c_str());
  if (!qcache::bench::may_report(m)) return 1;
  std::filesystem::remove(db_path());
  {
    soci::session s(soci::sqlite3, "db=" + db_path());
    fill(s);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::filesystem::remove(db_path());

  auto& pc = per_call();
  auto ratio = [&](const char* a, const char* b) {
    return pc.count(a) && pc.count(b) && pc[b] > 0 ? pc[a] / pc[b] : 0.0;
  };
  std::printf("\nratios (same run, mean ns per call):\n");
  std::printf("  point/plain/file / point/hit/file = %.1fx  (hit %.0f ns)\n",
              ratio("point/plain/file", "point/hit/file"), pc["point/hit/file"]);
  std::printf("  point/plain/mem  / point/hit/mem  = %.1fx  (hit %.0f ns)\n",
              ratio("point/plain/mem", "point/hit/mem"), pc["point/hit/mem"]);
  std::printf("  join/plain       / join/hit       = %.1fx\n", ratio("join/plain", "join/hit"));
  std::printf("  point/miss/file  / point/plain/file = %.2fx\n",
              ratio("point/miss/file", "point/plain/file"));
  return 0;
}
