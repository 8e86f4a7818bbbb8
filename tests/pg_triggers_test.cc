// Triggers on PostgreSQL (issue 10): a write holds what the triggers it may fire write, not
// the whole cache. Each test runs in its own schema against the real server, through
// qcache::pqxx, and compares every cached read with the same read run directly.
//
// What is specified here:
//  * a trigger fires only for its events (tgtype: INSERT/UPDATE/DELETE/TRUNCATE), so a
//    write that cannot fire it leaves unrelated reads cached; a disabled trigger never fires;
//    replica and always triggers are assumed to fire whatever session_replication_role is;
//  * a PL/pgSQL body that writes known tables invalidates those tables (table level), through
//    their own triggers and cascades too; a BEFORE ROW trigger that assigns NEW.c moves
//    every read by c of its table (the stored value is not the statement's);
//  * what cannot be read flushes: EXECUTE, a call of a function that may write (also in a
//    WHEN condition), a language other than PL/pgSQL, a function with its own search_path;
//    a body that changes session settings makes the session's context be read again;
//  * triggers created by DDL through qcache (any connection) are seen by the next write.
#include <gtest/gtest.h>
#include <qcache/pqxx.h>
#include <unistd.h>

#include <cctype>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "support/pg_schema_fixture.h"

// LeakSanitizer: tests/lsan.supp (set by scripts/test) suppresses libpg_query's own leak.

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

// t(id, k, v, c) rows 1..5; audit(n, note) empty; other(id, v) rows 1..3.
class Triggers : public qcache_test::pg_schema_fixture {
 protected:
  Triggers() : pg_schema_fixture("qctr_") {}

  void SetUp() override {
    pg_schema_fixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    exec(
        "CREATE TABLE t (id int PRIMARY KEY, k text, v text, c int);"
        "INSERT INTO t (id, k, v, c) VALUES (1,'a','one',1),(2,'a','two',2),(3,'a','three',3),"
        "(4,'b','four',4),(5,'b','five',5);"
        "CREATE TABLE audit (n serial PRIMARY KEY, note text);"
        "CREATE TABLE other (id int PRIMARY KEY, v text);"
        "INSERT INTO other VALUES (1,'x'),(2,'y'),(3,'z')");
  }

  // This file's own read, cache_it, expect_fresh and expect_hit (they hide the shared ones):
  // they also count misses and stores, and its dump() compares column names and types.
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
  // Reads that a write which neither touches `other` nor rows 2 of t must leave cached.
  void cache_unrelated() {
    cache_it("SELECT v FROM other WHERE id = 1");
    cache_it("SELECT count(*) FROM other");
    cache_it("SELECT v FROM t WHERE id = 2");
  }
  void expect_unrelated_hits() {
    expect_hit("SELECT v FROM other WHERE id = 1");
    expect_hit("SELECT count(*) FROM other");
    expect_hit("SELECT v FROM t WHERE id = 2");
  }
  void expect_flushed() {
    expect_fresh("SELECT v FROM other WHERE id = 1");
    expect_fresh("SELECT count(*) FROM other");
  }

  // A PL/pgSQL trigger function `name` with `body` between BEGIN and END.
  void function(const std::string& name, const std::string& body, const std::string& decl = "") {
    exec("CREATE FUNCTION " + name + "() RETURNS trigger LANGUAGE plpgsql AS $$" + decl +
         " BEGIN " + body + " END$$");
  }
  // AFTER INSERT ON t, FOR EACH ROW: INSERT INTO audit(note) VALUES (NEW.v).
  void audit_inserts() {
    function("log_t", "INSERT INTO audit(note) VALUES (NEW.v); RETURN NEW;");
    exec("CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION log_t()");
  }
};

// ---- events -------------------------------------------------------------------------

TEST_F(Triggers, Events_UpdateDoesNotFireAnInsertTrigger) {
  audit_inserts();
  cache_unrelated();
  cache_it("SELECT count(*) FROM audit");
  cache_it("SELECT v FROM t WHERE id = 1");
  std::uint64_t f = flushes();
  exec("UPDATE t SET v = 'uno' WHERE id = 1");
  EXPECT_EQ(flushes(), f);
  expect_unrelated_hits();
  expect_hit("SELECT count(*) FROM audit");
  expect_fresh("SELECT v FROM t WHERE id = 1");
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 1").v(), "uno");
}

