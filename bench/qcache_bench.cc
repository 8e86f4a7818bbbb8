// qcache-bench: read-mostly workloads through real drivers, uncached and cached, in one run.
//
// Workloads (workloads.cc): blog (users/posts/comments page views with Zipf popularity,
// ~90 % reads), point (primary-key lookups, write-ratio knob), wiki (page joined to its
// latest revision; edits move exactly the joined column). Targets: sqlite, postgresql,
// soci-pg, pgpool. Every (target, mode) cell runs once per repetition, cells interleaved
// (A B A B ...), each after a warm-up; after each cached run the writers are stopped and
// every distinct read of the run is re-run through the cache and directly: any
// difference is a stale entry.
//
// Invariants:
//  * a cached cell starts from an empty cache (the other cells wrote behind its back);
//  * measured time excludes connecting, warm-up, --verify re-reads and freshness checks;
//  * the figures are refused when the binary was built without NDEBUG.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench.h"
#include "machine.h"
#include "processes.h"
#include "report.h"

namespace qb = qcache::bench;
using clk = std::chrono::steady_clock;

namespace {

const char* const kUsage = R"(usage: qcache-bench [options]

Runs a read-mostly workload through real database drivers without and with qcache, in
one run (modes interleaved A B A B for --reps repetitions, each after a warm-up), and
reports throughput, latency, hit ratio, database statements saved and a freshness check
(stale_entries, which must be 0).

Workload:
  --workload NAME     blog (default): users, posts, comments; front/post/user pages,
                      comment/edit/publish/delete writes; Zipf popularity
                      point: primary-key lookups (pgbench -S like), --write-ratio knob
                      wiki: page + latest revision; edits change exactly the joined column
  --scale F           data size factor (default 1: blog 1k users/10k posts/50k comments,
                      point 100k rows, wiki 10k pages)
  --write-ratio W     fraction of operations that write (default: blog 0.10, point 0,
                      wiki 0.10 = 7 % edits + 3 % new pages)
  --zipf S            popularity exponent (default 0.99; 0 = uniform)
  --seed N            data and operation seed (default 42)
  --pages             blog post pages rendered to HTML on SQLite, in three modes side by
                      side: uncached, cached queries, cached pages (cache::memoize); page
                      hit ratio beside the ideal one, stale_entries of pages. Uses
                      --scale, --zipf, --write-ratio, --seed, --duration, --warmup,
                      --sqlite-file; one thread, one repetition

Targets and modes:
  --target LIST       comma-separated (default sqlite):
                      sqlite      SOCI + embedded SQLite file; cached = qcache::soci
                      postgresql  libpqxx over the unix socket; cached = qcache::pqxx
                      soci-pg     SOCI's postgresql backend; cached = qcache::soci
                      pgpool      libpqxx over TCP; uncached = straight to PostgreSQL,
                                  cached = through pgpool-II's memory query cache
  --modes LIST        uncached,cached (default both)
  --pg CONNINFO       PostgreSQL over the unix socket (default $QCACHE_PG)
  --pg-tcp CONNINFO   PostgreSQL over TCP (default $QCACHE_PG_TCP)
  --pgpool CONNINFO   pgpool-II (default $QCACHE_PGPOOL, from scripts/pgpool)
  --pgpool-prepared   send prepared statements through pgpool (default: literal SQL, the
                      simple protocol, the only one whose hits skip PostgreSQL)
  --database NAME     PostgreSQL database to create and use (default qcache_bench)
  --sqlite-file PATH  SQLite file (default: a temporary file, removed at exit)
  --cache-mb N        qcache byte budget (default 256)
  --no-follow-changes PostgreSQL: qcache does not follow the change stream
                      (options.follow_changes = false; on by default, as in the library,
                      and needed for --processes to see the other processes' writes)
  --follow-changes    the default, kept for older command lines

Run:
  --threads N         worker threads, one connection each (default 1)
  --processes N       run each cell in N processes side by side (default 1), each with
                      its own cache and --threads connections, all reading and writing
                      the same database: a process sees the others' writes only through
                      the database (PostgreSQL's change stream, SQLite's file). Throughput,
                      counters and checks add up over the processes; --verify syncs the
                      cache before each sampled read
  --duration S        measured seconds per repetition and cell (default 5)
  --warmup S          warm-up seconds before each (default 1)
  --reps N            repetitions (default 3)
  --verify            during cached runs, re-run a sample of cached reads directly when
                      no write to their tables is in flight, and compare
  --verify-rate F     fraction of reads sampled by --verify (default 0.01)
  --oracle            during cached runs, also count the misses an ideal cache would have:
                      reads never seen before in the repetition (warm-up included) or whose
                      result differs from the previous read of the same statement and key
                      (costs a result copy and a lock per read; not with --verify)
  --stale-check-max N re-check at most N distinct reads per cached run (default 200000)
  --stats-settle S    seconds to wait for PostgreSQL's statistics after a pgpool run
                      (default 11: idle backends publish their counters within ~10 s)

Output:
  --json FILE         every figure: one object per target x mode, plus the ratios
  --plot FILE         chart (throughput bars, latency CDF) with gnuplot; .svg or .png
  --quiet             no progress bar
  --allow-debug       run from a build without NDEBUG (figures are then meaningless;
                      for tests only)
  -h, --help          this text

Exit status: 0 when the run completed with stale_entries 0, 1 on errors, 2 when stale
entries or --verify mismatches were found.
)";

struct options {
  std::string workload = "blog";
  qb::workload_config wl;
  std::vector<std::string> targets{"sqlite"};
  std::vector<qb::mode> modes{qb::mode::uncached, qb::mode::cached};
  qb::target_config tc;
  int threads = 1, reps = 3, processes = 1;
  double duration = 5, warmup = 1;
  bool verify = false;
  double verify_rate = 0.01;
  bool oracle = false;
  std::size_t stale_check_max = 200000;
  double stats_settle = 11;
  std::string json, plot;
  bool quiet = false, allow_debug = false;
  bool temp_sqlite = false;
  bool pages = false;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    auto end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "qcache-bench: %s (see --help)\n", msg.c_str());
  std::exit(1);
}

