// qcache::soci on SQLite: column-equality predicates (any column, joins) read through
// qcache's PostgreSQL analyzer and invalidated from SQLite's preupdate hook. Every read is
// compared with plain SOCI on the same file, so a stale hit fails the test whatever the
// hit counters say; the counters then check that unrelated writes leave entries alone.
#include <qcache/soci.h>

#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

class SociPredicates : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("qcache_soci_pred_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "blog.db").string();
    cache_ = std::make_shared<qcache::cache>(qcache::options{});
    factory_ = std::make_unique<qcache::soci::caching_factory>(cache_, soci::sqlite3);
    sql_ = open();
    auto& s = *sql_;
    s << "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL)";
    s << "CREATE TABLE posts(id INTEGER PRIMARY KEY, author_id BIGINT NOT NULL REFERENCES "
         "users(id), title TEXT NOT NULL)";
    s << "CREATE TABLE comments(id INTEGER PRIMARY KEY, post_id BIGINT NOT NULL REFERENCES "
         "posts(id) ON DELETE CASCADE, author_id BIGINT NOT NULL, body TEXT NOT NULL)";
    s << "CREATE INDEX comments_post ON comments(post_id)";
    for (int u = 1; u <= 3; ++u) s << "INSERT INTO users VALUES(" << u << ", 'user" << u << "')";
    for (int p = 1; p <= 4; ++p)
      s << "INSERT INTO posts VALUES(" << p << ", " << (p % 3 + 1) << ", 'post" << p << "')";
    for (int c = 1; c <= 12; ++c)
      s << "INSERT INTO comments VALUES(" << c << ", " << (c % 4 + 1) << ", " << (c % 3 + 1)
        << ", 'comment" << c << "')";
  }
  void TearDown() override {
    sql_.reset();
    fs::remove_all(dir_);
  }

  std::unique_ptr<soci::session> open() {
    return std::make_unique<soci::session>(*factory_, "db=" + path_ + " timeout=5");
  }

  // Runs `q` with one integer (or text) parameter through `s` and through plain SOCI,
  // expects equal rows, and returns whether it was a hit.
  template <class T>
  bool read(soci::session& s, const std::string& q, T param, std::string* out = nullptr) {
    auto rows = [&](soci::session& x) {
      std::string r;
      T p = param;
      soci::rowset<soci::row> rs = (x.prepare << q, soci::use(p));
      for (const auto& row : rs) {
        for (std::size_t i = 0; i < row.size(); ++i) {
          if (row.get_indicator(i) == soci::i_null) r += "NULL";
          else if (row.get_properties(i).get_data_type() == soci::dt_string)
            r += row.get<std::string>(i);
          else if (row.get_properties(i).get_data_type() == soci::dt_double)
            r += std::to_string(row.get<double>(i));
          else if (row.get_properties(i).get_data_type() == soci::dt_integer)
            r += std::to_string(row.get<int>(i));
          else
            r += std::to_string(row.get<long long>(i));
          r += '|';
        }
        r += '\n';
      }
      return r;
    };
    auto before = cache_->stats().hits;
    std::string cached = rows(s);
    bool hit = cache_->stats().hits > before;
    if (compare_) {
      soci::session plain(soci::sqlite3, "db=" + path_ + " timeout=5");
      for (const auto& x : plain_setup_) plain << x;
      std::string direct = rows(plain);
      EXPECT_EQ(cached, direct) << q << " (" << param << ")";
    }
    if (out) *out = cached;
    return hit;
  }
  bool read(const std::string& q, long long param) { return read(*sql_, q, param); }

  static constexpr const char* post_q =
      "SELECT p.id, p.title, u.name FROM posts p JOIN users u ON u.id = p.author_id "
      "WHERE p.id = :id";
  static constexpr const char* comments_q =
      "SELECT c.id, c.body, u.name FROM comments c JOIN users u ON u.id = c.author_id "
      "WHERE c.post_id = :id ORDER BY c.id";
  static constexpr const char* count_q = "SELECT count(*) FROM comments WHERE post_id = ?";

  bool compare_ = true;                  // compare with plain SOCI on the same file
  std::vector<std::string> plain_setup_;  // run on each plain session first

  fs::path dir_;
  std::string path_;
  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::soci::caching_factory> factory_;
  std::unique_ptr<soci::session> sql_;
};

