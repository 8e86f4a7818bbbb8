// Path watches (path_watch.h: why one poll proves a path unchanged).
//
// Invariants:
//  * a watched_path's proof_ holds (g << 1) | answer only when its path was armed (every
//    directory on it watched, root first, each before its entry was looked at, the last
//    entry lstat'ed) while the path's generation (its gen_ plus the process's global_) was
//    g after every event queued before the arming began had been drained;
//  * every event taken off the queue is applied (generations bumped) before seq_ is even
//    again, so a check that saw seq_ even and unchanged around an empty poll saw every
//    event that was queued before its poll applied;
//  * wds_ counts, per watch descriptor, the (descriptor, entry) pairs registered by watched
//    paths; a descriptor no pair uses is removed from the instance.
#include "path_watch.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <unordered_map>

namespace qcache::soci::detail {
namespace {

// Changes to an entry of a watched directory, and to the directory itself. IN_ATTRIB is not
// among them: no attribute change (mode, owner, times, link count) changes which inode a
// path names. IN_UNMOUNT, IN_IGNORED and IN_Q_OVERFLOW are always reported.
constexpr std::uint32_t watch_mask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
                                     IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW;
constexpr std::uint32_t self_events = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED;

std::atomic<std::uint64_t> g_stats{0};

// True when `dir` is on a file system whose directory entries change only through this
// kernel's VFS (so every change is an inotify event): ext2/3/4, xfs, btrfs, tmpfs.
bool local_fs(const char* dir) {
  struct statfs sf {};
  if (::statfs(dir, &sf) != 0) return false;
  switch (static_cast<unsigned long>(sf.f_type)) {
    case 0xEF53:      // ext2, ext3, ext4
    case 0x58465342:  // xfs
    case 0x9123683E:  // btrfs
    case 0x01021994:  // tmpfs
      return true;
    default:
      return false;
  }
}

// The id of the mount `path` is on (a final symlink not followed), or 0 when unknown.
std::uint64_t mount_id(const char* path) {
  struct statx sx {};
  if (::statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &sx) != 0 ||
      !(sx.stx_mask & STATX_MNT_ID))
    return 0;
  return sx.stx_mnt_id;
}

// True when the directory `child` is the root of a mount other than `dir`'s: its entry in
// `dir` cannot be renamed or deleted while it is mounted (EBUSY), and unmounting it is a
// mount change.
bool mount_root(const std::string& dir, const std::string& child) {
  std::uint64_t c = mount_id(child.c_str()), d = mount_id(dir.c_str());
  return c != 0 && d != 0 && c != d;
}

// This thread's descriptor of /proc/self/mountinfo (poll reports a mount table change to
// each descriptor once) and its epoll instance, which holds it and the process's inotify
// descriptor: one epoll_wait answers for both (half the cost of polling the two).
struct thread_descriptors {
  int mounts = -1;
  int epoll = -1;
  bool opened = false;
  thread_descriptors() = default;
  thread_descriptors(const thread_descriptors&) = delete;
  thread_descriptors& operator=(const thread_descriptors&) = delete;
  ~thread_descriptors() { close_all(); }
  void close_all() noexcept {
    if (epoll >= 0) ::close(epoll);
    if (mounts >= 0) ::close(mounts);
    epoll = mounts = -1;
  }
};
thread_local thread_descriptors t_fds;

}  // namespace

// The process's inotify instance and what it watches for which paths.
class path_watch {
 public:
  static path_watch& get() {
    static path_watch* w = new path_watch;  // never destroyed: paths may outlive statics
    return *w;
  }
  bool usable() const noexcept { return !disabled_.load(std::memory_order_relaxed); }
  int fast(watched_path& p) noexcept;
  bool slow(watched_path& p) noexcept;
  void release(watched_path& p) noexcept;
  path_watch_counters counters();

