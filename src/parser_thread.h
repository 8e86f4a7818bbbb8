// The one thread that runs libpg_query.
//
// libpg_query allocates a pthread key for every thread that ever parses and never
// releases it; after ~1024 distinct threads pthread_key_create fails process-wide. So every
// parse in qcache runs here: one long-lived thread with a 64 MiB stack (deeply nested SQL
// must fail with a parser error, not overflow the stack; the memory is only reserved), started on
// first use, running jobs one at a time in submission order. pg_query_exit() is never called (it
// crashes when a thread that called it parses again or exits).
//
// Thread safety: run_on_parser_thread() may be called from any thread, concurrently. A job
// that itself calls run_on_parser_thread() runs the inner job inline (no deadlock). After
// fork() the child gets a fresh parser thread on first use.
#pragma once

#include <functional>
#include <future>
#include <type_traits>
#include <utility>

namespace qcache::detail {

// Queues `job` to run on the parser thread; returns without waiting. `job` must not throw.
void post_to_parser_thread(std::function<void()> job);

// True when called on the parser thread itself.
bool on_parser_thread() noexcept;

// Runs fn() on the parser thread, blocks until it finished, and returns its result or
// rethrows its exception.
template <class F>
std::invoke_result_t<F&> run_on_parser_thread(F&& fn) {
  using result = std::invoke_result_t<F&>;
  if (on_parser_thread()) return fn();
  std::packaged_task<result()> task(std::ref(fn));
  std::future<result> done = task.get_future();
  // The caller blocks until the task ran, so the job may refer to it by reference.
  post_to_parser_thread([&task] { task(); });
  return done.get();
}

}  // namespace qcache::detail
