// --processes N: one cell of qcache-bench run by N forked processes side by side, each
// with its own target (its own cache and connections), all reading and writing the same
// database. What one process writes reaches the others' caches only through the database
// (PostgreSQL's change stream, SQLite's file): the case of several web-server workers.
//
// Thread safety: run_processes forks, so it must be called while the calling process runs
// no other thread. The shared_cell it hands to the children lives in memory shared by
// all of them; its members are lock-free atomics.
#pragma once

#include <atomic>
#include <functional>
#include <vector>

#include "bench.h"
#include "report.h"

namespace qcache::bench {

// What the processes of one cell share.
struct shared_cell {
  write_tracker writes;        // --verify: writes in flight in any process
  std::atomic<int> stopped{0};  // processes whose measured phase ended
};

// Blocks until all `n` processes of the cell have ended their measured phase, so that
// the freshness check runs with every writer stopped.
void wait_all_stopped(shared_cell& s, int n);

// Runs `child(k, shared)` in processes k = 0..n-1 and returns their results in order.
// A child that throws or dies makes this throw, with its message.
std::vector<cell_result> run_processes(
    int n, const std::function<cell_result(int k, shared_cell& shared)>& child);

// Adds one repetition run by several processes to `into`: throughputs add up, counters
// add up, latency distributions merge, the measured time is the longest.
void merge_processes(const std::vector<cell_result>& parts, cell_result& into);

}  // namespace qcache::bench