options parse(int argc, char** argv) {
  options o;
  o.tc.pg = env("QCACHE_PG");
  o.tc.pg_tcp = env("QCACHE_PG_TCP");
  o.tc.pgpool = env("QCACHE_PGPOOL");
  o.tc.database = "qcache_bench";
  o.tc.cache_options.max_bytes = 256u << 20;
  for (int k = 1; k < argc; ++k) {
    std::string a = argv[k];
    auto val = [&]() -> std::string {
      if (k + 1 >= argc) usage_error(a + " needs a value");
      return argv[++k];
    };
    auto num = [&]() {
      std::string v = val();
      char* end = nullptr;
      double d = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end) usage_error(a + ": not a number: " + v);
      return d;
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (a == "--workload") o.workload = val();
    else if (a == "--scale") o.wl.scale = num();
    else if (a == "--write-ratio") o.wl.write_ratio = num();
    else if (a == "--zipf") o.wl.zipf_s = num();
    else if (a == "--seed") o.wl.seed = static_cast<std::uint64_t>(num());
    else if (a == "--target" || a == "--targets") o.targets = split(val());
    else if (a == "--modes") {
      o.modes.clear();
      for (const auto& m : split(val())) {
        if (m == "uncached") o.modes.push_back(qb::mode::uncached);
        else if (m == "cached") o.modes.push_back(qb::mode::cached);
        else usage_error("unknown mode " + m);
      }
    } else if (a == "--pg") o.tc.pg = val();
    else if (a == "--pg-tcp") o.tc.pg_tcp = val();
    else if (a == "--pgpool") o.tc.pgpool = val();
    else if (a == "--pgpool-prepared") o.tc.pgpool_prepared = true;
    else if (a == "--database") o.tc.database = val();
    else if (a == "--sqlite-file") o.tc.sqlite_file = val();
    else if (a == "--cache-mb") o.tc.cache_options.max_bytes = std::size_t(num() * (1 << 20));
    else if (a == "--follow-changes") o.tc.cache_options.follow_changes = true;
    else if (a == "--no-follow-changes") o.tc.cache_options.follow_changes = false;
    else if (a == "--threads") o.threads = int(num());
    else if (a == "--processes") o.processes = int(num());
    else if (a == "--duration") o.duration = num();
    else if (a == "--warmup") o.warmup = num();
    else if (a == "--reps") o.reps = int(num());
    else if (a == "--verify") o.verify = true;
    else if (a == "--verify-rate") o.verify_rate = num();
    else if (a == "--oracle") o.oracle = true;
    else if (a == "--pages") o.pages = true;
    else if (a == "--stale-check-max") o.stale_check_max = std::size_t(num());
    else if (a == "--stats-settle") o.stats_settle = num();
    else if (a == "--json") o.json = val();
    else if (a == "--plot") o.plot = val();
    else if (a == "--quiet") o.quiet = true;
    else if (a == "--allow-debug") o.allow_debug = true;
    else usage_error("unknown option " + a);
  }
  if (o.threads < 1 || o.reps < 1 || o.processes < 1 || o.duration <= 0 || o.warmup < 0)
    usage_error("--threads, --processes and --reps must be >= 1, --duration > 0, --warmup >= 0");
  if (o.oracle && o.verify) usage_error("--oracle and --verify cannot be combined");
  for (const auto& t : o.targets)
    if (t != "sqlite" && t != "postgresql" && t != "soci-pg" && t != "pgpool")
      usage_error("unknown target " + t + " (sqlite, postgresql, soci-pg, pgpool)");
  if (o.tc.sqlite_file.empty()) {
    o.tc.sqlite_file = (std::filesystem::temp_directory_path() /
                        ("qcache-bench-" + std::to_string(getpid()) + ".sqlite"))
                           .string();
    o.temp_sqlite = true;
  }
  return o;
}