 private:
  enum class armed { named, not_named, transient, unavailable };
  struct dir_watch {
    std::unordered_map<std::string, std::vector<watched_path*>> names;
    std::size_t refs = 0;
    bool dead = false;  // IN_IGNORED: the kernel removed it
  };
  path_watch();
  int thread_epoll() noexcept;
  void catch_up_mounts() noexcept;
  void drain_locked() noexcept;
  void apply_locked(const inotify_event& e) noexcept;
  armed arm_locked(watched_path& p) noexcept;
  armed walk_locked(watched_path& p, std::vector<std::pair<int, std::string>>& pairs);
  void register_locked(int wd, const std::string& name, watched_path* p);
  void unregister_locked(const std::vector<std::pair<int, std::string>>& pairs, watched_path* p);
  static void after_fork_in_child() noexcept;

  int ifd_ = -1;
  int mounts_ = -1;  // the process's mountinfo descriptor: polled only under mu_
  std::atomic<bool> disabled_{true};
  std::atomic<std::uint64_t> seq_{0};     // odd while a drain is taking and applying events
  std::atomic<std::uint64_t> global_{0};  // added to every path's generation
  std::atomic<std::uint64_t> drains_{0}, overflows_{0}, mount_changes_{0};
  std::mutex mu_;
  std::unordered_map<int, dir_watch> wds_;         // guarded by mu_
  static inline path_watch* g_instance = nullptr;  // set before the fork handler exists
};

path_watch::path_watch() {
  ifd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (ifd_ < 0) return;  // limits: every check is a stat
  mounts_ = ::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
  g_instance = this;
  ::pthread_atfork(nullptr, nullptr, &path_watch::after_fork_in_child);
  disabled_.store(false, std::memory_order_release);
}

// The child shares the parent's inotify queue and mountinfo descriptors (one open file
// each): reading them would take events the parent needs. It never uses them (and never
// takes mu_, which another thread of the parent may have held at fork).
void path_watch::after_fork_in_child() noexcept {
  path_watch& w = *g_instance;  // not get(): another thread may have been inside it
  w.disabled_.store(true, std::memory_order_relaxed);
  if (w.ifd_ >= 0) ::close(w.ifd_);
  if (w.mounts_ >= 0) ::close(w.mounts_);
  w.ifd_ = w.mounts_ = -1;
  t_fds.close_all();
  t_fds.opened = true;
}

// Opened at the thread's first check (then catch_up_mounts). -1 when they cannot be:
// every check of the thread is a stat.
int path_watch::thread_epoll() noexcept {
  thread_descriptors& t = t_fds;
  if (!t.opened) {
    t.opened = true;
    t.mounts = ::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    t.epoll = ::epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event in {
    }, mounts{};
    in.events = EPOLLIN;
    in.data.u32 = 0;
    mounts.events = EPOLLPRI;
    mounts.data.u32 = 1;
    if (t.mounts < 0 || t.epoll < 0 || ::epoll_ctl(t.epoll, EPOLL_CTL_ADD, ifd_, &in) != 0 ||
        ::epoll_ctl(t.epoll, EPOLL_CTL_ADD, t.mounts, &mounts) != 0)
      t.close_all();
    else
      catch_up_mounts();
  }
  return t.epoll;
}

// A mount change made before the thread's descriptor was opened was never reported to it.
// The process's descriptor, opened before any path was armed and polled only under mu_,
// reports every change since its last poll, and what it reported before was applied
// (global_) before mu_ was released: so polling it now, after the thread's descriptor
// exists, applies every change the thread's descriptor cannot report. Without it, every
// path is looked at again.
void path_watch::catch_up_mounts() noexcept {
  std::lock_guard lock(mu_);
  struct pollfd f = {mounts_, POLLPRI, 0};
  if (mounts_ < 0 || ::poll(&f, 1, 0) != 0) {  // reported, or cannot tell
    if (mounts_ >= 0) mount_changes_.fetch_add(1, std::memory_order_relaxed);
    global_.fetch_add(1, std::memory_order_acq_rel);
  }
}

