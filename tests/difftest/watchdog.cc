// qcache-difftest: progress, heartbeat and the stall watchdog (see watchdog.h).
//
// Invariants: the run's thread updates `progress` before and after every statement, so
// "seconds since progress" is the age of the statement in flight (or of the last boundary:
// scenario setup, cleanup). The watchdog never touches the run's connections.
#include "watchdog.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>

namespace qcache::difftest {
namespace {

constexpr std::size_t kRecentPerSession = 6;

// `s` on one line, at most `n` characters (server messages span several lines).
std::string shorten(const std::string& s, std::size_t n = 300) {
  std::string line;
  for (char ch : s.substr(0, n)) line += ch == '\n' ? ' ' : ch;
  while (!line.empty() && line.back() == ' ') line.pop_back();
  return s.size() <= n ? line : line + "...";
}

double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

void progress::begin_scenario(std::uint64_t index, std::uint64_t seed, std::size_t steps) {
  std::lock_guard lock(mu_);
  ++scenarios_;
  scenario_index_ = index, scenario_seed_ = seed, scenario_steps_ = steps;
  step_index_ = 0, session_ = -1, in_flight_ = false;
  phase_ = "setup", family_ = "-", sql_.clear();
  sessions_.clear();
  last_ = std::chrono::steady_clock::now();
}

void progress::begin_step(std::size_t index, const step& st, const char* phase) {
  std::lock_guard lock(mu_);
  step_index_ = index, session_ = st.session, in_flight_ = true;
  phase_ = phase, family_ = st.family.empty() ? "base" : st.family, sql_ = st.sql;
}

void progress::end_step(const std::string& result) {
  std::lock_guard lock(mu_);
  ++statements_;
  in_flight_ = false;
  auto& recent = sessions_[session_].recent;
  recent.push_back("step " + std::to_string(step_index_) + " " + phase_ + ": " + shorten(sql_) +
                   " -> " + shorten(result, 160));
  if (recent.size() > kRecentPerSession) recent.pop_front();
  last_ = std::chrono::steady_clock::now();
}

void progress::mark() {
  std::lock_guard lock(mu_);
  last_ = std::chrono::steady_clock::now();
}

void progress::count_failure() {
  std::lock_guard lock(mu_);
  ++failures_;
}

double progress::seconds_since_progress() const {
  std::lock_guard lock(mu_);
  return since(last_);
}

std::string progress::heartbeat(double elapsed) const {
  std::lock_guard lock(mu_);
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(1);
  // No " N failed" here: ctest's self-check matches that pattern in the summary line.
  os << "heartbeat " << elapsed << "s: scenarios " << scenarios_ << ", statements " << statements_
     << ", failures " << failures_ << "; scenario " << scenario_index_ << " (seed "
     << scenario_seed_ << ") step " << step_index_ << "/" << scenario_steps_ << " [" << family_
     << "] " << (in_flight_ ? "in " : "after ") << phase_ << " s" << session_ << "; "
     << since(last_) << "s since progress";
  return os.str();
}

std::string progress::describe() const {
  std::lock_guard lock(mu_);
  std::ostringstream os;
  os << "-- tester: scenario " << scenario_index_ << " (seed " << scenario_seed_ << "), step "
     << step_index_ << " of " << scenario_steps_ << ", family " << family_ << "\n";
  if (in_flight_)
    os << "-- in flight for " << since(last_) << "s: s" << session_ << " " << phase_ << ": "
       << shorten(sql_, 1000) << "\n";
  else
    os << "-- no statement in flight (" << phase_ << "), " << since(last_) << "s since progress\n";
  for (const auto& [n, log] : sessions_) {
    os << "-- session s" << n << ", its last statements:\n";
    for (const auto& line : log.recent) os << "     " << line << "\n";
  }
  return os.str();
}

progress& run_progress() {
  static progress p;
  return p;
}

watchdog::watchdog(const target& t, double heartbeat_s, double stall_s)
    : target_(t), heartbeat_s_(heartbeat_s), stall_s_(stall_s) {
  if (heartbeat_s_ > 0 || stall_s_ > 0) thread_ = std::thread([this] { loop(); });
}

watchdog::~watchdog() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void watchdog::loop() {
  auto next_beat = start_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                std::chrono::duration<double>(heartbeat_s_));
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_; })) {
    const double elapsed = since(start_);
    if (heartbeat_s_ > 0 && std::chrono::steady_clock::now() >= next_beat) {
      std::cout << run_progress().heartbeat(elapsed) << std::endl;
      next_beat += std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double>(heartbeat_s_));
    }
    if (stall_s_ > 0 && run_progress().seconds_since_progress() >= stall_s_) stalled(elapsed);
  }
}

void watchdog::stalled(double elapsed) const {
  std::cout << "\n==== STALL: no progress for " << run_progress().seconds_since_progress()
            << "s (limit " << stall_s_ << "s) at " << elapsed << "s into the run\n"
            << run_progress().heartbeat(elapsed) << "\n"
            << run_progress().describe() << target_.server_state()
            << "==== the watchdog ends the run (exit status 3)" << std::endl;
  std::fflush(stdout);
  std::_Exit(3);
}

}  // namespace qcache::difftest
