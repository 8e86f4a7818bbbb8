// Path watches: proving with one non-blocking system call that a path still names the file
// (device, inode) it named when last looked at, instead of a stat per check (issue 12).
//
// Thread safety: watch_path() and every watched_path are safe for concurrent use from any
// thread. All watched paths of the process share one inotify instance and one mutex (taken
// only when something is pending or a path must be looked at again); each thread has its
// own descriptor of /proc/self/mountinfo and its own epoll instance holding it and the
// inotify descriptor (opened at its first check, closed at its exit): a check is one
// epoll_wait with timeout 0 (about half the cost of poll over the two descriptors).
// After fork() the child never uses the parent's instance: every check there is a stat.
//
// Why one instance per process, not per cache: what a path names is a property of the
// process (its mount table and root), like the per-file state in sqlite.cc; inotify
// instances are few (fs.inotify.max_user_instances, 128 by default, for the whole user),
// and one instance serves every cache with one descriptor and one epoll_wait per check.
//
// Why it is sound. A path names a file through its components: "/a/b/x.db" is the entry "a"
// of "/", "b" of "/a", "x.db" of "/a/b". What it names can change only by
//  * a directory entry on the path being created, deleted or renamed (over, away, or the
//    directory holding it renamed or deleted): each is an inotify event of the watch on the
//    directory holding the entry (IN_CREATE, IN_DELETE, IN_MOVED_FROM, IN_MOVED_TO; the
//    directory itself: IN_DELETE_SELF, IN_MOVE_SELF, IN_UNMOUNT, IN_IGNORED), and the
//    kernel queues the event inside the system call that makes the change (fsnotify is
//    called by vfs_rename, vfs_unlink, vfs_create... before they return), so a change that
//    completed before a check began is pending when the check polls (the same wake-up
//    puts the inotify descriptor on the ready list of every epoll instance holding it);
//  * a mount or unmount on a directory of the path (no inotify event at all): the mount
//    table changes, which /proc/self/mountinfo reports as POLLPRI|POLLERR, once per
//    descriptor, waking its waiters inside mount(2)/umount(2) (hence one descriptor per
//    thread: a poll in one thread would consume the report another thread needs);
//  * a symlink on the path being retargeted: paths with a symlink are not watched.
// Arming watches "/" first, then each directory down the path, each placed before its entry
// in the parent is looked at (lstat), and ends with the lstat of the file itself. A change
// made before a watch was placed is seen by the lstats that follow it; one made after is an
// event. So once armed at generation g with the file's (dev, ino) seen, the path names that
// file for as long as no relevant event or mount change is pending or has been drained
// since: a check that finds nothing pending (epoll_wait, timeout 0) and the path's generation
// still g answers without a stat. Events are drained under the mutex by whoever finds them
// pending; those naming no watched entry (SQLite's "x.db-journal", created and deleted by
// every write, "-wal", "-shm", other files) change nothing; relevant ones advance the
// generation of the paths they concern, so the next check of those paths arms again and
// looks. A queue overflow (IN_Q_OVERFLOW) or a mount change advances every path's
// generation. A thread's descriptor reports only the mount changes made after it was
// opened: at a thread's first check, the process's own mountinfo descriptor (opened before
// any path was armed, polled only under the mutex) applies those made before, so a new
// thread costs no path a new look. A check never trusts a drain in progress elsewhere (a
// sequence counter, odd while events are being taken off the queue and applied).
//
// Where the fast path cannot be proven the check is a stat, as before: inotify unavailable
// (init or add_watch fails: limits), a symlink on the path, a directory entry on a file
// system not known to report every change to it (only ext2/3/4, xfs, btrfs and tmpfs are;
// not NFS, CIFS or FUSE, whose files can change on another machine or in a daemon; not
// overlayfs, whose layers can be changed underneath it without an event on the overlay),
// except for a directory that is itself a mount point (it cannot be renamed or deleted while
// mounted, and unmounting it is a mount change), a path that is not absolute, a thread whose
// mountinfo cannot be opened, and a forked child.
//
// Not covered (as with the stat it replaces, or documented limits): a thread that changes
// its root (chroot) or mount namespace (unshare, setns) after its first check keeps watching
// what its descriptors saw before.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace qcache::soci::detail {

// One absolute path and the file (dev, ino) it is expected to name. Destroyed, it drops its
// watches (those no other watched path shares).
class watched_path {
 public:
  watched_path(std::string path, dev_t dev, ino_t ino) noexcept
      : path_(std::move(path)),
        dev_(dev),
        ino_(ino),
        stat_only_(path_.empty() || path_[0] != '/') {}
  watched_path(const watched_path&) = delete;
  watched_path& operator=(const watched_path&) = delete;
  ~watched_path();

  // True when the path named (dev, ino) at some moment during the call: without a stat when
  // nothing that could change what it names happened since it was last looked at.
  bool still_names() noexcept;

  const std::string& path() const noexcept { return path_; }

 private:
  friend class path_watch;
  static constexpr std::uint64_t none = ~std::uint64_t{0};
  bool stat_names() noexcept;

  const std::string path_;
  const dev_t dev_;
  const ino_t ino_;
  // Bumped (under the watch's mutex) for each drained event concerning the path.
  std::atomic<std::uint64_t> gen_{0};
  // (generation << 1) | answer, established by arming at that generation; `none` when it
  // must be looked at.
  std::atomic<std::uint64_t> proof_{none};
  std::atomic<bool> stat_only_;  // the fast path cannot be proven for this path
  // Guarded by the watch's mutex: the (watch descriptor, entry name) pairs registered.
  std::vector<std::pair<int, std::string>> pairs_;
};

// A watched path for `path` expected to name (dev, ino); never null (a path that cannot be
// watched is checked by stat).
std::shared_ptr<watched_path> watch_path(const std::string& path, dev_t dev, ino_t ino);

// For tests: what the watch did so far in this process (slow paths only).
struct path_watch_counters {
  std::uint64_t stats = 0;      // the path looked at (arming, or a stat where not watched)
  std::uint64_t drains = 0;     // event queues drained
  std::uint64_t overflows = 0;  // IN_Q_OVERFLOW seen
  std::uint64_t mount_changes = 0;
  std::size_t watches = 0;  // directories watched now
  bool available = false;   // the process's inotify instance exists
};
path_watch_counters path_watch_counters_for_testing();

}  // namespace qcache::soci::detail
