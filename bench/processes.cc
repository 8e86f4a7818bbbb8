#include "processes.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>

namespace qcache::bench {
namespace {

static_assert(std::is_trivially_copyable_v<histogram>, "sent as bytes between processes");

// ---- A cell_result as bytes (same binary on both ends) ----------------------------------

class encoder {
 public:
  template <class T>
  void pod(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    out_.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void str(const std::string& s) {
    pod(s.size());
    out_ += s;
  }
  template <class T>
  void opt(const std::optional<T>& v) {
    pod(v.has_value());
    pod(v.value_or(T{}));
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class decoder {
 public:
  explicit decoder(const std::string& in) : in_(in) {}
  template <class T>
  void pod(T& v) {
    if (at_ + sizeof v > in_.size()) throw std::runtime_error("--processes: truncated result");
    std::memcpy(&v, in_.data() + at_, sizeof v);
    at_ += sizeof v;
  }
  void str(std::string& s) {
    std::size_t n = 0;
    pod(n);
    if (at_ + n > in_.size()) throw std::runtime_error("--processes: truncated result");
    s.assign(in_, at_, n);
    at_ += n;
  }
  template <class T>
  void opt(std::optional<T>& v) {
    bool has = false;
    T x{};
    pod(has);
    pod(x);
    if (has) v = x;
    else v.reset();
  }

 private:
  const std::string& in_;
  std::size_t at_ = 0;
};

// Every field of cell_result, in one order for both directions.
template <class C, class R>
void fields(C& c, R& r) {
  c.pod(r.available);
  c.pod(r.latency);
  c.pod(r.ops), c.pod(r.reads), c.pod(r.writes), c.pod(r.statements), c.pod(r.errors);
  c.str(r.first_error);
  c.pod(r.has_cache);
  c.pod(r.hits), c.pod(r.misses), c.pod(r.invalidations), c.pod(r.cache_bytes);
  c.pod(r.cache_entries);
  c.opt(r.db_statements), c.opt(r.db_transactions);
  c.pod(r.stale_checked), c.pod(r.stale_checked_entries), c.pod(r.stale_entries);
  c.str(r.first_stale);
  c.pod(r.verified), c.pod(r.verify_mismatches), c.pod(r.verify_skipped);
  c.pod(r.oracle_reads), c.pod(r.oracle_necessary_misses);
  c.pod(r.measured_seconds);
  double tp = r.throughput.empty() ? 0 : r.throughput.back();
  c.pod(tp);
  if (r.throughput.empty()) r.throughput.push_back(tp);
}

std::string encode(cell_result r) {
  encoder e;
  fields(e, r);
  return e.take();
}

cell_result decode(const std::string& bytes) {
  cell_result r;
  decoder d(bytes);
  fields(d, r);
  return r;
}

bool write_all(int fd, const std::string& s) {
  std::size_t done = 0;
  while (done < s.size()) {
    ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n <= 0) return false;
    done += std::size_t(n);
  }
  return true;
}

std::string read_all(int fd) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, std::size_t(n));
  }
  return out;
}

// The child's side: runs, reports ('R' + result or 'E' + message) and never returns.
[[noreturn]] void child_main(int k, shared_cell& shared, int fd,
                             const std::function<cell_result(int, shared_cell&)>& child) {
  std::string msg;
  try {
    msg = "R" + encode(child(k, shared));
  } catch (const std::exception& e) {
    msg = std::string("E") + "process " + std::to_string(k) + ": " + e.what();
    // The others may be waiting for this one at the barrier.
    shared.stopped.fetch_add(1);
  }
  bool ok = write_all(fd, msg);
  std::fflush(stdout);
  ::_exit(ok ? 0 : 1);  // no atexit handlers: they belong to the parent (temp files)
}

}  // namespace

void wait_all_stopped(shared_cell& s, int n) {
  s.stopped.fetch_add(1);
  auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(10);
  while (s.stopped.load() < n) {
    if (std::chrono::steady_clock::now() > give_up)
      throw std::runtime_error("--processes: another process never ended its phase");
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

std::vector<cell_result> run_processes(
    int n, const std::function<cell_result(int, shared_cell&)>& child) {
  void* mem = ::mmap(nullptr, sizeof(shared_cell), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) throw std::runtime_error("--processes: mmap failed");
  auto* shared = new (mem) shared_cell();
  std::fflush(stdout);
  std::fflush(stderr);
  std::vector<pid_t> pids;
  std::vector<int> fds;
  for (int k = 0; k < n; ++k) {
    int p[2];
    if (::pipe(p) != 0) throw std::runtime_error("--processes: pipe failed");
    pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("--processes: fork failed");
    if (pid == 0) {
      ::close(p[0]);
      for (int fd : fds) ::close(fd);
      child_main(k, *shared, p[1], child);
    }
    ::close(p[1]);
    pids.push_back(pid);
    fds.push_back(p[0]);
  }
  std::vector<cell_result> out;
  std::string error;
  for (int k = 0; k < n; ++k) {
    std::string msg = read_all(fds[std::size_t(k)]);
    ::close(fds[std::size_t(k)]);
    int status = 0;
    ::waitpid(pids[std::size_t(k)], &status, 0);
    if (msg.size() > 1 && msg[0] == 'R') out.push_back(decode(msg.substr(1)));
    else if (error.empty())
      error = msg.size() > 1 ? msg.substr(1)
                             : "process " + std::to_string(k) + " died (status " +
                                   std::to_string(status) + ")";
  }
  shared->~shared_cell();
  ::munmap(mem, sizeof(shared_cell));
  if (!error.empty()) throw std::runtime_error(error);
  return out;
}

void merge_processes(const std::vector<cell_result>& parts, cell_result& into) {
  double throughput = 0, seconds = 0;
  for (std::size_t k = 0; k < parts.size(); ++k) {
    const cell_result& p = parts[k];
    throughput += p.throughput.empty() ? 0 : p.throughput.back();
    seconds = std::max(seconds, p.measured_seconds);
    into.latency.merge(p.latency);
    into.ops += p.ops, into.reads += p.reads, into.writes += p.writes;
    into.statements += p.statements, into.errors += p.errors;
    if (into.first_error.empty()) into.first_error = p.first_error;
    into.has_cache = into.has_cache || p.has_cache;
    into.hits += p.hits, into.misses += p.misses, into.invalidations += p.invalidations;
    into.cache_bytes += p.cache_bytes, into.cache_entries += p.cache_entries;
    if (p.db_statements) into.db_statements = into.db_statements.value_or(0) + *p.db_statements;
    // pg_stat_database counts every process's transactions: take one process's view.
    if (k == 0 && p.db_transactions)
      into.db_transactions = into.db_transactions.value_or(0) + *p.db_transactions;
    into.stale_checked = into.stale_checked || p.stale_checked;
    into.stale_checked_entries += p.stale_checked_entries;
    into.stale_entries += p.stale_entries;
    if (into.first_stale.empty()) into.first_stale = p.first_stale;
    into.verified += p.verified, into.verify_mismatches += p.verify_mismatches;
    into.verify_skipped += p.verify_skipped;
    into.oracle_reads += p.oracle_reads;
    into.oracle_necessary_misses += p.oracle_necessary_misses;
  }
  into.throughput.push_back(throughput);
  into.measured_seconds += seconds;
}

}  // namespace qcache::bench
