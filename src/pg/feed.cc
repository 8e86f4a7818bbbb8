// The engine's view of a change stream (feed.h) and the registry of running followers.
#include "pg/feed.h"

#include <map>
#include <stdexcept>

namespace qcache::pg {

feed::feed(std::shared_ptr<cache> c, std::shared_ptr<stream_schema> schema)
    : cache_(std::move(c)), schema_(std::move(schema)) {}

stream_mark feed::mark() const noexcept {
  // The state first (a transition after it makes may_store refuse), then W before A:
  // W <= A always holds for what is read, and both only grow.
  stream_mark m;
  m.state = state_.load(std::memory_order_seq_cst);
  m.confirmed = confirmed_.load(std::memory_order_seq_cst);
  m.applied = applied_.load(std::memory_order_seq_cst);
  return m;
}

bool feed::may_store(const stream_mark& m, const qcache::snapshot& s) const {
  if ((m.state & 1) == 0 || state_.load(std::memory_order_seq_cst) != m.state) return false;
  if (m.applied <= m.confirmed) return true;
  std::lock_guard lock(mu_);
  // The ring must still hold every seq in (W, A].
  if (ring_.empty() || ring_.front().seq > m.confirmed + 1) return false;
  for (const applied_commit& c : ring_) {
    if (c.seq <= m.confirmed) continue;
    if (c.seq > m.applied) break;
    if (cache_->shares_counter(s, c.tags)) return false;
  }
  return true;
}

void feed::go_down() noexcept {
  // Any thread may take the stream down (the follower, a sync() that timed out): one
  // transition from up however many race (two increments would make it up again).
  std::uint64_t s = state_.load(std::memory_order_seq_cst);
  while ((s & 1) && !state_.compare_exchange_weak(s, s + 1, std::memory_order_seq_cst)) {
  }
  tags::tag t = tags::database(schema_->tag_space());
  cache_->invalidate(std::span<const tags::tag>(&t, 1), invalidation_cause::stream);
  wait_cv_.notify_all();
}

void feed::go_up() noexcept {
  std::uint64_t s = state_.load(std::memory_order_seq_cst);
  if (!(s & 1)) state_.fetch_add(1, std::memory_order_seq_cst);
  wait_cv_.notify_all();
}

std::uint64_t feed::apply(std::uint64_t xid, std::vector<tags::tag> t) {
  std::uint64_t seq = applied_.load(std::memory_order_relaxed) + 1;
  {
    std::lock_guard lock(mu_);
    ring_.push_back({seq, xid, t});
    while (ring_.size() > ring_size) ring_.pop_front();
  }
  // Recorded and counted before the tags move: a reader whose capture saw the move
  // reads an A that includes this commit.
  applied_.store(seq, std::memory_order_seq_cst);
  cache_->invalidate(t, invalidation_cause::stream);
  return seq;
}

void feed::confirm(std::uint64_t seq) noexcept {
  if (seq <= confirmed_.load(std::memory_order_relaxed)) return;
  {
    std::lock_guard lock(wait_mu_);
    confirmed_.store(seq, std::memory_order_seq_cst);
  }
  wait_cv_.notify_all();
}

void feed::await_echo(std::chrono::milliseconds timeout) noexcept {
  if (!serving()) return;
  try {
    if (auto lsn = current_lsn()) wait_processed(*lsn, timeout);
  } catch (...) {
  }
}

void feed::set_processed(std::uint64_t lsn) noexcept {
  if (lsn <= processed_.load(std::memory_order_relaxed)) return;
  {
    std::lock_guard lock(wait_mu_);
    processed_.store(lsn, std::memory_order_release);
  }
  wait_cv_.notify_all();
}

void feed::restart_processed(std::uint64_t lsn) noexcept {
  {
    std::lock_guard lock(wait_mu_);
    processed_.store(lsn, std::memory_order_release);
  }
  wait_cv_.notify_all();
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> feed::unconfirmed() const {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  std::uint64_t w = confirmed_.load(std::memory_order_acquire);
  std::lock_guard lock(mu_);
  for (const applied_commit& c : ring_)
    if (c.seq > w) out.emplace_back(c.seq, c.xid);
  return out;
}

bool feed::wait_processed(std::uint64_t lsn, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto done = [&] { return processed_.load(std::memory_order_acquire) >= lsn; };
  while (!done()) {
    if (!serving()) return false;
    reply_wanted.store(true, std::memory_order_release);
    if (wake) wake();
    std::unique_lock lock(wait_mu_);
    auto step =
        std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(20));
    wait_cv_.wait_until(lock, step, [&] { return done() || !serving(); });
    if (!done() && std::chrono::steady_clock::now() >= deadline) {
      // Down before returning, from this thread: the follower may take a while to get
      // to lost_wanted, and a hit served meanwhile could miss what sync() waited for.
      lock.unlock();
      go_down();
      lost_wanted.store(true, std::memory_order_release);
      if (wake) wake();
      return false;
    }
  }
  // Everything applied so far confirmed visible too (the follower checks right after
  // applying), so that results stored from now on are not refused for those commits.
  // Not waited for beyond the deadline: a commit stuck before visibility (synchronous
  // replication) only makes stores of its tags refuse until it is visible.
  std::uint64_t a = applied_.load(std::memory_order_acquire);
  std::unique_lock lock(wait_mu_);
  wait_cv_.wait_until(lock, deadline, [&] {
    return confirmed_.load(std::memory_order_acquire) >= a || !serving();
  });
  return serving();
}

namespace {
std::atomic<follower_factory> g_factory{nullptr};
std::mutex g_feeds_mu;
std::map<std::pair<const cache*, std::string>, std::weak_ptr<feed>> g_feeds;
}  // namespace

void install_follower_factory(follower_factory f) noexcept {
  g_factory.store(f, std::memory_order_release);
}

std::shared_ptr<feed> feed_for(const follow_request& r) {
  follower_factory f = g_factory.load(std::memory_order_acquire);
  if (!f) throw std::logic_error("qcache: follow_changes needs a PostgreSQL adapter's follower");
  // One follower per (cache, tag space); creating it holds the registry lock, so two
  // sessions connecting at once share one stream.
  std::lock_guard lock(g_feeds_mu);
  auto key = std::make_pair(r.owner.get(), r.schema->tag_space());
  if (auto x = g_feeds[key].lock()) return x;
  std::shared_ptr<feed> x = f(r);
  g_feeds[key] = x;
  return x;
}

}  // namespace qcache::pg