TEST_F(SociPredicates, JoinByPostIdStaysAHitWhenAnotherPostIsUpdated) {
  EXPECT_FALSE(read(post_q, 1));
  EXPECT_TRUE(read(post_q, 1));
  *sql_ << "UPDATE posts SET title = 'edited' WHERE id = 2";
  EXPECT_TRUE(read(post_q, 1));
  EXPECT_FALSE(read(post_q, 2));
  *sql_ << "UPDATE posts SET title = 'edited' WHERE id = 1";
  EXPECT_FALSE(read(post_q, 1));
  EXPECT_TRUE(read(post_q, 1));
  // The joined table is read without a predicate: any write to it invalidates.
  *sql_ << "UPDATE users SET name = 'renamed' WHERE id = 3";
  EXPECT_FALSE(read(post_q, 1));
}

TEST_F(SociPredicates, JoinByIntegerPrimaryKeyFollowsItsRow) {
  const std::string q =
      "SELECT c.body, u.name FROM comments c JOIN users u ON u.id = c.author_id WHERE c.id = :id";
  read(*sql_, q, 5LL);
  read(*sql_, q, 6LL);
  *sql_ << "UPDATE comments SET body = 'changed' WHERE id = 6";
  EXPECT_TRUE(read(*sql_, q, 5LL));
  EXPECT_FALSE(read(*sql_, q, 6LL));
  *sql_ << "DELETE FROM comments WHERE id = 5";
  EXPECT_FALSE(read(*sql_, q, 5LL));
  EXPECT_TRUE(read(*sql_, q, 6LL));
  *sql_ << "INSERT INTO comments VALUES(5, 1, 1, 'back')";
  EXPECT_FALSE(read(*sql_, q, 5LL));
  *sql_ << "UPDATE comments SET id = 50 WHERE id = 6";  // the rowid itself moves
  EXPECT_FALSE(read(*sql_, q, 6LL));
  read(*sql_, q, 50LL);
  *sql_ << "UPDATE comments SET id = 6 WHERE id = 50";
  EXPECT_FALSE(read(*sql_, q, 50LL));
  EXPECT_FALSE(read(*sql_, q, 6LL));
}

TEST_F(SociPredicates, CommentsByPostIdFollowTheirOwnRowsOnly) {
  for (const char* q : {comments_q, count_q}) {
    SCOPED_TRACE(q);
    read(q, 1);
    read(q, 2);
    EXPECT_TRUE(read(q, 1));
    *sql_ << "INSERT INTO comments VALUES(100, 3, 1, 'other post')";
    EXPECT_TRUE(read(q, 1));
    *sql_ << "DELETE FROM comments WHERE id = 100";
    EXPECT_TRUE(read(q, 1));
    *sql_ << "INSERT INTO comments VALUES(101, 1, 1, 'mine')";
    EXPECT_FALSE(read(q, 1));
    EXPECT_TRUE(read(q, 1));
    *sql_ << "DELETE FROM comments WHERE id = 101";
    EXPECT_FALSE(read(q, 1));
    // Moving a comment from post 1 to post 2: both the old and the new value.
    read(q, 2);
    EXPECT_TRUE(read(q, 1));
    EXPECT_TRUE(read(q, 2));
    *sql_ << "UPDATE comments SET post_id = 2 WHERE id = 4";  // 4 % 4 + 1 == 1
    EXPECT_FALSE(read(q, 1));
    EXPECT_FALSE(read(q, 2));
    *sql_ << "UPDATE comments SET post_id = 1 WHERE id = 4";
    EXPECT_FALSE(read(q, 1));
    EXPECT_FALSE(read(q, 2));
    // An update of another column of a post-3 comment leaves post 1 alone.
    *sql_ << "UPDATE comments SET body = 'x' WHERE id = 2";
    EXPECT_TRUE(read(q, 1));
  }
}

TEST_F(SociPredicates, UpdatesWithoutWhereOnTheColumnStillNameEveryRow) {
  read(count_q, 1);
  *sql_ << "UPDATE comments SET post_id = post_id + 1 WHERE body LIKE 'comment1%'";
  EXPECT_FALSE(read(count_q, 1));
  read(count_q, 4);
  *sql_ << "UPDATE comments SET post_id = 4 WHERE author_id = 2";
  EXPECT_FALSE(read(count_q, 4));
}

