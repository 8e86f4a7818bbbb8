// qcache-difftest: shared types of the differential tester (see main.cc for the method).
//
// Thread safety: single-threaded by design; the sessions of a scenario run one statement at
// a time, in order, so every comparison is deterministic. The one exception is
// target::server_state(), which the stall watchdog (watchdog.h) calls from its own thread.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace qcache::difftest {

// One statement of a scenario, run by one session.
struct step {
  enum class kind { exec, read } k = kind::exec;
  int session = 0;
  std::string sql;
  std::string family;    // the feature family that generated it ("" for the base mix)
  bool ordered = false;  // a read with ORDER BY: compare rows in order
};

// A generated test case: its schema, the statements, and what drops it again.
struct scenario {
  std::uint64_t seed = 0;
  std::string location;  // SQLite: the main database file (cleanup then lists files to remove)
  std::vector<std::string> setup;         // run directly (no cache) before the sessions open
  std::vector<std::string> session_init;  // run through qcache by each session when it opens
  std::vector<step> steps;
  std::vector<std::string> cleanup;  // run directly afterwards, errors ignored
  std::set<std::string> features;    // the schema features this scenario switched on
};

// What a statement produced: rows as text (NULL is "\x01NULL"), or an error class.
struct outcome {
  bool ok = true;
  std::string error_class;  // PostgreSQL: SQLSTATE; SQLite: the error message's first line
  std::string error_text;
  std::vector<std::string> rows;
};

// One mismatch between a cached read and the direct read after it.
struct mismatch {
  std::size_t step_index = 0;
  std::string family;
  std::string sql;
  std::string detail;
  // Stable key of the failure class, used to shrink each distinct class once.
  std::string signature;
  // A statement ran into the tester's statement_timeout: a stall, reported unshrunk.
  bool timeout = false;
};

// The database under test: opens a scenario's sessions, runs its statements.
class target {
 public:
  virtual ~target() = default;
  // Creates the schema (setup), a fresh cache and `sessions` sessions sharing it.
  virtual void open(const scenario& s, int sessions) = 0;
  // Closes the sessions and runs the cleanup.
  virtual void close(const scenario& s) = 0;
  // Runs a statement through the session's cache (or behind it, in self-check mode for
  // writes); errors are swallowed into the outcome.
  virtual outcome exec(int session, const std::string& sql) = 0;
  // Runs a read through the cache, then the same read directly in the same session state.
  virtual void read(int session, const std::string& sql, outcome& cached, outcome& direct) = 0;
  // An inconclusive pair (e.g. the direct read found the transaction already aborted).
  virtual bool inconclusive(const outcome& cached, const outcome& direct) const = 0;
  virtual int sessions() const = 0;
  // Whether the statement was cancelled by the tester's statement_timeout (a finding).
  virtual bool timed_out(const outcome&) const { return false; }
  // The server's view of every connection (PostgreSQL: pg_stat_activity and pg_locks read
  // through a connection of its own), for timeout and stall reports. Safe to call from
  // another thread while exec() or read() is blocked.
  virtual std::string server_state() const { return {}; }
  // Cache counters summed over the scenarios run so far.
  std::uint64_t hits = 0, misses = 0, flushes = 0, uncacheable = 0;
  // Misses that waited for another caller's query: the sessions share one thread, so any
  // wait is qcache waiting on a flight nobody can finish (up to options.single_flight_wait).
  std::uint64_t single_flight_waits = 0;
  std::uint64_t by_reason[32] = {}, by_cause[16] = {};
};

struct generator_options {
  std::set<std::string> disabled;  // feature families switched off
};

// Generates scenario number `index` of a run from `rng`.
using generator = scenario (*)(std::mt19937_64& rng, int index, const generator_options& o);

scenario generate_postgresql(std::mt19937_64& rng, int index, const generator_options& o);
scenario generate_sqlite(std::mt19937_64& rng, int index, const generator_options& o);
// Sessions cancel any statement after `statement_timeout_s` seconds (see postgresql.cc).
std::unique_ptr<target> make_postgresql_target(const std::string& conninfo, bool self_check,
                                               double statement_timeout_s);
std::unique_ptr<target> make_sqlite_target(bool self_check);
// Every family name each engine knows (for --features validation and the help text).
std::vector<std::string> postgresql_families();
std::vector<std::string> sqlite_families();

}  // namespace qcache::difftest
