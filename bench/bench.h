// qcache-bench's building blocks: statements, connections, targets and workloads.
//
// A workload (workloads.cc) issues named statements through a `session` (one per worker
// thread), which forwards them to a `connection` of a target (targets_*.cc) and does the
// bookkeeping the report needs: statements sent, reads to re-check for freshness, and the
// optional --verify sampling. Connections are used by one thread; targets are shared.
#pragma once

#include <qcache/cache.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace qcache::bench {

enum class dialect { sqlite, postgresql };

// A statement of a workload. SQL uses PostgreSQL placeholders ($1, $2, ...); targets
// translate them for their driver.
struct statement {
  std::string name;          // prepared statement name
  std::string sql;
  bool write = false;
  std::vector<int> tables;   // indexes into workload::tables() it reads or writes
};

// Parameters of one call: integers or text, at most six. Reads take at most one
// integer (the freshness check records reads as (statement, parameter) pairs).
struct params {
  int n = 0;
  std::array<std::int64_t, 6> i{};
  std::array<std::string, 6> s{};
  std::array<bool, 6> text{};
  params() = default;
  explicit params(std::int64_t a) { add(a); }
  params& add(std::int64_t v) {
    i[n] = v;
    text[n] = false;
    ++n;
    return *this;
  }
  params& add(std::string v) {
    s[n] = std::move(v);
    text[n] = true;
    ++n;
    return *this;
  }
  std::string as_text(int k) const { return text[k] ? s[k] : std::to_string(i[k]); }
};

// One database connection of a target, in one mode. One thread at a time.
class connection {
 public:
  virtual ~connection() = default;
  // Runs read `stmt` and consumes every value, as rendering a page would. Returns a
  // checksum of what it read; when `canon` is not null, appends a canonical text of the
  // rows (for comparing two paths).
  virtual std::uint64_t read(int stmt, const params& p, std::string* canon) = 0;
  virtual void write(int stmt, const params& p) = 0;
  virtual void begin() = 0;
  virtual void commit() = 0;
  // Runs SQL text as is (schema and bulk loading).
  virtual void exec_raw(const std::string& sql) = 0;
  // Waits until this connection's cache reflects every commit visible on the server now,
  // whoever made it (qcache's sync(), where the front end has one). Nothing to do for
  // connections that see every write themselves (uncached, or one process).
  virtual void sync() {}
};

enum class mode { uncached, cached };
const char* to_string(mode m);

// Where statements go. Thread-safe: connect() may be called from any thread.
class target {
 public:
  virtual ~target() = default;
  virtual std::string name() const = 0;
  virtual dialect sql_dialect() const = 0;
  // Whether `m` can run here (the cached SOCI modes need the SOCI adapter); when not,
  // `why` says why.
  virtual bool supports(mode m, std::string* why) const = 0;
  // Prepares statements for the connections to come. Called once, before connect().
  virtual void set_statements(const std::vector<statement>& s) = 0;
  // A connection of mode `m`. Cached connections of one target share one cache.
  virtual std::unique_ptr<connection> connect(mode m) = 0;
  // A plain connection straight to the database (loading, freshness checks).
  virtual std::unique_ptr<connection> connect_direct() = 0;
  // Makes mode `m`'s cache forget everything (writes of other modes bypassed it).
  virtual void reset_cache(mode m, const std::vector<std::string>& tables) = 0;
  // The cache's counters, for modes backed by a qcache::cache.
  virtual std::optional<qcache::stats> cache_stats(mode m) = 0;
  // Transactions committed or rolled back in the benchmark database so far, from
  // pg_stat_database (PostgreSQL targets); waits up to `settle_s` for the server's
  // statistics to catch up.
  virtual std::optional<std::uint64_t> server_transactions(double settle_s) {
    (void)settle_s;
    return std::nullopt;
  }
  // Which database holds the data: targets with the same key share one data set.
  virtual std::string database_key() const = 0;
};

struct target_config {
  std::string pg;          // libpq connection string, unix socket (QCACHE_PG)
  std::string pg_tcp;      // loopback TCP (QCACHE_PG_TCP)
  std::string pgpool;      // pgpool-II (QCACHE_PGPOOL)
  std::string database;    // database created and used for the benchmark
  std::string sqlite_file;
  bool pgpool_prepared = false;  // pgpool through exec_prepared instead of literal SQL
  qcache::options cache_options;
};