TEST_F(SociPredicates, TriggerRowsInvalidate) {
  *sql_ << "CREATE TABLE log(id INTEGER PRIMARY KEY, post_id BIGINT)";
  *sql_ << "CREATE TRIGGER log_ins AFTER INSERT ON log BEGIN "
           "INSERT INTO comments(post_id, author_id, body) VALUES(NEW.post_id, 1, 'from trigger'); "
           "END";
  read(comments_q, 1);
  EXPECT_TRUE(read(comments_q, 1));
  // The preupdate hook names trigger rows: a comment on post 3 leaves post 1 cached.
  *sql_ << "INSERT INTO log(post_id) VALUES(3)";
  EXPECT_TRUE(read(comments_q, 1));
  *sql_ << "INSERT INTO log(post_id) VALUES(1)";
  EXPECT_FALSE(read(comments_q, 1));
  std::string rows;
  read(*sql_, comments_q, 1LL, &rows);
  EXPECT_NE(rows.find("from trigger"), std::string::npos);
}

TEST_F(SociPredicates, ForeignKeyCascadeRowsInvalidate) {
  *sql_ << "PRAGMA foreign_keys = ON";
  read(comments_q, 2);
  read(count_q, 2);
  EXPECT_TRUE(read(count_q, 2));
  read(count_q, 1);
  *sql_ << "DELETE FROM posts WHERE id = 2";
  EXPECT_FALSE(read(comments_q, 2));
  EXPECT_FALSE(read(count_q, 2));
  EXPECT_TRUE(read(count_q, 1));  // cascade rows are named one by one
}

TEST_F(SociPredicates, InsertOrReplaceInvalidatesTheReplacedRow) {
  read(count_q, 1);
  read(count_q, 2);
  *sql_ << "INSERT OR REPLACE INTO comments VALUES(2, 3, 1, 'replaced')";  // post 3 stays 3
  EXPECT_TRUE(read(count_q, 1));
  EXPECT_TRUE(read(count_q, 2));
  *sql_ << "INSERT OR REPLACE INTO comments VALUES(4, 2, 1, 'replaced')";  // was post 1
  EXPECT_FALSE(read(count_q, 1));
  EXPECT_FALSE(read(count_q, 2));
  read(count_q, 1);
  *sql_ << "REPLACE INTO comments VALUES(8, 3, 1, 'replaced')";  // was post 1
  EXPECT_FALSE(read(count_q, 1));
}

TEST_F(SociPredicates, DeleteWithoutWhereInvalidates) {
  read(comments_q, 1);
  read(count_q, 1);
  *sql_ << "DELETE FROM comments";
  EXPECT_FALSE(read(comments_q, 1));
  EXPECT_FALSE(read(count_q, 1));
}

TEST_F(SociPredicates, WithoutRowidTables) {
  *sql_ << "CREATE TABLE kv(k TEXT PRIMARY KEY, g INTEGER NOT NULL, v TEXT) WITHOUT ROWID";
  *sql_ << "INSERT INTO kv VALUES('a', 1, 'x'), ('b', 2, 'y'), ('c', 1, 'z')";
  const std::string q = "SELECT k, v FROM kv WHERE g = :g ORDER BY k";
  const std::string qk = "SELECT v FROM kv WHERE k = :k";
  read(q, 1);
  EXPECT_TRUE(read(q, 1));
  read(*sql_, qk, std::string("a"));
  *sql_ << "UPDATE kv SET v = 'w' WHERE k = 'a'";
  EXPECT_FALSE(read(q, 1));
  EXPECT_FALSE(read(*sql_, qk, std::string("a")));
  read(q, 2);
  *sql_ << "UPDATE kv SET v = 'q' WHERE k = 'b'";  // g = 2
  EXPECT_TRUE(read(q, 1));
  EXPECT_FALSE(read(q, 2));
  *sql_ << "DELETE FROM kv WHERE k = 'b'";
  EXPECT_TRUE(read(q, 1));
  EXPECT_FALSE(read(q, 2));
  *sql_ << "UPDATE kv SET g = 2 WHERE k = 'c'";
  EXPECT_FALSE(read(q, 1));
  EXPECT_FALSE(read(q, 2));
  *sql_ << "INSERT OR REPLACE INTO kv VALUES('a', 2, 'r')";
  EXPECT_FALSE(read(q, 1));
  EXPECT_FALSE(read(*sql_, qk, std::string("a")));
}

