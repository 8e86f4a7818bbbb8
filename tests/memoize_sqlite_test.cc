// Memoized pages on SQLite through SOCI (issue 12): the blog post page rendered to HTML
// inside cache::memoize, compared at every step with the same page rendered on a plain SOCI
// session opened on the same file, so a stale page fails whatever the counters say.
#include <gtest/gtest.h>
#include <qcache/memoize.h>
#include <qcache/soci.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

namespace {

namespace fs = std::filesystem;

const char* kPost = "SELECT title, body FROM posts WHERE id = :id";
const char* kComments =
    "SELECT c.id, u.name, c.body FROM comments c JOIN users u ON u.id = c.user_id "
    "WHERE c.post_id = :id ORDER BY c.id";
const char* kCount = "SELECT count(*) FROM comments WHERE post_id = :id";

std::string render(soci::session& s, int id) {
  std::string title, body;
  soci::indicator ind = soci::i_ok;
  s << kPost, soci::into(title, ind), soci::into(body), soci::use(id, "id");
  std::string h = "<article>";
  if (s.got_data()) h += "<h1>" + title + "</h1><p>" + body + "</p>";
  std::string list;
  soci::rowset<soci::row> rs = (s.prepare << kComments, soci::use(id, "id"));
  for (const auto& r : rs)
    list += "<li id=" + std::to_string(r.get<int>(0)) + "><b>" + r.get<std::string>(1) + "</b> " +
            r.get<std::string>(2) + "</li>";
  int count = 0;
  s << kCount, soci::into(count), soci::use(id, "id");
  return h + "<h2>" + std::to_string(count) + " comments</h2><ul>" + list + "</ul></article>";
}

class MemoizeSqlite : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("qcache_memoize_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "blog.db").string();
    {
      soci::session s(soci::sqlite3, "db=" + path_);
      s << "PRAGMA journal_mode = WAL";
      s << "CREATE TABLE users (id integer PRIMARY KEY, name text NOT NULL)";
      s << "CREATE TABLE posts (id integer PRIMARY KEY, title text NOT NULL, body text NOT NULL)";
      s << "CREATE TABLE comments (id integer PRIMARY KEY, post_id int NOT NULL REFERENCES "
           "posts, user_id int NOT NULL REFERENCES users ON DELETE CASCADE, body text NOT NULL)";
      s << "CREATE INDEX comments_post ON comments (post_id)";
      s << "INSERT INTO users VALUES (1, 'ann'), (2, 'bob'), (3, 'cid')";
      s << "INSERT INTO posts VALUES (1, 'first', 'hello'), (2, 'second', 'world')";
      s << "INSERT INTO comments (post_id, user_id, body) VALUES (1, 1, 'nice'), (1, 2, 'meh'),"
           " (2, 1, 'other post'), (2, 3, 'also')";
    }
    cache_ = std::make_shared<qcache::cache>(qcache::options{});
    factory_ = std::make_unique<qcache::soci::caching_factory>(cache_, soci::sqlite3);
    sql_ = open();
  }
  void TearDown() override {
    sql_.reset();
    fs::remove_all(dir_);
  }
  std::unique_ptr<soci::session> open() {
    auto s = std::make_unique<soci::session>(*factory_, "db=" + path_ + " timeout=5");
    *s << "PRAGMA foreign_keys = ON";
    return s;
  }
  std::string fresh(int id) {
    soci::session plain(soci::sqlite3, "db=" + path_ + " timeout=5");
    return render(plain, id);
  }
  std::string memo(int id) {
    return cache_->memoize("post_page", id, [&] { return render(*sql_, id); });
  }
  bool page(int id) {
    auto before = cache_->stats().memo_hits;
    EXPECT_EQ(memo(id), fresh(id)) << "stale page " << id;
    return cache_->stats().memo_hits > before;
  }

  fs::path dir_;
  std::string path_;
  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::soci::caching_factory> factory_;
  std::unique_ptr<soci::session> sql_;
};

