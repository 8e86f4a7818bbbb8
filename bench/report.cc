// Summary table, JSON and gnuplot chart of a qcache-bench run.
//
// Ratios are computed only between cells of the same run: cached over uncached of one
// target, and qcache's cached PostgreSQL mode over pgpool-II's cache.
#include "report.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace qcache::bench {

int histogram::bucket(std::uint64_t ns) {
  if (ns < 16) return int(ns);
  int b = 63 - std::countl_zero(ns);
  int sub = int((ns >> (b - 4)) & 15);
  return std::min(kBuckets - 1, (b - 3) * 16 + sub);
}

double histogram::value(int b) {
  if (b < 16) return b;
  int e = b / 16 + 3, sub = b % 16;
  double lo = std::ldexp(16.0 + sub, e - 4);
  return lo + std::ldexp(0.5, e - 4);  // middle of the bucket
}

void histogram::add(std::uint64_t ns) {
  ++c_[bucket(ns)];
  ++n_;
  sum_ += ns;
}

void histogram::merge(const histogram& o) {
  for (int k = 0; k < kBuckets; ++k) c_[k] += o.c_[k];
  n_ += o.n_;
  sum_ += o.sum_;
}

double histogram::quantile(double q) const {
  if (n_ == 0) return 0;
  auto want = static_cast<std::uint64_t>(std::ceil(q * double(n_)));
  std::uint64_t acc = 0;
  for (int k = 0; k < kBuckets; ++k) {
    acc += c_[k];
    if (acc >= want && acc > 0) return value(k);
  }
  return value(kBuckets - 1);
}

std::vector<std::pair<double, double>> histogram::cdf() const {
  std::vector<std::pair<double, double>> out;
  std::uint64_t acc = 0;
  for (int k = 0; k < kBuckets; ++k) {
    if (!c_[k]) continue;
    acc += c_[k];
    out.emplace_back(value(k) / 1000.0, double(acc) / double(n_));
  }
  return out;
}

double cell_result::median_throughput() const {
  if (throughput.empty()) return 0;
  auto v = throughput;
  std::sort(v.begin(), v.end());
  std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

double cell_result::spread() const {
  if (throughput.size() < 2) return 0;
  auto [lo, hi] = std::minmax_element(throughput.begin(), throughput.end());
  double med = median_throughput();
  return med > 0 ? (*hi - *lo) / med : 0;
}

// qcache's stale results: every cell but pgpool-II's, whose own query cache is the peer
// being measured (it has a known stale-set race; PGPOOL.md) and is reported apart.
std::uint64_t total_stale(const std::vector<cell_result>& cells) {
  std::uint64_t n = 0;
  for (const auto& c : cells)
    if (c.target != "pgpool") n += c.stale_entries + c.verify_mismatches;
  return n;
}

std::uint64_t peer_stale(const std::vector<cell_result>& cells) {
  std::uint64_t n = 0;
  for (const auto& c : cells)
    if (c.target == "pgpool") n += c.stale_entries + c.verify_mismatches;
  return n;
}

namespace {

const cell_result* find(const std::vector<cell_result>& cells, const std::string& t,
                        const std::string& m) {
  for (const auto& c : cells)
    if (c.target == t && c.mode == m && c.available && !c.throughput.empty()) return &c;
  return nullptr;
}

// Statements that reached the database per operation: the server's own count when there
// is one (PostgreSQL), else what the driver sent.
std::optional<double> db_per_op(const cell_result& c) {
  if (c.ops == 0) return std::nullopt;
  if (c.db_transactions) return double(*c.db_transactions) / double(c.ops);
  if (c.db_statements) return double(*c.db_statements) / double(c.ops);
  return std::nullopt;
}

struct ratio {
  std::string name;
  double throughput = 0, p50 = 0;
  std::optional<double> db_cut;  // fraction of database statements saved
};

std::vector<ratio> ratios(const std::vector<cell_result>& cells) {
  std::vector<ratio> out;
  auto add = [&](const std::string& name, const cell_result* a, const cell_result* b) {
    if (!a || !b || b->median_throughput() <= 0) return;
    ratio r;
    r.name = name;
    r.throughput = a->median_throughput() / b->median_throughput();
    double pa = a->latency.quantile(0.5), pb = b->latency.quantile(0.5);
    r.p50 = pa > 0 ? pb / pa : 0;
    auto da = db_per_op(*a), db = db_per_op(*b);
    if (da && db && *db > 0) r.db_cut = 1 - *da / *db;
    out.push_back(r);
  };
  std::vector<std::string> seen;
  for (const auto& c : cells) {
    if (std::find(seen.begin(), seen.end(), c.target) != seen.end()) continue;
    seen.push_back(c.target);
    add(c.target + ": cached / uncached", find(cells, c.target, "cached"),
        find(cells, c.target, "uncached"));
  }
  add("qcache postgresql cached / pgpool-II cached", find(cells, "postgresql", "cached"),
      find(cells, "pgpool", "cached"));
  add("pgpool-II cached / postgresql uncached (unix socket)", find(cells, "pgpool", "cached"),
      find(cells, "postgresql", "uncached"));
  return out;
}

std::string fmt_num(double v) {
  char b[32];
  if (v >= 1e6) std::snprintf(b, sizeof b, "%.2fM", v / 1e6);
  else if (v >= 1e4) std::snprintf(b, sizeof b, "%.1fk", v / 1e3);
  else std::snprintf(b, sizeof b, "%.0f", v);
  return b;
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char ch : s) {
    switch (ch) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\t': o += "\\t"; break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20) {
          char b[8];
          std::snprintf(b, sizeof b, "\\u%04x", ch);
          o += b;
        } else {
          o += ch;
        }
    }
  }
  return o;
}

