// The engine's view of a change stream (feed.h) and the registry of running followers.
#include "pg/feed.h"

#include <cstdlib>
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
  std::shared_ptr<cache> owner = cache_.lock();
  if (!owner) return false;
  std::lock_guard lock(mu_);
  // The ring must still hold every seq in (W, A].
  if (ring_.empty() || ring_.front().seq > m.confirmed + 1) return false;
  for (const applied_commit& c : ring_) {
    if (c.seq <= m.confirmed) continue;
    if (c.seq > m.applied) break;
    if (owner->shares_counter(s, c.tags)) return false;
  }
  return true;
}

void feed::go_down() noexcept {
  // Commits not yet seen are either lost with the stream (covered by the database tag
  // below) or come again from a new slot: applied then, as another client's.
  own_clear();
  // Any thread may take the stream down (the follower, a sync() that timed out, a COMMIT
  // of unknown outcome): one transition from up however many race (two increments would
  // make it up again).
  std::uint64_t s = state_.load(std::memory_order_seq_cst);
  while ((s & 1) && !state_.compare_exchange_weak(s, s + 1, std::memory_order_seq_cst)) {
  }
  tags::tag t = tags::database(schema_->tag_space());
  if (auto owner = cache_.lock())
    owner->invalidate(std::span<const tags::tag>(&t, 1), invalidation_cause::stream);
  wait_cv_.notify_all();
}

void feed::go_up() noexcept {
  std::uint64_t s = state_.load(std::memory_order_seq_cst);
  if (!(s & 1)) state_.fetch_add(1, std::memory_order_seq_cst);
  wait_cv_.notify_all();
}

std::uint64_t feed::apply(std::uint64_t xid, std::vector<tags::tag> t) {
  // An own commit moves nothing and enters the ring without tags (it still takes a seq,
  // so that W and A keep counting every commit). Sound because the session registered
  // it while holding every tag its statements may change, and releases that hold only
  // after COMMIT returned, i.e. once the commit is visible to every new snapshot: a
  // read captured before the release is refused by the release's version move, one
  // captured after reads a snapshot that has the commit. No ring tags are needed for the
  // decoded-before-visible race either: until the release no store of those tags can
  // succeed. Where visibility at the release is not certain the session forgot the xid
  // first (own_forget, own_outcome_unknown).
  bool own = xid != 0 && own_take(static_cast<std::uint32_t>(xid));
  if (own) {
    own_skipped_.fetch_add(1, std::memory_order_acq_rel);
    t.clear();
    xid = 0;  // nothing for confirm_visibility to check (see unconfirmed())
  }
  std::uint64_t seq = applied_.load(std::memory_order_relaxed) + 1;
  {
    std::lock_guard lock(mu_);
    ring_.push_back({seq, xid, t});
    while (ring_.size() > ring_size) ring_.pop_front();
  }
  // Recorded and counted before the tags move: a reader whose capture saw the move
  // reads an A that includes this commit.
  applied_.store(seq, std::memory_order_seq_cst);
  if (!own)
    if (auto owner = cache_.lock()) owner->invalidate(t, invalidation_cause::stream);
  return seq;
}

bool feed::own_register(std::uint64_t xid8) {
  auto now = std::chrono::steady_clock::now();
  auto x = static_cast<std::uint32_t>(xid8);
  std::lock_guard lock(own_mu_);
  // Drop what is too old (its commit never reached the stream: a transaction that wrote
  // only temporary or unlogged tables, an empty one, a stream that lags) and what was
  // erased since. Dropping early is safe: that copy then invalidates.
  while (!own_order_.empty()) {
    auto [ox, at] = own_order_.front();
    auto it = own_.find(ox);
    bool live = it != own_.end() && it->second == at;
    if (live && now - at < own_ttl && own_.size() < own_cap) break;
    if (live) own_.erase(it);
    own_order_.pop_front();
  }
  if (own_.size() >= own_cap) return false;
  // A long transaction at the front keeps erased entries behind it: drop those now and
  // then, so that the queue stays within a small multiple of the live set.
  if (own_order_.size() >= 2 * own_cap) {
    std::erase_if(own_order_, [&](const auto& e) {
      auto it = own_.find(e.first);
      return it == own_.end() || it->second != e.second;
    });
  }
  own_[x] = now;
  own_order_.emplace_back(x, now);
  return true;
}

void feed::own_forget(std::uint64_t xid8) noexcept {
  std::lock_guard lock(own_mu_);
  own_.erase(static_cast<std::uint32_t>(xid8));
}

void feed::own_outcome_unknown(std::uint64_t xid8) noexcept {
  own_forget(xid8);
  go_down();
  lost_wanted.store(true, std::memory_order_release);
  if (wake) wake();
}

std::size_t feed::own_pending() const {
  std::lock_guard lock(own_mu_);
  return own_.size();
}

bool feed::own_take(std::uint32_t xid) noexcept {
  std::lock_guard lock(own_mu_);
  auto it = own_.find(xid);
  if (it == own_.end()) return false;
  bool fresh = std::chrono::steady_clock::now() - it->second < own_ttl;
  own_.erase(it);
  return fresh;
}

void feed::own_clear() noexcept {
  std::lock_guard lock(own_mu_);
  own_.clear();
  own_order_.clear();
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
// Strong: a feed lives as long as its cache (feed.h). Orphans are dropped at the next
// feed_for, and every feed is stopped at exit, before the engine's statics are destroyed.
std::map<std::pair<const cache*, std::string>, std::shared_ptr<feed>> g_feeds;

// Takes the orphaned feeds out of the registry (the caller destroys them unlocked:
// destroying one joins its thread).
std::vector<std::shared_ptr<feed>> take_orphans() {
  std::vector<std::shared_ptr<feed>> out;
  for (auto it = g_feeds.begin(); it != g_feeds.end();) {
    if (it->second->orphaned()) {
      out.push_back(std::move(it->second));
      it = g_feeds.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

void stop_all_feeds() {
  std::map<std::pair<const cache*, std::string>, std::shared_ptr<feed>> all;
  {
    std::lock_guard lock(g_feeds_mu);
    all.swap(g_feeds);
  }
}
}  // namespace

void install_follower_factory(follower_factory f) noexcept {
  g_factory.store(f, std::memory_order_release);
}

std::shared_ptr<feed> feed_for(const follow_request& r) {
  follower_factory f = g_factory.load(std::memory_order_acquire);
  if (!f) throw std::logic_error("qcache: follow_changes needs a PostgreSQL adapter's follower");
  static const bool stops_at_exit = std::atexit(stop_all_feeds) == 0;
  (void)stops_at_exit;
  std::vector<std::shared_ptr<feed>> orphans;
  // One follower per (cache, tag space); creating it holds the registry lock, so two
  // sessions connecting at once share one stream. (A dead cache's address may be reused:
  // its feed is an orphan, never returned.)
  std::lock_guard lock(g_feeds_mu);
  orphans = take_orphans();
  auto key = std::make_pair(r.owner.get(), r.schema->tag_space());
  auto it = g_feeds.find(key);
  if (it != g_feeds.end()) return it->second;
  std::shared_ptr<feed> x = f(r);
  g_feeds[key] = x;
  return x;
}

std::vector<std::shared_ptr<feed>> feeds_of(const cache* c) {
  std::vector<std::shared_ptr<feed>> out;
  std::lock_guard lock(g_feeds_mu);
  for (const auto& [key, x] : g_feeds)
    if (key.first == c && !x->orphaned()) out.push_back(x);
  return out;
}

}  // namespace qcache::pg