TEST_F(SociPredicates, NocaseColumnsFallBackToTheTable) {
  *sql_ << "CREATE TABLE tags(id INTEGER PRIMARY KEY, name TEXT COLLATE NOCASE)";
  *sql_ << "INSERT INTO tags VALUES(1, 'abc'), (2, 'def')";
  const std::string q = "SELECT id FROM tags WHERE name = :n";
  read(*sql_, q, std::string("abc"));
  EXPECT_TRUE(read(*sql_, q, std::string("abc")));
  *sql_ << "INSERT INTO tags VALUES(3, 'ABC')";
  std::string rows;
  EXPECT_FALSE(read(*sql_, q, std::string("abc"), &rows));
  EXPECT_EQ(rows, "1|\n3|\n");
  // A COLLATE in the comparison itself also falls back.
  const std::string q2 = "SELECT id FROM comments WHERE body = :b COLLATE NOCASE";
  read(*sql_, q2, std::string("COMMENT1"));
  *sql_ << "UPDATE comments SET body = 'Comment1' WHERE id = 5";
  EXPECT_FALSE(read(*sql_, q2, std::string("COMMENT1")));
}

TEST_F(SociPredicates, IntegerAndTextAffinity) {
  *sql_ << "CREATE TABLE a(id INTEGER PRIMARY KEY, n INTEGER, t TEXT, x NUMERIC, b BLOB)";
  *sql_ << "INSERT INTO a VALUES(1, 5, '5', 5, 5), (2, 6, '6', '6', '6'), (3, 5, '05', 5.0, 5)";
  const std::string qn = "SELECT id FROM a WHERE n = :v ORDER BY id";
  const std::string qt = "SELECT id FROM a WHERE t = :v ORDER BY id";
  const std::string qx = "SELECT id FROM a WHERE x = :v ORDER BY id";
  // Text '5' against an INTEGER column is the integer 5; integer 5 against TEXT is '5'.
  std::string rows;
  read(*sql_, qn, std::string("5"), &rows);
  EXPECT_EQ(rows, "1|\n3|\n");
  read(*sql_, qt, 5LL, &rows);
  EXPECT_EQ(rows, "1|\n");
  read(*sql_, qx, std::string("5"), &rows);
  EXPECT_EQ(rows, "1|\n3|\n");
  read(*sql_, qn, 5LL);
  read(*sql_, qt, std::string("5"));
  read(*sql_, qt, std::string("05"));
  read(*sql_, qn, std::string("05"));  // not canonical: table tags, still right
  EXPECT_TRUE(read(*sql_, qn, std::string("5")));
  EXPECT_TRUE(read(*sql_, qn, 5LL));
  EXPECT_TRUE(read(*sql_, qt, 5LL));
  *sql_ << "UPDATE a SET n = 7, t = '7', x = 7 WHERE id = 2";  // neither 5 nor '5'
  EXPECT_TRUE(read(*sql_, qn, std::string("5")));
  EXPECT_TRUE(read(*sql_, qt, 5LL));
  EXPECT_FALSE(read(*sql_, qn, std::string("05")));
  *sql_ << "UPDATE a SET n = '5', t = 5, x = '5.0' WHERE id = 2";  // stored as 5, '5', 5
  EXPECT_FALSE(read(*sql_, qn, std::string("5")));
  EXPECT_FALSE(read(*sql_, qn, 5LL));
  EXPECT_FALSE(read(*sql_, qt, 5LL));
  EXPECT_FALSE(read(*sql_, qt, std::string("5")));
  EXPECT_TRUE(read(*sql_, qt, std::string("05")));
  read(*sql_, qx, 5LL, &rows);
  EXPECT_EQ(rows, "1|\n2|\n3|\n");
  // BLOB affinity: no predicate, still right.
  read(*sql_, "SELECT id FROM a WHERE b = :v ORDER BY id", 5LL);
  *sql_ << "UPDATE a SET b = 5 WHERE id = 2";
  EXPECT_FALSE(read(*sql_, "SELECT id FROM a WHERE b = :v ORDER BY id", 5LL));
  // Literals in the SQL.
  read(*sql_, "SELECT id FROM a WHERE t = 5 AND id > :i", 0LL);
  read(*sql_, "SELECT id FROM a WHERE n = '5' AND id > :i", 0LL);
  *sql_ << "UPDATE a SET t = '5', n = 5 WHERE id = 3";
  EXPECT_FALSE(read(*sql_, "SELECT id FROM a WHERE t = 5 AND id > :i", 0LL));
  EXPECT_FALSE(read(*sql_, "SELECT id FROM a WHERE n = '5' AND id > :i", 0LL));
}