TEST_F(MemoizeSqlite, BlogPostPage) {
  EXPECT_FALSE(page(1));
  EXPECT_EQ(cache_->stats().memo_stores, 1u) << "an ordinary page must be stored";
  EXPECT_TRUE(page(1));
  *sql_ << "INSERT INTO comments (post_id, user_id, body) VALUES (1, 3, 'new')";
  EXPECT_FALSE(page(1));
  EXPECT_TRUE(page(1));
  *sql_ << "UPDATE posts SET title = 'first (edited)' WHERE id = 1";
  EXPECT_FALSE(page(1));
  EXPECT_TRUE(page(1));
  // Another post edited and commented: this page stays a hit.
  EXPECT_FALSE(page(2));
  *sql_ << "UPDATE posts SET body = 'changed' WHERE id = 2";
  *sql_ << "INSERT INTO comments (post_id, user_id, body) VALUES (2, 2, 'x')";
  EXPECT_TRUE(page(1));
  EXPECT_FALSE(page(2));
  // A comment deleted through a cascade (its author deleted).
  *sql_ << "DELETE FROM users WHERE id = 2";
  EXPECT_FALSE(page(1));
  EXPECT_TRUE(page(1));
  // A transaction rolled back.
  {
    soci::transaction tr(*sql_);
    *sql_ << "INSERT INTO comments (post_id, user_id, body) VALUES (1, 1, 'rolled back')";
    std::string inside = memo(1);  // returned, not stored: the transaction wrote comments
    EXPECT_NE(inside.find("rolled back"), std::string::npos);
    tr.rollback();
  }
  page(1);
  EXPECT_TRUE(page(1));
  // A write by another connection of the process, and by a plain connection (another
  // program): both seen.
  auto other = open();
  *other << "INSERT INTO comments (post_id, user_id, body) VALUES (1, 1, 'other session')";
  EXPECT_FALSE(page(1));
  EXPECT_TRUE(page(1));
  {
    soci::session plain(soci::sqlite3, "db=" + path_ + " timeout=5");
    plain << "UPDATE comments SET body = 'outside' WHERE post_id = 1";
  }
  EXPECT_FALSE(page(1));
}

// A page hit checks the file through a private connection of its own, which mapped the
// WAL index before SQLite's pager had opened it: the pager never released that mapping, and
// every checked WAL file kept its index's descriptor (and 256 bytes) open after everything
// was closed. Everything closed, no descriptor of this file's WAL index is left.
TEST_F(MemoizeSqlite, ClosingEverythingLeavesNoWalIndexOpen) {
  EXPECT_FALSE(page(1));
  EXPECT_TRUE(page(1));  // the hit ran the file check
  sql_.reset();
  factory_.reset();
  cache_.reset();  // the stored page and its check go with the cache
  auto open_shm = [&] {
    int n = 0;
    for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
      std::error_code ec;
      auto target = fs::read_symlink(e.path(), ec);
      if (!ec && target.string() == path_ + "-shm") ++n;
    }
    return n;
  };
  EXPECT_EQ(open_shm(), 0);
}

// Another program's write is seen by reads (the file's change counter); a page hit runs no
// read, so it must look at the file itself. Rollback journal mode (the counter in the
// file header) as well as WAL (the WAL index), which BlogPostPage uses.
TEST_F(MemoizeSqlite, AnotherProgramsWriteInvalidatesAPageInEitherJournalMode) {
  for (const char* mode : {"DELETE", "WAL"}) {
    sql_.reset();
    {
      soci::session plain(soci::sqlite3, "db=" + path_ + " timeout=5");
      plain << (std::string("PRAGMA journal_mode = ") + mode);
    }
    sql_ = open();
    page(1);
    EXPECT_TRUE(page(1)) << mode;
    {
      soci::session plain(soci::sqlite3, "db=" + path_ + " timeout=5");
      plain << (std::string("UPDATE posts SET body = 'by another program in ") + mode +
                "' WHERE id = 1");
    }
    EXPECT_FALSE(page(1)) << mode;
    EXPECT_TRUE(page(1)) << mode;
  }
}

