// qcache-difftest: what the run is doing right now (progress), heartbeat lines, and the
// stall watchdog that reports every connection's state and ends the run.
//
// Thread safety: `progress` is written by the run's thread and read by the watchdog's
// thread; every member function takes its mutex. The watchdog calls target::server_state()
// from its own thread while the run's thread may be blocked inside the target, so that
// function must use nothing the run's thread uses (PostgreSQL: its own connection).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "difftest.h"

namespace qcache::difftest {

class progress {
 public:
  // A new scenario (and its schema setup) begins.
  void begin_scenario(std::uint64_t index, std::uint64_t seed, std::size_t steps);
  // The run's thread is about to run step `index` of the current scenario (`phase`: "exec",
  // "cached read" or "direct read").
  void begin_step(std::size_t index, const step& st, const char* phase);
  // The statement begun last returned `result` (a short description).
  void end_step(const std::string& result);
  // Something other than a step finished (setup, cleanup, a shrink run's boundary).
  void mark();
  void count_failure();
  // One heartbeat line: totals, the current scenario/step/family, seconds since progress.
  std::string heartbeat(double elapsed) const;
  // Everything the tester knows: the statement in flight and each session's recent ones.
  std::string describe() const;
  double seconds_since_progress() const;

 private:
  struct session_log {
    std::deque<std::string> recent;  // the last few statements of the session and results
  };
  mutable std::mutex mu_;
  std::uint64_t scenarios_ = 0, statements_ = 0, failures_ = 0;
  std::uint64_t scenario_index_ = 0, scenario_seed_ = 0;
  std::size_t scenario_steps_ = 0, step_index_ = 0;
  int session_ = -1;
  bool in_flight_ = false;
  std::string phase_, family_, sql_;
  std::map<int, session_log> sessions_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

// The one progress record of this process's run (one run per process).
progress& run_progress();

// A thread that prints a heartbeat line every `heartbeat_s` seconds and, when the run makes
// no progress for `stall_s` seconds, prints the tester's state and the server's view of
// every connection, then ends the process with exit status 3. 0 switches either off.
class watchdog {
 public:
  watchdog(const target& t, double heartbeat_s, double stall_s);
  ~watchdog();  // stops and joins the thread
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;

 private:
  void loop();
  [[noreturn]] void stalled(double elapsed) const;

  const target& target_;
  double heartbeat_s_, stall_s_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace qcache::difftest