std::unique_ptr<qb::target> make_target(const std::string& name, const qb::target_config& c) {
  if (name == "sqlite") return qb::make_sqlite_target(c);
  if (name == "postgresql") return qb::make_postgresql_target(c);
  if (name == "soci-pg") return qb::make_soci_pg_target(c);
  return qb::make_pgpool_target(c);
}

// What one worker thread measured.
struct worker_result {
  qb::histogram latency;
  std::uint64_t ops = 0, reads = 0, writes = 0, statements = 0, errors = 0;
  std::uint64_t verified = 0, verify_mismatches = 0, verify_skipped = 0;
  std::vector<std::uint64_t> read_keys;
  std::string first_error, first_mismatch;
};

class progress {
 public:
  explicit progress(bool on) : on_(on && isatty(STDOUT_FILENO)) {}
  void show(const std::string& what, double frac) {
    if (!on_) return;
    int w = 30, filled = int(std::clamp(frac, 0.0, 1.0) * w);
    std::printf("\r  [%.*s%*s] %3.0f%%  %-60s", filled, "##############################",
                w - filled, "", 100 * std::clamp(frac, 0.0, 1.0), what.c_str());
    std::fflush(stdout);
  }
  void done() {
    if (on_) std::printf("\r%*s\r", 110, "");
    std::fflush(stdout);
  }
  void log(const std::string& line) {
    done();
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }

 private:
  bool on_;
};

struct cell {
  qb::target* t;
  qb::mode m;
  qb::cell_result r;
};

