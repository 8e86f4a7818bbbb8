// Change-stream figures (issue 11), against QCACHE_PG:
//   lag:  a plain libpq writer commits single-row UPDATEs at a fixed rate; for each, the
//         time from COMMIT returning to the cache having applied it (its stream
//         invalidation counter moved). Run it on a quiet cluster: other commits count too.
//   sync: after each such commit, the time qcache::pqxx::connection::sync() takes.
//   cpu:  per commit, in each phase: the CPU time of the walsender serving the cache's slot
//         (its pid from pg_replication_slots; /proc/<pid>/stat utime+stime in clock ticks,
//         and /proc/<pid>/schedstat in ns) and of this process's threads other than the
//         main one (the follower: /proc/self/task/<tid>/...). The server must run on this
//         host, and the walsender decodes every commit of the cluster: keep it quiet.
//         The sync phase also counts the status round trips sync() asks for.
// Usage: stream_bench [commits_per_second=100] [commits=1000]
#include <dirent.h>
#include <qcache/pqxx.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
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

// CPU time used so far by one task: utime+stime ticks (/proc/.../stat) and ns on the CPU
// (/proc/.../schedstat, first field). `task` is e.g. "/proc/123" or "/proc/self/task/45".
struct cpu_time {
  long long ticks = 0;
  long long ns = 0;
  cpu_time& operator+=(const cpu_time& o) {
    ticks += o.ticks;
    ns += o.ns;
    return *this;
  }
};

cpu_time cpu_of(const std::string& task) {
  cpu_time t;
  std::ifstream stat(task + "/stat");
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');  // the command name may hold spaces
  if (close != std::string::npos) {
    std::istringstream rest(line.substr(close + 2));
    std::string field;
    long long utime = 0, stime = 0;
    for (int i = 3; rest >> field; ++i) {  // field 3 is the state; 14 utime, 15 stime
      if (i == 14) utime = std::atoll(field.c_str());
      if (i == 15) {
        stime = std::atoll(field.c_str());
        break;
      }
    }
    t.ticks = utime + stime;
  }
  std::ifstream sched(task + "/schedstat");
  sched >> t.ns;
  return t;
}

// Every thread of this process but the main one (the writer and the lag poller run there).
cpu_time other_threads(int* count) {
  cpu_time sum;
  *count = 0;
  DIR* d = ::opendir("/proc/self/task");
  while (dirent* e = d ? ::readdir(d) : nullptr) {
    if (e->d_name[0] == '.' || std::atoi(e->d_name) == ::getpid()) continue;
    sum += cpu_of(std::string("/proc/self/task/") + e->d_name);
    ++*count;
  }
  if (d) ::closedir(d);
  return sum;
}

struct cpu_probe {
  std::string sender;  // "/proc/<walsender pid>"
  cpu_time sender0, follower0;
  clk::time_point t0;
  void start() {
    sender0 = cpu_of(sender);
    int n = 0;
    follower0 = other_threads(&n);
    t0 = clk::now();
  }
  void report(const char* phase, int commits) {
    double secs = std::chrono::duration<double>(clk::now() - t0).count();
    cpu_time s = cpu_of(sender);
    int threads = 0;
    cpu_time f = other_threads(&threads);
    double tick_us = 1e6 / double(::sysconf(_SC_CLK_TCK));
    auto per = [&](long long v, double unit) { return double(v) * unit / commits; };
    std::printf(
        "cpu   %-4s %d commits in %.2f s (%.0f/s): walsender %.1f us/commit (%lld ticks: %.0f "
        "us/commit), follower %.1f us/commit (%d threads, %lld ticks: %.0f us/commit)\n",
        phase, commits, secs, commits / secs, per(s.ns - sender0.ns, 1e-3), s.ticks - sender0.ticks,
        per(s.ticks - sender0.ticks, tick_us), per(f.ns - follower0.ns, 1e-3), threads,
        f.ticks - follower0.ticks, per(f.ticks - follower0.ticks, tick_us));
  }
};

// The walsender of this process's slot (stream.cc names it qcache_<pid>_<n>).
std::string walsender_of_this_process(pqxx::connection& c) {
  for (int i = 0; i < 500; ++i) {
    pqxx::nontransaction tx(c);
    auto r = tx.exec("SELECT active_pid FROM pg_replication_slots WHERE slot_name LIKE 'qcache\\_" +
                     std::to_string(::getpid()) + "\\_%' AND active_pid IS NOT NULL");
    if (r.size() == 1) return std::string("/proc/") + r[0][0].c_str();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return {};
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
  cpu_probe cpu;
  cpu.sender = walsender_of_this_process(writer);
  if (cpu.sender.empty() || cpu_of(cpu.sender).ns == 0) {
    std::fprintf(stderr, "the walsender of this process's slot was not found on this host\n");
    return 1;
  }
  cpu.start();
  auto period = std::chrono::duration<double>(1.0 / rate);
  auto next = clk::now();
  for (int i = 0; i < 2 * n; ++i) {
    std::this_thread::sleep_until(next);
    next += std::chrono::duration_cast<clk::duration>(period);
    if (i == n) {
      cpu.report("lag", n);
      cpu.start();
    }
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
  cpu.report("sync", n);
  std::printf("rate=%.0f commits/s\n", rate);
  report("lag", lag);
  report("sync", sync);
  return 0;
}
