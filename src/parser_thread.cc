// Invariants: at most one parser thread per process image; it is created lazily by the
// first post, never joined and never destroyed (the state is leaked on purpose so that
// static destruction at exit cannot race with it). Jobs run in FIFO order, one at a time.
// In a forked child the parent's thread does not exist: an atfork handler makes the child
// start a new one (leaking the parent's copied state, whose mutex may be locked).
#include "parser_thread.h"

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <new>

namespace qcache::detail {
namespace {

// libpg_query's JSON output recurses once per tree level (~130 bytes each); see analyzer.cc.
constexpr std::size_t kParserStackBytes = 64u << 20;

thread_local bool t_is_parser_thread = false;

struct parser_thread {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> jobs;

  parser_thread() {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, kParserStackBytes);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t tid;
    int rc = pthread_create(&tid, &attr, &parser_thread::main, this);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
      // Without the parser thread no statement can be analysed; there is no sane fallback
      // (parsing on callers' threads is what this file exists to prevent).
      std::fprintf(stderr, "qcache: cannot start the parser thread (pthread_create: %d)\n", rc);
      std::abort();
    }
  }

  static void* main(void* self) {
    t_is_parser_thread = true;
    static_cast<parser_thread*>(self)->loop();
    return nullptr;
  }

  [[noreturn]] void loop() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [this] { return !jobs.empty(); });
        job = std::move(jobs.front());
        jobs.pop_front();
      }
      job();
    }
  }

  void post(std::function<void()> job) {
    {
      std::lock_guard lock(mu);
      jobs.push_back(std::move(job));
    }
    cv.notify_one();
  }
};

std::atomic<parser_thread*> g_thread{nullptr};
std::mutex g_start_mu;

void reset_in_child() noexcept {
  // The copied mutexes may be held by threads that do not exist in the child: leak them.
  new (&g_start_mu) std::mutex();
  g_thread.store(nullptr, std::memory_order_release);
}

parser_thread& instance() {
  parser_thread* p = g_thread.load(std::memory_order_acquire);
  if (p != nullptr) return *p;
  std::lock_guard lock(g_start_mu);
  p = g_thread.load(std::memory_order_acquire);
  if (p == nullptr) {
    static const bool atfork_registered = [] {
      pthread_atfork(nullptr, nullptr, &reset_in_child);
      return true;
    }();
    (void)atfork_registered;
    p = new parser_thread();  // leaked on purpose, see the invariants above
    g_thread.store(p, std::memory_order_release);
  }
  return *p;
}

}  // namespace

bool on_parser_thread() noexcept { return t_is_parser_thread; }

void post_to_parser_thread(std::function<void()> job) { instance().post(std::move(job)); }

}  // namespace qcache::detail
