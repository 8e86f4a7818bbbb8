// Results of qcache-bench and their presentations: summary table, JSON, gnuplot chart.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "machine.h"

namespace qcache::bench {

// Latency histogram: 16 logarithmic buckets per power of two of nanoseconds (about 4 %
// resolution). Merging is adding counts.
class histogram {
 public:
  void add(std::uint64_t ns);
  void merge(const histogram& o);
  std::uint64_t count() const { return n_; }
  // Value (ns) below which a fraction q of the samples lie.
  double quantile(double q) const;
  double mean() const { return n_ ? double(sum_) / double(n_) : 0; }
  // (microseconds, cumulative fraction) points of the distribution.
  std::vector<std::pair<double, double>> cdf() const;

 private:
  static constexpr int kBuckets = 64 * 16;
  static int bucket(std::uint64_t ns);
  static double value(int b);
  std::array<std::uint64_t, kBuckets> c_{};
  std::uint64_t n_ = 0, sum_ = 0;
};

// One target x mode, over all repetitions.
struct cell_result {
  std::string target, mode;     // mode: "uncached" or "cached"
  std::string label;            // e.g. "postgresql cached (qcache)"
  bool available = true;
  std::string why_unavailable;
  std::vector<double> throughput;  // operations per second, one per repetition
  histogram latency;
  std::uint64_t ops = 0, reads = 0, writes = 0, statements = 0, errors = 0;
  std::string first_error;
  bool has_cache = false;       // counters below come from a qcache::cache
  std::uint64_t hits = 0, misses = 0, invalidations = 0, cache_bytes = 0, cache_entries = 0;
  std::optional<std::uint64_t> db_statements;    // statements the driver sent to the database
  std::optional<std::uint64_t> db_transactions;  // pg_stat_database delta
  bool stale_checked = false;
  std::uint64_t stale_checked_entries = 0, stale_entries = 0;
  std::string first_stale;
  std::uint64_t verified = 0, verify_mismatches = 0, verify_skipped = 0;
  std::uint64_t oracle_reads = 0, oracle_necessary_misses = 0;  // --oracle
  double measured_seconds = 0;

  double median_throughput() const;
  double spread() const;  // (max - min) / median
};

struct run_info {
  machine_info machine;
  std::string command_line;
  std::string workload, workload_description;
  int processes = 1, threads = 1, reps = 1;
  double duration = 0, warmup = 0;
  std::uint64_t seed = 0;
  bool verify = false;
};

void print_table(const run_info& r, const std::vector<cell_result>& cells);
bool write_json(const std::string& file, const run_info& r, const std::vector<cell_result>& cells);
// Writes FILE.dat / FILE.gp next to FILE and runs gnuplot. SVG or PNG by FILE's extension.
bool write_plot(const std::string& file, const run_info& r, const std::vector<cell_result>& cells);
// Stale results of qcache's cells (stale entries + --verify mismatches); must be 0.
std::uint64_t total_stale(const std::vector<cell_result>& cells);
// The same for pgpool-II's query cache (the peer), reported apart.
std::uint64_t peer_stale(const std::vector<cell_result>& cells);

}  // namespace qcache::bench