TEST_F(SociPredicates, RolledBackWritesLeaveNothingStale) {
  read(comments_q, 1);
  *sql_ << "BEGIN";
  *sql_ << "INSERT INTO comments VALUES(200, 1, 1, 'rolled back')";
  *sql_ << "UPDATE comments SET post_id = 3 WHERE id = 4";
  compare_ = false;  // inside the transaction: sees its own writes
  std::string mine;
  read(*sql_, comments_q, 1LL, &mine);
  EXPECT_NE(mine.find("rolled back"), std::string::npos);
  compare_ = true;
  *sql_ << "ROLLBACK";
  std::string rows;
  read(*sql_, comments_q, 1LL, &rows);
  EXPECT_EQ(rows.find("rolled back"), std::string::npos);
  // Savepoints.
  soci::transaction tr(*sql_);
  *sql_ << "SAVEPOINT s";
  *sql_ << "DELETE FROM comments WHERE post_id = 1";
  *sql_ << "ROLLBACK TO s";
  tr.commit();
  read(*sql_, comments_q, 1LL, &rows);
  EXPECT_NE(rows, "");
}

TEST_F(SociPredicates, ReadsInsideAWritingTransactionAndCommit) {
  auto other = open();
  read(*other, comments_q, 1LL);
  *sql_ << "BEGIN";
  *sql_ << "INSERT INTO comments VALUES(300, 1, 1, 'committed')";
  *sql_ << "COMMIT";
  std::string rows;
  EXPECT_FALSE(read(*other, comments_q, 1LL, &rows));
  EXPECT_NE(rows.find("committed"), std::string::npos);
}

TEST_F(SociPredicates, TheRegistryOutlivesTheSessionThatCachedTheRead) {
  {
    auto a = open();
    read(*a, count_q, 3LL);
    EXPECT_TRUE(read(*a, count_q, 3LL));
  }
  sql_.reset();  // every session of the file closed
  auto b = open();
  *b << "INSERT INTO comments VALUES(400, 3, 1, 'late')";
  auto c = open();
  std::string rows;
  EXPECT_FALSE(read(*c, count_q, 3LL, &rows));
  sql_ = open();
}

TEST_F(SociPredicates, PlaceholderFormsAndAttachedDatabases) {
  // ?NNN, @name and literals containing placeholder-like text.
  soci::session& s = *sql_;
  read(s, "SELECT id FROM comments WHERE post_id = ?1 AND body <> ':x ?' ORDER BY id", 1LL);
  EXPECT_TRUE(read(s, "SELECT id FROM comments WHERE post_id = ?1 AND body <> ':x ?' ORDER BY id", 1LL));
  s << "INSERT INTO comments VALUES(500, 1, 1, 'p')";
  EXPECT_FALSE(read(s, "SELECT id FROM comments WHERE post_id = ?1 AND body <> ':x ?' ORDER BY id", 1LL));
  // Same table name in an attached database: qualified and unqualified names.
  std::string aux = (dir_ / "aux.db").string();
  s << "ATTACH DATABASE '" + aux + "' AS aux";
  plain_setup_.push_back("ATTACH DATABASE '" + aux + "' AS aux");
  s << "CREATE TABLE aux.comments(id INTEGER PRIMARY KEY, post_id BIGINT, body TEXT)";
  s << "INSERT INTO aux.comments VALUES(1, 1, 'aux')";
  read(s, "SELECT body FROM aux.comments WHERE post_id = :p", 1LL);
  read(s, "SELECT body FROM main.comments WHERE post_id = :p ORDER BY id", 1LL);
  read(s, "SELECT body FROM comments WHERE post_id = :p ORDER BY id", 1LL);
  s << "INSERT INTO aux.comments VALUES(2, 1, 'aux2')";
  EXPECT_FALSE(read(s, "SELECT body FROM aux.comments WHERE post_id = :p", 1LL));
  EXPECT_TRUE(read(s, "SELECT body FROM main.comments WHERE post_id = :p ORDER BY id", 1LL));
  s << "INSERT INTO main.comments VALUES(501, 1, 1, 'main')";
  EXPECT_FALSE(read(s, "SELECT body FROM main.comments WHERE post_id = :p ORDER BY id", 1LL));
  EXPECT_FALSE(read(s, "SELECT body FROM comments WHERE post_id = :p ORDER BY id", 1LL));
  // A TEMP table shadowing the name.
  s << "CREATE TEMP TABLE comments(id INTEGER PRIMARY KEY, post_id BIGINT, body TEXT)";
  compare_ = false;  // plain sessions have no temp table
  std::string rows;
  read(s, "SELECT body FROM comments WHERE post_id = :p ORDER BY id", 1LL, &rows);
  EXPECT_EQ(rows, "");
  s << "INSERT INTO temp.comments VALUES(1, 1, 'temp')";
  EXPECT_FALSE(read(s, "SELECT body FROM comments WHERE post_id = :p ORDER BY id", 1LL, &rows));
  EXPECT_EQ(rows, "temp|\n");
  s << "INSERT INTO temp.comments VALUES(2, 1, 'temp2')";
  EXPECT_FALSE(read(s, "SELECT body FROM comments WHERE post_id = :p ORDER BY id", 1LL, &rows));
  EXPECT_EQ(rows, "temp|\ntemp2|\n");
}

