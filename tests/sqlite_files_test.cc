// qcache::soci on SQLite: what qcache holds per database file stays bounded by the files the
// process has open through it, without giving up what pinning every file for the life of
// the process protected: another connection's POSIX locks (closing any descriptor of a file
// drops them all) and the file's identity (an inode reused by a new file at the same path
// must be a new database). Every read through the cache is compared with the same read on a
// plain session opened on the file at that moment, so a stale hit fails whatever the
// counters say.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <qcache/memoize.h>
#include <qcache/soci.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/sqlite_file_fixture.h"

// The ASan+UBSan stage: SQLite-internal memory of sessions whose reads were memoized (see
// memoize_sqlite_test.cc).
extern "C" const char* __lsan_default_suppressions() { return "leak:libsqlite3\n"; }

namespace {

namespace fs = std::filesystem;

class SqliteFiles : public qcache_test::sqlite_file_fixture {
 protected:
  SqliteFiles() : sqlite_file_fixture("qcache_sqlite_files_") {}

  // A database at `path` made by a plain session: t(id, v) with two rows named from `v`.
  // The same statements for every `v` of one length: the files' change counters agree.
  void make_db(const std::string& path, const std::string& v, bool wal = false) {
    auto p = plain(path);
    *p << "PRAGMA synchronous = OFF";
    if (wal) *p << "PRAGMA journal_mode = WAL";
    *p << "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)";
    *p << "INSERT INTO t VALUES(1, '" + v + "'), (2, '" + v + "2')";
  }
  std::string memo_page(soci::session& s, int key, const std::string& q) {
    return cache_->memoize("page", key, [&] { return rows(s, q); });
  }
};

const char* kOne = "SELECT v FROM t WHERE id = 1";
const char* kAll = "SELECT id, v FROM t ORDER BY id";

std::size_t open_descriptors() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

std::size_t mappings() {
  std::ifstream in("/proc/self/maps");
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

ino_t inode_of(const std::string& path) {
  struct stat sb {};
  return ::stat(path.c_str(), &sb) == 0 ? sb.st_ino : 0;
}

// True when another process sees a lock held on SQLite's lock bytes of `path` (the pending,
// reserved and shared bytes at 1 GiB): POSIX locks are per process, so only a child can ask.
bool locked_for_another_process(const std::string& path) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(path.c_str(), O_RDWR);
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0x40000000;
    fl.l_len = 512;
    bool locked = fd >= 0 && ::fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    ::_exit(locked ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Open, read (the second read a hit), memoize a page (the second call a hit, which runs the
// file's memo check), close and delete 2000 distinct files, half of them in WAL mode: the
// process's descriptors and mappings must not grow with the number of files. (qcache kept a
// descriptor and a mapping per file, and a memo check's connection per WAL file, for the
// life of the process: the differential tester died of it.)
TEST_F(SqliteFiles, DescriptorsAndMappingsStayBoundedOverTwoThousandFiles) {
  auto cycle = [&](int i) {
    std::string f = file("f" + std::to_string(i) + ".db");
    make_db(f, "v" + std::to_string(i), i % 2 == 1);
    {
      auto s = open(f);
      EXPECT_FALSE(fresh(*s, kOne, f));
      EXPECT_TRUE(fresh(*s, kOne, f)) << "an unchanged file's read must be a hit";
      auto before = cache_->stats().memo_hits;
      EXPECT_EQ(memo_page(*s, i, kAll), rows(*plain(f), kAll));
      EXPECT_EQ(memo_page(*s, i, kAll), rows(*plain(f), kAll));
      EXPECT_EQ(cache_->stats().memo_hits, before + 1) << "a page of an open file is a hit";
    }
    fs::remove(f);
    fs::remove(f + "-wal");
    fs::remove(f + "-shm");
  };
  for (int i = 0; i < 100; ++i) cycle(i);
  std::size_t fds = open_descriptors(), maps = mappings();
  for (int i = 100; i < 2100 && !HasFailure(); ++i) cycle(i);
  std::printf("after 100 files: %zu descriptors, %zu mappings; after 2100: %zu, %zu\n", fds, maps,
              open_descriptors(), mappings());
  EXPECT_LE(open_descriptors(), fds + 2) << "descriptors grow with the files opened";
  EXPECT_LE(mappings(), maps + 16) << "mappings grow with the files opened";
}

// The same for files one connection attaches, reads and detaches: what a file holds is
// released when it is detached, not when the connection closes.
TEST_F(SqliteFiles, AttachedFilesAreReleasedWhenDetached) {
  make_db(path_, "main");
  auto s = open();
  auto cycle = [&](int i) {
    std::string f = file("a" + std::to_string(i) + ".db");
    make_db(f, "v" + std::to_string(i), i % 2 == 1);
    const std::string attach = "ATTACH DATABASE '" + f + "' AS aux";
    *s << attach;
    const std::string q = "SELECT v FROM aux.t WHERE id = 1";
    EXPECT_FALSE(fresh(*s, q, {}, {attach}));
    EXPECT_TRUE(fresh(*s, q, {}, {attach})) << "an unchanged attached file's read must be a hit";
    *s << "DETACH DATABASE aux";
    fs::remove(f);
    fs::remove(f + "-wal");
    fs::remove(f + "-shm");
  };
  for (int i = 0; i < 50; ++i) cycle(i);
  std::size_t fds = open_descriptors(), maps = mappings();
  for (int i = 50; i < 550 && !HasFailure(); ++i) cycle(i);
  EXPECT_LE(open_descriptors(), fds + 2) << "descriptors grow with the files attached";
  EXPECT_LE(mappings(), maps + 16) << "mappings grow with the files attached";
}

// Connections open and close on two threads (the file's state attached, idle or retired
// in turn) while two others serve memoized pages of the file (each check takes the pin of
// the moment): no check reads a mapping or connection released under it, and no page is
// stale once the writer's change is made.
TEST_F(SqliteFiles, MemoChecksRaceConnectionsClosing) {
  for (bool wal : {false, true}) {
    SCOPED_TRACE(wal ? "WAL" : "rollback journal");
    std::string f = file(wal ? "wal.db" : "rollback.db");
    make_db(f, "one", wal);
    std::atomic<bool> stop{false};
    std::atomic<int> errors{0};
    auto churn = [&] {
      while (!stop) {
        try {
          auto s = open(f);
          rows(*s, kOne);
        } catch (...) {
          ++errors;
        }
      }
    };
    auto pages = [&] {
      while (!stop) {
        try {
          cache_->memoize("race", wal, [&] {
            auto s = open(f);
            return rows(*s, kAll);
          });
        } catch (...) {
          ++errors;
        }
      }
    };
    std::vector<std::thread> threads;
    for (int i = 0; i < 2; ++i) threads.emplace_back(churn);
    for (int i = 0; i < 2; ++i) threads.emplace_back(pages);
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    *plain(f) << "UPDATE t SET v = 'two' WHERE id = 1";
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    stop = true;
    for (auto& t : threads) t.join();
    EXPECT_EQ(errors, 0);
    auto s = open(f);
    EXPECT_EQ(cache_->memoize("race", wal, [&] { return rows(*s, kAll); }), rows(*plain(f), kAll));
  }
}

// A file read through the cache is deleted once no connection has it open, and a new file
// made by the same statements (the same change counter) at the same path; ext4 commonly
// gives it a freed inode (an idle file's inode stays held until 16 newer idle files push it
// out): the new file is another database.
TEST_F(SqliteFiles, InodeReusedByANewFileAtTheSamePathIsANewDatabase) {
  int reused = 0;
  std::set<ino_t> seen;
  for (int i = 0; i < 300 && reused < 20 && !HasFailure(); ++i) {
    make_db(path_, "A" + std::to_string(1000 + i));
    seen.insert(inode_of(path_));
    {
      auto s = open();
      EXPECT_TRUE(twice(*s, kOne));
      EXPECT_TRUE(twice(*s, kAll));
    }
    fs::remove(path_);
    make_db(path_, "B" + std::to_string(1000 + i));
    if (seen.count(inode_of(path_))) ++reused;
    seen.insert(inode_of(path_));
    auto s = open();
    fresh(*s, kOne);
    fresh(*s, kAll);
    s.reset();
    fs::remove(path_);
  }
  struct statfs sf {};
  ASSERT_EQ(::statfs(dir_.c_str(), &sf), 0);
  if (sf.f_type == 0xEF53) {  // ext2/3/4 reuse a freed inode at once; tmpfs never does
    EXPECT_GT(reused, 0) << "no inode was reused: qcache still holds the files' inodes";
  }
}

// The same while a memoized page of the old file is in the cache: its check must not take
// the new file for the old one.
TEST_F(SqliteFiles, MemoizedPageOfADeletedFileIsNotServedForTheNewFile) {
  for (int i = 0; i < 50 && !HasFailure(); ++i) {
    make_db(path_, "A" + std::to_string(1000 + i), i % 2 == 1);
    {
      auto s = open();
      EXPECT_EQ(memo_page(*s, 1, kAll), rows(*plain(), kAll));
      EXPECT_EQ(memo_page(*s, 1, kAll), rows(*plain(), kAll));
    }
    fs::remove(path_);
    fs::remove(path_ + "-wal");
    fs::remove(path_ + "-shm");
    make_db(path_, "B" + std::to_string(1000 + i), i % 2 == 1);
    {
      auto s = open();
      EXPECT_EQ(memo_page(*s, 1, kAll), rows(*plain(), kAll));
    }
    fs::remove(path_);
    fs::remove(path_ + "-wal");
    fs::remove(path_ + "-shm");
  }
}

// A plain connection of the process holds an exclusive lock while qcache connections to
// the same file open, read, fail busy and close: another process still sees the lock.
TEST_F(SqliteFiles, LockOfAPlainConnectionSurvivesQcacheConnectionsClosing) {
  make_db(path_, "x");
  EXPECT_FALSE(locked_for_another_process(path_));
  auto early = open();
  EXPECT_TRUE(twice(*early, kOne));
  auto holder = plain();
  *holder << "BEGIN EXCLUSIVE";
  *holder << "UPDATE t SET v = 'held' WHERE id = 1";
  ASSERT_TRUE(locked_for_another_process(path_));
  early.reset();  // the last qcache connection that read the file before the lock
  EXPECT_TRUE(locked_for_another_process(path_));
  for (int i = 0; i < 5; ++i) {
    soci::session s(*factory_, "db=" + path_ + " timeout=0");
    EXPECT_THROW(rows(s, kOne), soci::soci_error) << "the file is locked exclusively";
  }
  EXPECT_TRUE(locked_for_another_process(path_)) << "a qcache connection dropped the lock";
  *holder << "COMMIT";
  EXPECT_FALSE(locked_for_another_process(path_));
  auto s = open();
  fresh(*s, kOne);
}

// A memoized page over a file whose qcache connections all closed: the file changed
// through another connection meanwhile, so the page must not be served as it was; in
// either journal mode.
TEST_F(SqliteFiles, MemoizedPageAfterItsConnectionsClosedIsNotStale) {
  for (bool wal : {false, true}) {
    SCOPED_TRACE(wal ? "WAL" : "rollback journal");
    std::string f = file(wal ? "wal.db" : "rollback.db");
    make_db(f, "one", wal);
    auto page = [&] {
      auto s = open(f);
      return memo_page(*s, wal, kAll);
    };
    {
      auto s = open(f);
      EXPECT_EQ(memo_page(*s, wal, kAll), rows(*plain(f), kAll));
      auto before = cache_->stats().memo_hits;
      EXPECT_EQ(memo_page(*s, wal, kAll), rows(*plain(f), kAll));
      EXPECT_EQ(cache_->stats().memo_hits, before + 1);
    }
    *plain(f) << "UPDATE t SET v = 'two' WHERE id = 1";
    EXPECT_EQ(page(), rows(*plain(f), kAll));
    *plain(f) << "INSERT INTO t VALUES(3, 'three')";
    EXPECT_EQ(page(), rows(*plain(f), kAll));
  }
}

std::size_t mappings_of(const std::string& path) {
  std::ifstream in("/proc/self/maps");
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);)  // the file itself, not its -wal or -shm
    if (line.size() >= path.size() &&
        line.compare(line.size() - path.size(), path.size(), path) == 0)
      ++n;
  return n;
}

std::size_t descriptors_of(const std::string& path) {
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (fs::read_symlink(e.path(), ec).string() == path) ++n;
  }
  return n;
}

// The header is mapped (through SQLite's own descriptor, proven to be the file's) while a
// qcache connection has the file open, so that a hit reads the change counter without a
// system call; a WAL file's is unmapped when the last one closes.
TEST_F(SqliteFiles, HeaderIsMappedWhileAConnectionIsOpenAndUnmappedAfter) {
  make_db(path_, "x", true);
  ASSERT_EQ(mappings_of(path_), 0u);
  {
    auto a = open();
    EXPECT_EQ(mappings_of(path_), 1u);
    auto b = open();
    EXPECT_TRUE(twice(*b, kOne));
    EXPECT_EQ(mappings_of(path_), 1u) << "one mapping per file, not per connection";
    a.reset();
    EXPECT_EQ(mappings_of(path_), 1u);
  }
  EXPECT_EQ(mappings_of(path_), 0u);
  EXPECT_EQ(descriptors_of(path_), 0u);
}

// A rollback-journal file whose connections all closed stays idle: only its header mapping
// is kept (no descriptor), which holds its inode, so its identity and entries stay valid
// for the next connection (an application that opens a connection per request keeps its
// hits); a change made meanwhile is seen. The 16 most recently idle files are kept.
TEST_F(SqliteFiles, IdleRollbackFileKeepsItsEntriesWithOnlyItsHeaderMapped) {
  make_db(path_, "x");
  {
    auto s = open();
    EXPECT_FALSE(fresh(*s, kOne));
    EXPECT_TRUE(fresh(*s, kOne));
  }
  EXPECT_EQ(mappings_of(path_), 1u);
  EXPECT_EQ(descriptors_of(path_), 0u);
  {
    auto s = open();
    EXPECT_TRUE(fresh(*s, kOne)) << "an idle file's entries are kept";
  }
  *plain() << "UPDATE t SET v = 'changed' WHERE id = 1";
  {
    auto s = open();
    EXPECT_FALSE(fresh(*s, kOne)) << "a change made while idle is seen";
    EXPECT_TRUE(fresh(*s, kOne));
  }
  for (int i = 0; i < 16; ++i) {
    std::string f = file("other" + std::to_string(i) + ".db");
    make_db(f, "o");
    auto s = open(f);
    fresh(*s, kOne, f);
  }
  EXPECT_EQ(mappings_of(path_), 0u) << "16 newer idle files retire the oldest";
  auto s = open();
  EXPECT_FALSE(fresh(*s, kOne)) << "a retired identity is not met again";
}

// Connections that come and go while another connection of the process keeps the file
// open (a pool) share the file's identity: their reads stay hits.
TEST_F(SqliteFiles, ConnectionsWhileAnotherKeepsTheFileOpenShareItsEntries) {
  make_db(path_, "x");
  auto keeper = open();
  {
    auto s = open();
    EXPECT_FALSE(fresh(*s, kOne));
  }
  for (int i = 0; i < 3; ++i) {
    auto s = open();
    EXPECT_TRUE(fresh(*s, kOne)) << "a read of an unchanged file is a hit";
  }
  *plain() << "UPDATE t SET v = 'y' WHERE id = 1";
  auto s = open();
  EXPECT_FALSE(fresh(*s, kOne));
  EXPECT_TRUE(fresh(*s, kOne));
}

}  // namespace