TEST_F(Triggers, Events_InsertFiresItAndInvalidatesOnlyTheAuditTable) {
  audit_inserts();
  cache_unrelated();
  cache_it("SELECT count(*) FROM audit");
  cache_it("SELECT note FROM audit WHERE note = 'six'");
  cache_it("SELECT v FROM t WHERE id = 6");
  std::uint64_t f = flushes();
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  EXPECT_EQ(flushes(), f);
  expect_unrelated_hits();
  expect_fresh("SELECT count(*) FROM audit");
  expect_fresh("SELECT note FROM audit WHERE note = 'six'");
  expect_fresh("SELECT v FROM t WHERE id = 6");
  EXPECT_EQ(read("SELECT count(*) FROM audit").v(), "1");
}

TEST_F(Triggers, Events_DeleteAndUpdateTriggersFireForTheirEventsOnly) {
  function("log_d", "INSERT INTO audit(note) VALUES ('deleted ' || OLD.id); RETURN OLD;");
  exec("CREATE TRIGGER trd AFTER DELETE ON t FOR EACH ROW EXECUTE FUNCTION log_d()");
  cache_unrelated();
  cache_it("SELECT count(*) FROM audit");
  exec("INSERT INTO t (id, k, v, c) VALUES (7, 'c', 'seven', 7)");
  expect_unrelated_hits();
  expect_hit("SELECT count(*) FROM audit");
  exec("DELETE FROM t WHERE id = 7");
  expect_unrelated_hits();
  expect_fresh("SELECT count(*) FROM audit");
  EXPECT_EQ(read("SELECT count(*) FROM audit").v(), "1");
}

TEST_F(Triggers, Events_UpdateOfAColumnListFiresOnAnyUpdate) {
  function("log_u", "INSERT INTO audit(note) VALUES (NEW.v); RETURN NEW;");
  exec("CREATE TRIGGER tru AFTER UPDATE OF v ON t FOR EACH ROW EXECUTE FUNCTION log_u()");
  cache_unrelated();
  cache_it("SELECT count(*) FROM audit");
  exec("UPDATE t SET v = 'uno' WHERE id = 1");
  expect_unrelated_hits();
  expect_fresh("SELECT count(*) FROM audit");
  EXPECT_EQ(read("SELECT count(*) FROM audit").v(), "1");
}

TEST_F(Triggers, Events_StatementTriggerFiresEvenWhenNoRowChanges) {
  function("log_s", "INSERT INTO audit(note) VALUES ('stmt'); RETURN NULL;");
  exec("CREATE TRIGGER trs AFTER UPDATE ON t FOR EACH STATEMENT EXECUTE FUNCTION log_s()");
  cache_unrelated();
  cache_it("SELECT count(*) FROM audit");
  exec("UPDATE t SET v = 'none' WHERE id = 99");
  expect_unrelated_hits();
  expect_fresh("SELECT count(*) FROM audit");
  EXPECT_EQ(read("SELECT count(*) FROM audit").v(), "1");
}

TEST_F(Triggers, Events_TruncateTriggerFiresOnTruncateOnly) {
  function("log_tr", "INSERT INTO audit(note) VALUES ('truncated'); RETURN NULL;");
  exec("CREATE TRIGGER trt AFTER TRUNCATE ON other EXECUTE FUNCTION log_tr()");
  cache_it("SELECT v FROM t WHERE id = 2");
  cache_it("SELECT count(*) FROM audit");
  cache_it("SELECT count(*) FROM other");
  exec("DELETE FROM other WHERE id = 3");
  expect_hit("SELECT count(*) FROM audit");
  expect_fresh("SELECT count(*) FROM other");
  exec("TRUNCATE other");
  expect_hit("SELECT v FROM t WHERE id = 2");
  expect_fresh("SELECT count(*) FROM audit");
  expect_fresh("SELECT count(*) FROM other");
  EXPECT_EQ(read("SELECT count(*) FROM audit").v(), "1");
}

TEST_F(Triggers, Events_DisabledTriggerNeverFiresAndEnablingItIsSeen) {
  audit_inserts();
  exec("ALTER TABLE t DISABLE TRIGGER tr");
  cache_unrelated();
  cache_it("SELECT count(*) FROM audit");
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  expect_unrelated_hits();
  expect_hit("SELECT count(*) FROM audit");
  exec("ALTER TABLE t ENABLE TRIGGER tr");
  cache_it("SELECT count(*) FROM audit");
  exec("INSERT INTO t (id, k, v, c) VALUES (7, 'c', 'seven', 7)");
  expect_fresh("SELECT count(*) FROM audit");
  EXPECT_EQ(read("SELECT count(*) FROM audit").v(), "1");
}