TEST_F(SociPredicates, InListsAndSeveralParameters) {
  soci::session& s = *sql_;
  auto rows = [&](long long a, long long b, int author) {
    std::string r;
    soci::rowset<soci::row> rs =
        (s.prepare << "SELECT id FROM comments WHERE author_id = ? AND post_id IN (?, ?) "
                      "ORDER BY id",
         soci::use(author), soci::use(a), soci::use(b));
    for (const auto& row : rs) r += std::to_string(row.get<int>(0)) + ",";
    return r;
  };
  auto plain_rows = [&](long long a, long long b, int author) {
    soci::session p(soci::sqlite3, "db=" + path_);
    std::string r;
    soci::rowset<soci::row> rs =
        (p.prepare << "SELECT id FROM comments WHERE author_id = ? AND post_id IN (?, ?) "
                      "ORDER BY id",
         soci::use(author), soci::use(a), soci::use(b));
    for (const auto& row : rs) r += std::to_string(row.get<int>(0)) + ",";
    return r;
  };
  EXPECT_EQ(rows(1, 2, 2), plain_rows(1, 2, 2));
  auto hits = cache_->stats().hits;
  EXPECT_EQ(rows(1, 2, 2), plain_rows(1, 2, 2));
  EXPECT_EQ(cache_->stats().hits, hits + 1);
  // author_id is the first conjunct: the entry follows author 2's rows.
  s << "INSERT INTO comments VALUES(600, 4, 3, 'author 3')";
  hits = cache_->stats().hits;
  EXPECT_EQ(rows(1, 2, 2), plain_rows(1, 2, 2));
  EXPECT_EQ(cache_->stats().hits, hits + 1);
  s << "INSERT INTO comments VALUES(601, 2, 2, 'author 2 on post 2')";
  hits = cache_->stats().hits;
  EXPECT_EQ(rows(1, 2, 2), plain_rows(1, 2, 2));
  EXPECT_EQ(cache_->stats().hits, hits);
  // Named parameters in another order than the SQL, and @name (not bound by SOCI by name).
  long long post = 1;
  int author = 2;
  std::string got, want;
  auto named = [&](soci::session& x) {
    std::string r;
    soci::rowset<soci::row> rs =
        (x.prepare << "SELECT id FROM comments WHERE post_id = :p AND author_id = :a ORDER BY id",
         soci::use(author, "a"), soci::use(post, "p"));
    for (const auto& row : rs) r += std::to_string(row.get<int>(0)) + ",";
    return r;
  };
  soci::session p(soci::sqlite3, "db=" + path_);
  EXPECT_EQ(named(s), named(p));
  s << "INSERT INTO comments VALUES(602, 1, 2, 'post 1 author 2')";
  EXPECT_EQ(named(s), named(p));
  s << "UPDATE comments SET author_id = 1 WHERE id = 602";
  EXPECT_EQ(named(s), named(p));
}

TEST_F(SociPredicates, SubqueriesAndSelfJoinsFallBackWhereNeeded) {
  const std::string q =
      "SELECT c.id FROM comments c WHERE c.post_id = :p AND c.author_id IN "
      "(SELECT c2.author_id FROM comments c2 WHERE c2.id = 1) ORDER BY c.id";
  read(*sql_, q, 1LL);
  *sql_ << "UPDATE comments SET author_id = 3 WHERE id = 1";  // comment 1 is on post 2
  read(*sql_, q, 1LL);
  const std::string v = "CREATE VIEW post1 AS SELECT * FROM comments WHERE post_id = 1";
  *sql_ << v;
  const std::string qv =
      "SELECT c.id FROM comments c JOIN post1 p ON p.author_id = c.author_id WHERE c.post_id = :p "
      "ORDER BY c.id, p.id";
  read(*sql_, qv, 2LL);
  *sql_ << "UPDATE comments SET author_id = 1 WHERE post_id = 1";
  EXPECT_FALSE(read(*sql_, qv, 2LL));
}

}  // namespace
