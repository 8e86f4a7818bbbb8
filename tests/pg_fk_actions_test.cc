// Foreign-key referential actions on PostgreSQL: a write invalidates a referencing table
// only when one of its FK actions may fire. Each test runs in its own schema against the
// real server, through qcache::pqxx, and compares every cached read with the same read run
// directly.
//
// What is specified here:
//  * ON DELETE actions (CASCADE / SET NULL / SET DEFAULT) change the referencing table
//    when rows of the referenced table are deleted (DELETE, MERGE ... DELETE, DELETE
//    through a view, DELETE through an inheritance parent), transitively;
//  * ON UPDATE actions change it when an UPDATE may change a referenced key column (its
//    SET list names one; INSERT ... ON CONFLICT DO UPDATE and MERGE count as any column;
//    an UPDATE through a view too); an UPDATE of other columns leaves its reads cached;
//  * RESTRICT / NO ACTION change nothing;
//  * the same rule holds for writes done by trigger bodies.
#include <gtest/gtest.h>
#include <qcache/pqxx.h>
#include <unistd.h>

#include <cctype>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "support/db_env.h"

namespace {

// Every column name and type, every field's text, NULLs distinct from ''.
std::string dump(const pqxx::result& r) {
  std::ostringstream o;
  for (pqxx::row::size_type c = 0; c < r.columns(); ++c)
    o << r.column_name(c) << ":" << r.column_type(c) << "|";
  o << "\n";
  for (const auto& row : r) {
    for (const auto& f : row) {
      if (f.is_null())
        o << "NULL,";
      else
        o << "'" << f.c_str() << "',";
    }
    o << "\n";
  }
  return o.str();
}

struct outcome {
  pqxx::result r;
  std::uint64_t hits = 0, misses = 0, stores = 0;
  bool hit() const { return hits == 1 && misses == 0 && stores == 0; }
  std::string v() const { return r.empty() || r[0][0].is_null() ? "<none>" : r[0][0].c_str(); }
};

std::ostream& operator<<(std::ostream& o, const outcome& x) {
  return o << " [hits=" << x.hits << " misses=" << x.misses << " stores=" << x.stores << "] rows:\n"
           << dump(x.r);
}

std::string lower_ident(std::string s) {
  for (char& c : s) c = std::isalnum(static_cast<unsigned char>(c)) ? std::tolower(c) : '_';
  return s;
}

// posts(id, uk, body) rows 1..3; each test creates comments with its FK.
class FkActions : public ::testing::Test {
 protected:
  void SetUp() override {
    QCACHE_REQUIRE_PG(ci);
    conninfo_ = ci;
    std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    schema_ = "qcfk_" + std::to_string(getpid()) + "_" + lower_ident(test).substr(0, 40);
    admin("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE; CREATE SCHEMA " + schema_);
    cache_ = std::make_shared<qcache::cache>(qcache::options{});
    conn_ = connect();
    exec(
        "CREATE TABLE posts (id int PRIMARY KEY, uk int UNIQUE, body text);"
        "INSERT INTO posts VALUES (1,10,'p1'),(2,20,'p2'),(3,30,'p3')");
  }
  void TearDown() override {
    if (conninfo_.empty()) return;
    conns_.clear();
    conn_.reset();
    try {
      admin("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
    } catch (const std::exception& e) {
      ADD_FAILURE() << "cleanup: " << e.what();
    }
  }

  std::unique_ptr<qcache::pqxx::connection> connect() {
    return std::make_unique<qcache::pqxx::connection>(
        conninfo_ + " options='-c search_path=" + schema_ + "'", cache_);
  }
  qcache::pqxx::connection& another() {
    conns_.push_back(connect());
    return *conns_.back();
  }
  // Plain libpqxx, no qcache.
  pqxx::result direct(const std::string& sql) {
    pqxx::connection c(conninfo_ + " options='-c search_path=" + schema_ + "'");
    pqxx::nontransaction tx(c);
    return tx.exec(sql);
  }
  void admin(const std::string& sql) {
    pqxx::connection c(conninfo_);
    pqxx::nontransaction tx(c);
    tx.exec(sql);
  }
  pqxx::result exec(const std::string& sql) { return exec_on(*conn_, sql); }
  static pqxx::result exec_on(qcache::pqxx::connection& c, const std::string& sql) {
    qcache::pqxx::nontransaction tx(c);
    return tx.exec(sql);
  }
  outcome read(const std::string& sql) {
    qcache::stats before = cache_->stats();
    outcome o;
    {
      qcache::pqxx::nontransaction tx(*conn_);
      o.r = tx.exec(sql);
    }
    qcache::stats after = cache_->stats();
    o.hits = after.hits - before.hits;
    o.misses = after.misses - before.misses;
    o.stores = after.stores - before.stores;
    return o;
  }
  std::uint64_t flushes() const { return cache_->stats().flushes; }

  void cache_it(const std::string& sql) {
    outcome a = read(sql);
    ASSERT_EQ(dump(a.r), dump(direct(sql))) << sql;
    outcome b = read(sql);
    ASSERT_TRUE(b.hit()) << sql << b;
  }
  // Not served from the cache, and what the database says.
  void expect_fresh(const std::string& sql) {
    outcome o = read(sql);
    EXPECT_EQ(o.hits, 0u) << "served from cache after a write: " << sql << o;
    EXPECT_EQ(dump(o.r), dump(direct(sql))) << sql;
  }
  // Still a hit, and equal to what the database says.
  void expect_hit(const std::string& sql) {
    outcome o = read(sql);
    EXPECT_TRUE(o.hit()) << "should still be a hit: " << sql << o;
    EXPECT_EQ(dump(o.r), dump(direct(sql))) << sql;
  }

  // comments(id, post_id, txt) rows (1,1),(2,2),(3,2); post_id references posts(`key`)
  // with `actions`; post 3 has no comments.
  void comments(const std::string& actions, const std::string& key = "id") {
    std::string first = key == "id" ? "1" : "10", second = key == "id" ? "2" : "20";
    exec("CREATE TABLE comments (id int PRIMARY KEY, post_id int DEFAULT " + first +
         " REFERENCES posts (" + key + ") " + actions + ", txt text);" +
         "INSERT INTO comments VALUES (1," + first + ",'a'),(2," + second + ",'b'),(3," + second +
         ",'c')");
  }
  const std::vector<std::string> reads_ = {"SELECT id, post_id, txt FROM comments ORDER BY id",
                                           "SELECT count(*) FROM comments WHERE post_id = 2",
                                           "SELECT count(*) FROM comments WHERE post_id = 20",
                                           "SELECT count(*) FROM comments WHERE post_id IS NULL",
                                           "SELECT txt FROM comments WHERE id = 2"};
  void cache_comments() {
    for (const std::string& q : reads_) cache_it(q);
  }
  void expect_comments_hits() {
    for (const std::string& q : reads_) expect_hit(q);
  }
  void expect_comments_correct() {
    for (const std::string& q : reads_) {
      outcome o = read(q);
      EXPECT_EQ(dump(o.r), dump(direct(q))) << q;
    }
  }
  void expect_comments_fresh() {
    for (const std::string& q : reads_) expect_fresh(q);
  }

  std::string conninfo_, schema_;
  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::pqxx::connection> conn_;
  std::vector<std::unique_ptr<qcache::pqxx::connection>> conns_;
};

const char* const kChanging[] = {"CASCADE", "SET NULL", "SET DEFAULT"};
const char* const kChecking[] = {"RESTRICT", "NO ACTION"};

// The reported defect: an ON DELETE action made every post edit invalidate comments.
TEST_F(FkActions, Precision_UpdateOfANonKeyColumnLeavesReferencingReadsCached) {
  comments("ON DELETE CASCADE");
  cache_comments();
  exec("UPDATE posts SET body = 'edited' WHERE id = 2");
  expect_comments_hits();
  EXPECT_EQ(dump(direct("SELECT body FROM posts WHERE id = 2")),
            dump(read("SELECT body FROM posts WHERE id = 2").r));
}

TEST_F(FkActions, Precision_EveryActionIgnoresAnUpdateOfANonKeyColumn) {
  for (const char* a : kChanging) {
    SCOPED_TRACE(a);
    exec("DROP TABLE IF EXISTS comments");
    comments(std::string("ON DELETE ") + a + " ON UPDATE " + a);
    cache_comments();
    exec("UPDATE posts SET body = body || '!' WHERE id = 2");
    exec("UPDATE posts SET (body, uk) = (SELECT 'x', 21) WHERE id = 2");  // uk is not the key
    expect_comments_hits();
  }
}

TEST_F(FkActions, Precision_DeleteIgnoresOnUpdateActions) {
  for (const char* a : kChanging) {
    SCOPED_TRACE(a);
    exec("DROP TABLE IF EXISTS comments");
    comments(std::string("ON UPDATE ") + a);
    cache_comments();
    exec("DELETE FROM posts WHERE id = 3");
    expect_comments_hits();
    exec("INSERT INTO posts VALUES (3,30,'p3')");
  }
}

TEST_F(FkActions, Precision_UpdateOfAnotherUniqueColumnThanTheReferencedKey) {
  comments("ON UPDATE CASCADE", "uk");
  cache_comments();
  exec("UPDATE posts SET id = 12 WHERE id = 2");  // comments reference uk
  expect_comments_hits();
  exec("UPDATE posts SET uk = 22 WHERE uk = 20");
  expect_comments_fresh();
}

TEST_F(FkActions, OnDelete_EveryActionChangesReferencingRows) {
  for (const char* a : kChanging) {
    SCOPED_TRACE(a);
    exec("DROP TABLE IF EXISTS comments");
    exec("DELETE FROM posts; INSERT INTO posts VALUES (1,10,'p1'),(2,20,'p2'),(3,30,'p3')");
    comments(std::string("ON DELETE ") + a);
    cache_comments();
    exec("DELETE FROM posts WHERE id = 2");
    expect_comments_fresh();
  }
}

TEST_F(FkActions, OnUpdate_EveryActionChangesReferencingRowsWhenTheKeyChanges) {
  for (const char* a : kChanging) {
    SCOPED_TRACE(a);
    exec("DROP TABLE IF EXISTS comments");
    exec("DELETE FROM posts; INSERT INTO posts VALUES (1,10,'p1'),(2,20,'p2'),(3,30,'p3')");
    comments(std::string("ON UPDATE ") + a);
    cache_comments();
    exec("UPDATE posts SET id = 7 WHERE id = 2");
    expect_comments_fresh();
  }
}

TEST_F(FkActions, Checking_RestrictAndNoActionChangeNothing) {
  for (const char* a : kChecking) {
    SCOPED_TRACE(a);
    exec("DROP TABLE IF EXISTS comments");
    comments(std::string("ON DELETE ") + a + " ON UPDATE " + a);
    cache_comments();
    exec("DELETE FROM posts WHERE id = 3");
    exec("UPDATE posts SET id = 9 WHERE id = 1 AND false");
    expect_comments_hits();
    EXPECT_THROW(exec("DELETE FROM posts WHERE id = 2"), std::exception);
    EXPECT_THROW(exec("UPDATE posts SET id = 8 WHERE id = 2"), std::exception);
    expect_comments_correct();
    exec("INSERT INTO posts VALUES (3,30,'p3')");
  }
}

TEST_F(FkActions, Upsert_DoUpdateOfTheKeyFiresOnUpdate) {
  comments("ON UPDATE CASCADE");
  cache_comments();
  exec("INSERT INTO posts VALUES (2,20,'x') ON CONFLICT (id) DO UPDATE SET id = 6");
  expect_comments_fresh();
}

TEST_F(FkActions, WritableCte_UpdateOfTheKeyFiresOnUpdateAndOfBodyDoesNot) {
  comments("ON UPDATE CASCADE ON DELETE CASCADE");
  cache_comments();
  exec("WITH u AS (UPDATE posts SET body = 'w' WHERE id = 2 RETURNING id) SELECT * FROM u");
  expect_comments_hits();
  exec("WITH u AS (UPDATE posts SET id = 6 WHERE id = 2 RETURNING id) SELECT * FROM u");
  expect_comments_fresh();
}

TEST_F(FkActions, Merge_DeleteFiresOnDelete) {
  comments("ON DELETE SET NULL");
  cache_comments();
  exec("MERGE INTO posts p USING (VALUES (2)) s(id) ON p.id = s.id WHEN MATCHED THEN DELETE");
  expect_comments_fresh();
}

TEST_F(FkActions, Merge_UpdateOfTheKeyFiresOnUpdate) {
  comments("ON UPDATE CASCADE");
  cache_comments();
  exec(
      "MERGE INTO posts p USING (VALUES (2)) s(id) ON p.id = s.id"
      " WHEN MATCHED THEN UPDATE SET id = 5");
  expect_comments_fresh();
}

TEST_F(FkActions, View_UpdateOfTheKeyThroughAViewFiresOnUpdate) {
  comments("ON UPDATE CASCADE");
  exec("CREATE VIEW pv AS SELECT * FROM posts");
  cache_comments();
  exec("UPDATE pv SET id = 5 WHERE id = 2");
  expect_comments_fresh();
}

TEST_F(FkActions, View_DeleteThroughAViewFiresOnDelete) {
  comments("ON DELETE CASCADE");
  exec("CREATE VIEW pv AS SELECT * FROM posts");
  cache_comments();
  exec("DELETE FROM pv WHERE id = 2");
  expect_comments_fresh();
}

// An FK may reference an inheritance child; a DELETE through the parent deletes its rows.
TEST_F(FkActions, Inheritance_DeleteThroughTheParentFiresTheChildsActions) {
  exec(
      "CREATE TABLE base (id int, body text);"
      "CREATE TABLE kid (PRIMARY KEY (id)) INHERITS (base);"
      "INSERT INTO kid VALUES (1,'k1'),(2,'k2');"
      "CREATE TABLE comments (id int PRIMARY KEY, post_id int REFERENCES kid ON DELETE CASCADE"
      " ON UPDATE CASCADE, txt text);"
      "INSERT INTO comments VALUES (1,1,'a'),(2,2,'b'),(3,2,'c')");
  cache_comments();
  exec("UPDATE base SET body = 'x' WHERE id = 2");
  expect_comments_hits();
  exec("UPDATE base SET id = 4 WHERE id = 1");
  expect_comments_fresh();
  cache_comments();
  exec("DELETE FROM base WHERE id = 2");
  expect_comments_fresh();
}

// FKs to a partitioned table; an UPDATE of the key may move a row to another partition.
TEST_F(FkActions, Partitions_RowMovementFiresTheActions) {
  exec(
      "CREATE TABLE parts (id int PRIMARY KEY, body text) PARTITION BY RANGE (id);"
      "CREATE TABLE parts_a PARTITION OF parts FOR VALUES FROM (0) TO (100);"
      "CREATE TABLE parts_b PARTITION OF parts FOR VALUES FROM (100) TO (200);"
      "INSERT INTO parts VALUES (1,'a'),(2,'b');"
      "CREATE TABLE comments (id int PRIMARY KEY, post_id int REFERENCES parts ON DELETE CASCADE"
      " ON UPDATE CASCADE, txt text);"
      "INSERT INTO comments VALUES (1,1,'a'),(2,2,'b'),(3,2,'c')");
  cache_comments();
  exec("UPDATE parts SET body = 'x' WHERE id = 2");
  exec("UPDATE parts_a SET body = 'y' WHERE id = 2");
  expect_comments_hits();
  exec("UPDATE parts SET id = 150 WHERE id = 2");
  expect_comments_fresh();
  cache_comments();
  exec("DELETE FROM parts_b WHERE id = 150");
  expect_comments_fresh();
}

TEST_F(FkActions, Chain_ADeleteCascadesThroughTwoLevels) {
  comments("ON DELETE CASCADE");
  exec(
      "CREATE TABLE replies (id int PRIMARY KEY, comment_id int REFERENCES comments"
      " ON DELETE SET NULL);"
      "INSERT INTO replies VALUES (1,1),(2,2),(3,3)");
  const std::string q = "SELECT id, comment_id FROM replies ORDER BY id";
  cache_it(q);
  exec("UPDATE posts SET body = 'e' WHERE id = 2");
  expect_hit(q);
  exec("DELETE FROM posts WHERE id = 2");
  expect_fresh(q);
}

TEST_F(FkActions, Chain_ASetNullOfAKeyColumnFiresTheNextOnUpdate) {
  // comments.post_id is also a key replies reference: SET NULL updates it.
  exec(
      "CREATE TABLE comments (id int PRIMARY KEY, post_id int UNIQUE REFERENCES posts"
      " ON DELETE SET NULL, txt text);"
      "INSERT INTO comments VALUES (1,1,'a'),(2,2,'b');"
      "CREATE TABLE replies (id int PRIMARY KEY, pid int REFERENCES comments (post_id)"
      " ON UPDATE CASCADE);"
      "INSERT INTO replies VALUES (1,1),(2,2)");
  const std::string q = "SELECT id, pid FROM replies ORDER BY id";
  cache_it(q);
  exec("DELETE FROM posts WHERE id = 2");
  expect_fresh(q);
}

// A self-reference: the write's own table changes in rows its WHERE does not name.
TEST_F(FkActions, SelfReference_SetNullChangesOtherRowsOfTheWrittenTable) {
  exec(
      "CREATE TABLE tree (id int PRIMARY KEY, parent int REFERENCES tree ON DELETE SET NULL"
      " ON UPDATE CASCADE, v text);"
      "INSERT INTO tree VALUES (1,NULL,'r'),(2,1,'a'),(3,1,'b'),(4,2,'c')");
  const std::vector<std::string> qs = {"SELECT parent FROM tree WHERE id = 2",
                                       "SELECT count(*) FROM tree WHERE parent = 1",
                                       "SELECT id FROM tree WHERE parent IS NULL ORDER BY id"};
  for (const std::string& q : qs) cache_it(q);
  exec("DELETE FROM tree WHERE id = 1");
  for (const std::string& q : qs) expect_fresh(q);
  for (const std::string& q : qs) cache_it(q);
  exec("UPDATE tree SET id = 7 WHERE id = 2");
  for (const std::string& q : qs) {
    outcome o = read(q);
    EXPECT_EQ(dump(o.r), dump(direct(q))) << q;
  }
  const std::string q = "SELECT parent FROM tree WHERE id = 4";
  cache_it(q);
  exec("UPDATE tree SET id = 8 WHERE id = 7");
  expect_fresh(q);
}

// A BEFORE ROW trigger may change the key although the SET list does not name it.
TEST_F(FkActions, BeforeTrigger_AssigningTheKeyFiresOnUpdate) {
  comments("ON UPDATE CASCADE");
  exec(
      "CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN"
      " NEW.id := NEW.id + 100; RETURN NEW; END$$;"
      "CREATE TRIGGER tr BEFORE UPDATE ON posts FOR EACH ROW EXECUTE FUNCTION bump()");
  cache_comments();
  exec("UPDATE posts SET body = 'e' WHERE id = 2");
  expect_comments_fresh();
}

TEST_F(FkActions, BeforeTrigger_AssigningAnotherColumnKeepsReadsCached) {
  comments("ON UPDATE CASCADE");
  exec(
      "CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN"
      " NEW.body := NEW.body || '*'; RETURN NEW; END$$;"
      "CREATE TRIGGER tr BEFORE UPDATE ON posts FOR EACH ROW EXECUTE FUNCTION stamp()");
  cache_comments();
  exec("UPDATE posts SET uk = 21 WHERE id = 2");
  expect_comments_hits();
}

// A referenced generated column changes with the columns it is computed from.
TEST_F(FkActions, GeneratedKey_UpdateOfItsInputFiresOnUpdate) {
  exec(
      "CREATE TABLE g (id int PRIMARY KEY, n int, k int GENERATED ALWAYS AS (n * 10) STORED"
      " UNIQUE);"
      "INSERT INTO g (id, n) VALUES (1,1),(2,2);"
      "CREATE TABLE comments (id int PRIMARY KEY, post_id int REFERENCES g (k)"
      " ON UPDATE CASCADE, txt text);"
      "INSERT INTO comments VALUES (1,10,'a'),(2,20,'b'),(3,20,'c')");
  cache_comments();
  exec("UPDATE g SET n = 5 WHERE id = 2");
  expect_comments_fresh();
}

TEST_F(FkActions, TriggerBody_UpdateOfANonKeyColumnLeavesReferencingReadsCached) {
  comments("ON DELETE CASCADE");
  exec(
      "CREATE TABLE other (id int PRIMARY KEY);"
      "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN"
      " UPDATE posts SET body = 'touched' WHERE id = 2; RETURN NEW; END$$;"
      "CREATE TRIGGER tr AFTER INSERT ON other FOR EACH ROW EXECUTE FUNCTION touch()");
  cache_comments();
  exec("INSERT INTO other VALUES (1)");
  expect_comments_hits();
  EXPECT_EQ(dump(direct("SELECT body FROM posts ORDER BY id")),
            dump(read("SELECT body FROM posts ORDER BY id").r));
}

TEST_F(FkActions, TriggerBody_DeleteFiresOnDelete) {
  comments("ON DELETE CASCADE");
  exec(
      "CREATE TABLE other (id int PRIMARY KEY);"
      "CREATE FUNCTION zap() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN"
      " DELETE FROM posts WHERE id = NEW.id; RETURN NEW; END$$;"
      "CREATE TRIGGER tr AFTER INSERT ON other FOR EACH ROW EXECUTE FUNCTION zap()");
  cache_comments();
  exec("INSERT INTO other VALUES (2)");
  expect_comments_fresh();
}

TEST_F(FkActions, TriggerBody_UpdateOfTheKeyFiresOnUpdate) {
  comments("ON UPDATE SET NULL");
  exec(
      "CREATE TABLE other (id int PRIMARY KEY);"
      "CREATE FUNCTION mv() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN"
      " UPDATE posts SET id = 9 WHERE id = NEW.id; RETURN NEW; END$$;"
      "CREATE TRIGGER tr AFTER INSERT ON other FOR EACH ROW EXECUTE FUNCTION mv()");
  cache_comments();
  exec("INSERT INTO other VALUES (2)");
  expect_comments_fresh();
}

}  // namespace