TEST_F(Triggers, Events_ReplicaAndAlwaysTriggersFireUnderEachReplicationRole) {
  audit_inserts();
  exec("ALTER TABLE t ENABLE REPLICA TRIGGER tr");
  function("log_o", "INSERT INTO audit(note) VALUES ('always'); RETURN NEW;");
  exec(
      "CREATE TRIGGER tro AFTER UPDATE ON other FOR EACH ROW EXECUTE FUNCTION log_o();"
      "ALTER TABLE other ENABLE ALWAYS TRIGGER tro");
  exec("SET session_replication_role = replica");
  cache_it("SELECT count(*) FROM audit");
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");  // a replica trigger fires in
                                                                  // replica
  expect_fresh("SELECT count(*) FROM audit");
  EXPECT_EQ(read("SELECT count(*) FROM audit").v(), "1");
  exec("RESET session_replication_role");
  cache_it("SELECT count(*) FROM audit");
  exec("UPDATE other SET v = 'w' WHERE id = 1");  // an always trigger fires in origin
  expect_fresh("SELECT count(*) FROM audit");
  EXPECT_EQ(read("SELECT count(*) FROM audit").v(), "2");
}

TEST_F(Triggers, Events_UpsertFiresUpdateTriggersAndMergeFiresDeleteTriggers) {
  function("log_u", "INSERT INTO audit(note) VALUES (TG_OP); RETURN NULL;");
  exec(
      "CREATE TRIGGER tru AFTER UPDATE ON t FOR EACH ROW EXECUTE FUNCTION log_u();"
      "CREATE TRIGGER trd AFTER DELETE ON other FOR EACH ROW EXECUTE FUNCTION log_u()");
  cache_it("SELECT count(*) FROM audit");
  exec(
      "INSERT INTO t (id, k, v, c) VALUES (1, 'a', 'uno', 1)"
      " ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v");
  expect_fresh("SELECT count(*) FROM audit");
  EXPECT_EQ(read("SELECT count(*) FROM audit").v(), "1");
  cache_it("SELECT count(*) FROM audit");
  exec("MERGE INTO other o USING (VALUES (3)) s(id) ON o.id = s.id WHEN MATCHED THEN DELETE");
  expect_fresh("SELECT count(*) FROM audit");
  EXPECT_EQ(read("SELECT count(*) FROM audit").v(), "2");
}

// ---- what bodies write -----------------------------------------------------------------

TEST_F(Triggers, Body_AfterTriggerUpdatingItsOwnTableInvalidatesItsReads) {
  function("mark", "UPDATE t SET k = 'new' WHERE id = NEW.id; RETURN NEW;");
  exec("CREATE TRIGGER trm AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION mark()");
  cache_it("SELECT id FROM t WHERE k = 'new'");
  cache_it("SELECT v FROM other WHERE id = 1");
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  expect_hit("SELECT v FROM other WHERE id = 1");
  expect_fresh("SELECT id FROM t WHERE k = 'new'");
  EXPECT_EQ(read("SELECT id FROM t WHERE k = 'new'").v(), "6");
}

TEST_F(Triggers, Body_WritesThroughNestedTriggersAndCascades) {
  exec(
      "CREATE TABLE audit2 (n int);"
      "CREATE TABLE parent (id int PRIMARY KEY);"
      "CREATE TABLE child (id int, pid int REFERENCES parent ON DELETE CASCADE);"
      "INSERT INTO parent VALUES (1), (2); INSERT INTO child VALUES (10, 1), (20, 2)");
  audit_inserts();
  function("log_a",
           "INSERT INTO audit2 VALUES (NEW.n); DELETE FROM parent WHERE id = 1;"
           " RETURN NEW;");
  exec("CREATE TRIGGER tra AFTER INSERT ON audit FOR EACH ROW EXECUTE FUNCTION log_a()");
  cache_unrelated();
  cache_it("SELECT count(*) FROM audit2");
  cache_it("SELECT id FROM child WHERE pid = 1");
  std::uint64_t f = flushes();
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  EXPECT_EQ(flushes(), f);
  expect_unrelated_hits();
  expect_fresh("SELECT count(*) FROM audit2");
  expect_fresh("SELECT id FROM child WHERE pid = 1");
  EXPECT_EQ(read("SELECT count(*) FROM audit2").v(), "1");
}

