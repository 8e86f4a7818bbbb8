// The PL/pgSQL trigger function reader (src/pg/plpgsql.h), as a table: body in; tables
// written, NEW columns assigned, whether NEW may be replaced, and whether the body is
// unknown (the caller then flushes) out. No database needed.
#include "pg/plpgsql.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

// LeakSanitizer: tests/lsan.supp (set by scripts/test) suppresses libpg_query's own leak.

namespace {

using qcache::pg::read_trigger_function_uncached;
using qcache::pg::trigger_function;
using qcache::pg::write_op;

struct row {
  const char* body;                 // between the function's dollar quotes
  bool unknown;                     // the reader gives up: the caller flushes
  std::vector<std::string> writes{};  // "schema.table:op" or "table:op" (op i/u/d/m/t)
  std::vector<std::string> new_columns{};
  bool replaces_new = false;
  bool changes_session = false;
};

char op_letter(write_op op) {
  switch (op) {
    case write_op::insert:
      return 'i';
    case write_op::update:
      return 'u';
    case write_op::del:
      return 'd';
    case write_op::merge:
      return 'm';
    case write_op::truncate:
      return 't';
    default:
      return '?';
  }
}

std::vector<std::string> writes_of(const trigger_function& f) {
  std::vector<std::string> out;
  for (const auto& w : f.writes)
    out.push_back((w.table.schema.empty() ? "" : w.table.schema + ".") + w.table.name + ":" +
                  op_letter(w.op));
  return out;
}

const row kRows[] = {
    // What static statements write.
    {"BEGIN INSERT INTO audit(note) VALUES (NEW.v); RETURN NEW; END", false, {"audit:i"}},
    {"BEGIN UPDATE s.other SET a = 1 WHERE id = NEW.id; DELETE FROM zz; RETURN NULL; END",
     false,
     {"s.other:u", "zz:d"}},
    {"BEGIN IF NEW.x > 1 THEN TRUNCATE log; ELSE NULL; END IF; RETURN NEW; END", false, {"log:t"}},
    {"BEGIN WITH d AS (DELETE FROM q RETURNING *) INSERT INTO done SELECT * FROM d;"
     " RETURN NEW; END",
     false,
     {"q:d", "done:i"}},
    {"DECLARE n int; r record; BEGIN SELECT count(*) INTO n FROM t; FOR r IN SELECT * FROM t LOOP"
     " INSERT INTO a VALUES (r.id); END LOOP; RETURN NEW; END",
     false,
     {"a:i"}},
    {"BEGIN BEGIN INSERT INTO a VALUES (1); EXCEPTION WHEN others THEN"
     " INSERT INTO b VALUES (1); END; RETURN NEW; END",
     false,
     {"a:i", "b:i"}},
    {"BEGIN PERFORM pg_notify('c', 'x'); NOTIFY c; RETURN NEW; END", false, {}},
    // NEW: columns, the whole row, what is returned.
    {"BEGIN NEW.c := upper(NEW.v); NEW.\"Mixed\" = 5; NEW.D := 1; RETURN NEW; END",
     false,
     {},
     {"Mixed", "c", "d"}},
    {"DECLARE n ALIAS FOR NEW; BEGIN n.z := 3; RETURN n; END", false, {}, {"z"}, true},
    {"BEGIN NEW := ROW(1, 2); RETURN NEW; END", false, {}, {}, true},
    {"BEGIN SELECT 1, 2 INTO NEW; RETURN NEW; END", false, {}, {}, true},
    {"BEGIN FOR NEW IN SELECT * FROM t LOOP END LOOP; RETURN NEW; END", false, {}, {}, true},
    {"DECLARE r record; BEGIN r := NEW; RETURN r; END", false, {}, {}, true},
    {"BEGIN UPDATE t SET a = 1 RETURNING a INTO NEW.a; RETURN NEW; END", false, {"t:u"}, {"a"}},
    {"DECLARE x int; BEGIN x := 1; OLD.c := 2; RETURN OLD; END", false},
    {"BEGIN IF TG_OP = 'DELETE' THEN RETURN OLD; END IF; RETURN NULL; END", false},
    // What cannot be read.
    {"BEGIN EXECUTE 'DELETE FROM t'; RETURN NEW; END", true},
    {"DECLARE r record; BEGIN FOR r IN EXECUTE 'SELECT 1' LOOP END LOOP; RETURN NEW; END", true},
    {"BEGIN CALL p(); RETURN NEW; END", true},
    {"BEGIN CREATE TEMP TABLE x (a int); RETURN NEW; END", true},
    {"BEGIN SET search_path = other; INSERT INTO audit VALUES (1); RETURN NEW; END",
     true,
     {},
     {},
     false,
     true},
    {"BEGIN PERFORM set_config('search_path', 'x', true); RETURN NEW; END",
     true,
     {},
     {},
     false,
     true},
    {"BEGIN NEW.a[1] := 3; RETURN NEW; END", true},
    {"DECLARE c CURSOR FOR SELECT 1; BEGIN OPEN c; RETURN NEW; END", true},
    {"BEGIN RETURN NEW; END garbage", true},
    {"BEGIN INSERT INTO ; RETURN NEW; END", true},
};

TEST(PlpgsqlReader, Table) {
  for (const row& r : kRows) {
    SCOPED_TRACE(r.body);
    trigger_function f = read_trigger_function_uncached(r.body);
    EXPECT_EQ(!f.unknown.empty(), r.unknown) << f.unknown;
    if (r.unknown) {
      EXPECT_EQ(f.changes_session, r.changes_session);
      continue;
    }
    EXPECT_EQ(writes_of(f), r.writes);
    EXPECT_EQ(f.new_columns, r.new_columns);
    EXPECT_EQ(f.replaces_new, r.replaces_new);
    EXPECT_EQ(f.changes_session, r.changes_session);
  }
}

TEST(PlpgsqlReader, CallsInEveryKindOfExpressionAreListed) {
  trigger_function f = read_trigger_function_uncached(
      "DECLARE x int := d1(); BEGIN x := a1(); IF c1() THEN PERFORM p1(); END IF;"
      " WHILE w1() LOOP EXIT; END LOOP; RAISE NOTICE '%', r1(); ASSERT s1();"
      " INSERT INTO t VALUES (i1()); RETURN NEW; END");
  EXPECT_EQ(f.unknown, "");
  std::vector<std::string> names;
  for (const auto& q : f.functions) names.push_back(q.name);
  for (const char* want : {"d1", "a1", "c1", "p1", "w1", "r1", "s1", "i1"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
}

TEST(PlpgsqlReader, BodiesWithQuotesAndBackslashesAreReadAsWritten) {
  trigger_function f = read_trigger_function_uncached(
      "BEGIN INSERT INTO \"Audit\"(note) VALUES ('it''s \\ here'); RETURN NEW; END");
  EXPECT_EQ(f.unknown, "");
  ASSERT_EQ(f.writes.size(), 1u);
  EXPECT_EQ(f.writes[0].table.name, "Audit");
}

}  // namespace