// 1 or 0: the answer proven at the path's current generation with nothing pending; -1:
// the path must be looked at (slow).
int path_watch::fast(watched_path& p) noexcept {
  if (disabled_.load(std::memory_order_relaxed)) return -1;
  int ep = thread_epoll();
  std::uint64_t proof = p.proof_.load(std::memory_order_acquire);
  if (ep < 0 || proof == watched_path::none) return -1;
  std::uint64_t s = seq_.load(std::memory_order_acquire);
  if (s & 1) return -1;
  struct epoll_event ev[2];
  int n = ::epoll_wait(ep, ev, 2, 0);
  if (n != 0) {
    for (int i = 0; i < n; ++i)
      if (ev[i].data.u32 == 1) {  // reported once to this descriptor: applied now
        mount_changes_.fetch_add(1, std::memory_order_relaxed);
        global_.fetch_add(1, std::memory_order_acq_rel);
      }
    return -1;
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
  std::uint64_t g =
      p.gen_.load(std::memory_order_acquire) + global_.load(std::memory_order_acquire);
  if (seq_.load(std::memory_order_acquire) != s || (proof >> 1) != g) return -1;
  return static_cast<int>(proof & 1);
}

bool path_watch::slow(watched_path& p) noexcept {
  if (thread_epoll() < 0) return p.stat_names();
  std::unique_lock lock(mu_);
  if (disabled_.load(std::memory_order_relaxed)) {
    lock.unlock();
    return p.stat_names();
  }
  drain_locked();
  std::uint64_t g =
      p.gen_.load(std::memory_order_acquire) + global_.load(std::memory_order_acquire);
  std::uint64_t proof = p.proof_.load(std::memory_order_acquire);
  if (proof != watched_path::none && (proof >> 1) == g) return proof & 1;  // unrelated events
  switch (arm_locked(p)) {
    case armed::named:
      p.proof_.store((g << 1) | 1, std::memory_order_release);
      return true;
    case armed::not_named:
      p.proof_.store(g << 1, std::memory_order_release);
      return false;
    case armed::unavailable:
      p.stat_only_.store(true, std::memory_order_relaxed);
      unregister_locked(p.pairs_, &p);
      p.pairs_.clear();
      [[fallthrough]];
    case armed::transient:
      p.proof_.store(watched_path::none, std::memory_order_release);
      break;
  }
  lock.unlock();
  return p.stat_names();
}

void path_watch::drain_locked() noexcept {
  alignas(inotify_event) char buf[16384];
  seq_.fetch_add(1, std::memory_order_acq_rel);
  for (;;) {
    ssize_t n = ::read(ifd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EAGAIN: drained (anything else: left pending, seen again)
    for (ssize_t i = 0; i + static_cast<ssize_t>(sizeof(inotify_event)) <= n;) {
      const auto* e = reinterpret_cast<const inotify_event*>(buf + i);
      apply_locked(*e);
      i += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
    }
  }
  seq_.fetch_add(1, std::memory_order_release);
  drains_.fetch_add(1, std::memory_order_relaxed);
}

void path_watch::apply_locked(const inotify_event& e) noexcept {
  if (e.mask & IN_Q_OVERFLOW) {  // events were lost: any path may have changed
    overflows_.fetch_add(1, std::memory_order_relaxed);
    global_.fetch_add(1, std::memory_order_acq_rel);
    return;
  }
  auto it = wds_.find(e.wd);
  if (it == wds_.end()) return;  // removed by us
  dir_watch& d = it->second;
  if (e.mask & IN_IGNORED) d.dead = true;
  if (e.len == 0 || e.name[0] == '\0' || (e.mask & self_events)) {  // the directory itself
    for (auto& [name, paths] : d.names)
      for (watched_path* p : paths) p->gen_.fetch_add(1, std::memory_order_acq_rel);
    return;
  }
  auto n = d.names.find(e.name);
  if (n == d.names.end()) return;  // an entry on no watched path ("x.db-journal")
  for (watched_path* p : n->second) p->gen_.fetch_add(1, std::memory_order_acq_rel);
}

// Watches every directory of the path and registers its entry there, replacing what the
// path had registered; answers whether the path names the file.
path_watch::armed path_watch::arm_locked(watched_path& p) noexcept {
  std::vector<std::pair<int, std::string>> pairs;
  armed r;
  try {
    r = walk_locked(p, pairs);
    unregister_locked(p.pairs_, &p);  // after the new ones: shared descriptors stay
    p.pairs_ = std::move(pairs);
  } catch (...) {  // out of memory
    unregister_locked(pairs, &p);
    r = armed::unavailable;
  }
  return r;
}

// From "/" down: watch the directory, register the entry, then look at the entry.
path_watch::armed path_watch::walk_locked(watched_path& p,
                                          std::vector<std::pair<int, std::string>>& pairs) {
  const std::string& path = p.path_;
  if (path.size() < 2 || path[0] != '/') return armed::unavailable;
  std::string dir = "/";
  std::size_t pos = 1;
  for (;;) {
    std::size_t slash = path.find('/', pos);
    std::string name =
        path.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
    if (name.empty() || name == "." || name == "..") return armed::unavailable;
    int wd = ::inotify_add_watch(ifd_, dir.c_str(), watch_mask);
    if (wd < 0) return errno == ENOENT || errno == ENOTDIR ? armed::transient : armed::unavailable;
    register_locked(wd, name, &p);
    pairs.emplace_back(wd, name);
    std::string child = (dir == "/" ? "" : dir) + "/" + name;
    struct stat sb {};
    g_stats.fetch_add(1, std::memory_order_relaxed);
    if (::lstat(child.c_str(), &sb) != 0)  // absent: its creation will be an event
      return errno == ENOENT || errno == ENOTDIR ? armed::not_named : armed::transient;
    if (S_ISLNK(sb.st_mode)) return armed::unavailable;
    if (!local_fs(dir.c_str()) && !(S_ISDIR(sb.st_mode) && mount_root(dir, child)))
      return armed::unavailable;
    if (slash == std::string::npos)
      return sb.st_dev == p.dev_ && sb.st_ino == p.ino_ ? armed::named : armed::not_named;
    if (!S_ISDIR(sb.st_mode)) return armed::not_named;
    dir = std::move(child);
    pos = slash + 1;
  }
}

void path_watch::register_locked(int wd, const std::string& name, watched_path* p) {
  dir_watch& d = wds_[wd];
  d.dead = false;
  d.names[name].push_back(p);
  ++d.refs;
}

void path_watch::unregister_locked(const std::vector<std::pair<int, std::string>>& pairs,
                                   watched_path* p) {
  for (const auto& [wd, name] : pairs) {
    auto it = wds_.find(wd);
    if (it == wds_.end()) continue;
    dir_watch& d = it->second;
    auto n = d.names.find(name);
    if (n != d.names.end()) {
      auto at = std::find(n->second.begin(), n->second.end(), p);
      if (at != n->second.end()) n->second.erase(at);
      if (n->second.empty()) d.names.erase(n);
    }
    if (--d.refs == 0) {
      if (!d.dead) ::inotify_rm_watch(ifd_, wd);
      wds_.erase(it);
    }
  }
}

void path_watch::release(watched_path& p) noexcept {
  if (disabled_.load(std::memory_order_relaxed) || p.pairs_.empty()) return;
  std::lock_guard lock(mu_);
  if (disabled_.load(std::memory_order_relaxed)) return;
  unregister_locked(p.pairs_, &p);
  p.pairs_.clear();
}

path_watch_counters path_watch::counters() {
  path_watch_counters c;
  c.stats = g_stats.load();
  c.drains = drains_.load();
  c.overflows = overflows_.load();
  c.mount_changes = mount_changes_.load();
  c.available = usable();
  std::lock_guard lock(mu_);
  c.watches = wds_.size();
  return c;
}

watched_path::~watched_path() { path_watch::get().release(*this); }

bool watched_path::still_names() noexcept {
  if (!stat_only_.load(std::memory_order_relaxed)) {
    path_watch& w = path_watch::get();
    int r = w.fast(*this);
    if (r >= 0) return r == 1;
    if (w.usable()) return w.slow(*this);
  }
  return stat_names();
}

bool watched_path::stat_names() noexcept {
  g_stats.fetch_add(1, std::memory_order_relaxed);
  struct stat sb {};
  return ::stat(path_.c_str(), &sb) == 0 && sb.st_dev == dev_ && sb.st_ino == ino_;
}

std::shared_ptr<watched_path> watch_path(const std::string& path, dev_t dev, ino_t ino) {
  return std::make_shared<watched_path>(path, dev, ino);
}

path_watch_counters path_watch_counters_for_testing() { return path_watch::get().counters(); }

}  // namespace qcache::soci::detail