TEST_F(Triggers, Body_TriggersThatFireEachOtherTerminate) {
  // t -> audit -> t, stopped at run time by pg_trigger_depth().
  audit_inserts();
  function("back",
           "IF pg_trigger_depth() < 3 THEN INSERT INTO t (id, k, v, c) VALUES (100 + NEW.n, 'x', "
           "'y', 0);"
           " END IF; RETURN NEW;");
  exec("CREATE TRIGGER trb AFTER INSERT ON audit FOR EACH ROW EXECUTE FUNCTION back()");
  cache_it("SELECT v FROM other WHERE id = 1");
  cache_it("SELECT count(*) FROM t");
  cache_it("SELECT count(*) FROM audit");
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  expect_hit("SELECT v FROM other WHERE id = 1");
  expect_fresh("SELECT count(*) FROM t");
  expect_fresh("SELECT count(*) FROM audit");
}

TEST_F(Triggers, Body_ChainsDeeperThanTheLimitFlush) {
  // t -> a1 -> a2 -> ... -> a6: each insert fires the next.
  audit_inserts();  // t -> audit
  std::string prev = "audit";
  for (int i = 1; i <= 6; ++i) {
    std::string a = "a" + std::to_string(i);
    exec("CREATE TABLE " + a + " (n int)");
    function("to_" + a, "INSERT INTO " + a + " VALUES (1); RETURN NULL;");
    exec("CREATE TRIGGER tc AFTER INSERT ON " + prev + " FOR EACH ROW EXECUTE FUNCTION to_" + a +
         "()");
    prev = a;
  }
  cache_it("SELECT count(*) FROM a6");
  cache_it("SELECT v FROM other WHERE id = 1");
  std::uint64_t f = flushes();
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  EXPECT_EQ(flushes(), f + 1);
  expect_fresh("SELECT count(*) FROM a6");
  expect_fresh("SELECT v FROM other WHERE id = 1");
  EXPECT_EQ(read("SELECT count(*) FROM a6").v(), "1");
  // A chain within the limit does not flush.
  cache_it("SELECT count(*) FROM a4");
  cache_it("SELECT v FROM other WHERE id = 1");
  f = flushes();
  exec("INSERT INTO a3 VALUES (2)");  // a3 -> a4 -> a5 -> a6
  EXPECT_EQ(flushes(), f);
  expect_fresh("SELECT count(*) FROM a4");
  expect_hit("SELECT v FROM other WHERE id = 1");
}

TEST_F(Triggers, Body_InsteadOfTriggerOnAViewWritesWhatItsBodyWrites) {
  exec("CREATE VIEW tv AS SELECT t.id, t.v, o.v AS ov FROM t JOIN other o ON o.id = t.id");
  function("tv_ins",
           "INSERT INTO t VALUES (NEW.id, 'v', NEW.v, 0);"
           " INSERT INTO audit(note) VALUES (NEW.ov); RETURN NEW;");
  exec("CREATE TRIGGER trv INSTEAD OF INSERT ON tv FOR EACH ROW EXECUTE FUNCTION tv_ins()");
  cache_it("SELECT v FROM other WHERE id = 1");
  cache_it("SELECT count(*) FROM audit");
  cache_it("SELECT v FROM t WHERE id = 6");
  std::uint64_t f = flushes();
  exec("INSERT INTO tv VALUES (6, 'six', 'ignored')");
  EXPECT_EQ(flushes(), f);
  expect_fresh("SELECT count(*) FROM audit");
  expect_fresh("SELECT v FROM t WHERE id = 6");
  EXPECT_EQ(read("SELECT v FROM t WHERE id = 6").v(), "six");
}

TEST_F(Triggers, Body_TriggerOnAPartitionedTableFiresForItsPartitions) {
  exec(
      "CREATE TABLE m (id int, r text) PARTITION BY LIST (r);"
      "CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu')");
  function("log_m", "INSERT INTO audit(note) VALUES (NEW.r); RETURN NEW;");
  exec("CREATE TRIGGER trp AFTER INSERT ON m FOR EACH ROW EXECUTE FUNCTION log_m()");
  cache_it("SELECT count(*) FROM audit");
  cache_it("SELECT v FROM other WHERE id = 1");
  exec("INSERT INTO m_eu VALUES (1, 'eu')");
  expect_hit("SELECT v FROM other WHERE id = 1");
  expect_fresh("SELECT count(*) FROM audit");
  EXPECT_EQ(read("SELECT count(*) FROM audit").v(), "1");
}

