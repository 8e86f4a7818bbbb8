// The PostgreSQL planner as a table, with no database (issue 10 item 6): catalog rows in,
// verdict and tags out.
//
// A fake server answers every bookkeeping query pg::session sends (catalog, session
// context, a write's pre-image) from the tables below, rows as text as PostgreSQL 15 prints
// them; a query it cannot answer fails the test and is printed, so the fake stays honest
// about what the engine asks. Each row of `cases` is one statement:
//  * a read: cacheable or the uncacheable reason the cache counts, then the tags whose
//    invalidation makes its stored result stale (`moved`) and tags that must not (`kept`),
//    each probed on a fresh cache (store, invalidate that one tag, look it up again);
//  * a write ("write", or "flush" when it flushes): after the columns in `registered` were
//    used by predicate reads, which tags the write moves and which it keeps, each probed
//    with a snapshot captured before it ran.
// Tag specs: "table:t", "epoch:t", "col:t.c", "pred:t.c=v" on the fake database.
#include <gtest/gtest.h>
#include <qcache/cache.h>
#include <qcache/key.h>
#include <qcache/tags.h>

#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "pg/catalog.h"
#include "pg/engine.h"

namespace qcache::pg {
namespace {

// ---- The fake server -----------------------------------------------------------------

// Relations of schema public (2200): t(id int PRIMARY KEY, v text, k text), u(id int, n int),
// the view tv = SELECT id, v FROM t WHERE k = 'a'.
const std::map<std::string, std::string> oids = {{"t", "16611"}, {"tv", "16618"}, {"u", "16620"}};

// pg_rewrite.ev_action of tv, recorded from PostgreSQL 15.
const char* const tv_rule =
    "({QUERY :commandType 1 :querySource 0 :canSetTag true :utilityStmt <> :resultRelation 0 "
    ":hasAggs false :hasWindowFuncs false :hasTargetSRFs false :hasSubLinks false :hasDistinc"
    "tOn false :hasRecursive false :hasModifyingCTE false :hasForUpdate false :hasRowSecurity"
    " false :isReturn false :cteList <> :rtable ({RANGETBLENTRY :alias {ALIAS :aliasname old "
    ":colnames <>} :eref {ALIAS :aliasname old :colnames (\"id\" \"v\")} :rtekind 0 :relid 16618 "
    ":relkind v :rellockmode 1 :tablesample <> :lateral false :inh false :inFromCl false :req"
    "uiredPerms 0 :checkAsUser 0 :selectedCols (b) :insertedCols (b) :updatedCols (b) :extraU"
    "pdatedCols (b) :securityQuals <>} {RANGETBLENTRY :alias {ALIAS :aliasname new :colnames "
    "<>} :eref {ALIAS :aliasname new :colnames (\"id\" \"v\")} :rtekind 0 :relid 16618 :relkind v"
    " :rellockmode 1 :tablesample <> :lateral false :inh false :inFromCl false :requiredPerms"
    " 0 :checkAsUser 0 :selectedCols (b) :insertedCols (b) :updatedCols (b) :extraUpdatedCols"
    " (b) :securityQuals <>} {RANGETBLENTRY :alias <> :eref {ALIAS :aliasname t :colnames (\"i"
    "d\" \"v\" \"k\")} :rtekind 0 :relid 16611 :relkind r :rellockmode 1 :tablesample <> :lateral "
    "false :inh true :inFromCl true :requiredPerms 2 :checkAsUser 0 :selectedCols (b 8 9 10) "
    ":insertedCols (b) :updatedCols (b) :extraUpdatedCols (b) :securityQuals <>}) :jointree {"
    "FROMEXPR :fromlist ({RANGETBLREF :rtindex 3}) :quals {OPEXPR :opno 98 :opfuncid 67 :opre"
    "sulttype 16 :opretset false :opcollid 0 :inputcollid 100 :args ({VAR :varno 3 :varattno "
    "3 :vartype 25 :vartypmod -1 :varcollid 100 :varlevelsup 0 :varnosyn 3 :varattnosyn 3 :lo"
    "cation 147} {CONST :consttype 25 :consttypmod -1 :constcollid 100 :constlen -1 :constbyv"
    "al false :constisnull false :location 151 :constvalue 5 [ 20 0 0 0 97 ]}) :location 149}"
    "} :targetList ({TARGETENTRY :expr {VAR :varno 3 :varattno 1 :vartype 23 :vartypmod -1 :v"
    "arcollid 0 :varlevelsup 0 :varnosyn 3 :varattnosyn 1 :location 119} :resno 1 :resname id"
    " :ressortgroupref 0 :resorigtbl 16623 :resorigcol 1 :resjunk false} {TARGETENTRY :expr {"
    "VAR :varno 3 :varattno 2 :vartype 25 :vartypmod -1 :varcollid 100 :varlevelsup 0 :varnos"
    "yn 3 :varattnosyn 2 :location 123} :resno 2 :resname v :ressortgroupref 0 :resorigtbl 16"
    "623 :resorigcol 2 :resjunk false}) :override 0 :onConflict <> :returningList <> :groupCl"
    "ause <> :groupDistinct false :groupingSets <> :havingQual <> :windowClause <> :distinctC"
    "lause <> :sortClause <> :limitOffset <> :limitCount <> :limitOption 0 :rowMarks <> :setO"
    "perations <> :constraintDeps <> :withCheckOptions <> :mergeActionList <> :mergeUseOuterJ"
    "oin false :stmt_location 84 :stmt_len 70})";

row r(std::initializer_list<const char*> values) {
  row out;
  for (const char* v : values) {
    if (v)
      out.emplace_back(v);
    else
      out.emplace_back(std::nullopt);
  }
  return out;
}

// Each catalog query (catalog.cc), recognised by how it starts, and its rows.
struct fake_table {
  const char* starts;
  std::vector<row> rows;
};

std::vector<fake_table> catalog_tables(const std::string& port) {
  return {
      {"SELECT oid, nspname FROM pg_catalog.pg_namespace",
       {r({"11", "pg_catalog"}), r({"2200", "public"})}},
      {"SELECT c.oid, c.relnamespace, c.relname, c.relkind",
       {r({"16611", "2200", "t", "r", "p", "f", "f", "f"}),
        r({"16618", "2200", "tv", "v", "p", "f", "f", "f"}),
        r({"16620", "2200", "u", "r", "p", "f", "f", "f"})}},
      {"SELECT a.attrelid, a.attname,",
       {r({"16611", "id", "i", "t"}), r({"16611", "v", "t", "f"}), r({"16611", "k", "t", "f"}),
        r({"16618", "id", "i", "f"}), r({"16618", "v", "t", "f"}), r({"16620", "id", "i", "f"}),
        r({"16620", "n", "i", "f"})}},
      {"SELECT p.oid, p.pronamespace, p.proname, p.provolatile FROM pg_catalog.pg_proc p",
       {r({"2803", "11", "count", "i"}), r({"1598", "11", "random", "v"}),
        r({"1299", "11", "now", "s"}), r({"870", "11", "lower", "i"}),
        r({"67", "11", "texteq", "i"}),       // tv's WHERE k = 'a' (its rule's :opfuncid)
        r({"16630", "2200", "bump", "v"})}},  // a user function, VOLATILE
      {"\nSELECT 'a', a.aggfnoid", {}},
      {"SELECT o.oprnamespace, o.oprname, o.oprcode", {}},
      {"SELECT t.oid, t.typnamespace, t.typname, t.typrelid", {}},
      {"SELECT p.oid FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_type t", {}},
      {"SELECT DISTINCT 'o', 0::pg_catalog.oid, oprname",
       {r({"o", "0", "="}), r({"o", "0", "<"}), r({"o", "0", ">"}), r({"t", "11", "int4"}),
        r({"t", "11", "int8"}), r({"t", "11", "text"}), r({"t", "11", "bool"})}},
      {"SELECT r.ev_class, r.ev_action", {r({"16618", tv_rule})}},
      {"SELECT 'f', c.conrelid", {}},
      {"SELECT t.tgrelid, t.tgname", {}},
      // No pg_control_system() privilege: the identity is port, start time and database.
      {"SELECT pg_catalog.has_function_privilege",
       {r({"f", port.c_str(), "1764770000.25", "f", "5"})}},
  };
}

// current_database() ... in context_columns order, as PostgreSQL 15 returned them.
row context_row() {
  return r({"postgres",
            "postgres",
            "postgres",
            "{pg_catalog,public}",
            "\"$user\", public",
            "Etc/UTC",
            "ISO, MDY",
            "postgres",
            "1",
            "hex",
            "UTF8",
            "on",
            "C",
            "C",
            "C",
            "pg_catalog.english",
            "base64",
            "content",
            "off",
            "on",
            "on",
            "read committed",
            "read committed",
            "off",
            "Default",
            "off",
            "0",
            "off",
            nullptr,
            nullptr,
            nullptr});
}

class fake_server {
 public:
  explicit fake_server(std::string port) : port_(std::move(port)), tables_(catalog_tables(port_)) {}

