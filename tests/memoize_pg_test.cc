// Memoized pages on PostgreSQL (issue 12), through libpqxx and SOCI's postgresql backend:
// a blog post page (the post, its comments with their authors, the comment count) is
// rendered to HTML inside cache::memoize. Every memoized page is compared with the same
// page rendered on a plain libpqxx connection at that moment, so a stale page fails the
// test whatever the counters say.
#include <gtest/gtest.h>
#include <qcache/memoize.h>
#include <qcache/pqxx.h>
#include <qcache/soci.h>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/soci.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <pqxx/pqxx>
#include <string>
#include <thread>

#include "support/db_env.h"

namespace {

const char* kPost = "SELECT title, body FROM posts WHERE id = $1";
const char* kComments =
    "SELECT c.id, u.name, c.body FROM comments c JOIN users u ON u.id = c.user_id "
    "WHERE c.post_id = $1 ORDER BY c.id";
const char* kCount = "SELECT count(*) FROM comments WHERE post_id = $1";

std::string html(const pqxx::result& post, const pqxx::result& comments,
                 const pqxx::result& count) {
  std::string h = "<article>";
  if (!post.empty())
    h += "<h1>" + post[0][0].as<std::string>() + "</h1><p>" + post[0][1].as<std::string>() + "</p>";
  h += "<h2>" + count[0][0].as<std::string>() + " comments</h2><ul>";
  for (const auto& r : comments)
    h += "<li id=" + r[0].as<std::string>() + "><b>" + r[1].as<std::string>() + "</b> " +
         r[2].as<std::string>() + "</li>";
  return h + "</ul></article>";
}

// The page through any libpqxx-like transaction (qcache's or plain).
template <class Tx>
std::string render(Tx& tx, int id) {
  auto post = tx.exec_params(kPost, id);
  auto comments = tx.exec_params(kComments, id);
  auto count = tx.exec_params(kCount, id);
  return html(post, comments, count);
}

class MemoizePg : public ::testing::Test {
 protected:
  void SetUp() override {
    QCACHE_REQUIRE_PG(ci);
    pg_ = ci;
    schema_ = "qcm_" + std::to_string(getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name();
    for (auto& ch : schema_) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    schema_ = schema_.substr(0, 60);
    admin("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE; CREATE SCHEMA " + schema_ + ";" +
          "SET search_path = " + schema_ + ";" +
          "CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL);"
          "CREATE TABLE posts (id int PRIMARY KEY, title text NOT NULL, body text NOT NULL);"
          "CREATE TABLE comments (id serial PRIMARY KEY, post_id int NOT NULL REFERENCES "
          "posts, user_id int NOT NULL REFERENCES users ON DELETE CASCADE,"
          " body text NOT NULL);"
          "INSERT INTO users VALUES (1, 'ann'), (2, 'bob'), (3, 'cid');"
          "INSERT INTO posts VALUES (1, 'first', 'hello'), (2, 'second', 'world');"
          "INSERT INTO comments (post_id, user_id, body) VALUES (1, 1, 'nice'), (1, 2, 'meh'),"
          " (2, 1, 'other post'), (2, 3, 'also')");
    qcache::options o;
    o.follow_changes = true;  // AnotherProgramsCommitInvalidatesThePageThroughTheStream
    cache_ = std::make_shared<qcache::cache>(o);
    conn_ = std::make_unique<qcache::pqxx::connection>(conninfo(), cache_);
    plain_ = std::make_unique<pqxx::connection>(conninfo());
    // The setup's rows were written by another client: the change stream reports them
    // later; let it catch up, so that its report does not invalidate the first pages.
    ASSERT_TRUE(conn_->sync());
  }
  void TearDown() override {
    if (pg_.empty()) return;
    soci_.reset();
    conn_.reset();
    plain_.reset();
    try {
      admin("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
    } catch (const std::exception& e) {
      ADD_FAILURE() << "cleanup: " << e.what();
    }
  }
  std::string conninfo() const { return pg_ + " options='-c search_path=" + schema_ + "'"; }
  void admin(const std::string& sql) {
    pqxx::connection c(pg_);
    pqxx::nontransaction tx(c);
    tx.exec(sql);
  }
  // A write through qcache (another connection when `other`), committed.
  void write(const std::string& sql, qcache::pqxx::connection* on = nullptr) {
    qcache::pqxx::work w(on ? *on : *conn_);
    w.exec(sql);
    w.commit();
  }
  std::string fresh(int id) {
    pqxx::nontransaction tx(*plain_);
    return render(tx, id);
  }
  // The memoized page; expects it equal to a fresh render; returns whether it was a hit.
  bool page(int id, std::string* out = nullptr) {
    auto before = cache_->stats().memo_hits;
    std::string h = cache_->memoize("post_page", id, [&] {
      qcache::pqxx::nontransaction tx(*conn_);
      std::string r = render(tx, id);
      tx.commit();
      return r;
    });
    EXPECT_EQ(h, fresh(id)) << "stale page " << id;
    if (out) *out = h;
    return cache_->stats().memo_hits > before;
  }
  soci::session& soci() {
    if (!soci_) {
      factory_ = std::make_unique<qcache::soci::caching_factory>(cache_, soci::postgresql);
      soci_ = std::make_unique<soci::session>(*factory_, conninfo());
    }
    return *soci_;
  }

  std::string pg_, schema_;
  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::pqxx::connection> conn_;
  std::unique_ptr<pqxx::connection> plain_;
  std::unique_ptr<qcache::soci::caching_factory> factory_;
  std::unique_ptr<soci::session> soci_;
};

// Issue 12's last point: a page is invalidated by another program's commit, reported by the
// change stream, exactly like the reads it made (and another post's change leaves it).
TEST_F(MemoizePg, AnotherProgramsCommitInvalidatesThePageThroughTheStream) {
  EXPECT_FALSE(page(1));
  EXPECT_TRUE(page(1));
  auto outside = [&](const std::string& sql) {
    pqxx::work w(*plain_);
    w.exec(sql);
    w.commit();
  };
  outside("INSERT INTO comments (post_id, user_id, body) VALUES (1, 2, 'from another program')");
  ASSERT_TRUE(conn_->sync());
  EXPECT_FALSE(page(1));  // recomputed; page() compares it with a fresh render
  EXPECT_TRUE(page(1));
  outside("UPDATE posts SET body = 'elsewhere' WHERE id = 2");
  outside("INSERT INTO comments (post_id, user_id, body) VALUES (2, 3, 'another post')");
  ASSERT_TRUE(conn_->sync());
  EXPECT_TRUE(page(1));
  outside("DELETE FROM users WHERE id = 1");  // cascades to its comments, one on this page
  ASSERT_TRUE(conn_->sync());
  EXPECT_FALSE(page(1));
}

TEST_F(MemoizePg, BlogPostPage) {
  EXPECT_FALSE(page(1));
  EXPECT_EQ(cache_->stats().memo_stores, 1u) << "an ordinary page must be stored";
  auto queries = cache_->stats();
  EXPECT_TRUE(page(1));
  EXPECT_EQ(cache_->stats().hits + cache_->stats().misses, queries.hits + queries.misses)
      << "a page hit runs no query";
  // A new comment on this post.
  write("INSERT INTO comments (post_id, user_id, body) VALUES (1, 3, 'new')");
  EXPECT_FALSE(page(1));
  EXPECT_TRUE(page(1));
  // The post edited.
  write("UPDATE posts SET title = 'first (edited)' WHERE id = 1");
  EXPECT_FALSE(page(1));
  EXPECT_TRUE(page(1));
  // Another post edited, and a comment on it: this page stays a hit.
  EXPECT_FALSE(page(2));
  write("UPDATE posts SET body = 'changed' WHERE id = 2");
  write("INSERT INTO comments (post_id, user_id, body) VALUES (2, 2, 'x')");
  EXPECT_TRUE(page(1));
  EXPECT_FALSE(page(2));
  // A comment deleted through a cascade (its author deleted).
  write("DELETE FROM users WHERE id = 2");
  EXPECT_FALSE(page(1));
  EXPECT_TRUE(page(1));
  // An author renamed: shown on the page through the join.
  write("UPDATE users SET name = 'ann2' WHERE id = 1");
  EXPECT_FALSE(page(1));
  // A transaction rolled back: the page is what the database holds.
  EXPECT_TRUE(page(1));
  {
    qcache::pqxx::work w(*conn_);
    w.exec("INSERT INTO comments (post_id, user_id, body) VALUES (1, 1, 'rolled back')");
    w.abort();
  }
  page(1);
  EXPECT_TRUE(page(1));
}

TEST_F(MemoizePg, PageRenderedInsideAWritingTransactionIsReturnedNotStored) {
  qcache::pqxx::work w(*conn_);
  w.exec("INSERT INTO comments (post_id, user_id, body) VALUES (1, 1, 'uncommitted')");
  std::string in_tx = cache_->memoize("post_page", 1, [&] { return render(w, 1); });
  EXPECT_NE(in_tx.find("uncommitted"), std::string::npos);
  EXPECT_EQ(cache_->stats().memo_stores, 0u);
  w.abort();
  EXPECT_FALSE(page(1));
}

TEST_F(MemoizePg, AWriteInsideTheFunctionIsNotStored) {
  int runs = 0;
  auto f = [&] {
    return cache_->memoize("page_with_counter", 1, [&] {
      ++runs;
      qcache::pqxx::work w(*conn_);
      std::string r = render(w, 1);
      w.exec("UPDATE posts SET body = body WHERE id = 2");
      w.commit();
      return r;
    });
  };
  f();
  f();
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(cache_->stats().memo_stores, 0u);
}

TEST_F(MemoizePg, VolatileReadIsNotStored) {
  int runs = 0;
  auto f = [&] {
    return cache_->memoize("random", 1, [&] {
      ++runs;
      qcache::pqxx::nontransaction tx(*conn_);
      return render(tx, 1) + tx.exec("SELECT random()")[0][0].as<std::string>();
    });
  };
  f();
  f();
  EXPECT_EQ(runs, 2);
}

TEST_F(MemoizePg, ExceptionPropagatesUnchangedAndStoresNothing) {
  auto f = [&] {
    return cache_->memoize("broken", 1, [&] {
      qcache::pqxx::nontransaction tx(*conn_);
      std::string r = render(tx, 1);
      tx.exec("SELECT no_such_column FROM posts");
      return r;
    });
  };
  EXPECT_THROW(f(), pqxx::undefined_column);
  EXPECT_THROW(f(), pqxx::undefined_column);
  EXPECT_EQ(cache_->stats().memo_stores, 0u);
  EXPECT_FALSE(page(1));
  EXPECT_TRUE(page(1));
}

TEST_F(MemoizePg, NestedFragmentsPassTheirDependenciesOut) {
  int outer = 0;
  auto comments_fragment = [&](int id) {
    return cache_->memoize("comments_fragment", id, [&] {
      qcache::pqxx::nontransaction tx(*conn_);
      auto r = tx.exec_params(kComments, id);
      std::string h;
      for (const auto& row : r) h += row[2].as<std::string>() + ";";
      return h;
    });
  };
  auto whole = [&] {
    return cache_->memoize("whole", 1, [&] {
      ++outer;
      std::string title;
      {
        qcache::pqxx::nontransaction tx(*conn_);
        title = tx.exec_params(kPost, 1)[0][0].as<std::string>();
        tx.commit();
      }
      return title + comments_fragment(1);
    });
  };
  std::string a = whole();
  EXPECT_EQ(whole(), a);
  EXPECT_EQ(outer, 1);
  write("INSERT INTO comments (post_id, user_id, body) VALUES (1, 1, 'inner')");
  std::string b = whole();
  EXPECT_EQ(outer, 2);
  EXPECT_NE(b.find("inner;"), std::string::npos);
}

// The stale-set race, deterministically: another session commits a new comment after the
// page read the comment list and before it reads the count. The page would show 3 comments
// listed under "3 comments"... or 2 under "3": it must not be stored as current.
TEST_F(MemoizePg, StaleSetRaceWriteBetweenTwoReadsLeavesNothingStored) {
  auto other = std::make_unique<qcache::pqxx::connection>(conninfo(), cache_);
  std::atomic<int> stores{0};
  cache_->set_test_hook_before_store([&] {
    if (++stores != 2) return;  // the second statement stored: the comment list
    std::thread([&] {
      write("INSERT INTO comments (post_id, user_id, body) VALUES (1, 3, 'race')", other.get());
    }).join();
  });
  std::string h;
  h = cache_->memoize("post_page", 1, [&] {
    qcache::pqxx::nontransaction tx(*conn_);
    std::string r = render(tx, 1);
    tx.commit();
    return r;
  });
  cache_->set_test_hook_before_store(nullptr);
  EXPECT_EQ(h.find("race"), std::string::npos) << "the list was read before the write";
  EXPECT_NE(h.find("3 comments"), std::string::npos) << "the count after it";
  EXPECT_EQ(cache_->stats().memo_stores, 0u);
  EXPECT_FALSE(page(1));  // compared with a fresh render
  EXPECT_TRUE(page(1));
}

// The same race between two statements that each stored their own result correctly: the
// list is read and stored, another session commits a comment, the count is read (a miss
// under the new version). Each entry is right; the page built from both is not current.
TEST_F(MemoizePg, StaleSetRaceBetweenTwoStoredReadsLeavesNothingStored) {
  auto other = std::make_unique<qcache::pqxx::connection>(conninfo(), cache_);
  bool raced = false;
  auto racing_page = [&] {
    return cache_->memoize("post_page", 1, [&] {
      qcache::pqxx::nontransaction tx(*conn_);
      auto post = tx.exec_params(kPost, 1);
      auto comments = tx.exec_params(kComments, 1);
      if (!raced) {
        raced = true;
        std::thread([&] {
          write("INSERT INTO comments (post_id, user_id, body) VALUES (1, 3, 'race')", other.get());
        }).join();
      }
      auto count = tx.exec_params(kCount, 1);
      tx.commit();
      return html(post, comments, count);
    });
  };
  std::string h = racing_page();
  EXPECT_EQ(h.find("race"), std::string::npos);
  EXPECT_NE(h.find("3 comments"), std::string::npos);
  EXPECT_EQ(cache_->stats().memo_stores, 0u);
  EXPECT_EQ(racing_page(), fresh(1));
  EXPECT_TRUE(page(1));
}

// One page read through libpqxx (the post) and SOCI (the comments): writes through either
// invalidate it.
TEST_F(MemoizePg, PageReadThroughLibpqxxAndSoci) {
  auto mixed = [&](int id) {
    auto before = cache_->stats().memo_hits;
    std::string h = cache_->memoize("mixed_page", id, [&] {
      qcache::pqxx::nontransaction tx(*conn_);
      auto post = tx.exec_params(kPost, id);
      tx.commit();
      std::string r = "<h1>" + post[0][0].as<std::string>() + "</h1>";
      soci::rowset<soci::row> rs =
          (soci().prepare << "SELECT body FROM comments WHERE post_id = :id ORDER BY id",
           soci::use(id));
      for (const auto& row : rs) r += "<li>" + row.get<std::string>(0) + "</li>";
      return r;
    });
    pqxx::nontransaction tx(*plain_);
    std::string want = "<h1>" + tx.exec_params(kPost, id)[0][0].as<std::string>() + "</h1>";
    for (const auto& row :
         tx.exec_params("SELECT body FROM comments WHERE post_id = $1 ORDER BY id", id))
      want += "<li>" + row[0].as<std::string>() + "</li>";
    EXPECT_EQ(h, want);
    return cache_->stats().memo_hits > before;
  };
  EXPECT_FALSE(mixed(1));
  EXPECT_TRUE(mixed(1));
  soci() << "INSERT INTO comments (post_id, user_id, body) VALUES (1, 1, 'via soci')";
  EXPECT_FALSE(mixed(1));
  EXPECT_TRUE(mixed(1));
  write("UPDATE posts SET title = 'via pqxx' WHERE id = 1");
  EXPECT_FALSE(mixed(1));
  EXPECT_TRUE(mixed(1));
  soci() << "UPDATE comments SET body = 'edited via soci' WHERE post_id = 1 AND user_id = 2";
  EXPECT_FALSE(mixed(1));
  soci() << "UPDATE posts SET body = 'x' WHERE id = 2";
  EXPECT_TRUE(mixed(1));
}

TEST_F(MemoizePg, ExplainAndStats) {
  page(1);
  page(1);
  auto s = cache_->stats();
  EXPECT_EQ(s.memo_hits, 1u);
  EXPECT_EQ(s.memo_misses, 1u);
  EXPECT_EQ(s.memo_stores, 1u);
  qcache::explanation e = cache_->explain_memo<std::string>("post_page", 1);
  EXPECT_TRUE(e.cacheable);
  ASSERT_EQ(e.reads.size(), 3u) << e.to_string();
  EXPECT_EQ(e.reads[0], kPost);
  EXPECT_EQ(e.reads[1], kComments);
  EXPECT_EQ(e.reads[2], kCount);
  write("INSERT INTO comments (post_id, user_id, body) VALUES (1, 3, 'new')");
  EXPECT_FALSE(cache_->explain_memo<std::string>("post_page", 1).cacheable);
}

}  // namespace