TEST_F(Triggers, Body_InsideATransactionReadsOfWhatTheTriggerWroteSeeTheWrite) {
  audit_inserts();
  cache_it("SELECT count(*) FROM audit");
  {
    qcache::pqxx::work tx(*conn_);
    tx.exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
    EXPECT_EQ(std::string(tx.exec("SELECT count(*) FROM audit")[0][0].c_str()), "1");
    tx.commit();
  }
  expect_fresh("SELECT count(*) FROM audit");
}

// ---- BEFORE triggers that change the row ----------------------------------------------

TEST_F(Triggers, New_BeforeTriggerAssigningAColumnInvalidatesReadsByIt) {
  function("calc", "NEW.c := NEW.id * 100 + length(NEW.v); RETURN NEW;");
  exec("CREATE TRIGGER trc BEFORE INSERT OR UPDATE ON t FOR EACH ROW EXECUTE FUNCTION calc()");
  cache_unrelated();
  cache_it("SELECT id FROM t WHERE c = 103");  // id 1 after v = 'uno'
  cache_it("SELECT id FROM t WHERE c = 1");    // id 1 now
  cache_it("SELECT id FROM t WHERE c = 604");  // id 6 after the insert
  cache_it("SELECT id FROM t WHERE c = 0");    // what the insert says
  exec("UPDATE t SET v = 'uno' WHERE id = 1");
  expect_unrelated_hits();
  expect_fresh("SELECT id FROM t WHERE c = 103");
  expect_fresh("SELECT id FROM t WHERE c = 1");
  EXPECT_EQ(read("SELECT id FROM t WHERE c = 103").v(), "1");
  cache_it("SELECT id FROM t WHERE c = 103");
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'four', 0)");
  expect_fresh("SELECT id FROM t WHERE c = 604");
  expect_fresh("SELECT id FROM t WHERE c = 0");
  expect_hit("SELECT v FROM t WHERE id = 2");
  EXPECT_EQ(read("SELECT id FROM t WHERE c = 604").v(), "6");
  // A SET of c is overridden by the trigger: the computed value's reads move too.
  cache_it("SELECT id FROM t WHERE c = 204");
  exec("UPDATE t SET c = 7, v = 'four' WHERE id = 2");
  expect_fresh("SELECT id FROM t WHERE c = 204");
  EXPECT_EQ(read("SELECT id FROM t WHERE c = 204").v(), "2");
}

TEST_F(Triggers, New_BeforeTriggerReplacingTheRowInvalidatesEveryPredicateRead) {
  function("swap", "NEW := ROW(NEW.id, 'z'::text, NEW.v, NEW.c); RETURN NEW;");
  exec("CREATE TRIGGER trw BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION swap()");
  cache_it("SELECT id FROM t WHERE k = 'z'");
  cache_it("SELECT v FROM other WHERE id = 1");
  exec("UPDATE t SET v = 'uno' WHERE id = 1");
  expect_hit("SELECT v FROM other WHERE id = 1");
  expect_fresh("SELECT id FROM t WHERE k = 'z'");
  EXPECT_EQ(read("SELECT id FROM t WHERE k = 'z'").v(), "1");
}

TEST_F(Triggers, New_BeforeTriggerReturningAnotherRecordInvalidatesEveryPredicateRead) {
  function("other_row", "r := NEW; r.k := 'q'; RETURN r;", "DECLARE r t;");
  exec("CREATE TRIGGER trr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION other_row()");
  cache_it("SELECT id FROM t WHERE k = 'q'");
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  expect_fresh("SELECT id FROM t WHERE k = 'q'");
  EXPECT_EQ(read("SELECT id FROM t WHERE k = 'q'").v(), "6");
}

TEST_F(Triggers, New_SelectIntoNewInvalidatesEveryPredicateRead) {
  function("into_new", "SELECT NEW.id, 'w', NEW.v, NEW.c INTO NEW; RETURN NEW;");
  exec("CREATE TRIGGER tri BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION into_new()");
  cache_it("SELECT id FROM t WHERE k = 'w'");
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  expect_fresh("SELECT id FROM t WHERE k = 'w'");
  EXPECT_EQ(read("SELECT id FROM t WHERE k = 'w'").v(), "6");
}