  // The answer to a write's pre-image query (SELECT DISTINCT cols FROM t WHERE ...).
  std::vector<row> preimage;
  std::vector<std::string> sent;  // every query, in order

  run_fn runner() {
    return [this](const std::string& q) { return answer(q); };
  }
  // The fake database's tag for a spec ("table:t", "epoch:t", "col:t.c", "pred:t.c=v").
  tags::tag tag(const std::string& spec) const {
    const std::string space = "pg:sysid=;port=" + port_ + ";db=5";
    auto colon = spec.find(':');
    std::string what = spec.substr(0, colon), rest = spec.substr(colon + 1);
    auto dot = rest.find('.'), eq = rest.find('=');
    const std::string& oid = oids.at(rest.substr(0, dot));
    if (what == "table") return tags::table(space, oid);
    if (what == "epoch") return tags::table_epoch(space, oid);
    std::string col = rest.substr(dot + 1, eq == std::string::npos ? eq : eq - dot - 1);
    if (what == "col") return tags::column_epoch(space, oid, col);
    if (what == "pred") return tags::predicate(space, oid, col, rest.substr(eq + 1));
    throw std::invalid_argument("bad tag spec " + spec);
  }

 private:
  std::vector<row> answer(const std::string& q) {
    sent.push_back(q);
    if (q == session_context::context_query()) return {context_row()};
    for (const fake_table& t : tables_)
      if (q.rfind(t.starts, 0) == 0) return t.rows;
    if (q.rfind("SELECT DISTINCT ", 0) == 0) return preimage;
    ADD_FAILURE() << "the fake server cannot answer:\n" << q;
    throw std::runtime_error("fake server: unknown query");
  }

