// Change-stream figures (issue 11), against QCACHE_PG:
//   lag:  a plain libpq writer commits single-row UPDATEs at a fixed rate; for each, the
//         time from COMMIT returning to the cache having applied it (its stream
//         invalidation counter moved). Run it on a quiet cluster: other commits count too.
//   sync: after each such commit, the time qcache::pqxx::connection::sync() takes.
// Usage: stream_bench [commits_per_second=100] [commits=1000]
#include <qcache/pqxx.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

using clk = std::chrono::steady_clock;

void report(const char* what, std::vector<double>& us) {
  std::sort(us.begin(), us.end());
  auto at = [&](double q) { return us[std::min(us.size() - 1, std::size_t(q * us.size()))]; };
  std::printf("%-5s n=%zu p50=%.0f us p90=%.0f us p99=%.0f us max=%.0f us\n", what, us.size(),
              at(0.5), at(0.9), at(0.99), us.back());
}

}  // namespace

int main(int argc, char** argv) {
  const char* ci = std::getenv("QCACHE_PG");
  if (!ci) {
    std::fprintf(stderr, "QCACHE_PG is not set\n");
    return 2;
  }
  double rate = argc > 1 ? std::atof(argv[1]) : 100;
  int n = argc > 2 ? std::atoi(argv[2]) : 1000;
  {
    pqxx::connection a(ci);
    pqxx::nontransaction tx(a);
    tx.exec(
        "DROP TABLE IF EXISTS qb_stream; CREATE TABLE qb_stream (id int PRIMARY KEY, v int);"
        "INSERT INTO qb_stream VALUES (1, 0)");
  }
  qcache::options o;
  o.follow_changes = true;
  auto cache = std::make_shared<qcache::cache>(o);
  qcache::pqxx::connection reader(ci, cache);
  pqxx::connection writer(ci);
  std::vector<double> lag, sync;
  auto period = std::chrono::duration<double>(1.0 / rate);
  auto next = clk::now();
  for (int i = 0; i < 2 * n; ++i) {
    std::this_thread::sleep_until(next);
    next += std::chrono::duration_cast<clk::duration>(period);
    auto before = cache->stats().invalidated(qcache::invalidation_cause::stream);
    {
      pqxx::nontransaction tx(writer);
      tx.exec("UPDATE qb_stream SET v = " + std::to_string(i) + " WHERE id = 1");
    }
    auto t0 = clk::now();
    if (i < n) {  // lag: poll the counter
      auto limit = t0 + std::chrono::seconds(5);
      while (cache->stats().invalidated(qcache::invalidation_cause::stream) == before &&
             clk::now() < limit) {
        std::this_thread::yield();  // 2-core machine: leave the follower and the server run
      }
      lag.push_back(std::chrono::duration<double, std::micro>(clk::now() - t0).count());
    } else {  // sync()
      bool ok = reader.sync();
      sync.push_back(std::chrono::duration<double, std::micro>(clk::now() - t0).count());
      if (!ok) std::fprintf(stderr, "sync() returned false\n");
    }
  }
  std::printf("rate=%.0f commits/s\n", rate);
  report("lag", lag);
  report("sync", sync);
  return 0;
}