TEST_F(Triggers, New_StableFunctionsInTheBodyDoNotFlush) {
  function("stamp", "NEW.v := NEW.v || to_char(now(), 'YYYY'); RETURN NEW;");
  exec("CREATE TRIGGER trn BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION stamp()");
  cache_unrelated();
  cache_it("SELECT id FROM t WHERE v = 'six'");
  std::uint64_t f = flushes();
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  EXPECT_EQ(flushes(), f);
  expect_unrelated_hits();
  expect_fresh("SELECT id FROM t WHERE v = 'six'");
}

TEST_F(Triggers, New_BeforeTriggerOnAnInheritanceChildMovesReadsOfTheParent) {
  exec(
      "CREATE TABLE ip (id int, c int, v text); CREATE TABLE ic () INHERITS (ip);"
      "INSERT INTO ip VALUES (1, 1, 'p'); INSERT INTO ic VALUES (10, 10, 'c')");
  function("set99", "NEW.c := 99; RETURN NEW;");
  exec("CREATE TRIGGER tr9 BEFORE UPDATE ON ic FOR EACH ROW EXECUTE FUNCTION set99()");
  cache_it("SELECT id FROM ip WHERE c = 99");
  cache_it("SELECT id FROM ic WHERE c = 99");
  cache_it("SELECT v FROM other WHERE id = 1");
  exec("UPDATE ip SET v = 'x' WHERE id = 10");
  expect_hit("SELECT v FROM other WHERE id = 1");
  expect_fresh("SELECT id FROM ip WHERE c = 99");
  expect_fresh("SELECT id FROM ic WHERE c = 99");
  EXPECT_EQ(read("SELECT id FROM ip WHERE c = 99").v(), "10");
}

// ---- what cannot be read flushes -------------------------------------------------------

TEST_F(Triggers, Flush_DynamicSqlInTheBody) {
  function("dyn", "EXECUTE 'UPDATE other SET v = ''dyn'' WHERE id = 1'; RETURN NEW;");
  exec("CREATE TRIGGER trx AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION dyn()");
  cache_unrelated();
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  expect_flushed();
  EXPECT_EQ(read("SELECT v FROM other WHERE id = 1").v(), "dyn");
}

TEST_F(Triggers, Flush_BodyCallingAFunctionThatMayWrite) {
  exec(
      "CREATE FUNCTION touch_other() RETURNS int LANGUAGE sql AS "
      "$$UPDATE other SET v = 'touched' WHERE id = 1 RETURNING 1$$");
  for (const std::string body :
       {"PERFORM touch_other(); RETURN NEW;", "IF touch_other() > 0 THEN NULL; END IF; RETURN NEW;",
        "x := touch_other(); RETURN NEW;",
        "INSERT INTO audit(note) VALUES (touch_other()); RETURN NEW;"}) {
    SCOPED_TRACE(body);
    exec("DROP FUNCTION IF EXISTS calls() CASCADE");
    function("calls", body, "DECLARE x int;");
    exec("CREATE TRIGGER trf AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION calls()");
    exec("UPDATE other SET v = 'x' WHERE id = 1");
    cache_unrelated();
    exec("INSERT INTO t SELECT max(id) + 1, 'c', 'new', 0 FROM t");
    expect_flushed();
    EXPECT_EQ(read("SELECT v FROM other WHERE id = 1").v(), "touched");
  }
}

TEST_F(Triggers, Flush_BodyInsertFillingADefaultThatCallsAFunctionThatMayWrite) {
  exec(
      "CREATE FUNCTION touch_other() RETURNS int LANGUAGE sql AS "
      "$$UPDATE other SET v = 'default' WHERE id = 1 RETURNING 1$$;"
      "CREATE TABLE audit2 (n int DEFAULT touch_other(), s serial)");
  function("ins2", "INSERT INTO audit2 DEFAULT VALUES; RETURN NEW;");
  exec("CREATE TRIGGER tr2 AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION ins2()");
  cache_unrelated();
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  expect_flushed();
  EXPECT_EQ(read("SELECT v FROM other WHERE id = 1").v(), "default");
}

