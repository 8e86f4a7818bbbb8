// Adversarial hunt on memoization (issue 12): each test makes a memoized value be served
// where recomputing it now would give something else, or where skipping the function
// changes what the program computes, and compares with a fresh recomputation.
#include <gtest/gtest.h>
#include <qcache/memoize.h>
#include <qcache/pqxx.h>
#include <qcache/soci.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <unistd.h>

#include <filesystem>

#include <memory>
#include <pqxx/pqxx>
#include <string>

#include "support/db_env.h"

namespace {

class MemoizeHunt : public ::testing::Test {
 protected:
  void SetUp() override {
    QCACHE_REQUIRE_PG(ci);
    pg_ = ci;
    schema_ = "qch_" + std::to_string(getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name();
    for (auto& ch : schema_) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    schema_ = schema_.substr(0, 60);
    admin("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE; CREATE SCHEMA " + schema_ + ";" +
          "SET search_path = " + schema_ + ";" +
          "CREATE TABLE posts (id int PRIMARY KEY, title text NOT NULL);"
          "INSERT INTO posts VALUES (1, 'first'), (2, 'second');");
    cache_ = std::make_shared<qcache::cache>(qcache::options{});
    conn_ = std::make_unique<qcache::pqxx::connection>(conninfo(), cache_);
  }
  void TearDown() override {
    if (pg_.empty()) return;
    conn_.reset();
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
  // The session's value of a setting, read on the raw connection (qcache sees nothing).
  std::string setting(const std::string& name) {
    pqxx::nontransaction tx(conn_->raw());
    return tx.exec("SELECT current_setting('" + name + "', true)")[0][0].c_str();
  }

  std::string pg_, schema_;
  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::pqxx::connection> conn_;
};

// The memo key is the application's and holds no session context: a memo hit runs no
// statement, so it checks no session (README: the key must name what the output depends on,
// such as the role). A page keyed by the role is recomputed under another role, and the
// permission error passes through instead of the other role's page.
TEST_F(MemoizeHunt, PageKeyedByTheRoleIsRecomputedUnderAnotherRole) {
  std::string role = schema_ + "_r";
  admin("DROP ROLE IF EXISTS " + role + "; CREATE ROLE " + role + " NOLOGIN; GRANT USAGE ON SCHEMA " +
        schema_ + " TO " + role);
  auto memo = [&](const std::string& as) {
    return cache_->memoize("role_page", as, 1, [&] {
      qcache::pqxx::nontransaction tx(*conn_);
      return std::string(tx.exec("SELECT title FROM posts WHERE id = 1")[0][0].c_str());
    });
  };
  EXPECT_EQ(memo("postgres"), "first");
  EXPECT_EQ(memo("postgres"), "first");
  EXPECT_EQ(cache_->stats().memo_hits, 1u);
  {
    qcache::pqxx::nontransaction tx(*conn_);
    tx.exec("SET ROLE " + role);
  }
  EXPECT_THROW(memo(role), pqxx::insufficient_privilege);
  {
    pqxx::nontransaction tx(conn_->raw());
    tx.exec("RESET ROLE");
  }
  conn_.reset();
  admin("DROP OWNED BY " + role + "; DROP ROLE IF EXISTS " + role);
}

// A SET inside the function is part of what the program computes: a hit skips the function,
// so the session keeps whatever the setting was. Recomputing sets it again.
TEST_F(MemoizeHunt, SetInsideFunctionIsNotSkippedByAHit) {
  auto page = [&] {
    return cache_->memoize("set_page", 1, [&] {
      qcache::pqxx::nontransaction tx(*conn_);
      tx.exec("SET qcache_hunt.flag = 'on'");
      return std::string(tx.exec("SELECT title FROM posts WHERE id = 1")[0][0].c_str());
    });
  };
  EXPECT_EQ(page(), "first");
  EXPECT_EQ(setting("qcache_hunt.flag"), "on");
  {
    pqxx::nontransaction tx(conn_->raw());
    tx.exec("SET qcache_hunt.flag = 'off'");
  }
  EXPECT_EQ(page(), "first");
  EXPECT_EQ(setting("qcache_hunt.flag"), "on") << "the memo hit skipped the function's SET";
}

// set_config() in a read inside the function: the same class through a function call.
TEST_F(MemoizeHunt, SetConfigInsideFunctionIsNotSkippedByAHit) {
  auto page = [&] {
    return cache_->memoize("set_config_page", 1, [&] {
      qcache::pqxx::nontransaction tx(*conn_);
      tx.exec("SELECT set_config('qcache_hunt.flag', 'on', false)");
      return std::string(tx.exec("SELECT title FROM posts WHERE id = 1")[0][0].c_str());
    });
  };
  EXPECT_EQ(page(), "first");
  {
    pqxx::nontransaction tx(conn_->raw());
    tx.exec("SET qcache_hunt.flag = 'off'");
  }
  EXPECT_EQ(page(), "first");
  EXPECT_EQ(setting("qcache_hunt.flag"), "on") << "the memo hit skipped set_config()";
}

// A transaction the function opens and leaves open: a hit would leave the session outside
// any transaction, so the program's later statements would autocommit.
TEST_F(MemoizeHunt, TransactionLeftOpenByFunctionIsNotSkippedByAHit) {
  auto page = [&] {
    return cache_->memoize("begin_page", 1, [&] {
      qcache::pqxx::nontransaction tx(*conn_);
      std::string t = tx.exec("SELECT title FROM posts WHERE id = 1")[0][0].c_str();
      tx.exec("BEGIN");
      return t;
    });
  };
  // Inside a transaction two statements see the same transaction id.
  auto in_transaction = [&] {
    pqxx::nontransaction tx(conn_->raw());
    std::string a = tx.exec("SELECT pg_current_xact_id()::text")[0][0].c_str();
    std::string b = tx.exec("SELECT pg_current_xact_id()::text")[0][0].c_str();
    return a == b;
  };
  EXPECT_EQ(page(), "first");
  EXPECT_TRUE(in_transaction());
  {
    qcache::pqxx::nontransaction tx(*conn_);
    tx.exec("COMMIT");
  }
  EXPECT_EQ(page(), "first");
  EXPECT_TRUE(in_transaction()) << "the memo hit skipped the function's BEGIN";
  qcache::pqxx::nontransaction tx(*conn_);
  tx.exec("COMMIT");
}

// A COMMIT inside the function of a transaction begun before it: a hit would leave the
// transaction open. And the ordinary pattern keeps its precision: a page rendered in its
// own transaction, or inside the caller's, is stored and hit.
TEST_F(MemoizeHunt, CommitOfOuterTransactionIsNotSkippedButOwnTransactionsAreStored) {
  auto ended_by_page = [&] {
    {
      qcache::pqxx::nontransaction tx(*conn_);
      tx.exec("BEGIN");
      std::string t = cache_->memoize("commit_page", 1, [&] {
        std::string r = tx.exec("SELECT title FROM posts WHERE id = 1")[0][0].c_str();
        tx.exec("COMMIT");
        return r;
      });
      EXPECT_EQ(t, "first");
    }
    pqxx::nontransaction raw(conn_->raw());
    std::string a = raw.exec("SELECT pg_current_xact_id()::text")[0][0].c_str();
    std::string b = raw.exec("SELECT pg_current_xact_id()::text")[0][0].c_str();
    if (a == b) raw.exec("ROLLBACK");
    return a != b;  // the transaction ended
  };
  EXPECT_TRUE(ended_by_page());
  EXPECT_TRUE(ended_by_page()) << "a memo hit skipped the function's COMMIT";

  auto own = [&] {
    return cache_->memoize("own_tx_page", 2, [&] {
      qcache::pqxx::work w(*conn_);
      std::string r = w.exec("SELECT title FROM posts WHERE id = 2")[0][0].c_str();
      w.commit();
      return r;
    });
  };
  auto hits = cache_->stats().memo_hits;
  EXPECT_EQ(own(), "second");
  EXPECT_EQ(own(), "second");
  EXPECT_EQ(cache_->stats().memo_hits, hits + 1) << "a page in its own transaction is stored";
  qcache::pqxx::work outer(*conn_);
  auto inner = [&] {
    return cache_->memoize("in_caller_tx", 2, [&] {
      return std::string(outer.exec("SELECT title FROM posts WHERE id = 2")[0][0].c_str());
    });
  };
  hits = cache_->stats().memo_hits;
  EXPECT_EQ(inner(), "second");
  EXPECT_EQ(inner(), "second");
  EXPECT_EQ(cache_->stats().memo_hits, hits + 1) << "a page in the caller's transaction is stored";
  outer.commit();
}

// REPEATABLE READ: a transaction's reads see its snapshot. A page memoized after another
// session committed a change is newer than that snapshot; recomputing it in the transaction
// gives the snapshot's page.
TEST_F(MemoizeHunt, RepeatableReadTransactionIsNotServedANewerPage) {
  auto render = [](auto& tx) {
    return std::string(tx.exec("SELECT title FROM posts WHERE id = 1")[0][0].c_str());
  };
  qcache::pqxx::connection other(conninfo(), cache_);
  qcache::pqxx::nontransaction rr(other);
  rr.exec("BEGIN ISOLATION LEVEL REPEATABLE READ");
  EXPECT_EQ(render(rr), "first");  // the snapshot is taken
  {
    qcache::pqxx::work w(*conn_);
    w.exec("UPDATE posts SET title = 'changed' WHERE id = 1");
    w.commit();
  }
  auto memo = [&](auto& tx) { return cache_->memoize("rr_page", 1, [&] { return render(tx); }); };
  {
    qcache::pqxx::nontransaction tx(*conn_);
    EXPECT_EQ(memo(tx), "changed");
  }
  std::string fresh = render(rr);  // bypasses: REPEATABLE READ
  EXPECT_EQ(fresh, "first");
  EXPECT_EQ(memo(rr), fresh) << "a page newer than the transaction's snapshot";
  rr.exec("COMMIT");
}

// An aborted transaction: recomputing fails ("current transaction is aborted"); a hit
// would swallow that error.
TEST_F(MemoizeHunt, AbortedTransactionIsNotServedAPage) {
  auto memo = [&](qcache::pqxx::nontransaction& tx) {
    return cache_->memoize("aborted_page", 1, [&] {
      return std::string(tx.exec("SELECT title FROM posts WHERE id = 1")[0][0].c_str());
    });
  };
  qcache::pqxx::nontransaction tx(*conn_);
  EXPECT_EQ(memo(tx), "first");
  tx.exec("BEGIN");
  EXPECT_THROW(tx.exec("SELECT 1 / 0"), std::exception);
  EXPECT_THROW(tx.exec("SELECT title FROM posts WHERE id = 1"), std::exception);
  EXPECT_THROW(memo(tx), std::exception) << "a memo hit hid the aborted transaction";
  tx.exec("ROLLBACK");
  EXPECT_EQ(memo(tx), "first");
}

// A function returning a handle to a mutable object (shared_ptr<T>, T*) would memoize the
// handle: a caller that modifies the object would change every later hit, where each
// recomputation builds a fresh one. memoize() refuses such value types at compile time.
static_assert(qcache::detail::memo_mutable_handle_v<std::shared_ptr<std::string>>);
static_assert(qcache::detail::memo_mutable_handle_v<std::string*>);
static_assert(qcache::detail::memo_mutable_handle_v<std::unique_ptr<std::string>>);
static_assert(!qcache::detail::memo_mutable_handle_v<std::shared_ptr<const std::string>>);
static_assert(!qcache::detail::memo_mutable_handle_v<const std::string*>);
static_assert(!qcache::detail::memo_mutable_handle_v<std::string>);

TEST(MemoizeHuntValues, HandleToConstIsSharedAndNeverChangedByACaller) {
  auto cache = std::make_shared<qcache::cache>(qcache::options{});
  int runs = 0;
  auto page = [&] {
    return cache->memoize("shared_page", 1, [&] {
      ++runs;
      return std::make_shared<const std::string>("page");
    });
  };
  std::string copy = *page();
  copy.append(" edited by one caller");
  EXPECT_EQ(*page(), "page");
  EXPECT_EQ(runs, 1) << "the second call must be a hit";
}

// SQLite: a transaction reads the snapshot taken at its first read (WAL). A page memoized
// after another connection committed is newer than that snapshot.
TEST(MemoizeHuntSqlite, TransactionSnapshotIsNotServedANewerPage) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("qcache_memohunt_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string path = (dir / "t.db").string();
  {
    soci::session s(soci::sqlite3, "db=" + path);
    s << "PRAGMA journal_mode = WAL";
    s << "CREATE TABLE posts (id integer PRIMARY KEY, title text NOT NULL)";
    s << "INSERT INTO posts VALUES (1, 'first')";
  }
  auto cache = std::make_shared<qcache::cache>(qcache::options{});
  qcache::soci::caching_factory factory(cache, soci::sqlite3);
  {
    soci::session a(factory, "db=" + path + " timeout=5");
    soci::session b(factory, "db=" + path + " timeout=5");
    auto render = [](soci::session& s) {
      std::string t;
      s << "SELECT title FROM posts WHERE id = 1", soci::into(t);
      return t;
    };
    auto memo = [&](soci::session& s) {
      return cache->memoize("sqlite_tx_page", 1, [&] { return render(s); });
    };
    a << "BEGIN";
    EXPECT_EQ(render(a), "first");  // the snapshot is taken
    b << "UPDATE posts SET title = 'changed' WHERE id = 1";
    EXPECT_EQ(memo(b), "changed");
    std::string fresh = render(a);
    EXPECT_EQ(fresh, "first");
    EXPECT_EQ(memo(a), fresh) << "a page newer than the transaction's snapshot";
    a << "COMMIT";
    EXPECT_EQ(memo(a), "changed");
  }
  fs::remove_all(dir);
}

// SQLite: a PRAGMA that changes the connection's state inside the function; a hit would
// skip it.
TEST(MemoizeHuntSqlite, PragmaInsideFunctionIsNotSkippedByAHit) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("qcache_memohunt_p_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string path = (dir / "t.db").string();
  {
    soci::session s(soci::sqlite3, "db=" + path);
    s << "CREATE TABLE posts (id integer PRIMARY KEY, title text NOT NULL)";
    s << "INSERT INTO posts VALUES (1, 'first')";
  }
  auto cache = std::make_shared<qcache::cache>(qcache::options{});
  qcache::soci::caching_factory factory(cache, soci::sqlite3);
  {
    soci::session a(factory, "db=" + path + " timeout=5");
    auto memo = [&] {
      return cache->memoize("sqlite_pragma_page", 1, [&] {
        a << "PRAGMA foreign_keys = ON";
        std::string t;
        a << "SELECT title FROM posts WHERE id = 1", soci::into(t);
        return t;
      });
    };
    auto fk = [&] {
      int on = -1;
      a << "PRAGMA foreign_keys", soci::into(on);
      return on;
    };
    EXPECT_EQ(memo(), "first");
    EXPECT_EQ(fk(), 1);
    a << "PRAGMA foreign_keys = OFF";
    EXPECT_EQ(memo(), "first");
    EXPECT_EQ(fk(), 1) << "the memo hit skipped the function's PRAGMA";
  }
  fs::remove_all(dir);
}

// SQLite: a transaction the function begins and leaves open; a hit would skip the BEGIN
// (the program's later statements would autocommit).
TEST(MemoizeHuntSqlite, TransactionLeftOpenByFunctionIsNotSkippedByAHit) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("qcache_memohunt_b_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string path = (dir / "t.db").string();
  {
    soci::session s(soci::sqlite3, "db=" + path);
    s << "CREATE TABLE posts (id integer PRIMARY KEY, title text NOT NULL)";
    s << "INSERT INTO posts VALUES (1, 'first')";
  }
  auto cache = std::make_shared<qcache::cache>(qcache::options{});
  qcache::soci::caching_factory factory(cache, soci::sqlite3);
  {
    soci::session a(factory, "db=" + path + " timeout=5");
    auto memo = [&] {
      return cache->memoize("sqlite_begin_page", 1, [&] {
        std::string t;
        a << "SELECT title FROM posts WHERE id = 1", soci::into(t);
        a << "BEGIN";
        return t;
      });
    };
    // COMMIT succeeds only inside a transaction.
    auto commit_ok = [&] {
      try {
        a << "COMMIT";
        return true;
      } catch (const std::exception&) {
        return false;
      }
    };
    EXPECT_EQ(memo(), "first");
    EXPECT_TRUE(commit_ok());
    EXPECT_EQ(memo(), "first");
    EXPECT_TRUE(commit_ok()) << "the memo hit skipped the function's BEGIN";
  }
  fs::remove_all(dir);
}

}  // namespace
