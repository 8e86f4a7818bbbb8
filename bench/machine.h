// What every benchmark prints first: the machine and the build (STYLE.md item 9).
#pragma once

#include <string>

namespace qcache::bench {

struct machine_info {
  std::string cpu_model;   // /proc/cpuinfo "model name"
  unsigned nproc = 0;      // online processors
  std::string build_type;  // CMAKE_BUILD_TYPE the binary was built with
  bool optimized = false;  // NDEBUG was defined
  std::string kernel;      // uname -sr
  double loadavg = 0;      // 1-minute load average when the run started
};

machine_info describe_machine();

// One line: "machine: 2 x AMD EPYC, Linux 6.1, build Release (NDEBUG), load 1.20".
std::string to_string(const machine_info& m);

// True when figures may be reported. Otherwise prints why not to stderr.
bool may_report(const machine_info& m);

}  // namespace qcache::bench