std::string jnum(double v) {
  if (!std::isfinite(v)) return "null";
  char b[40];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

std::string jopt(std::optional<double> v) { return v ? jnum(*v) : "null"; }

}  // namespace

void print_table(const run_info& r, const std::vector<cell_result>& cells) {
  std::printf("\nworkload %s: %s\n", r.workload.c_str(), r.workload_description.c_str());
  std::printf("%d process(es) x %d thread(s), %d repetition(s) of %.1f s after %.1f s warm-up "
              "each, modes interleaved, seed %llu\n",
              r.processes, r.threads, r.reps, r.duration, r.warmup, (unsigned long long)r.seed);
  std::printf("%s\n\n", to_string(r.machine).c_str());
  std::printf("%-11s %-9s %10s %7s %8s %8s %8s %6s %8s %9s %8s %6s\n", "target", "mode",
              "ops/s", "spread", "p50 us", "p95 us", "p99 us", "hit %", "db/op", "invalid.",
              "cache MB", "stale");
  for (const auto& c : cells) {
    if (!c.available) {
      std::printf("%-11s %-9s  not run: %s\n", c.target.c_str(), c.mode.c_str(),
                  c.why_unavailable.c_str());
      continue;
    }
    char hit[16] = "-", inv[24] = "-", mb[16] = "-", db[16] = "-", stale[16] = "-";
    if (c.has_cache) {
      std::snprintf(hit, sizeof hit, "%.1f",
                    c.hits + c.misses ? 100.0 * double(c.hits) / double(c.hits + c.misses) : 0);
      std::snprintf(inv, sizeof inv, "%llu", (unsigned long long)c.invalidations);
      std::snprintf(mb, sizeof mb, "%.1f", double(c.cache_bytes) / (1 << 20));
    }
    if (auto d = db_per_op(c)) std::snprintf(db, sizeof db, "%.2f", *d);
    if (c.stale_checked)
      std::snprintf(stale, sizeof stale, "%llu", (unsigned long long)c.stale_entries);
    std::printf("%-11s %-9s %10s %6.0f%% %8.1f %8.1f %8.1f %6s %8s %9s %8s %6s\n",
                c.target.c_str(), c.mode.c_str(), fmt_num(c.median_throughput()).c_str(),
                100 * c.spread(), c.latency.quantile(0.5) / 1000, c.latency.quantile(0.95) / 1000,
                c.latency.quantile(0.99) / 1000, hit, db, inv, mb, stale);
    if (c.errors)
      std::printf("%-21s %llu operation(s) failed; first: %s\n", "",
                  (unsigned long long)c.errors, c.first_error.c_str());
  }
  std::printf("\nops/s: operations (page views and writes) per second, median of the "
              "repetitions; spread = (max-min)/median.\n"
              "db/op: statements that reached the database per operation (PostgreSQL: "
              "transactions counted by the server, qcache's own catalog queries included).\n");
  auto rs = ratios(cells);
  if (!rs.empty()) std::printf("\nratios (same run):\n");
  for (const auto& x : rs) {
    std::printf("  %-52s throughput %6.2fx   p50 latency %6.2fx faster", x.name.c_str(),
                x.throughput, x.p50);
    if (x.db_cut) std::printf("   database statements cut %.1f %%", 100 * *x.db_cut);
    std::printf("\n");
  }
  for (const auto& c : cells)
    if (c.oracle_reads)
      std::printf("\noracle (%s %s): an ideal cache, missing only reads never seen before or "
                  "whose result changed, would hit %.1f %% of %llu reads; qcache hit %.1f %%\n",
                  c.target.c_str(), c.mode.c_str(),
                  100.0 * double(c.oracle_reads - c.oracle_necessary_misses) /
                      double(c.oracle_reads),
                  (unsigned long long)c.oracle_reads,
                  c.hits + c.misses ? 100.0 * double(c.hits) / double(c.hits + c.misses) : 0);
  std::uint64_t checked = 0, verified = 0, mismatches = 0, skipped = 0;
  for (const auto& c : cells) {
    checked += c.stale_checked_entries;
    verified += c.verified;
    mismatches += c.verify_mismatches;
    skipped += c.verify_skipped;
  }
  std::printf("\nfreshness: %llu cached entries re-read through the cache and directly after "
              "the writers stopped\n",
              (unsigned long long)checked);
  if (r.verify)
    std::printf("verify: %llu sampled cached reads compared during the run, %llu mismatches, "
                "%llu skipped (a write was in flight)\n",
                (unsigned long long)verified, (unsigned long long)mismatches,
                (unsigned long long)skipped);
  for (const auto& c : cells)
    if (c.stale_entries || c.verify_mismatches)
      std::printf("STALE%s: %s %s: %llu entries and %llu sampled reads differ from the "
                  "database, e.g. %s\n",
                  c.target == "pgpool" ? " (pgpool-II's own cache, not qcache)" : "",
                  c.target.c_str(), c.mode.c_str(), (unsigned long long)c.stale_entries,
                  (unsigned long long)c.verify_mismatches, c.first_stale.c_str());
  if (std::uint64_t peer = peer_stale(cells))
    std::printf("pgpool-II stale results: %llu (not counted below)\n", (unsigned long long)peer);
  std::printf("stale_entries: %llu\n", (unsigned long long)total_stale(cells));
}

