// qcache::soci on SQLite: a memoized page's check that the path still names the file it read
// (P21: a file renamed over the path is another database) is one epoll_wait, not a stat, while
// nothing that could change what the path names happened (adapters/soci/path_watch.h). Each
// test changes what the path names in one of the ways the kernel allows (a rename over it
// from another thread or process, unlink and create, an ancestor directory renamed, a
// symlink retargeted, a bind mount, events lost to an overflow) and expects the very next
// memo call to return the new file's page, compared with a plain session opened on the path
// at that moment; and the counters show which hits looked at the path.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <qcache/memoize.h>
#include <qcache/soci.h>
#include <sched.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "path_watch.h"
#include "support/sqlite_file_fixture.h"

// The ASan+UBSan stage: SQLite-internal memory of sessions whose reads were memoized (see
// memoize_sqlite_test.cc).
extern "C" const char* __lsan_default_suppressions() { return "leak:libsqlite3\n"; }

namespace {

namespace fs = std::filesystem;
using qcache::soci::detail::path_watch_counters_for_testing;

const char* kAll = "SELECT id, v FROM t ORDER BY id";
const char* kChild = "QCACHE_PATH_WATCH_CHILD";  // set in run_again_in_child()

class SqlitePathWatch : public qcache_test::sqlite_file_fixture {
 protected:
  SqlitePathWatch() : sqlite_file_fixture("qcache_path_watch_") {}