TEST_F(Triggers, Body_InsertFillingASerialDefaultDoesNotFlush) {
  exec(
      "CREATE TABLE audit2 (n serial, at timestamptz DEFAULT now(), u uuid DEFAULT "
      "gen_random_uuid())");
  function("ins2", "INSERT INTO audit2 DEFAULT VALUES; RETURN NEW;");
  exec("CREATE TRIGGER tr2 AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION ins2()");
  cache_unrelated();
  cache_it("SELECT count(*) FROM audit2");
  std::uint64_t f = flushes();
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  EXPECT_EQ(flushes(), f);
  expect_unrelated_hits();
  expect_fresh("SELECT count(*) FROM audit2");
}

TEST_F(Triggers, Flush_BodyUsingAnOperatorOrAViewThatCallsAFunctionThatMayWrite) {
  exec(
      "CREATE FUNCTION touch_other(int, int) RETURNS int LANGUAGE sql AS "
      "$$UPDATE other SET v = 'op' || $1 WHERE id = 1 RETURNING $2$$;"
      "CREATE OPERATOR #+# (LEFTARG = int, RIGHTARG = int, FUNCTION = touch_other)");
  function("op", "NEW.c := NEW.c #+# 1; RETURN NEW;");
  exec("CREATE TRIGGER tro BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION op()");
  cache_unrelated();
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  expect_flushed();
  EXPECT_EQ(read("SELECT v FROM other WHERE id = 1").v(), "op6");
  exec(
      "DROP TRIGGER tro ON t; DROP OPERATOR #+# (int, int);"
      "CREATE FUNCTION touch1() RETURNS int LANGUAGE sql AS "
      "$$UPDATE other SET v = 'view' WHERE id = 1 RETURNING 1$$;"
      "CREATE VIEW touching AS SELECT touch1() AS n");
  function("via_view", "SELECT n INTO x FROM touching; RETURN NEW;", "DECLARE x int;");
  exec("CREATE TRIGGER trv AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION via_view()");
  cache_unrelated();
  exec("INSERT INTO t (id, k, v, c) VALUES (7, 'c', 'seven', 7)");
  expect_flushed();
  EXPECT_EQ(read("SELECT v FROM other WHERE id = 1").v(), "view");
}

TEST_F(Triggers, Flush_WhenConditionCallingAFunctionThatMayWrite) {
  exec(
      "CREATE FUNCTION touch_other() RETURNS boolean LANGUAGE sql AS "
      "$$UPDATE other SET v = 'when' WHERE id = 1 RETURNING true$$");
  function("nothing", "RETURN NEW;");
  exec(
      "CREATE TRIGGER trw AFTER INSERT ON t FOR EACH ROW WHEN (touch_other())"
      " EXECUTE FUNCTION nothing()");
  cache_unrelated();
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  expect_flushed();
  EXPECT_EQ(read("SELECT v FROM other WHERE id = 1").v(), "when");
}

TEST_F(Triggers, Flush_TriggerFunctionInAnotherLanguage) {
  // tsvector_update_trigger is C code (LANGUAGE internal): qcache cannot read it.
  exec("ALTER TABLE t ADD COLUMN tsv tsvector");
  exec(
      "CREATE TRIGGER trts BEFORE INSERT OR UPDATE ON t FOR EACH ROW EXECUTE FUNCTION"
      " tsvector_update_trigger(tsv, 'pg_catalog.simple', v)");
  cache_unrelated();
  cache_it("SELECT id FROM t WHERE tsv @@ 'uno'::tsquery");
  exec("UPDATE t SET v = 'uno' WHERE id = 1");
  expect_flushed();
  expect_fresh("SELECT id FROM t WHERE tsv @@ 'uno'::tsquery");
  EXPECT_EQ(read("SELECT id FROM t WHERE tsv @@ 'uno'::tsquery").v(), "1");
}

TEST_F(Triggers, Flush_FunctionWithItsOwnSearchPath) {
  exec("CREATE SCHEMA " + schema_ + "_x; CREATE TABLE " + schema_ + "_x.audit (note text)");
  exec("CREATE FUNCTION log_x() RETURNS trigger LANGUAGE plpgsql SET search_path = " + schema_ +
       "_x AS $$BEGIN INSERT INTO audit VALUES ('x'); RETURN NEW; END$$");
  exec("CREATE TRIGGER trsp AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION log_x()");
  cache_it("SELECT count(*) FROM " + schema_ + "_x.audit");
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  expect_fresh("SELECT count(*) FROM " + schema_ + "_x.audit");
  EXPECT_EQ(read("SELECT count(*) FROM " + schema_ + "_x.audit").v(), "1");
  admin("DROP SCHEMA " + schema_ + "_x CASCADE");
}