TEST_F(MemoizeSqlite, AWriteInsideTheFunctionIsNotStored) {
  int runs = 0;
  auto f = [&] {
    return cache_->memoize("writes", 1, [&] {
      ++runs;
      std::string r = render(*sql_, 1);
      *sql_ << "UPDATE posts SET body = body WHERE id = 2";
      return r;
    });
  };
  f();
  f();
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(cache_->stats().memo_stores, 0u);
}

TEST_F(MemoizeSqlite, VolatileReadIsNotStored) {
  int runs = 0;
  auto f = [&] {
    return cache_->memoize("random", 1, [&] {
      ++runs;
      long long r = 0;
      *sql_ << "SELECT random()", soci::into(r);
      return render(*sql_, 1) + std::to_string(r);
    });
  };
  f();
  f();
  EXPECT_EQ(runs, 2);
}

TEST_F(MemoizeSqlite, ExceptionPropagatesUnchangedAndStoresNothing) {
  auto f = [&] {
    return cache_->memoize("broken", 1, [&] {
      std::string r = render(*sql_, 1);
      int x = 0;
      *sql_ << "SELECT no_such_column FROM posts", soci::into(x);
      return r;
    });
  };
  EXPECT_THROW(f(), soci::soci_error);
  EXPECT_EQ(cache_->stats().memo_stores, 0u);
  EXPECT_FALSE(page(1));
  EXPECT_TRUE(page(1));
}

TEST_F(MemoizeSqlite, StaleSetRaceWriteBetweenTwoReadsLeavesNothingStored) {
  std::atomic<int> stores{0};
  cache_->set_test_hook_before_store([&] {
    if (++stores != 2) return;  // the comment list stored; the count is next
    std::thread([&] {
      auto other = open();
      *other << "INSERT INTO comments (post_id, user_id, body) VALUES (1, 3, 'race')";
    }).join();
  });
  std::string h = memo(1);
  cache_->set_test_hook_before_store(nullptr);
  EXPECT_EQ(h.find("race"), std::string::npos);
  EXPECT_NE(h.find("3 comments"), std::string::npos);
  EXPECT_EQ(cache_->stats().memo_stores, 0u);
  EXPECT_FALSE(page(1));
  EXPECT_TRUE(page(1));
}

// The race between two reads that each stored correctly (see memoize_pg_test.cc).
TEST_F(MemoizeSqlite, StaleSetRaceBetweenTwoStoredReadsLeavesNothingStored) {
  bool raced = false;
  auto racing_page = [&] {
    return cache_->memoize("post_page", 1, [&] {
      std::string list;
      int id = 1;
      ::soci::rowset<::soci::row> rs = (sql_->prepare << kComments, ::soci::use(id, "id"));
      for (const auto& r : rs) list += r.get<std::string>(2) + ";";
      if (!raced) {
        raced = true;
        std::thread([&] {
          auto other = open();
          *other << "INSERT INTO comments (post_id, user_id, body) VALUES (1, 3, 'race')";
        }).join();
      }
      int count = 0;
      *sql_ << kCount, ::soci::into(count), ::soci::use(id, "id");
      return list + std::to_string(count);
    });
  };
  std::string h = racing_page();
  EXPECT_EQ(h, "nice;meh;3");
  EXPECT_EQ(cache_->stats().memo_stores, 0u);
  EXPECT_EQ(racing_page(), "nice;meh;race;3");
  EXPECT_EQ(cache_->stats().memo_stores, 1u);
}

TEST_F(MemoizeSqlite, ExplainListsThePagesReads) {
  page(1);
  qcache::explanation e = cache_->explain_memo<std::string>("post_page", 1);
  EXPECT_TRUE(e.cacheable) << e.to_string();
  ASSERT_EQ(e.reads.size(), 3u) << e.to_string();
  EXPECT_EQ(e.reads[0], kPost);
  EXPECT_EQ(e.reads[1], kComments);
  EXPECT_EQ(e.reads[2], kCount);
}

}  // namespace
