// Writes from anywhere (issue 11): commits made outside this cache (plain libpq clients,
// another cache) reach it through PostgreSQL's change stream. Every test caches a read,
// writes through a plain connection, then checks that after sync() (and, without it,
// within a bounded wait) the read through qcache equals a direct read.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "support/pg_schema_fixture.h"

namespace qcache_test {
namespace {

using namespace std::chrono_literals;

class Stream : public pg_schema_fixture {
 protected:
  Stream() : pg_schema_fixture("qcs_") {}
  qcache::options cache_options() const override { return following(); }
  void before_connect() override {
    admin("SET search_path = " + schema_ +
          ";"
          "CREATE TABLE kv (id int PRIMARY KEY, v int, cat text);"
          "CREATE TABLE kvfull (id int PRIMARY KEY, v int, cat text);"
          // (scripts/pg's clusters make new tables FULL: kv tests DEFAULT.)
          "ALTER TABLE kv REPLICA IDENTITY DEFAULT; ALTER TABLE kvfull REPLICA IDENTITY FULL;"
          "INSERT INTO kv SELECT g, g * 10, CASE WHEN g % 2 = 0 THEN 'even' ELSE 'odd' END "
          "  FROM generate_series(1, 6) g;"
          "INSERT INTO kvfull SELECT * FROM kv;"
          "CREATE TABLE parent (id int PRIMARY KEY);"
          "CREATE TABLE child (id int PRIMARY KEY, pid int REFERENCES parent ON DELETE CASCADE);"
          "INSERT INTO parent VALUES (1), (2); INSERT INTO child VALUES (1, 1), (2, 1), (3, 2);"
          "CREATE TABLE audit (id serial PRIMARY KEY, note text);"
          "CREATE TABLE src (id int PRIMARY KEY);"
          "CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS "
          "  $$BEGIN INSERT INTO audit(note) VALUES ('src ' || NEW.id); RETURN NEW; END$$;"
          "CREATE TRIGGER t AFTER INSERT ON src FOR EACH ROW EXECUTE FUNCTION note();"
          "CREATE FUNCTION bump(i int) RETURNS void LANGUAGE sql AS "
          "  $$UPDATE kv SET v = v + 1 WHERE id = i$$;");
  }
  // A write by a plain libpq connection (not through any qcache).
  void plain(const std::string& sql) {
    pqxx::connection c(conninfo_ + " options='-c search_path=" + schema_ + "'");
    pqxx::nontransaction tx(c);
    tx.exec(sql);
  }
  // `read` cached, then `write` by a plain connection, then sync(): fresh.
  void check_synced(const std::string& read, const std::string& write) {
    cache_it(read);
    std::string before = dump(direct(read));
    plain(write);
    ASSERT_NE(dump(direct(read)), before) << "the write must change the read: " << write;
    ASSERT_TRUE(conn_->sync());
    expect_fresh(read);
  }
  // The same without sync(): fresh within a bounded wait.
  void check_eventually(const std::string& read, const std::string& write) {
    cache_it(read);
    plain(write);
    std::string want = dump(direct(read));
    auto deadline = std::chrono::steady_clock::now() + 2s;
    while (dump(exec(read)) != want) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "still stale after 2 s: " << read;
      std::this_thread::sleep_for(1ms);
    }
  }
};

TEST_F(Stream, UpdatePredicateColumnDefaultIdentity) {
  check_synced("SELECT id FROM kv WHERE cat = 'odd' ORDER BY id",
               "UPDATE kv SET cat = 'even' WHERE id = 3");
}

TEST_F(Stream, UpdatePredicateColumnFullIdentity) {
  check_synced("SELECT id FROM kvfull WHERE cat = 'odd' ORDER BY id",
               "UPDATE kvfull SET cat = 'even' WHERE id = 3");
}

TEST_F(Stream, UpdateOtherColumn) {
  check_synced("SELECT v FROM kv WHERE id = 3", "UPDATE kv SET v = 333 WHERE id = 3");
  check_synced("SELECT v FROM kvfull WHERE id = 3", "UPDATE kvfull SET v = 333 WHERE id = 3");
  check_synced("SELECT sum(v) FROM kv", "UPDATE kv SET v = v + 1 WHERE id = 4");
}

TEST_F(Stream, UpdateKey) {
  check_synced("SELECT v FROM kv WHERE id = 100", "UPDATE kv SET id = 100 WHERE id = 2");
  check_synced("SELECT v FROM kv WHERE id = 1", "UPDATE kv SET id = 101 WHERE id = 1");
}

TEST_F(Stream, InsertAndDelete) {
  check_synced("SELECT v FROM kv WHERE id = 7", "INSERT INTO kv VALUES (7, 70, 'odd')");
  check_synced("SELECT count(*) FROM kv WHERE cat = 'odd'", "DELETE FROM kv WHERE id = 5");
  check_synced("SELECT count(*) FROM kvfull WHERE cat = 'odd'", "DELETE FROM kvfull WHERE id = 5");
}

TEST_F(Stream, CascadeTriggerFunctionCopy) {
  check_synced("SELECT count(*) FROM child WHERE pid = 1", "DELETE FROM parent WHERE id = 1");
  check_synced("SELECT count(*) FROM audit", "INSERT INTO src VALUES (1)");
  check_synced("SELECT v FROM kv WHERE id = 6", "SELECT bump(6)");
  cache_it("SELECT count(*) FROM kv WHERE cat = 'copied'");
  {
    pqxx::connection c(conninfo_ + " options='-c search_path=" + schema_ + "'");
    pqxx::work tx(c);
    pqxx::stream_to s(tx, "kv", std::vector<std::string>{"id", "v", "cat"});
    s << std::make_tuple(50, 500, std::string("copied"));
    s.complete();
    tx.commit();
  }
  ASSERT_TRUE(conn_->sync());
  expect_fresh("SELECT count(*) FROM kv WHERE cat = 'copied'");
}

TEST_F(Stream, Truncate) {
  check_synced("SELECT count(*) FROM kv WHERE id = 1", "TRUNCATE kv");
  check_synced("SELECT count(*) FROM child WHERE pid = 2", "TRUNCATE parent CASCADE");
}

TEST_F(Stream, WithoutSyncFreshWithinLag) {
  check_eventually("SELECT v FROM kv WHERE id = 2", "UPDATE kv SET v = 222 WHERE id = 2");
  check_eventually("SELECT count(*) FROM kv", "INSERT INTO kv VALUES (8, 80, 'even')");
}

TEST_F(Stream, UnloggedTablesAreNotInTheStreamSoNotCached) {
  exec("CREATE UNLOGGED TABLE u (id int PRIMARY KEY, v int); INSERT INTO u VALUES (1, 1)");
  const std::string read = "SELECT v FROM u WHERE id = 1";
  exec(read);
  auto before = cache_->stats().hits;
  exec(read);
  EXPECT_EQ(cache_->stats().hits, before) << "an unlogged table was cached";
  plain("UPDATE u SET v = 2 WHERE id = 1");
  ASSERT_TRUE(conn_->sync());
  expect_fresh(read);
}

TEST_F(Stream, MaterializedViewRefreshedByAnotherClientIsFresh) {
  exec("CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM kv");
  const std::string read = "SELECT n FROM mv";
  exec(read);
  exec(read);
  plain("INSERT INTO kv VALUES (9, 90, 'odd'); REFRESH MATERIALIZED VIEW mv");
  ASSERT_TRUE(conn_->sync());
  expect_fresh(read);
}

TEST_F(Stream, RollbackInvalidatesNothing) {
  const std::string read = "SELECT v FROM kv WHERE id = 4";
  cache_it(read);
  plain("BEGIN; UPDATE kv SET v = -1 WHERE id = 4; ROLLBACK");
  plain(
      "BEGIN; UPDATE kv SET v = -2 WHERE id = 4; SAVEPOINT s; UPDATE kv SET v = -3 WHERE id = 4;"
      " ROLLBACK TO s; ROLLBACK");
  ASSERT_TRUE(conn_->sync());
  expect_hit(read);
}

TEST_F(Stream, AnotherCacheWrites) {
  // Another cache (as another process would have): its writes go through its own cache
  // and reach ours only through the stream.
  const std::string read = "SELECT v FROM kv WHERE id = 1";
  cache_it(read);
  std::thread other([&] {
    auto c2 = std::make_shared<qcache::cache>(following());
    qcache::pqxx::connection w(conninfo_ + " options='-c search_path=" + schema_ + "'", c2);
    qcache::pqxx::nontransaction tx(w);
    tx.exec("UPDATE kv SET v = 4242 WHERE id = 1");
  });
  other.join();
  ASSERT_TRUE(conn_->sync());
  expect_fresh(read);
  EXPECT_EQ(dump(exec(read)), "'4242',\n");
}

TEST_F(Stream, OwnWritesStayImmediate) {
  const std::string read = "SELECT v FROM kv WHERE id = 2";
  cache_it(read);
  exec("UPDATE kv SET v = 7 WHERE id = 2");
  expect_fresh(read);  // no sync(): the cache's own write invalidated it
}

// The walsender is terminated: nothing stale is served, and caching resumes.
TEST_F(Stream, WalsenderTerminated) {
  const std::string read = "SELECT v FROM kv WHERE id = 3";
  cache_it(read);
  admin(
      "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name LIKE "
      "'qcache\\_" +
      std::to_string(getpid()) + "\\_%' AND active_pid IS NOT NULL");
  plain("UPDATE kv SET v = 3030 WHERE id = 3");
  conn_->sync();  // false while the stream is down: reads then go to the database
  expect_fresh(read);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (true) {  // caching resumes
    auto hits = cache_->stats().hits;
    std::string got = dump(exec(read));
    EXPECT_EQ(got, dump(direct(read)));
    if (cache_->stats().hits > hits) break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "caching did not resume";
    std::this_thread::sleep_for(10ms);
  }
  plain("UPDATE kv SET v = 3031 WHERE id = 3");
  ASSERT_TRUE(conn_->sync());
  expect_fresh(read);
}

TEST_F(Stream, FollowChangesOffRunsAsBefore) {
  qcache::options o;
  o.follow_changes = false;
  auto c2 = std::make_shared<qcache::cache>(o);
  qcache::pqxx::connection c(conninfo_ + " options='-c search_path=" + schema_ + "'", c2);
  EXPECT_TRUE(c.sync());
  const std::string read = "SELECT v FROM kv WHERE id = 5";
  exec_on(c, read);
  plain("UPDATE kv SET v = 555 WHERE id = 5");
  EXPECT_EQ(dump(exec_on(c, read)), "'50',\n");  // what follow_changes = false gives up
}

TEST_F(Stream, RoleWithoutReplicationIsRefused) {
  admin("DROP ROLE IF EXISTS qcs_norepl; CREATE ROLE qcs_norepl LOGIN NOREPLICATION");
  std::string msg;
  try {
    qcache::pqxx::connection c(conninfo_ + " user=qcs_norepl", std::make_shared<qcache::cache>(following()));
  } catch (const std::exception& e) {
    msg = e.what();
  }
  admin("DROP ROLE qcs_norepl");
  EXPECT_NE(msg.find("REPLICATION"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ALTER ROLE"), std::string::npos) << msg;
}

TEST_F(Stream, MissingPublicationNamesTheFix) {
  qcache::options o;
  o.follow_changes = true;
  o.publication = "qcs_pub_" + std::to_string(getpid());
  admin("DROP ROLE IF EXISTS qcs_repl; CREATE ROLE qcs_repl LOGIN REPLICATION");
  std::string msg;
  try {
    qcache::pqxx::connection c(conninfo_ + " user=qcs_repl", std::make_shared<qcache::cache>(o));
  } catch (const std::exception& e) {
    msg = e.what();
  }
  admin("DROP ROLE qcs_repl");
  EXPECT_NE(msg.find("CREATE PUBLICATION"), std::string::npos) << msg;
}

TEST_F(Stream, PublicationNotCreatedOverTablesWithoutKey) {
  qcache::options o;
  o.follow_changes = true;
  o.publication = "qcs_pub2_" + std::to_string(getpid());
  // (scripts/pg's event trigger gives new keyless tables REPLICA IDENTITY FULL: undo it.)
  admin("CREATE TABLE " + schema_ +
        ".nokey (a int);"
        "ALTER TABLE " +
        schema_ + ".nokey REPLICA IDENTITY DEFAULT");
  std::string msg;
  try {
    qcache::pqxx::connection c(conninfo_, std::make_shared<qcache::cache>(o));
  } catch (const std::exception& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find(schema_ + ".nokey"), std::string::npos) << msg;
  admin("DROP PUBLICATION IF EXISTS " + o.publication);
}

}  // namespace
}  // namespace qcache_test