TEST_F(Triggers, Session_BodyChangingASettingChangesTheKey) {
  function("esc", "PERFORM set_config('bytea_output', 'escape', false); RETURN NEW;");
  exec("CREATE TRIGGER trz AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION esc()");
  exec("SET bytea_output = 'hex'");
  const std::string q = "SELECT 'A'::bytea";
  cache_it(q);
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  outcome o = read(q);
  EXPECT_EQ(o.hits, 0u) << o;
  EXPECT_EQ(o.v(), "A");
  // What was read as escape must not be served once the session is back to hex.
  read(q);
  exec("SET bytea_output = 'hex'");
  EXPECT_EQ(read(q).v(), "\\x41");
}

TEST_F(Triggers, Session_StableFunctionCalledByTheBodyChangingASettingChangesTheKey) {
  // STABLE functions cannot write, but may still call set_config(): the write that fires
  // the trigger does not flush, and the session's settings are read again after it.
  exec(
      "CREATE FUNCTION to_escape() RETURNS int STABLE LANGUAGE plpgsql AS "
      "$$BEGIN PERFORM set_config('bytea_output', 'escape', false); RETURN 1; END$$");
  function("esc", "x := to_escape(); RETURN NEW;", "DECLARE x int;");
  exec("CREATE TRIGGER trz AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION esc()");
  exec("SET bytea_output = 'hex'");
  cache_it("SELECT v FROM other WHERE id = 1");
  const std::string q = "SELECT 'A'::bytea";
  cache_it(q);
  std::uint64_t f = flushes();
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  EXPECT_EQ(flushes(), f);
  EXPECT_EQ(read(q).v(), "A");
  read(q);
  exec("SET bytea_output = 'hex'");
  EXPECT_EQ(read(q).v(), "\\x41");
  expect_hit("SELECT v FROM other WHERE id = 1");  // the key has bytea_output: back to hex
}

// ---- triggers created later -----------------------------------------------------------

TEST_F(Triggers, Ddl_TriggerCreatedThroughAnotherQcacheConnectionIsSeen) {
  cache_it("SELECT count(*) FROM audit");
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");  // plans the insert without a
                                                                  // trigger
  expect_hit("SELECT count(*) FROM audit");
  qcache::pqxx::connection& other = another();
  exec_on(other,
          "CREATE FUNCTION log_t() RETURNS trigger LANGUAGE plpgsql AS "
          "$$BEGIN INSERT INTO audit(note) VALUES (NEW.v); RETURN NEW; END$$;");
  exec_on(other, "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION log_t()");
  cache_it("SELECT count(*) FROM audit");
  exec("INSERT INTO t (id, k, v, c) VALUES (7, 'c', 'seven', 7)");
  expect_fresh("SELECT count(*) FROM audit");
  EXPECT_EQ(read("SELECT count(*) FROM audit").v(), "1");
  // Replacing the function's body through qcache is seen too.
  exec_on(other,
          "CREATE OR REPLACE FUNCTION log_t() RETURNS trigger LANGUAGE plpgsql AS "
          "$$BEGIN UPDATE other SET v = NEW.v WHERE id = 1; RETURN NEW; END$$;");
  cache_it("SELECT v FROM other WHERE id = 1");
  exec("INSERT INTO t (id, k, v, c) VALUES (8, 'c', 'eight', 8)");
  expect_fresh("SELECT v FROM other WHERE id = 1");
  EXPECT_EQ(read("SELECT v FROM other WHERE id = 1").v(), "eight");
}

TEST_F(Triggers, Ddl_TriggerCreatedOutsideQcacheIsSeenAfterDdlThroughQcache) {
  // README: DDL made outside qcache is not seen until a DDL statement runs through qcache.
  direct(
      "CREATE FUNCTION log_t() RETURNS trigger LANGUAGE plpgsql AS "
      "$$BEGIN INSERT INTO audit(note) VALUES (NEW.v); RETURN NEW; END$$;"
      "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION log_t()");
  exec("CREATE TABLE unrelated (x int)");
  cache_it("SELECT count(*) FROM audit");
  exec("INSERT INTO t (id, k, v, c) VALUES (6, 'c', 'six', 6)");
  expect_fresh("SELECT count(*) FROM audit");
  EXPECT_EQ(read("SELECT count(*) FROM audit").v(), "1");
}

}  // namespace