  // A database at `path` made by a plain session: t(id, v) with two rows named from `v`.
  // The same statements for every `v` of one length: the files' change counters agree, so
  // only the file's identity tells them apart.
  void make_db(const std::string& path, const std::string& v, bool wal = false) {
    fs::create_directories(fs::path(path).parent_path());
    auto p = plain(path);
    *p << "PRAGMA synchronous = OFF";
    if (wal) *p << "PRAGMA journal_mode = WAL";
    *p << "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)";
    *p << "INSERT INTO t VALUES(1, '" + v + "'), (2, '" + v + "2')";
  }
  std::string memo_page(soci::session& s, int key = 1) {
    return cache_->memoize("page", key, [&] { return rows(s, kAll); });
  }
  // The page through a new qcache session on `path`, expected equal to a plain session's.
  // Returns whether it was a memo hit.
  bool page_is_fresh(const std::string& path, int key = 1) {
    auto before = cache_->stats().memo_hits;
    auto s = open(path);
    std::string page = memo_page(*s, key);
    bool hit = cache_->stats().memo_hits > before;
    EXPECT_EQ(page, rows(*plain(path), kAll)) << path << (hit ? " (a memo hit)" : " (a miss)");
    return hit;
  }
  // Stores the page of the file at `path` through `s` and hits it: from the second hit on,
  // the hits must not look at the path (the fast path is in use).
  void prime(soci::session& s, const std::string& path, int key = 1) {
    EXPECT_EQ(memo_page(s, key), rows(*plain(path), kAll));
    EXPECT_EQ(memo_page(s, key), rows(*plain(path), kAll));  // the first hit arms the watch
    auto hits = cache_->stats().memo_hits;
    auto stats = path_watch_counters_for_testing().stats;
    for (int i = 0; i < 5; ++i) EXPECT_EQ(memo_page(s, key), rows(*plain(path), kAll));
    EXPECT_EQ(cache_->stats().memo_hits, hits + 5);
    EXPECT_EQ(path_watch_counters_for_testing().stats, stats) << "hits looked at " << path;
  }
};

TEST_F(SqlitePathWatch, TheWatchIsAvailableHere) {
  // Every other test relies on it: an environment without inotify would only test the stat.
  EXPECT_TRUE(path_watch_counters_for_testing().available);
}

// A restore or a deploy from another thread: once rename() returned, the next memo call
// misses and returns the new file's page; in either journal mode.
TEST_F(SqlitePathWatch, RenameOverThePathFromAnotherThreadIsSeenByTheNextCall) {
  for (int i = 0; i < 40 && !HasFailure(); ++i) {
    bool wal = i % 2 == 1;
    make_db(path_, "A" + std::to_string(1000 + i), wal);
    make_db(file("next.db"), "B" + std::to_string(1000 + i), wal);
    auto a = open();  // keeps the old file attached
    prime(*a, path_);
    std::thread([&] { fs::rename(file("next.db"), path_); }).join();
    EXPECT_FALSE(page_is_fresh(path_)) << "iteration " << i;
    // Stored by a session now closed: kept while the file is idle (rollback journal only).
    if (!wal) {
      EXPECT_TRUE(page_is_fresh(path_));
    }
    a.reset();
    for (const char* x : {"", "-wal", "-shm"}) fs::remove(path_ + x);
  }
}

// The same from another process (mv(1)).
TEST_F(SqlitePathWatch, RenameOverThePathFromAnotherProcessIsSeenByTheNextCall) {
  for (int i = 0; i < 10 && !HasFailure(); ++i) {
    make_db(path_, "A" + std::to_string(1000 + i));
    make_db(file("next.db"), "B" + std::to_string(1000 + i));
    auto a = open();
    prime(*a, path_);
    std::string mv = "mv -f '" + file("next.db") + "' '" + path_ + "'";
    ASSERT_EQ(std::system(mv.c_str()), 0);
    EXPECT_FALSE(page_is_fresh(path_)) << "iteration " << i;
    a.reset();
    fs::remove(path_);
  }
}

// rename(2) with RENAME_EXCHANGE: the path and another name swap files in one call.
TEST_F(SqlitePathWatch, ExchangeWithAnotherFileIsSeenByTheNextCall) {
  make_db(path_, "A1000");
  make_db(file("other.db"), "B1000");
  auto a = open();
  prime(*a, path_);
  ASSERT_EQ(
      ::renameat2(AT_FDCWD, file("other.db").c_str(), AT_FDCWD, path_.c_str(), RENAME_EXCHANGE), 0)
      << std::strerror(errno);
  EXPECT_FALSE(page_is_fresh(path_));
  ASSERT_EQ(
      ::renameat2(AT_FDCWD, file("other.db").c_str(), AT_FDCWD, path_.c_str(), RENAME_EXCHANGE), 0);
  EXPECT_FALSE(page_is_fresh(path_)) << "the first file is back at the path";
}

// Unlinked, then a new file made at the path.
TEST_F(SqlitePathWatch, UnlinkAndCreateAtThePathIsSeenByTheNextCall) {
  for (int i = 0; i < 20 && !HasFailure(); ++i) {
    make_db(path_, "A" + std::to_string(1000 + i));
    auto a = open();
    prime(*a, path_);
    fs::remove(path_);
    make_db(path_, "B" + std::to_string(1000 + i));
    EXPECT_FALSE(page_is_fresh(path_)) << "iteration " << i;
    a.reset();
    fs::remove(path_);
  }
}

// A directory of the path renamed away and the same path made again: no event in the
// file's own directory (it moved along), only in the renamed directory's parent.
TEST_F(SqlitePathWatch, AncestorDirectoryRenamedAndThePathMadeAgainIsSeen) {
  for (int i = 0; i < 10 && !HasFailure(); ++i) {
    std::string p = file("sub/deeper/app.db");
    make_db(p, "A" + std::to_string(1000 + i));
    auto a = open(p);
    prime(*a, p);
    fs::rename(file("sub"), file("old" + std::to_string(i)));
    make_db(p, "B" + std::to_string(1000 + i));
    EXPECT_FALSE(page_is_fresh(p)) << "iteration " << i;
    EXPECT_TRUE(page_is_fresh(p));
    a.reset();
    fs::remove_all(file("sub"));
  }
}

// A symlink appears on the path (the directory moved elsewhere, a link left in its place):
// the path is no longer watched, every hit looks at it (and still hits while it names the
// same file), and retargeting what the link leads to is seen although it happens in
// directories that are not on the path.
TEST_F(SqlitePathWatch, SymlinkOnThePathFallsBackToAStatPerHit) {
  std::string p = file("d/app.db");
  make_db(p, "A1000");
  auto a = open(p);
  prime(*a, p);
  fs::create_directories(file("e"));
  fs::rename(file("d"), file("e/d2"));
  fs::create_directory_symlink(file("e/d2"), file("d"));
  EXPECT_EQ(memo_page(*a), rows(*plain(p), kAll));  // the same file: may hit, looks
  auto stats = path_watch_counters_for_testing().stats;
  auto hits = cache_->stats().memo_hits;
  for (int i = 0; i < 5; ++i) EXPECT_EQ(memo_page(*a), rows(*plain(p), kAll));
  EXPECT_EQ(cache_->stats().memo_hits, hits + 5) << "the same file through a link";
  EXPECT_EQ(path_watch_counters_for_testing().stats, stats + 5) << "one stat per hit";
  fs::rename(file("e"), file("e_old"));
  make_db(file("e/d2/app.db"), "B1000");
  EXPECT_FALSE(page_is_fresh(p));
  EXPECT_TRUE(page_is_fresh(p));
}

// SQLite's rollback journal is created and deleted in the file's directory by every write,
// its WAL and index created next to it, and other files come and go: the events wake the
// poll but name no entry on the path, so no hit looks at the path.
TEST_F(SqlitePathWatch, JournalAndOtherFilesInTheDirectoryCauseNoStat) {
  for (bool wal : {false, true}) {
    SCOPED_TRACE(wal ? "WAL" : "rollback journal");
    std::string p = file(wal ? "wal/app.db" : "rollback/app.db");
    make_db(p, "A1000", wal);
    int key = wal;
    auto a = open(p);
    prime(*a, p, key);
    auto before = path_watch_counters_for_testing();
    for (int i = 0; i < 20; ++i) {
      *plain(p) << "UPDATE t SET v = 'w" + std::to_string(i) + "' WHERE id = 1";
      std::ofstream(p + ".tmp" + std::to_string(i)) << "x";
      fs::remove(p + ".tmp" + std::to_string(i));
      EXPECT_EQ(memo_page(*a, key), rows(*plain(p), kAll));  // a miss: the file changed
      auto hits = cache_->stats().memo_hits;
      EXPECT_EQ(memo_page(*a, key), rows(*plain(p), kAll));
      EXPECT_EQ(cache_->stats().memo_hits, hits + 1);
    }
    auto after = path_watch_counters_for_testing();
    EXPECT_EQ(after.stats, before.stats) << "events of other entries made hits look";
    EXPECT_GT(after.drains, before.drains) << "no event was seen at all";
  }
}

// More events than the queue holds, then a rename over the path, whose event is lost: the
// overflow makes every path be looked at again.
TEST_F(SqlitePathWatch, QueueOverflowMakesTheNextCallLookAtThePath) {
  make_db(path_, "A1000");
  make_db(file("next.db"), "B1000");
  auto a = open();
  prime(*a, path_);
  auto before = path_watch_counters_for_testing();
  int limit = 16384;
  std::ifstream("/proc/sys/fs/inotify/max_queued_events") >> limit;
  for (int i = 0; i < limit / 2 + 100; ++i) {  // a create and a delete each
    std::string f = file("flood" + std::to_string(i));
    ::close(::open(f.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    ::unlink(f.c_str());
  }
  fs::rename(file("next.db"), path_);
  EXPECT_FALSE(page_is_fresh(path_));
  EXPECT_GT(path_watch_counters_for_testing().overflows, before.overflows);
  EXPECT_TRUE(page_is_fresh(path_));
}

// A forked child shares the process's inotify queue (one open file): were it to drain it,
// the parent would never see the events it took. The child looks at paths by stat instead.
TEST_F(SqlitePathWatch, ForkedChildNeverTakesTheParentsEvents) {
  make_db(path_, "A1000");
  make_db(file("next.db"), "B1000");
  auto a = open();
  prime(*a, path_);
  fs::rename(file("next.db"), path_);  // its event is pending in the queue
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // the child's page must be the new file's too
    auto s = open();
    ::_exit(memo_page(*s) == rows(*plain(), kAll) ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child's page was stale";
  EXPECT_FALSE(page_is_fresh(path_)) << "the child took the parent's event";
}

// A thread's first check opens its descriptors: the mount changes made before were never
// reported to them, but the process's own descriptor (polled under the watch's mutex) has
// reported or applied each; so new threads (a pool growing, a thread per request) do not
// make every path be looked at again.
TEST_F(SqlitePathWatch, NewThreadsDoNotMakePathsLookAgain) {
  make_db(path_, "A1000");
  auto a = open();
  prime(*a, path_);
  auto stats = path_watch_counters_for_testing().stats;
  auto hits = cache_->stats().memo_hits;
  std::string expected = rows(*plain(), kAll);
  for (int t = 0; t < 8; ++t)
    std::thread([&] {
      for (int i = 0; i < 3; ++i) EXPECT_EQ(memo_page(*a), expected);
    }).join();
  EXPECT_EQ(cache_->stats().memo_hits, hits + 24);
  EXPECT_EQ(path_watch_counters_for_testing().stats, stats) << "a new thread made hits look";
  make_db(file("next.db"), "B1000");
  fs::rename(file("next.db"), path_);
  std::thread([&] { EXPECT_FALSE(page_is_fresh(path_)); }).join();
}

// Many files, each with its page: hits look at none of them; renames over some are each
// seen; once the caches and sessions are gone their directories are no longer watched.
TEST_F(SqlitePathWatch, ManyFilesAreWatchedAndReleased) {
  auto baseline = path_watch_counters_for_testing().watches;
  const int n = 60;
  std::vector<std::string> paths;
  std::vector<std::unique_ptr<soci::session>> sessions;
  for (int i = 0; i < n; ++i) {
    paths.push_back(file("m" + std::to_string(i % 7) + "/f" + std::to_string(i) + ".db"));
    make_db(paths.back(), "A" + std::to_string(1000 + i));
    sessions.push_back(open(paths.back()));
    EXPECT_EQ(memo_page(*sessions.back(), i), rows(*plain(paths.back()), kAll));
    EXPECT_EQ(memo_page(*sessions.back(), i), rows(*plain(paths.back()), kAll));
  }
  // (A few pages may be refused by the cache's version table, with a stat as without:
  // counted apart, memo_stale_rejected.)
  auto stats = path_watch_counters_for_testing().stats;
  auto hits = cache_->stats().memo_hits;
  auto rejected = cache_->stats().memo_stale_rejected;
  for (int i = 0; i < n; ++i) EXPECT_EQ(memo_page(*sessions[i], i), rows(*plain(paths[i]), kAll));
  EXPECT_EQ(cache_->stats().memo_hits + cache_->stats().memo_stale_rejected, hits + rejected + n);
  EXPECT_GT(cache_->stats().memo_hits, hits + n / 2);
  EXPECT_EQ(path_watch_counters_for_testing().stats, stats) << "hits looked at their paths";
  EXPECT_GT(path_watch_counters_for_testing().watches, baseline);
  for (int i = 0; i < n; i += 6) {
    make_db(file("next.db"), "B" + std::to_string(1000 + i));
    fs::rename(file("next.db"), paths[i]);
  }
  for (int i = 0; i < n; ++i) {
    SCOPED_TRACE(paths[i]);
    bool hit = page_is_fresh(paths[i], i);
    if (i % 6 == 0) {
      EXPECT_FALSE(hit) << "renamed over";
    }
  }
  sessions.clear();
  cache_.reset();
  factory_.reset();
  EXPECT_EQ(path_watch_counters_for_testing().watches, baseline);
}

// Threads each open a session and call the page while another renames a new file over the
// path again and again: a call that began after a rename returned never gets an older page.
TEST_F(SqlitePathWatch, ConcurrentCallsNeverGetAPageOlderThanTheLastRename) {
  const int renames = 60;
  make_db(path_, "V" + std::to_string(1000));
  std::atomic<int> published{1000};
  std::atomic<bool> done{false};
  auto version = [](const std::string& page) { return std::stoi(page.substr(3, 4)); };
  std::vector<std::thread> readers;
  std::atomic<int> checked{0}, stale{0};
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      while (!done.load()) {
        int at_least = published.load(std::memory_order_acquire);
        auto s = open();
        std::string page = cache_->memoize("page", 1, [&] { return rows(*s, kAll); });
        if (version(page) < at_least) ++stale;
        ++checked;
      }
    });
  }
  for (int i = 1; i <= renames; ++i) {
    make_db(file("next.db"), "V" + std::to_string(1000 + i));
    fs::rename(file("next.db"), path_);
    published.store(1000 + i, std::memory_order_release);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  done = true;
  for (auto& r : readers) r.join();
  EXPECT_EQ(stale.load(), 0) << "of " << checked.load() << " calls";
  EXPECT_GT(checked.load(), renames);
}

// ---- Fresh processes --------------------------------------------------------------------
//
// The watch is made once per process, at its first check, and a forked child never uses its
// parent's: a test of how it is made (or of a mount namespace of its own) runs itself again
// in a new process (exec, with kChild set), optionally in a mount namespace of its own (as
// root, or as root of a new user namespace; the host's mounts are untouched).

int enter_mount_namespace() {
  if (::unshare(CLONE_NEWNS) != 0) {
    uid_t uid = ::getuid();
    gid_t gid = ::getgid();
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return errno;
    std::ofstream("/proc/self/setgroups") << "deny";
    std::ofstream("/proc/self/uid_map") << "0 " << uid << " 1";
    std::ofstream("/proc/self/gid_map") << "0 " << gid << " 1";
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return errno;
  return 0;
}

// The current test run again in a new process: its exit status, or 100 + errno when no
// mount namespace could be entered.
int run_again_in_child(bool own_mount_namespace) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string filter =
      "--gtest_filter=" + std::string(info->test_suite_name()) + "." + info->name();
  pid_t pid = ::fork();
  if (pid < 0) return 98;
  if (pid == 0) {
    int err = own_mount_namespace ? enter_mount_namespace() : 0;
    if (err != 0) ::_exit(100 + (err & 0x7f));
    ::setenv(kChild, "1", 1);
    char* argv[] = {const_cast<char*>("sqlite_path_watch_test"), filter.data(), nullptr};
    ::execv("/proc/self/exe", argv);
    ::_exit(99);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return 97;
  return WEXITSTATUS(status);
}

// No inotify instance can be made (here: no descriptor left at the first check): every
// check is a stat, and a rename over the path is still seen.
TEST_F(SqlitePathWatch, WithoutInotifyEveryCheckIsAStat) {
  if (!std::getenv(kChild)) {
    EXPECT_EQ(run_again_in_child(false), 0) << "the child's run failed (its output is above)";
    return;
  }
  make_db(path_, "A1000");
  make_db(file("next.db"), "B1000");
  auto a = open();
  EXPECT_EQ(memo_page(*a), rows(*plain(), kAll));  // stored: no check has run yet
  int top = 0;
  for (const auto& e : fs::directory_iterator("/proc/self/fd"))
    top = std::max(top, std::stoi(e.path().filename().string()));
  struct rlimit was {};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &was), 0);
  struct rlimit none = was;
  none.rlim_cur = static_cast<rlim_t>(top + 1);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &none), 0);
  std::vector<int> held;  // every descriptor number below the limit is taken
  for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) held.push_back(fd);
  auto hits = cache_->stats().memo_hits;
  for (int i = 0; i < 5; ++i) memo_page(*a);
  for (int fd : held) ::close(fd);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &was), 0);
  EXPECT_EQ(cache_->stats().memo_hits, hits + 5);
  EXPECT_FALSE(path_watch_counters_for_testing().available);
  EXPECT_EQ(path_watch_counters_for_testing().stats, 5u) << "one stat per hit";
  EXPECT_EQ(memo_page(*a), rows(*plain(), kAll));
  fs::rename(file("next.db"), path_);
  EXPECT_FALSE(page_is_fresh(path_));
}