// Runs the workload on `conns` for `seconds`; returns what each thread measured.
std::vector<worker_result> run_phase(qb::workload& wl, std::vector<std::unique_ptr<qb::connection>>& conns,
                                     std::vector<std::unique_ptr<qb::connection>>& direct,
                                     qb::write_tracker& wt, const std::vector<qb::statement>& stmts,
                                     double seconds, bool record, double verify_rate,
                                     std::uint64_t seed, progress& bar, const std::string& what,
                                     double frac0, double frac1, double* elapsed,
                                     qb::change_oracle* oracle = nullptr) {
  std::atomic<bool> stop{false};
  std::vector<worker_result> res(conns.size());
  std::vector<std::thread> threads;
  auto t0 = clk::now();
  for (std::size_t k = 0; k < conns.size(); ++k) {
    threads.emplace_back([&, k] {
      worker_result& w = res[k];
      qb::session s(*conns[k], direct.empty() ? nullptr : direct[k].get(), wt, stmts, record,
                    verify_rate, seed * 7919 + k);
      s.oracle = oracle;
      std::mt19937_64 rng(seed * 104729 + k);
      while (!stop.load(std::memory_order_relaxed)) {
        auto a = clk::now();
        std::uint64_t before = s.excluded_ns;
        std::uint64_t st0 = s.statements;
        try {
          wl.run_one(s, rng);
        } catch (const std::exception& e) {
          if (w.errors++ == 0) w.first_error = e.what();
          s.recover();
        }
        auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(clk::now() - a).count();
        w.latency.add(std::uint64_t(std::max<std::int64_t>(1, ns - std::int64_t(s.excluded_ns - before))));
        ++w.ops;
        (void)st0;
      }
      w.statements = s.statements;
      w.verified = s.verified;
      w.verify_mismatches = s.verify_mismatches;
      w.verify_skipped = s.verify_skipped;
      w.first_mismatch = s.first_mismatch;
      w.read_keys = std::move(s.reads);
    });
  }
  auto end = t0 + std::chrono::duration<double>(seconds);
  while (clk::now() < end) {
    double f = std::chrono::duration<double>(clk::now() - t0).count() / seconds;
    bar.show(what, frac0 + (frac1 - frac0) * f);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  stop = true;
  for (auto& t : threads) t.join();
  *elapsed = std::chrono::duration<double>(clk::now() - t0).count();
  return res;
}

// Re-runs each distinct read of the run through the cached path and directly; counts
// differences. The writers are stopped.
void check_freshness(qb::target& t, qb::mode m, const std::vector<qb::statement>& stmts,
                     std::vector<std::uint64_t> keys, std::size_t max, qb::cell_result& r) {
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  if (keys.size() > max) {
    // Deterministic sample spread over the key space.
    std::vector<std::uint64_t> s;
    for (std::size_t k = 0; k < max; ++k) s.push_back(keys[k * keys.size() / max]);
    keys.swap(s);
  }
  auto cached = t.connect(m);
  auto direct = t.connect_direct();
  cached->sync();  // writes of other processes (--processes) reached the database only
  r.stale_checked = true;
  for (std::uint64_t key : keys) {
    int stmt = int(key >> 48);
    qb::params p;
    if (stmt < 0 || std::size_t(stmt) >= stmts.size()) continue;
    if (stmts[stmt].sql.find("$1") != std::string::npos)
      p.add(std::int64_t(key & 0xffffffffffffULL));
    std::string a, b;
    cached->read(stmt, p, &a);
    direct->read(stmt, p, &b);
    ++r.stale_checked_entries;
    if (a != b && r.stale_entries++ == 0)
      r.first_stale = stmts[stmt].name + "(" + (p.n ? std::to_string(p.i[0]) : "") + ")";
  }
}

// Runs one repetition of cell `c` in this process. With --processes, `shared_writes` is
// the writers' tracker shared by the processes and `all_stopped` waits for the other
// processes' writers before the freshness check.
void run_cell(cell& c, int rep, const options& o, qb::workload& wl,
              const std::vector<qb::statement>& stmts, progress& bar, double frac0,
              double frac1, qb::write_tracker* shared_writes = nullptr,
              const std::function<void()>& all_stopped = {}) {
  qb::target& t = *c.t;
  bool cached = c.m == qb::mode::cached;
  std::string what = t.name() + " " + qb::to_string(c.m) + ", rep " + std::to_string(rep + 1) +
                     "/" + std::to_string(o.reps);
  t.reset_cache(c.m, wl.tables());
  qb::write_tracker own_writes;
  qb::write_tracker& wt = shared_writes ? *shared_writes : own_writes;
  double elapsed = 0;
  double fw = o.warmup / (o.warmup + o.duration);
  std::unique_ptr<qb::change_oracle> oracle;
  if (o.oracle && cached) oracle = std::make_unique<qb::change_oracle>();
  // Warm-up, on connections closed afterwards so the server publishes their counters.
  if (o.warmup > 0) {
    std::vector<std::unique_ptr<qb::connection>> conns, none;
    for (int k = 0; k < o.threads; ++k) conns.push_back(t.connect(c.m));
    run_phase(wl, conns, none, wt, stmts, o.warmup, false, 0, o.wl.seed + 1000 * rep + 500, bar,
              what + " (warm-up)", frac0, frac0 + (frac1 - frac0) * fw, &elapsed, oracle.get());
  }
  if (oracle) oracle->counting = true;
  bool pgpool_cached = t.name() == "pgpool" && cached;
  double settle = pgpool_cached ? o.stats_settle : 1.0;
  std::optional<std::uint64_t> x0;
  if (settle > 0 || !pgpool_cached) x0 = t.server_transactions(settle);
  auto s0 = t.cache_stats(c.m);

  std::vector<std::unique_ptr<qb::connection>> conns, direct;
  for (int k = 0; k < o.threads; ++k) {
    conns.push_back(t.connect(c.m));
    if (o.verify && cached) direct.push_back(t.connect_direct());
  }
  auto res = run_phase(wl, conns, direct, wt, stmts, o.duration, cached, o.verify ? o.verify_rate : 0,
                       o.wl.seed + 1000 * rep, bar, what, frac0 + (frac1 - frac0) * fw, frac1,
                       &elapsed, oracle.get());
  conns.clear();
  direct.clear();
  auto s1 = t.cache_stats(c.m);
  std::optional<std::uint64_t> x1;
  if (x0) x1 = t.server_transactions(settle);

  qb::cell_result& r = c.r;
  std::uint64_t ops = 0, stmts_sent = 0;
  std::vector<std::uint64_t> keys;
  for (auto& w : res) {
    r.latency.merge(w.latency);
    ops += w.ops;
    stmts_sent += w.statements;
    r.errors += w.errors;
    if (r.first_error.empty()) r.first_error = w.first_error;
    r.verified += w.verified;
    r.verify_mismatches += w.verify_mismatches;
    r.verify_skipped += w.verify_skipped;
    if (!w.first_mismatch.empty() && r.first_stale.empty())
      r.first_stale = "verify: " + w.first_mismatch;
    keys.insert(keys.end(), w.read_keys.begin(), w.read_keys.end());
  }
  if (oracle) {
    r.oracle_reads += oracle->reads;
    r.oracle_necessary_misses += oracle->necessary_misses;
  }
  r.ops += ops;
  r.statements += stmts_sent;
  r.measured_seconds += elapsed;
  r.throughput.push_back(double(ops) / elapsed);
  if (x0 && x1) r.db_transactions = r.db_transactions.value_or(0) + (*x1 - *x0);
  if (s0 && s1) {
    r.has_cache = true;
    std::uint64_t hits = s1->hits - s0->hits;
    r.hits += hits;
    r.misses += s1->misses - s0->misses;
    r.invalidations += s1->invalidations - s0->invalidations;
    r.cache_bytes = std::max<std::uint64_t>(r.cache_bytes, s1->bytes);
    r.cache_entries = std::max<std::uint64_t>(r.cache_entries, s1->entries);
    r.db_statements = r.db_statements.value_or(0) + (stmts_sent - std::min(stmts_sent, hits));
  } else if (!cached) {
    r.db_statements = r.db_statements.value_or(0) + stmts_sent;
  }
  if (all_stopped) all_stopped();
  if (cached) {
    bar.show(what + " (freshness check)", frac1);
    check_freshness(t, c.m, stmts, std::move(keys), o.stale_check_max, r);
  }
}

// One repetition of cell `c` run by o.processes processes, each with a target of its own
// (its own cache): see processes.h. `serial` numbers the runs, so that every process of
// every run takes the ids of its new rows from a block of its own.
void run_cell_processes(cell& c, int rep, int serial, const options& o, qb::workload& wl,
                        const std::vector<qb::statement>& stmts, progress& bar, double frac0) {
  bar.show(c.t->name() + " " + qb::to_string(c.m) + ", rep " + std::to_string(rep + 1) + ", " +
               std::to_string(o.processes) + " processes",
           frac0);
  auto parts = qb::run_processes(o.processes, [&](int k, qb::shared_cell& shared) {
    auto t = make_target(c.t->name(), o.tc);
    t->set_statements(stmts);
    wl.offset_new_ids(std::int64_t(serial * o.processes + k + 1) * 1000000);
    cell mine{t.get(), c.m, {}};
    progress silent(false);
    run_cell(mine, rep, o, wl, stmts, silent, 0, 1, &shared.writes,
             [&] { qb::wait_all_stopped(shared, o.processes); });
    return mine.r;
  });
  qb::merge_processes(parts, c.r);
}

std::string command_line(int argc, char** argv) {
  std::string s;
  for (int k = 0; k < argc; ++k) {
    if (k) s += ' ';
    s += argv[k];
  }
  return s;
}

}  // namespace