std::unique_ptr<target> make_postgresql_target(const target_config& c);
std::unique_ptr<target> make_pgpool_target(const target_config& c);
std::unique_ptr<target> make_sqlite_target(const target_config& c);
std::unique_ptr<target> make_soci_pg_target(const target_config& c);
bool soci_adapter_available();
// Creates database `db` through `conninfo` unless it exists.
void ensure_pg_database(const std::string& conninfo, const std::string& db);

// Zipf-distributed ranks in [0, n) with exponent s (s = 0: uniform).
class zipf {
 public:
  zipf(std::size_t n, double s);
  template <class R>
  std::size_t operator()(R& rng) const {
    if (cdf_.empty()) return std::uniform_int_distribution<std::size_t>(0, n_ - 1)(rng);
    double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    auto it = std::lower_bound(cdf_.begin(), cdf_.end(), u);
    return std::min<std::size_t>(static_cast<std::size_t>(it - cdf_.begin()), n_ - 1);
  }

 private:
  std::size_t n_;
  std::vector<double> cdf_;
};

// Shared state of the writers, for --verify: a table with a write in flight is not
// verified, and a verification is discarded when a write started or ended meanwhile.
struct write_tracker {
  std::array<std::atomic<int>, 8> in_flight{};
  std::array<std::atomic<std::uint64_t>, 8> seq{};
};

// --oracle: what an ideal cache would have missed in the same run. A read counts as a
// necessary miss when its (statement, first parameter) was never read before in this
// repetition (warm-up included) or its result differs from the previous read's. Shared
// by the threads of one repetition; only the measured phase is counted.
struct change_oracle {
  std::mutex mu;
  std::unordered_map<std::uint64_t, std::size_t> last;  // key -> hash of the result text
  bool counting = false;
  std::uint64_t reads = 0, necessary_misses = 0;
  void saw(std::uint64_t key, const std::string& result);
};

// Per-thread front of a connection: what a workload talks to.
class session {
 public:
  session(connection& c, connection* direct, write_tracker& wt,
          const std::vector<statement>& stmts, bool record_reads, double verify_rate,
          std::uint64_t seed);
  std::uint64_t read(int stmt, const params& p);
  void write(int stmt, const params& p);
  void begin();
  void commit();
  // After an operation threw: ends the open transaction, if any (best effort).
  void recover() noexcept;

  change_oracle* oracle = nullptr;  // --oracle (not combined with --verify)
  std::uint64_t statements = 0;  // statements handed to the driver (BEGIN/COMMIT included)
  std::uint64_t verified = 0, verify_mismatches = 0, verify_skipped = 0;
  std::uint64_t excluded_ns = 0;  // time spent verifying, not part of the operation
  std::vector<std::uint64_t> reads;  // (statement << 48 | parameter) of each read
  std::string first_mismatch;

 private:
  void end_writes();
  connection& c_;
  connection* direct_;
  write_tracker& wt_;
  const std::vector<statement>& stmts_;
  bool record_;
  double verify_rate_;
  std::mt19937_64 rng_;
  std::vector<int> held_;  // tables written by the open transaction
  bool in_tx_ = false;
};

struct workload_config {
  double scale = 1.0;
  double write_ratio = -1;  // < 0: the workload's default
  double zipf_s = 0.99;
  std::uint64_t seed = 42;
};

class workload {
 public:
  virtual ~workload() = default;
  virtual std::string name() const = 0;
  virtual std::vector<std::string> tables() const = 0;
  virtual std::vector<statement> statements() const = 0;
  // Drops and recreates the schema and loads the data (deterministic from the seed).
  virtual void load(connection& c, dialect d) = 0;
  // Runs one operation (a page view or a write). `rng` is the thread's generator.
  virtual void run_one(session& s, std::mt19937_64& rng) = 0;
  // Short description of sizes and mix, for the report.
  virtual std::string describe() const = 0;
  // Moves the counters new rows take their ids from by `offset`, so that processes
  // running the workload side by side (--processes) never insert the same id.
  virtual void offset_new_ids(std::int64_t offset) { (void)offset; }
};

std::unique_ptr<workload> make_workload(const std::string& name, const workload_config& c);

// --pages (pages.cc): post pages rendered uncached, from cached queries, and memoized.
struct pages_config {
  std::string sqlite_file;
  double scale = 1, zipf_s = 0.99, write_ratio = 0.10;
  double duration = 3, warmup = 1;
  std::uint64_t seed = 42;
};
// Prints the three modes side by side. Returns 0, or 2 when a stale page was found.
int run_pages(const pages_config& c);

}  // namespace qcache::bench