// In a mount namespace of the test's own: false in the parent, after running the test
// there (a failure to enter one fails under CI=true, else skips saying why).
#define QCACHE_IN_OWN_MOUNT_NAMESPACE()                                                      \
  if (!std::getenv(kChild)) {                                                                \
    int code = run_again_in_child(true);                                                     \
    if (code >= 100) {                                                                       \
      std::string why = "no mount namespace (neither CAP_SYS_ADMIN nor user namespaces): " + \
                        std::string(std::strerror(code - 100));                              \
      const char* ci = std::getenv("CI");                                                    \
      if (ci && std::string(ci) == "true") FAIL() << why;                                    \
      GTEST_SKIP() << why;                                                                   \
    }                                                                                        \
    EXPECT_EQ(code, 0) << "the child's run of this test failed (its output is above)";       \
    return;                                                                                  \
  }

// A mount over a directory of the path: no inotify event, only the mount table changes.
TEST_F(SqlitePathWatch, BindMountOverADirectoryOnThePathIsSeenByTheNextCall) {
  QCACHE_IN_OWN_MOUNT_NAMESPACE();
  std::string a_dir = file("a"), b_dir = file("b"), p = file("a/app.db");
  make_db(p, "A1000");
  make_db(file("b/app.db"), "B1000");
  auto a = open(p);
  prime(*a, p);
  auto before = path_watch_counters_for_testing();
  ASSERT_EQ(::mount(b_dir.c_str(), a_dir.c_str(), nullptr, MS_BIND, nullptr), 0)
      << "mount --bind: " << std::strerror(errno);
  // First from a thread whose descriptors did not exist at the mount, then from this one.
  std::thread([&] {
    EXPECT_FALSE(page_is_fresh(p)) << "a new thread did not see the mount over " << a_dir;
  }).join();
  EXPECT_TRUE(page_is_fresh(p));
  EXPECT_GT(path_watch_counters_for_testing().mount_changes, before.mount_changes);
  ASSERT_EQ(::umount2(a_dir.c_str(), MNT_DETACH), 0) << std::strerror(errno);  // b is in use
  EXPECT_FALSE(page_is_fresh(p)) << "the unmount of " << a_dir << " was not seen";
  EXPECT_EQ(rows(*plain(p), kAll), rows(*a, kAll)) << "the first file again";
}

