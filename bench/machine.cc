#include "machine.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#ifndef QCACHE_BENCH_BUILD_TYPE
#define QCACHE_BENCH_BUILD_TYPE "unknown"
#endif

namespace qcache::bench {

machine_info describe_machine() {
  machine_info m;
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) m.cpu_model = line.substr(colon + 2);
      break;
    }
  }
  if (m.cpu_model.empty()) m.cpu_model = "unknown CPU";
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  m.nproc = n > 0 ? static_cast<unsigned>(n) : 0;
  m.build_type = QCACHE_BENCH_BUILD_TYPE;
#ifdef NDEBUG
  m.optimized = true;
#endif
  utsname u{};
  if (uname(&u) == 0) m.kernel = std::string(u.sysname) + " " + u.release;
  double l[1] = {0};
  if (getloadavg(l, 1) == 1) m.loadavg = l[0];
  return m;
}

std::string to_string(const machine_info& m) {
  char buf[512];
  std::snprintf(buf, sizeof buf, "machine: %u x %s, %s, build %s (%s), load %.2f", m.nproc,
                m.cpu_model.c_str(), m.kernel.c_str(), m.build_type.c_str(),
                m.optimized ? "NDEBUG" : "assertions on", m.loadavg);
  return buf;
}

bool may_report(const machine_info& m) {
  if (m.optimized && m.build_type != "Debug") return true;
  std::fprintf(stderr,
               "refusing to report benchmark figures from a %s build without NDEBUG: "
               "configure with -DCMAKE_BUILD_TYPE=Release (e.g. build-release/)\n",
               m.build_type.c_str());
  return false;
}

}  // namespace qcache::bench