bool write_json(const std::string& file, const run_info& r, const std::vector<cell_result>& cells) {
  std::ostringstream o;
  o << "{\n  \"tool\": \"qcache-bench\",\n";
  o << "  \"command\": \"" << json_escape(r.command_line) << "\",\n";
  o << "  \"machine\": {\"cpu\": \"" << json_escape(r.machine.cpu_model)
    << "\", \"nproc\": " << r.machine.nproc << ", \"kernel\": \"" << json_escape(r.machine.kernel)
    << "\", \"build_type\": \"" << json_escape(r.machine.build_type)
    << "\", \"ndebug\": " << (r.machine.optimized ? "true" : "false")
    << ", \"loadavg\": " << jnum(r.machine.loadavg) << "},\n";
  o << "  \"workload\": \"" << r.workload << "\",\n  \"workload_description\": \""
    << json_escape(r.workload_description) << "\",\n";
  o << "  \"processes\": " << r.processes << ", \"threads\": " << r.threads
    << ", \"reps\": " << r.reps
    << ", \"duration_s\": " << jnum(r.duration) << ", \"warmup_s\": " << jnum(r.warmup)
    << ", \"seed\": " << r.seed << ", \"verify\": " << (r.verify ? "true" : "false") << ",\n";
  o << "  \"results\": [";
  bool first = true;
  for (const auto& c : cells) {
    o << (first ? "\n" : ",\n") << "    {";
    first = false;
    o << "\"target\": \"" << c.target << "\", \"mode\": \"" << c.mode << "\", \"label\": \""
      << json_escape(c.label) << "\", \"available\": " << (c.available ? "true" : "false");
    if (!c.available) {
      o << ", \"why_unavailable\": \"" << json_escape(c.why_unavailable) << "\"}";
      continue;
    }
    o << ",\n     \"throughput_ops\": {\"median\": " << jnum(c.median_throughput())
      << ", \"spread\": " << jnum(c.spread()) << ", \"reps\": [";
    for (std::size_t k = 0; k < c.throughput.size(); ++k)
      o << (k ? ", " : "") << jnum(c.throughput[k]);
    o << "]},\n     \"latency_us\": {\"p50\": " << jnum(c.latency.quantile(0.5) / 1000)
      << ", \"p95\": " << jnum(c.latency.quantile(0.95) / 1000)
      << ", \"p99\": " << jnum(c.latency.quantile(0.99) / 1000)
      << ", \"mean\": " << jnum(c.latency.mean() / 1000) << "},\n";
    o << "     \"ops\": " << c.ops << ", \"reads\": " << c.reads << ", \"writes\": " << c.writes
      << ", \"statements\": " << c.statements << ", \"errors\": " << c.errors
      << ", \"measured_s\": " << jnum(c.measured_seconds) << ",\n";
    o << "     \"hit_ratio\": "
      << (c.has_cache ? jnum(c.hits + c.misses ? double(c.hits) / double(c.hits + c.misses) : 0)
                      : "null")
      << ", \"hits\": " << (c.has_cache ? std::to_string(c.hits) : "null")
      << ", \"misses\": " << (c.has_cache ? std::to_string(c.misses) : "null")
      << ", \"invalidations\": " << (c.has_cache ? std::to_string(c.invalidations) : "null")
      << ", \"cache_bytes\": " << (c.has_cache ? std::to_string(c.cache_bytes) : "null")
      << ", \"cache_entries\": " << (c.has_cache ? std::to_string(c.cache_entries) : "null")
      << ",\n";
    auto per = [&](std::optional<std::uint64_t> v) {
      return v && c.ops ? jnum(double(*v) / double(c.ops)) : std::string("null");
    };
    o << "     \"db_statements_per_op\": " << per(c.db_statements)
      << ", \"db_transactions_per_op\": " << per(c.db_transactions)
      << ", \"db_per_op\": " << jopt(db_per_op(c)) << ",\n";
    o << "     \"stale_checked\": " << (c.stale_checked ? "true" : "false")
      << ", \"stale_checked_entries\": " << c.stale_checked_entries
      << ", \"stale_entries\": " << c.stale_entries << ", \"verified\": " << c.verified
      << ", \"verify_mismatches\": " << c.verify_mismatches
      << ", \"verify_skipped\": " << c.verify_skipped << ",\n";
    o << "     \"oracle_reads\": " << c.oracle_reads
      << ", \"oracle_necessary_misses\": " << c.oracle_necessary_misses << ",\n";
    o << "     \"latency_cdf_us\": [";
    auto cdf = c.latency.cdf();
    for (std::size_t k = 0; k < cdf.size(); ++k)
      o << (k ? ", " : "") << "[" << jnum(cdf[k].first) << ", " << jnum(cdf[k].second) << "]";
    o << "]}";
  }
  o << "\n  ],\n  \"ratios\": [";
  first = true;
  for (const auto& x : ratios(cells)) {
    o << (first ? "\n" : ",\n") << "    {\"name\": \"" << json_escape(x.name)
      << "\", \"throughput\": " << jnum(x.throughput) << ", \"p50_latency\": " << jnum(x.p50)
      << ", \"db_statements_cut\": " << jopt(x.db_cut) << "}";
    first = false;
  }
  o << "\n  ],\n  \"stale_entries\": " << total_stale(cells)
    << ",\n  \"pgpool_stale_results\": " << peer_stale(cells) << "\n}\n";
  std::ofstream f(file);
  f << o.str();
  return bool(f);
}