// A directory entry on a file system not known to report every change (here ramfs, not in
// the list) is not trusted: a path through it is checked by stat. Below a mount point on it
// (a tmpfs mounted there: the mount point cannot be renamed or deleted while mounted) the
// path is watched again.
TEST_F(SqlitePathWatch, UnknownFileSystemFallsBackExceptBelowAMountPoint) {
  QCACHE_IN_OWN_MOUNT_NAMESPACE();
  std::string r = file("r");
  struct unmount {  // before TearDown removes the directory
    std::vector<std::string> at;
    ~unmount() {
      for (auto it = at.rbegin(); it != at.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
    }
  } mounted;
  fs::create_directories(r);
  ASSERT_EQ(::mount("ramfs", r.c_str(), "ramfs", 0, nullptr), 0) << std::strerror(errno);
  mounted.at.push_back(r);
  fs::create_directories(r + "/m");
  ASSERT_EQ(::mount("tmpfs", (r + "/m").c_str(), "tmpfs", 0, nullptr), 0) << std::strerror(errno);
  mounted.at.push_back(r + "/m");
  std::string on_ramfs = r + "/x/app.db", below_mount = r + "/m/app.db";
  make_db(on_ramfs, "A1000");
  make_db(below_mount, "B1000");
  {
    auto a = open(on_ramfs);
    auto b = open(below_mount);
    prime(*b, below_mount, 2);  // watched: hits do not look
    EXPECT_EQ(memo_page(*a, 1), rows(*plain(on_ramfs), kAll));
    EXPECT_EQ(memo_page(*a, 1), rows(*plain(on_ramfs), kAll));
    auto stats = path_watch_counters_for_testing().stats;
    auto hits = cache_->stats().memo_hits;
    for (int i = 0; i < 5; ++i) EXPECT_EQ(memo_page(*a, 1), rows(*plain(on_ramfs), kAll));
    EXPECT_EQ(cache_->stats().memo_hits, hits + 5);
    EXPECT_EQ(path_watch_counters_for_testing().stats, stats + 5) << "one stat per hit";
    for (const auto& [p, v] : {std::pair{on_ramfs, "C1000"}, std::pair{below_mount, "D1000"}}) {
      std::string next = (fs::path(p).parent_path() / "next.db").string();
      make_db(next, v);
      fs::rename(next, p);
      EXPECT_FALSE(page_is_fresh(p, p == on_ramfs ? 1 : 2)) << p;
    }
  }
}

}  // namespace