  std::string port_;
  std::vector<fake_table> tables_;
};

// ---- Driving the engine --------------------------------------------------------------

struct value final : cached_value {
  std::size_t bytes() const noexcept override { return 64; }
};

std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// Parameters as libpqxx sends them: integers typed as such, anything else as text.
struct params {
  explicit params(const std::string& list) : texts(words(list)) {
    for (const std::string& t : texts)
      out.push_back({t.find_first_not_of("-0123456789") == std::string::npos ? param_type::integer
                                                                             : param_type::text,
                     t});
  }
  std::vector<std::string> texts;
  std::vector<param> out;
};

struct planner_case {
  const char* sql;
  const char* params;      // space-separated
  const char* verdict;     // "cacheable", an uncacheable_reason name, "write" or "flush"
  const char* moved;       // tag specs
  const char* kept;        // tag specs
  const char* registered;  // writes: "t.c ..." used by predicate reads first
  const char* preimage;    // writes: the pre-image query's rows (one column)
};

// clang-format off
const planner_case cases[] = {
  // sql                                      params   verdict              moved                                   kept                               registered  preimage
  {"SELECT v FROM t WHERE id = $1",           "1",     "cacheable",         "pred:t.id=1 epoch:t col:t.id",         "pred:t.id=2 table:t table:u",     "",         ""},
  {"SELECT v FROM t WHERE id > $1",           "1",     "cacheable",         "table:t",                              "pred:t.id=2 table:u",             "",         ""},
  {"SELECT count(*) FROM t",                  "",      "cacheable",         "table:t",                              "table:u",                         "",         ""},
  {"SELECT v FROM tv WHERE id = $1",          "1",     "cacheable",         "table:t",                              "table:u",                         "",         ""},
  {"SELECT v FROM t WHERE random() < 0.5",    "",      "volatile_function", "",                                     "",                                "",         ""},
  {"SELECT now(), v FROM t",                  "",      "stable_function",   "",                                     "",                                "",         ""},
  {"SELECT bump(id) FROM t",                  "",      "flush",             "table:u",                              "",                                "",         ""},
  {"UPDATE t SET v = $1 WHERE id = $2",       "x 1",   "write",             "table:t pred:t.id=1 pred:t.k=a",       "pred:t.id=2 pred:t.k=b table:u",  "t.id t.k", "a"},
  {"UPDATE t SET v = $1 WHERE k = $2",        "x a",   "write",             "table:t pred:t.id=1 pred:t.id=3",      "pred:t.id=2 table:u epoch:t",     "t.id",     "1 3"},
  {"INSERT INTO t (id, v, k) VALUES ($1, $2, $3)", "6 x b", "write",        "table:t pred:t.id=6 pred:t.k=b",       "pred:t.id=1 pred:t.k=a table:u col:t.id", "t.id t.k", ""},
  // Without a column list the rows are not named: the table's epoch moves.
  {"INSERT INTO t VALUES ($1, $2, $3)",       "6 x b", "write",             "table:t epoch:t",                      "table:u col:t.id pred:t.id=1",    "t.id t.k", ""},
  {"DELETE FROM u",                           "",      "write",             "table:u",                              "table:t",                         "",         ""},
  {"DROP TABLE u",                            "",      "flush",             "table:t",                              "",                                "",         ""},
  {"SELECT v FROM t WHERE id = $1 FOR UPDATE", "1",     "locking",           "",                                     "",                                "",         ""},
  {"SELECT v FROM u WHERE n = $1",            "5",     "cacheable",         "pred:u.n=5 epoch:u col:u.n",           "pred:u.n=6 table:u table:t",      "",         ""},
  {"SELECT v FROM t WHERE id = $1",           "01",    "cacheable",         "pred:t.id=1",                          "pred:t.id=01 pred:t.id=2",        "",         ""},
  {"DELETE FROM t WHERE id = $1",             "2",     "write",             "table:t pred:t.id=2 pred:t.k=b",       "pred:t.id=1 pred:t.k=a epoch:t",  "t.id t.k", "b"},
  {"UPDATE t SET id = $1 WHERE id = $2",      "7 1",   "write",             "table:t pred:t.id=7 pred:t.id=1",      "pred:t.id=2 epoch:t",             "t.id",     ""},
  // No WHERE to read old values through: the registered column's epoch moves.
  {"UPDATE t SET v = lower(v)",               "",      "write",             "table:t col:t.k",                      "table:u pred:t.id=1",             "t.k",      ""},
};
// clang-format on

// Each row gets a database of its own (its own port in the identity): no predicate column
// registered by one row reaches another.
std::string port_of(std::size_t row) { return std::to_string(20000 + row); }

std::uint64_t flushes(const cache& c) {
  stats s = c.stats();
  return s.invalidations_by_cause[static_cast<int>(invalidation_cause::flush)] +
         s.invalidations_by_cause[static_cast<int>(invalidation_cause::ddl)];
}

// A cache that follows no change stream: there is no server to stream from, and the
// planner's decisions are the same either way.
options no_stream() {
  options o;
  o.follow_changes = false;
  return o;
}

// Runs `sql` to completion as a statement that succeeded; true when it was served.
bool run(session& s, fake_server& f, const std::string& sql, const std::string& list,
         std::shared_ptr<const cached_value> v = nullptr) {
  params ps(list);
  call c = s.begin(sql, ps.out, 'p', f.runner());
  bool hit = c.hit != nullptr;
  if (!hit) s.succeeded(c, c.store ? std::move(v) : nullptr);
  return hit;
}

// The verdict the cache counted for one run of the case on a fresh cache.
std::string verdict(const planner_case& k, fake_server& f) {
  auto ch = std::make_shared<cache>(no_stream());
  session s(ch);
  stats before = ch->stats();
  std::uint64_t flushed = flushes(*ch);
  params ps(k.params);
  call c = s.begin(k.sql, ps.out, 'p', f.runner());
  bool store = c.store;
  s.succeeded(c, store ? std::make_shared<value>() : nullptr);
  if (store) return "cacheable";
  if (flushes(*ch) > flushed) return "flush";
  stats after = ch->stats();
  for (int i = 0; i < static_cast<int>(uncacheable_reason::count_); ++i) {
    if (after.uncacheable_by_reason[i] == before.uncacheable_by_reason[i]) continue;
    return to_string(static_cast<uncacheable_reason>(i));
  }
  return "write";  // not a read (writes count no reason), and no flush
}

// A read: whether invalidating `spec` alone makes its stored result stale.
bool read_invalidated_by(const planner_case& k, fake_server& f, const std::string& spec) {
  auto ch = std::make_shared<cache>(no_stream());
  session s(ch);
  run(s, f, k.sql, k.params, std::make_shared<value>());
  EXPECT_TRUE(run(s, f, k.sql, k.params)) << "not stored: " << k.sql;
  const tags::tag t = f.tag(spec);
  ch->invalidate(std::span<const tags::tag>(&t, 1));
  return !run(s, f, k.sql, k.params);
}

// A write: which of `specs` it moved, after the `registered` columns were read through.
std::vector<bool> write_moves(const planner_case& k, fake_server& f,
                              const std::vector<std::string>& specs) {
  auto ch = std::make_shared<cache>(no_stream());
  session s(ch);
  for (const std::string& tc : words(k.registered)) {
    auto dot = tc.find('.');
    run(s, f, "SELECT 1 FROM " + tc.substr(0, dot) + " WHERE " + tc.substr(dot + 1) + " = $1", "0",
        std::make_shared<value>());
  }
  f.preimage.clear();
  for (const std::string& v : words(k.preimage)) f.preimage.push_back(r({v.c_str()}));
  std::vector<qcache::snapshot> snaps;
  for (const std::string& spec : specs) snaps.push_back(ch->capture({{f.tag(spec)}, {}, {}}));
  run(s, f, k.sql, k.params);
  std::vector<bool> moved;
  key_builder kb;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    kb.start(0, 'x', "probe " + specs[i]);
    moved.push_back(!ch->store(kb.finish(), snaps[i], std::make_shared<value>()));
  }
  return moved;
}

std::string sent_log(const fake_server& f) {
  std::string out = "queries the engine sent:";
  for (const std::string& q : f.sent) out += "\n  " + q.substr(0, 100);
  return out;
}

TEST(PlannerTable, EveryRow) {
  for (std::size_t i = 0; i < std::size(cases); ++i) {
    const planner_case& k = cases[i];
    SCOPED_TRACE("row " + std::to_string(i) + ": " + k.sql);
    fake_server f(port_of(i));
    const std::string v = verdict(k, f);
    EXPECT_EQ(v, k.verdict) << sent_log(f);
    const bool write = std::string(k.verdict) == "write" || std::string(k.verdict) == "flush";
    std::vector<std::string> moved = words(k.moved), kept = words(k.kept);
    if (!write) {
      for (const std::string& spec : moved)
        EXPECT_TRUE(read_invalidated_by(k, f, spec)) << "stays cached after " << spec;
      for (const std::string& spec : kept)
        EXPECT_FALSE(read_invalidated_by(k, f, spec)) << "invalidated by " << spec;
      continue;
    }
    std::vector<std::string> all = moved;
    all.insert(all.end(), kept.begin(), kept.end());
    std::vector<bool> m = write_moves(k, f, all);
    for (std::size_t j = 0; j < all.size(); ++j)
      EXPECT_EQ(m[j], j < moved.size()) << all[j] << (m[j] ? " moved" : " kept");
  }
}

}  // namespace
}  // namespace qcache::pg