// --pages: the blog workload's post pages in three modes (pages.cc).
int run_pages(const options& o) {
#ifdef QCACHE_BENCH_HAVE_SOCI_ADAPTER
  qb::pages_config c;
  c.sqlite_file = o.tc.sqlite_file;  // a temporary file unless --sqlite-file
  c.scale = o.wl.scale;
  c.zipf_s = o.wl.zipf_s;
  c.seed = o.wl.seed;
  if (o.wl.write_ratio >= 0) c.write_ratio = o.wl.write_ratio;
  c.duration = o.duration;
  c.warmup = o.warmup;
  try {
    int rc = qb::run_pages(c);
    if (o.temp_sqlite)
      for (const char* x : {"", "-wal", "-shm", "-journal"}) std::remove((c.sqlite_file + x).c_str());
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qcache-bench --pages: %s\n", e.what());
    return 1;
  }
#else
  (void)o;
  std::fprintf(stderr, "qcache-bench --pages needs the SOCI adapter\n");
  return 1;
#endif
}

int main(int argc, char** argv) {
  options o = parse(argc, argv);
  qb::run_info info;
  info.machine = qb::describe_machine();
  std::printf("qcache-bench: %s\n", qb::to_string(info.machine).c_str());
  if (!qb::may_report(info.machine)) {
    if (!o.allow_debug) return 1;
    std::printf("qcache-bench: --allow-debug: running anyway; the figures are not meaningful\n");
  }
  info.command_line = command_line(argc, argv);
  info.processes = o.processes;
  info.threads = o.threads;
  info.reps = o.reps;
  info.duration = o.duration;
  info.warmup = o.warmup;
  info.seed = o.wl.seed;
  info.verify = o.verify;

  if (o.pages) return run_pages(o);
  int rc = 0;
  try {
    auto wl = qb::make_workload(o.workload, o.wl);
    info.workload = wl->name();
    info.workload_description = wl->describe();
    auto stmts = wl->statements();

    std::vector<std::unique_ptr<qb::target>> targets;
    for (const auto& name : o.targets) {
      targets.push_back(make_target(name, o.tc));
      targets.back()->set_statements(stmts);
    }
    // Load each database once (targets on one PostgreSQL share its data).
    std::set<std::string> loaded;
    for (auto& t : targets) {
      if (!loaded.insert(t->database_key()).second) continue;
      std::printf("qcache-bench: loading %s into %s (%s)\n", wl->name().c_str(),
                  t->database_key().c_str(), wl->describe().c_str());
      std::fflush(stdout);
      auto c = t->connect_direct();
      wl->load(*c, t->sql_dialect());
      c->exec_raw("ANALYZE");
    }

    std::vector<cell> cells;
    for (auto& t : targets) {
      for (auto m : o.modes) {
        cell c{t.get(), m, {}};
        c.r.target = t->name();
        c.r.mode = qb::to_string(m);
        c.r.label = t->name() + " " + c.r.mode;
        if (t->name() == "pgpool")
          c.r.label = m == qb::mode::cached ? "pgpool-II query cache" : "direct TCP (pgpool baseline)";
        else if (m == qb::mode::cached)
          c.r.label = t->name() + " + qcache";
        std::string why;
        if (!t->supports(m, &why)) {
          c.r.available = false;
          c.r.why_unavailable = why;
          std::printf("qcache-bench: %s %s not run: %s\n", t->name().c_str(), c.r.mode.c_str(),
                      why.c_str());
        }
        cells.push_back(std::move(c));
      }
    }
    progress bar(!o.quiet);
    int runnable = 0;
    for (auto& c : cells) runnable += c.r.available;
    int done = 0;
    for (int rep = 0; rep < o.reps; ++rep) {
      for (auto& c : cells) {
        if (!c.r.available) continue;
        double f0 = double(done) / (runnable * o.reps), f1 = double(done + 1) / (runnable * o.reps);
        if (o.processes > 1) run_cell_processes(c, rep, done, o, *wl, stmts, bar, f0);
        else run_cell(c, rep, o, *wl, stmts, bar, f0, f1);
        ++done;
      }
    }
    bar.done();

    std::vector<qb::cell_result> results;
    for (auto& c : cells) results.push_back(std::move(c.r));
    for (const auto& r : results) {
      if (r.available && r.ops > 0 && r.errors * 10 > r.ops) rc = 1;
    }
    qb::print_table(info, results);
    if (!o.json.empty()) {
      if (qb::write_json(o.json, info, results)) std::printf("json: %s\n", o.json.c_str());
      else {
        std::fprintf(stderr, "qcache-bench: could not write %s\n", o.json.c_str());
        rc = 1;
      }
    }
    if (!o.plot.empty()) {
      if (qb::write_plot(o.plot, info, results)) std::printf("chart: %s\n", o.plot.c_str());
      else rc = 1;
    }
    if (qb::total_stale(results) != 0) rc = 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qcache-bench: %s\n", e.what());
    rc = 1;
  }
  if (o.temp_sqlite) {
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm"})
      std::filesystem::remove(o.tc.sqlite_file + suffix, ec);
  }
  return rc;
}