bool write_plot(const std::string& file, const run_info& r, const std::vector<cell_result>& cells) {
  std::string ext = file.size() > 4 ? file.substr(file.size() - 4) : "";
  std::string term;
  if (ext == ".svg") term = "svg size 1200,520 dynamic font 'sans,11'";
  else if (ext == ".png") term = "pngcairo size 1200,520 font 'sans,10'";
  else {
    std::fprintf(stderr, "--plot: FILE must end in .svg or .png: %s\n", file.c_str());
    return false;
  }
  std::string dat = file + ".dat", gp = file + ".gp";
  std::vector<const cell_result*> run;
  for (const auto& c : cells)
    if (c.available && !c.throughput.empty()) run.push_back(&c);
  {
    std::ofstream d(dat);
    d << "# label median min max\n";
    for (const auto* c : run) {
      auto [lo, hi] = std::minmax_element(c->throughput.begin(), c->throughput.end());
      d << '"' << c->label << "\" " << c->median_throughput() << ' ' << *lo << ' ' << *hi << '\n';
    }
    for (const auto* c : run) {
      d << "\n\n# " << c->label << " latency CDF (us, fraction)\n";
      for (auto [x, y] : c->latency.cdf()) d << x << ' ' << y << '\n';
    }
    if (!d) return false;
  }
  {
    std::ofstream g(gp);
    g << "set terminal " << term << "\nset output '" << file << "'\n";
    g << "set multiplot layout 1,2 title 'qcache-bench " << r.workload << ", " << r.threads
      << " thread(s), " << r.reps << " x " << r.duration << " s (" << r.machine.nproc << " x "
      << r.machine.cpu_model << ")'\n";
    g << "set style fill solid 0.7 border -1\nset boxwidth 0.6\nset grid ytics\n"
         "set title 'throughput (median, min-max)'\nset ylabel 'operations / s'\n"
         "set xtics rotate by -30 noenhanced\nset yrange [0:*]\nunset key\n";
    g << "plot '" << dat << "' index 0 using 0:2:xtic(1) with boxes lc rgb '#4a90d9', '' index 0 "
         "using 0:2:3:4 with yerrorbars lc rgb 'black' pt -1\n";
    g << "set title 'latency CDF'\nset xlabel 'latency per operation (us, log)'\n"
         "set ylabel 'fraction of operations'\nset logscale x\nset xtics norotate auto\n"
         "set yrange [0:1]\nset key bottom right noenhanced\nset grid xtics ytics\n";
    g << "plot ";
    for (std::size_t k = 0; k < run.size(); ++k)
      g << (k ? ", " : "") << "'" << dat << "' index " << k + 1 << " using 1:2 with lines lw 2 title '"
        << run[k]->label << "'";
    g << "\nunset multiplot\n";
    if (!g) return false;
  }
  std::string cmd = "gnuplot '" + gp + "' 2>&1";
  int rc = std::system(cmd.c_str());
  if (rc != 0) {
    std::fprintf(stderr, "gnuplot failed (exit %d): %s\n", rc, cmd.c_str());
    return false;
  }
  return true;
}

}  // namespace qcache::bench
