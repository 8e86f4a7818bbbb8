// Catalog loading. Invariants:
//  * A snapshot is fully built before it is published and never changes afterwards.
//  * Every oid in base_tables / cascade_targets / referencing / family is a loaded
//    relation's oid; those lists are sorted and free of duplicates, and (except
//    base_tables of a table-like relation) never contain the relation itself.
//  * `catalog::current_` always holds a snapshot; refreshes are serialised by
//    refresh_mu_, so generations increase by exactly one per refresh; generation_ is
//    stored after current_, so a reader that sees generation g gets a snapshot >= g.
//
// All SQL qualifies catalog tables, functions and types with pg_catalog, so a
// session's search_path cannot redirect them (operators are not qualified: run the
// catalog queries on a connection whose search_path does not shadow pg_catalog's).
#include "pg/catalog.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <stdexcept>
#include <unordered_set>

namespace qcache::pg {

namespace {

// --- result access ----------------------------------------------------------------

[[noreturn]] void bad_shape(const std::string& what) {
  throw std::runtime_error("qcache catalog: unexpected result from PostgreSQL: " + what);
}

const std::string& text_at(const row& r, std::size_t i, const char* what) {
  if (i >= r.size() || !r[i]) bad_shape(std::string(what) + " is missing or NULL");
  return *r[i];
}

std::uint64_t u64_at(const row& r, std::size_t i, const char* what) {
  const std::string& s = text_at(r, i, what);
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) bad_shape(std::string(what) + " = " + s);
  return v;
}

std::uint32_t oid_at(const row& r, std::size_t i, const char* what) {
  std::uint64_t v = u64_at(r, i, what);
  if (v > UINT32_MAX) bad_shape(std::string(what) + " out of range");
  return static_cast<std::uint32_t>(v);
}

bool bool_at(const row& r, std::size_t i, const char* what) {
  const std::string& s = text_at(r, i, what);
  if (s == "t" || s == "true") return true;
  if (s == "f" || s == "false") return false;
  bad_shape(std::string(what) + " = " + s);
}

char char_at(const row& r, std::size_t i, const char* what) {
  const std::string& s = text_at(r, i, what);
  if (s.size() != 1) bad_shape(std::string(what) + " = " + s);
  return s[0];
}

bool is_system_schema(std::string_view nsp) {
  return nsp == "pg_catalog" || nsp == "information_schema" || nsp.substr(0, 8) == "pg_toast";
}

bool is_temp_schema(std::string_view nsp) { return nsp.substr(0, 8) == "pg_temp_"; }

// Volatility order: 'i' < 's' < 'v' (conveniently also the byte order).
char more_volatile(char a, char b) { return std::max(a, b); }

// --- queries ----------------------------------------------------------------------

constexpr const char* user_schema_filter =
    "n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND pg_catalog.left(n.nspname, 8) <> 'pg_toast'";

const std::string q_namespaces = "SELECT oid, nspname FROM pg_catalog.pg_namespace";

const std::string q_relations =
    "SELECT c.oid, c.relnamespace, c.relname, c.relkind, c.relpersistence, c.relrowsecurity,"
    " c.relhastriggers AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t"
    "   WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND t.tgenabled <> 'D'),"
    " c.relhasrules AND EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r"
    "   WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN' AND r.ev_enabled <> 'D')"
    " FROM pg_catalog.pg_class c WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c')";

// 20/21/23 = int8/int2/int4, 25 = text, 1043 = varchar (fixed OIDs). Domains are 'o', and
// so are generated columns (their value follows other columns, which writes name instead).
// 'v' is varchar(n): compared as 't', but a written value may be stored trimmed (load_snapshot).
const std::string q_columns =
    std::string(
        "SELECT a.attrelid, a.attname,"
        " CASE WHEN a.attgenerated <> '' THEN 'o'"
        "      WHEN a.atttypid IN (20, 21, 23) THEN 'i'"
        "      WHEN a.atttypid = 1043 AND a.atttypmod >= 0 AND co.collisdeterministic THEN 'v'"
        "      WHEN a.atttypid IN (25, 1043) AND co.collisdeterministic THEN 't' ELSE 'o' END,"
        // The column alone is a key: a valid, non-partial unique index on just it.
        " EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = a.attrelid"
        "   AND i.indisunique AND i.indisvalid AND i.indnkeyatts = 1 AND i.indkey[0] = a.attnum"
        "   AND i.indpred IS NULL AND i.indexprs IS NULL)"
        " FROM pg_catalog.pg_attribute a"
        " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation"
        " WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')"
        " AND ") +
    user_schema_filter;

const std::string q_views =
    std::string(
        "SELECT r.ev_class, r.ev_action::pg_catalog.text FROM pg_catalog.pg_rewrite r"
        " JOIN pg_catalog.pg_class c ON c.oid = r.ev_class"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE r.rulename = '_RETURN' AND c.relkind = 'v' AND ") +
    user_schema_filter;

const std::string q_procs =
    "SELECT p.oid, p.pronamespace, p.proname, p.provolatile FROM pg_catalog.pg_proc p";

// Routes to user code, as (kind, owner, target) oid pairs:
//  'a' aggregate -> its support functions (transition, final, combine, (de)serial, moving)
//  'w' relation -> a function its defaults/generated columns, CHECK/EXCLUDE constraints,
//      index expressions/predicates or user operator classes run on writes
//  'p' relation -> a function a row-security policy runs (reads and writes); a function
//      of a user operator class of its partition key (routing rows, pruning partitions)
//  'r' user type -> a function reading a value runs: I/O functions, support functions of
//      its user operator classes (ORDER BY, DISTINCT, joins); for a range or multirange
//      type, its subtype operator class's functions and operators (every comparison of
//      two ranges calls them), its canonical and subtype_diff functions
//  't' user type -> a function writing or casting a value runs: domain CHECKs, user casts
//      to or from it
//  'b' user type -> a type whose code it runs too (domain base, array element)
//  'c' relation -> the user type of one of its columns (also a composite type's attribute)
//  'i' 0 -> the function of an implicit cast that is a user function
// Operators are resolved to oprcode. Everything a user creates has an OID >= 16384
// (FirstNormalObjectId); built-in objects are never routes (their functions are judged
// by name where statements call them), which keeps this query cheap (~1 ms).
const std::string q_code = R"(
SELECT 'a', a.aggfnoid::pg_catalog.oid, f.f FROM pg_catalog.pg_aggregate a,
 LATERAL (VALUES (a.aggtransfn::pg_catalog.oid), (a.aggfinalfn), (a.aggcombinefn),
  (a.aggserialfn), (a.aggdeserialfn), (a.aggmtransfn), (a.aggminvtransfn), (a.aggmfinalfn)) f(f)
 WHERE a.aggfnoid >= 16384 AND f.f <> 0
UNION ALL
SELECT CASE WHEN po.oid IS NOT NULL THEN 'p' WHEN co.contypid <> 0 THEN 't' ELSE 'w' END,
 COALESCE(ad.adrelid, NULLIF(co.conrelid, 0), co.contypid, ix.indrelid, po.polrelid),
 CASE WHEN d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass THEN d.refobjid
  ELSE op.oprcode::pg_catalog.oid END
 FROM pg_catalog.pg_depend d
 LEFT JOIN pg_catalog.pg_attrdef ad ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass
  AND ad.oid = d.objid
 LEFT JOIN pg_catalog.pg_constraint co
  ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND co.oid = d.objid
 LEFT JOIN pg_catalog.pg_index ix ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
  AND ix.indexrelid = d.objid
 LEFT JOIN pg_catalog.pg_policy po ON d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass
  AND po.oid = d.objid
 LEFT JOIN pg_catalog.pg_operator op
  ON d.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass AND op.oid = d.refobjid
 WHERE d.refobjid >= 16384 AND d.refclassid IN ('pg_catalog.pg_proc'::pg_catalog.regclass,
  'pg_catalog.pg_operator'::pg_catalog.regclass)
 AND COALESCE(ad.adrelid, NULLIF(co.conrelid, 0), co.contypid, ix.indrelid,
  po.polrelid) IS NOT NULL
UNION ALL
SELECT 'w', ix.indrelid, s.f FROM pg_catalog.pg_depend d
 JOIN pg_catalog.pg_index ix ON ix.indexrelid = d.objid
 JOIN pg_catalog.pg_opclass oc ON oc.oid = d.refobjid,
 LATERAL (SELECT ap.amproc::pg_catalog.oid FROM pg_catalog.pg_amproc ap
   WHERE ap.amprocfamily = oc.opcfamily
  UNION ALL SELECT o.oprcode::pg_catalog.oid FROM pg_catalog.pg_amop am
   JOIN pg_catalog.pg_operator o ON o.oid = am.amopopr WHERE am.amopfamily = oc.opcfamily) s(f)
 WHERE d.refobjid >= 16384 AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
 AND d.refclassid = 'pg_catalog.pg_opclass'::pg_catalog.regclass
UNION ALL
-- Binary I/O (typreceive/typsend) counts only when VOLATILE: the front ends read results as
-- text, and a STABLE receive function of a binary parameter is judged like the built-in
-- types' STABLE I/O (timestamptz_in), whose settings are in the key (citext's are STABLE).
SELECT 'r', t.oid, f.f FROM pg_catalog.pg_type t,
 LATERAL (VALUES (t.typinput::pg_catalog.oid, true), (t.typoutput, true), (t.typreceive, false),
  (t.typsend, false), (t.typmodin, true), (t.typmodout, true), (t.typanalyze, true),
  (t.typsubscript, true)) f(f, text_io)
 WHERE t.oid >= 16384 AND f.f >= 16384 AND (f.text_io OR EXISTS (SELECT FROM pg_catalog.pg_proc
  bp WHERE bp.oid = f.f AND bp.provolatile = 'v'))
UNION ALL
SELECT 't', x.t, c.castfunc FROM pg_catalog.pg_cast c,
 LATERAL (VALUES (c.castsource), (c.casttarget)) x(t) WHERE c.castfunc >= 16384
UNION ALL
SELECT 'i', 0, c.castfunc FROM pg_catalog.pg_cast c
 WHERE c.castcontext = 'i' AND c.castfunc >= 16384
UNION ALL
SELECT 'r', oc.opcintype, ap.amproc::pg_catalog.oid FROM pg_catalog.pg_opclass oc
 JOIN pg_catalog.pg_amproc ap ON ap.amprocfamily = oc.opcfamily
 WHERE oc.oid >= 16384 AND ap.amproc::pg_catalog.oid >= 16384
UNION ALL
SELECT 'r', x.t, s.f FROM pg_catalog.pg_range r
 JOIN pg_catalog.pg_opclass oc ON oc.oid = r.rngsubopc,
 LATERAL (VALUES (r.rngtypid), (r.rngmultitypid)) x(t),
 LATERAL (SELECT ap.amproc::pg_catalog.oid FROM pg_catalog.pg_amproc ap
   WHERE ap.amprocfamily = oc.opcfamily
  UNION ALL SELECT o.oprcode::pg_catalog.oid FROM pg_catalog.pg_amop am
   JOIN pg_catalog.pg_operator o ON o.oid = am.amopopr WHERE am.amopfamily = oc.opcfamily
  UNION ALL VALUES (r.rngcanonical::pg_catalog.oid), (r.rngsubdiff::pg_catalog.oid)) s(f)
 WHERE r.rngtypid >= 16384 AND s.f >= 16384
UNION ALL
SELECT 'p', pt.partrelid, s.f FROM pg_catalog.pg_partitioned_table pt,
 LATERAL pg_catalog.unnest(pt.partclass::pg_catalog.oid[]) pc(oc)
 JOIN pg_catalog.pg_opclass oc ON oc.oid = pc.oc,
 LATERAL (SELECT ap.amproc::pg_catalog.oid FROM pg_catalog.pg_amproc ap
   WHERE ap.amprocfamily = oc.opcfamily
  UNION ALL SELECT o.oprcode::pg_catalog.oid FROM pg_catalog.pg_amop am
   JOIN pg_catalog.pg_operator o ON o.oid = am.amopopr WHERE am.amopfamily = oc.opcfamily) s(f)
 WHERE oc.oid >= 16384 AND s.f >= 16384
UNION ALL
SELECT 'b', t.oid, x.b FROM pg_catalog.pg_type t,
 LATERAL (VALUES (t.typbasetype), (t.typelem)) x(b) WHERE t.oid >= 16384 AND x.b >= 16384
UNION ALL
SELECT 'c', a.attrelid, a.atttypid FROM pg_catalog.pg_attribute a
 WHERE a.atttypid >= 16384 AND a.attnum > 0 AND NOT a.attisdropped)";

// Operators that may run user code: the operator or its function is a user object.
const std::string q_operators =
    "SELECT o.oprnamespace, o.oprname, o.oprcode::pg_catalog.oid FROM pg_catalog.pg_operator o"
    " WHERE o.oid >= 16384 OR o.oprcode::pg_catalog.oid >= 16384"
    // A user operator also runs the support functions of its operator families: ORDER BY
    // ... USING sorts with the family's comparison function, not with oprcode.
    " UNION ALL SELECT o.oprnamespace, o.oprname, ap.amproc::pg_catalog.oid"
    " FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_amop am ON am.amopopr = o.oid"
    " JOIN pg_catalog.pg_amproc ap ON ap.amprocfamily = am.amopfamily"
    " WHERE o.oid >= 16384 AND ap.amproc::pg_catalog.oid >= 16384";

// User functions `x.f` may call (functional notation): one argument without a default,
// of a composite, pseudo (record, anyelement...) or domain type.
const std::string q_field_functions =
    "SELECT p.oid FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_type t ON t.oid = p.proargtypes[0]"
    " WHERE p.oid >= 16384 AND p.pronargs >= 1 AND p.pronargs - p.pronargdefaults <= 1"
    " AND t.typtype IN ('c', 'p', 'd')";

// Every operator name and every type name: a name outside these was created after the
// snapshot (by another session) and may reach anything, like an unknown function.
const std::string q_names =
    "SELECT DISTINCT 'o', 0::pg_catalog.oid, oprname FROM pg_catalog.pg_operator"
    " UNION ALL SELECT 't', typnamespace, typname FROM pg_catalog.pg_type";

// Types a cast may reach user code through, by name: user types, and built-in ones that
// a user cast converts from or to. typrelid links a composite type to its attributes.
const std::string q_types =
    "SELECT t.oid, t.typnamespace, t.typname, t.typrelid FROM pg_catalog.pg_type t"
    " WHERE t.oid >= 16384 OR t.oid IN (SELECT c.castsource FROM pg_catalog.pg_cast c"
    " WHERE c.castfunc >= 16384 UNION ALL SELECT c.casttarget FROM pg_catalog.pg_cast c"
    " WHERE c.castfunc >= 16384)";

// For FKs also the referenced columns' names (a text[] literal); NULL when one of them is
// a generated column (an UPDATE of any column may change it).
const std::string q_edges =
    "SELECT 'f', c.conrelid, c.confrelid, c.confupdtype, c.confdeltype,"
    " CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_attribute g WHERE g.attrelid = c.confrelid"
    " AND g.attnum = ANY (c.confkey) AND g.attgenerated <> '') THEN NULL"
    " ELSE ARRAY(SELECT a.attname::pg_catalog.text FROM pg_catalog.unnest(c.confkey) k(n)"
    " JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n)"
    "::pg_catalog.text END FROM pg_catalog.pg_constraint c WHERE c.contype = 'f'"
    " UNION ALL SELECT 'i', inhrelid, inhparent, NULL, NULL, NULL FROM pg_catalog.pg_inherits";

// Triggers that may fire (see catalog.h's `trigger`), with their function's source.
const std::string q_triggers =
    "SELECT t.tgrelid, t.tgname, t.tgtype, t.tgisinternal, n.nspname, p.proname, l.lanname,"
    " p.prosrc,"
    " COALESCE(pg_catalog.array_to_string(p.proconfig, ' ') LIKE '%search_path=%', false),"
    " t.tgqual::pg_catalog.text"
    " FROM pg_catalog.pg_trigger t"
    " JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid"
    " JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace"
    " JOIN pg_catalog.pg_language l ON l.oid = p.prolang"
    " WHERE t.tgenabled <> 'D'";

// Nothing here depends on the session's settings (the epoch is numeric text).
const std::string q_identity =
    "SELECT pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE'),"
    " pg_catalog.current_setting('port'),"
    " EXTRACT(epoch FROM pg_catalog.pg_postmaster_start_time())::pg_catalog.text,"
    " pg_catalog.pg_is_in_recovery(),"
    " (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())";

const std::string q_sysid =
    "SELECT system_identifier::pg_catalog.text FROM pg_catalog.pg_control_system()";

// --- view rule trees ----------------------------------------------------------------

struct rule_refs {
  std::vector<std::uint32_t> relids;
  std::vector<std::uint32_t> funcids;
  bool volatile_expr = false;  // CURRENT_TIMESTAMP & co, nextval via identity, TABLESAMPLE
};

// Scans a pg_node_tree text (nodeToString output) for relation and function OIDs.
// Field tokens look like " :relid 16390"; strings inside the tree have their
// whitespace backslash-escaped, so they cannot fake a field (at worst they would add a
// dependency, which is harmless).
rule_refs scan_rule(std::string_view t) {
  rule_refs out;
  for (std::size_t i = 0; i < t.size(); ++i) {
    char c = t[i];
    if (c == '{') {
      std::string_view rest = t.substr(i + 1);
      if (rest.starts_with("NEXTVALUEEXPR") || rest.starts_with("TABLESAMPLECLAUSE")) {
        out.volatile_expr = true;
      } else if (rest.starts_with("SQLVALUEFUNCTION :op ")) {
        // SVFOP_CURRENT_DATE (0) .. SVFOP_LOCALTIMESTAMP_N (8) read the clock;
        // 9..14 (CURRENT_ROLE/USER, SESSION_USER, CURRENT_CATALOG/SCHEMA) are in the key.
        std::string_view num = rest.substr(21);
        int op = -1;
        std::from_chars(num.data(), num.data() + num.size(), op);
        if (op < 9 || op > 14) out.volatile_expr = true;
      }
      continue;
    }
    if (c != ':' || i == 0 || t[i - 1] != ' ') continue;
    std::size_t j = i + 1;
    while (j < t.size() && (std::islower(static_cast<unsigned char>(t[j])) || t[j] == '_')) ++j;
    std::string_view field = t.substr(i + 1, j - i - 1);
    if (j + 1 >= t.size() || t[j] != ' ') continue;
    bool rel = field == "relid";
    bool fn = field.ends_with("funcid") || field == "aggfnoid" || field == "winfnoid";
    if (!rel && !fn) continue;
    std::uint32_t v = 0;
    auto [p, ec] = std::from_chars(t.data() + j + 1, t.data() + t.size(), v);
    if (ec != std::errc() || v == 0) continue;
    (rel ? out.relids : out.funcids).push_back(v);
    i = static_cast<std::size_t>(p - t.data()) - 1;
  }
  return out;
}

void sort_unique(std::vector<std::uint32_t>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

// All nodes reachable from `start` along `edges` (adjacency by oid), excluding start.
std::vector<std::uint32_t> closure(
    std::uint32_t start,
    const std::unordered_map<std::uint32_t, std::vector<std::uint32_t>>& edges) {
  std::vector<std::uint32_t> out;
  std::unordered_set<std::uint32_t> seen{start};
  std::vector<std::uint32_t> todo{start};
  while (!todo.empty()) {
    std::uint32_t cur = todo.back();
    todo.pop_back();
    auto it = edges.find(cur);
    if (it == edges.end()) continue;
    for (std::uint32_t next : it->second) {
      if (seen.insert(next).second) {
        out.push_back(next);
        todo.push_back(next);
      }
    }
  }
  sort_unique(out);
  return out;
}

// What a trigger's function (pg_catalog.<proname> when `system`) does.
std::shared_ptr<const trigger_function> trigger_body(bool system, const std::string& proname,
                                                     const std::string& language,
                                                     const std::string& source,
                                                     bool own_search_path) {
  auto unknown = [](std::string why) {
    auto f = std::make_shared<trigger_function>();
    f->unknown = std::move(why);
    return std::shared_ptr<const trigger_function>(std::move(f));
  };
  // Only cancels updates that change nothing.
  if (system && proname == "suppress_redundant_updates_trigger")
    return std::make_shared<const trigger_function>();
  if (language != "plpgsql") return unknown("trigger function in language " + language);
  // Its names resolve through its own search_path, not the session's.
  if (own_search_path) return unknown("trigger function with its own search_path");
  return read_trigger_function(source);
}

// Internal triggers whose effects are known elsewhere: FK actions (cascade_targets) and
// checks (FK existence, deferrable unique constraints), which write nothing.
bool known_internal(bool system, const std::string& proname) {
  return system && (proname.starts_with("RI_FKey_") || proname == "unique_key_recheck");
}

}  // namespace

// --- snapshot -----------------------------------------------------------------------

char relation::column_class(std::string_view column) const {
  auto it = columns.find(column);
  return it == columns.end() ? '\0' : it->second;
}

const std::string* snapshot::temp_schema(const std::vector<std::string>& schemas) const {
  for (const std::string& s : schemas)
    if (is_temp_schema(s)) return &s;
  return nullptr;
}

const relation* snapshot::find(const std::string& schema, const std::string& name) const {
  auto s = by_name_.find(schema);
  if (s == by_name_.end()) return nullptr;
  auto r = s->second.find(name);
  return r == s->second.end() ? nullptr : &relations_[r->second];
}

const relation* snapshot::resolve(const qualified_name& name,
                                  const std::vector<std::string>& schemas) const {
  if (!name.schema.empty()) {
    if (name.schema == "pg_temp") {
      const std::string* temp = temp_schema(schemas);
      return temp ? find(*temp, name.name) : nullptr;
    }
    return find(name.schema, name.name);
  }
  for (const std::string& s : schemas)
    if (const relation* r = find(s, name.name)) return r;
  return nullptr;
}

const relation* snapshot::by_oid(std::uint32_t oid) const {
  auto it = by_oid_.find(oid);
  return it == by_oid_.end() ? nullptr : &relations_[it->second];
}

char snapshot::proc_volatility(const std::string& schema, const std::string& name) const {
  auto s = procs_.find(schema);
  if (s == procs_.end()) return '\0';
  auto p = s->second.find(name);
  return p == s->second.end() ? '\0' : p->second;
}

char snapshot::function_volatility(const qualified_name& name,
                                   const std::vector<std::string>& schemas) const {
  if (!name.schema.empty()) {
    const std::string* schema = &name.schema;
    if (name.schema == "pg_temp" && !(schema = temp_schema(schemas))) return 'v';
    char v = proc_volatility(*schema, name.name);
    return v ? v : 'v';
  }
  char most = '\0';
  for (const std::string& s : schemas) {
    if (is_temp_schema(s)) continue;  // never searched for unqualified functions
    if (char v = proc_volatility(s, name.name)) most = more_volatile(most, v);
  }
  return most ? most : 'v';
}

bool snapshot::user_function(const qualified_name& name,
                             const std::vector<std::string>& schemas) const {
  if (!name.schema.empty())
    return name.schema != "pg_catalog" || !proc_volatility("pg_catalog", name.name);
  bool builtin = false;
  for (const std::string& s : schemas) {
    if (is_temp_schema(s) || !proc_volatility(s, name.name)) continue;
    if (s != "pg_catalog") return true;
    builtin = true;
  }
  return !builtin;
}

void code_reach::merge(const code_reach& o) {
  if (o.volatility > volatility || (o.writes && !writes)) function = o.function;
  volatility = more_volatile(volatility, o.volatility);
  writes = writes || o.writes;
}

bool may_write(const qualified_name& f, char volatility) {
  if (volatility != 'v') return false;
  if (!f.schema.empty() && f.schema != "pg_catalog") return true;
  // clang-format off
  static const char* safe[] = {
      "random", "setseed", "nextval", "setval", "currval", "lastval", "gen_random_uuid",
      "clock_timestamp", "timeofday", "txid_current", "txid_current_if_assigned",
      "pg_current_xact_id", "pg_current_xact_id_if_assigned", "pg_sleep", "pg_sleep_for",
      "pg_sleep_until", "set_config", "pg_notify", "pg_advisory_lock", "pg_advisory_unlock",
      "pg_advisory_xact_lock", "pg_try_advisory_lock", "pg_try_advisory_xact_lock",
      "pg_advisory_lock_shared", "pg_advisory_unlock_shared", "pg_advisory_unlock_all",
      "pg_backend_pid", "pg_cancel_backend", "pg_terminate_backend", "now",
      "statement_timestamp", "transaction_timestamp", "pg_stat_get_activity",
      "pg_current_snapshot", "txid_current_snapshot", "pg_stat_clear_snapshot",
      "pg_stat_reset", "pg_stat_reset_shared", "pg_stat_reset_single_table_counters",
      "pg_get_serial_sequence", "current_setting", "pg_stat_get_backend_idset"};
  // clang-format on
  std::string n(f.name);
  for (char& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* x : safe)
    if (n == x) return false;
  return true;
}

code_reach snapshot::name_code(const std::unordered_map<std::string, code_map>& m,
                               const qualified_name& name, const std::vector<std::string>& schemas,
                               bool all_schemas) const {
  code_reach c;
  auto in = [&](const std::string& schema) {
    auto s = m.find(schema);
    if (s == m.end()) return;
    auto it = s->second.find(name.name);
    if (it != s->second.end()) c.merge(it->second);
  };
  if (!name.schema.empty()) {
    const std::string* schema = &name.schema;
    if (name.schema == "pg_temp" && !(schema = temp_schema(schemas))) return c;
    in(*schema);
  } else if (all_schemas) {
    for (const auto& [schema, names] : m) in(schema);
  } else {
    for (const std::string& schema : schemas) in(schema);
  }
  return c;
}

void snapshot::relation_code(const qualified_name& name, const std::vector<std::string>& schemas,
                             bool write, code_reach& out) const {
  const relation* r = resolve(name, schemas);
  if (!r) return;
  auto add = [&](std::uint32_t oid) {
    if (const relation* x = by_oid(oid)) out.merge(write ? x->write_code : x->read_code);
  };
  out.merge(write ? r->write_code : r->read_code);
  if (write && r->kind == 'v') out.merge(r->read_code);  // a write through a view runs its body
  for (std::uint32_t b : r->base_tables) add(b);
  for (std::uint32_t f : r->family) add(f);
  if (write)
    for (std::uint32_t c : r->cascade_targets) add(c);
}

namespace {

bool fk_changes(char action) { return action == 'c' || action == 'n' || action == 'd'; }

// An UPDATE setting `columns` (nullptr: any column) may change `a`'s referenced key.
bool names_key(const relation::fk_action& a, const std::vector<std::string>* columns) {
  if (!columns || a.any_column) return true;
  return std::any_of(a.key.begin(), a.key.end(), [&](const std::string& k) {
    return std::find(columns->begin(), columns->end(), k) != columns->end();
  });
}

}  // namespace

std::vector<std::uint32_t> snapshot::fk_action_targets(
    const relation& r, bool deletes, bool updates, const std::vector<std::string>* columns) const {
  // Work items: a relation whose rows are deleted and/or updated in `cols` (nullptr: any).
  struct item {
    std::uint32_t oid;
    bool del, upd;
    const std::vector<std::string>* cols;
  };
  std::vector<std::uint32_t> out;
  std::unordered_map<std::uint32_t, unsigned> done;  // bit 1 deleted, bit 2 updated (any)
  std::vector<item> todo;
  auto change = [&](std::uint32_t child, bool deleted) {  // updated: in any column
    unsigned bit = deleted ? 1u : 2u;
    unsigned& d = done[child];
    if (d == 0) out.push_back(child);
    if (d & bit) return;
    d |= bit;
    todo.push_back({child, deleted, !deleted, nullptr});
  };
  auto fire = [&](const relation& x, const item& it) {
    for (const relation::fk_action& a : x.fk_actions) {
      bool key = it.upd && names_key(a, it.cols);
      if (it.del && fk_changes(a.on_delete)) change(a.child, a.on_delete == 'c');
      if (key && fk_changes(a.on_update)) change(a.child, false);
      // Row movement between partitions (a key of a partitioned table includes its
      // partition key): PostgreSQL before 15 fired the ON DELETE action.
      if (key && fk_changes(a.on_delete) && !x.family.empty()) change(a.child, a.on_delete == 'c');
    }
  };
  todo.push_back({r.oid, deletes, updates, columns});
  while (!todo.empty()) {
    item it = todo.back();
    todo.pop_back();
    const relation* x = by_oid(it.oid);
    if (!x) continue;  // in `out`: callers treat it as unknown
    fire(*x, it);
    for (std::uint32_t f : x->family)
      if (const relation* y = by_oid(f)) fire(*y, it);
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool snapshot::known_type(const qualified_name& t, const std::vector<std::string>& schemas) const {
  auto in = [&](const std::string& schema) {
    auto it = type_names_.find(schema);
    return it != type_names_.end() && it->second.count(t.name) > 0;
  };
  if (!t.schema.empty()) {
    const std::string* schema = &t.schema;
    if (t.schema == "pg_temp" && !(schema = temp_schema(schemas))) return false;
    return in(*schema);
  }
  return std::any_of(schemas.begin(), schemas.end(), in);
}

code_reach snapshot::statement_code(const statement& s,
                                    const std::vector<std::string>& schemas) const {
  code_reach c;
  auto unknown = [&c](std::string what) {  // a name created after this snapshot: anything
    c.merge(code_reach{'v', true, std::move(what)});
  };
  for (const qualified_name& op : s.operators)
    if (!operator_names_.count(op.name)) unknown("unknown operator " + op.name);
  for (const qualified_name& t : s.cast_types)
    if (!known_type(t, schemas)) unknown("unknown type " + t.name);
  bool coerces =
      !s.functions.empty() || !s.operators.empty() || !s.cast_types.empty() || !s.writes.empty();
  for (const read_ref& r : s.reads)
    if (const relation* x = resolve(r.table, schemas)) coerces = coerces || x->user_typed;
  if (coerces) c.merge(implicit_casts_);
  for (const qualified_name& op : s.operators) c.merge(name_code(operators_, op, schemas, true));
  for (const std::string& f : s.field_names)
    c.merge(name_code(user_functions_, qualified_name{"", f}, schemas, false));
  for (const qualified_name& t : s.cast_types) c.merge(name_code(types_, t, schemas, false));
  for (const read_ref& r : s.reads) relation_code(r.table, schemas, false, c);
  for (const write_ref& w : s.writes) relation_code(w.table, schemas, true, c);
  return c;
}

// --- loading ------------------------------------------------------------------------

std::string quoted(std::string_view s, char q) {
  std::string out(1, q);
  for (char c : s) {
    if (c == q) out += q;
    out += c;
  }
  return out + q;
}

namespace {

// pg_proc by oid: what code_of() needs to judge a function.
struct proc_entry {
  std::string schema, name;
  char volatility = 'v';
};
using proc_table = std::unordered_map<std::uint32_t, proc_entry>;
using oid_links = std::unordered_map<std::uint32_t, std::vector<std::uint32_t>>;

// The function `oid` as reached code; unknown (created after the pg_proc query) is the worst.
code_reach code_of(const proc_table& procs, std::uint32_t oid) {
  code_reach c;
  auto it = procs.find(oid);
  if (it == procs.end()) {
    c.volatility = 'v';
    c.writes = true;
    c.function = "function " + std::to_string(oid);
    return c;
  }
  c.volatility = it->second.volatility;
  c.writes = may_write(qualified_name{it->second.schema, it->second.name}, c.volatility);
  c.function = it->second.schema + "." + it->second.name;
  return c;
}

}  // namespace

// Loads the routes to user code (q_code, q_operators, q_types) into a snapshot whose
// relations and pg_proc are loaded; views get their read_code when expanded.
struct code_loader {
  code_loader(const query_fn& q, snapshot& snap, proc_table& p,
              const std::unordered_map<std::uint32_t, std::string>& n)
      : query(q), s(snap), procs(p), nsp(n) {}

  const query_fn& query;
  snapshot& s;
  proc_table& procs;
  const std::unordered_map<std::uint32_t, std::string>& nsp;

  // Direct code by owner oid: a relation's writes and policies; a type's reads ('r') and
  // its writes and casts ('t').
  std::unordered_map<std::uint32_t, code_reach> rel_write, rel_policy, type_read, type_cast;
  oid_links type_links, rel_types, aggs;
  std::unordered_map<std::uint32_t, code_reach> memo[2];  // type_code by `full`
  std::unordered_set<std::uint32_t> busy;

  void run() {
    for (const row& r : query(q_code))
      add(char_at(r, 0, "code kind"), oid_at(r, 1, "code owner"), oid_at(r, 2, "code target"));
    fold_aggregates();
    for (const row& r : query(q_operators)) {
      auto n = nsp.find(oid_at(r, 0, "oprnamespace"));
      code_reach c = code_of(procs, oid_at(r, 2, "oprcode"));
      s.operators_[n == nsp.end() ? std::string() : n->second][text_at(r, 1, "oprname")].merge(c);
    }
    auto type_rows = query(q_types);
    for (const row& r : type_rows) {  // a composite type runs the code of its attributes
      auto cols = rel_types.find(oid_at(r, 3, "typrelid"));
      if (cols != rel_types.end()) {
        auto& links = type_links[oid_at(r, 0, "pg_type.oid")];
        links.insert(links.end(), cols->second.begin(), cols->second.end());
      }
    }
    for (const row& r : type_rows) {
      auto n = nsp.find(oid_at(r, 1, "typnamespace"));
      code_reach c = type_code(oid_at(r, 0, "pg_type.oid"), true);
      if (n != nsp.end() && c.volatility) s.types_[n->second][text_at(r, 2, "typname")].merge(c);
    }
    for (const row& r : query(q_field_functions)) {
      std::uint32_t oid = oid_at(r, 0, "pg_proc.oid");
      auto p = procs.find(oid);
      if (p != procs.end() && !p->second.schema.empty() && !is_system_schema(p->second.schema))
        s.user_functions_[p->second.schema][p->second.name].merge(code_of(procs, oid));
    }
    for (relation& rel : s.relations_) relation_code(rel);
    for (const row& r : query(q_names)) {
      if (char_at(r, 0, "name kind") == 'o') {
        s.operator_names_.insert(text_at(r, 2, "oprname"));
      } else if (auto n = nsp.find(oid_at(r, 1, "typnamespace")); n != nsp.end()) {
        s.type_names_[n->second].insert(text_at(r, 2, "typname"));
      }
    }
  }

  void add(char kind, std::uint32_t owner, std::uint32_t target) {
    if (kind == 'a')
      aggs[owner].push_back(target);
    else if (kind == 'b')
      type_links[owner].push_back(target);
    else if (kind == 'c')
      rel_types[owner].push_back(target);
    else if (kind == 'w')
      rel_write[owner].merge(code_of(procs, target));
    else if (kind == 'p')
      rel_policy[owner].merge(code_of(procs, target));
    else if (kind == 'r')
      type_read[owner].merge(code_of(procs, target));
    else if (kind == 't')
      type_cast[owner].merge(code_of(procs, target));
    else if (kind == 'i')
      s.implicit_casts_.merge(code_of(procs, target));
    else
      bad_shape(std::string("code kind ") + kind);
  }

  // An aggregate runs its support functions: it is as volatile as the most volatile one.
  void fold_aggregates() {
    for (const auto& [agg, support] : aggs) {
      auto it = procs.find(agg);
      if (it == procs.end()) continue;
      for (std::uint32_t f : support)
        it->second.volatility = more_volatile(it->second.volatility, code_of(procs, f).volatility);
      auto sch = s.procs_.find(it->second.schema);
      if (sch == s.procs_.end()) continue;
      auto slot = sch->second.find(it->second.name);
      if (slot != sch->second.end())
        slot->second = more_volatile(slot->second, it->second.volatility);
    }
  }

  // The code a value of `type` runs when read (full == false: I/O and operator class
  // functions) or also when written or cast (full: domain checks, casts), including the
  // types it is built on (domain base, array element, attributes); memoised. A cycle (not
  // possible in PostgreSQL) adds nothing.
  code_reach type_code(std::uint32_t type, bool full) {
    if (auto it = memo[full].find(type); it != memo[full].end()) return it->second;
    if (!busy.insert(type).second) return {};
    code_reach c;
    if (auto d = type_read.find(type); d != type_read.end()) c.merge(d->second);
    if (auto d = type_cast.find(type); full && d != type_cast.end()) c.merge(d->second);
    if (auto l = type_links.find(type); l != type_links.end())
      for (std::uint32_t t : l->second) c.merge(type_code(t, full));
    busy.erase(type);
    return memo[full][type] = c;
  }

  void relation_code(relation& rel) {
    if (auto p = rel_policy.find(rel.oid); p != rel_policy.end()) {
      rel.read_code.merge(p->second);
      rel.write_code.merge(p->second);
    }
    if (auto t = rel_types.find(rel.oid); t != rel_types.end()) {
      rel.user_typed = true;
      for (std::uint32_t type : t->second) {
        rel.read_code.merge(type_code(type, false));
        rel.write_code.merge(type_code(type, true));
      }
    }
    if (auto w = rel_write.find(rel.oid); w != rel_write.end()) rel.write_code.merge(w->second);
    s.any_writing_write_code_ = s.any_writing_write_code_ || rel.write_code.writes;
  }
};

std::shared_ptr<const snapshot> load_snapshot(const query_fn& query, std::uint64_t generation) {
  auto snap = std::make_shared<snapshot>();
  snapshot& s = *snap;
  s.generation_ = generation;

  std::unordered_map<std::uint32_t, std::string> nsp;
  for (const row& r : query(q_namespaces))
    nsp.emplace(oid_at(r, 0, "pg_namespace.oid"), text_at(r, 1, "nspname"));

  auto rel_rows = query(q_relations);
  s.relations_.reserve(rel_rows.size());
  for (const row& r : rel_rows) {
    relation rel;
    rel.oid = oid_at(r, 0, "pg_class.oid");
    auto n = nsp.find(oid_at(r, 1, "relnamespace"));
    if (n == nsp.end()) continue;  // namespace dropped between the two queries
    rel.schema = n->second;
    rel.name = text_at(r, 2, "relname");
    rel.kind = char_at(r, 3, "relkind");
    rel.persistence = char_at(r, 4, "relpersistence");
    rel.rls = bool_at(r, 5, "relrowsecurity");
    rel.user_triggers = bool_at(r, 6, "user triggers");
    rel.rules = bool_at(r, 7, "rules");
    rel.system = is_system_schema(rel.schema);
    if (rel.kind == 'v' && rel.system) {
      rel.volatile_view = true;
      rel.base_tables = {rel.oid};
    } else if (rel.kind != 'v' && rel.kind != 'c') {
      rel.base_tables = {rel.oid};
    }
    s.by_oid_.emplace(rel.oid, s.relations_.size());
    s.by_name_[rel.schema].emplace(rel.name, s.relations_.size());
    s.relations_.push_back(std::move(rel));
  }
  auto rel_of = [&s](std::uint32_t oid) -> relation* {
    auto it = s.by_oid_.find(oid);
    return it == s.by_oid_.end() ? nullptr : &s.relations_[it->second];
  };

  for (const row& r : query(q_columns)) {
    if (relation* rel = rel_of(oid_at(r, 0, "attrelid"))) {
      std::string name = text_at(r, 1, "attname");
      if (char_at(r, 3, "unique") == 't') rel->unique_columns.insert(name);
      char cls = char_at(r, 2, "type class");
      if (cls == 'v') {
        rel->trims_on_write.insert(name);
        cls = column_text;
      }
      rel->columns.emplace(std::move(name), cls);
    }
  }

  proc_table procs;
  auto proc_rows = query(q_procs);
  procs.reserve(proc_rows.size());
  for (const row& r : proc_rows) {
    char v = char_at(r, 3, "provolatile");
    auto n = nsp.find(oid_at(r, 1, "pronamespace"));
    procs.emplace(
        oid_at(r, 0, "pg_proc.oid"),
        proc_entry{n == nsp.end() ? std::string() : n->second, text_at(r, 2, "proname"), v});
    if (n == nsp.end()) continue;
    char& slot = s.procs_[n->second].try_emplace(text_at(r, 2, "proname"), 'i').first->second;
    slot = more_volatile(slot, v);
  }
  code_loader(query, s, procs, nsp).run();

  // User views: direct references first, then expand through nested views.
  struct view_info {
    std::vector<std::uint32_t> relids;
    bool volatile_self = false;
    code_reach code;  // the functions the body calls
    int state = 0;    // 0 new, 1 expanding, 2 done
  };
  std::unordered_map<std::uint32_t, view_info> views;
  for (const row& r : query(q_views)) {
    std::uint32_t oid = oid_at(r, 0, "ev_class");
    rule_refs refs = scan_rule(text_at(r, 1, "ev_action"));
    view_info& v = views[oid];
    for (std::uint32_t rel : refs.relids)
      if (rel != oid) v.relids.push_back(rel);  // PG15 keeps *OLD*/*NEW* entries for itself
    v.volatile_self = refs.volatile_expr;
    for (std::uint32_t f : refs.funcids) {
      v.code.merge(code_of(procs, f));
      if (v.code.volatility != 'i') v.volatile_self = true;
    }
  }
  std::function<void(std::uint32_t)> expand = [&](std::uint32_t oid) {
    relation* rel = rel_of(oid);
    auto vi = views.find(oid);
    if (!rel || vi == views.end() || vi->second.state != 0) return;
    view_info& v = vi->second;
    v.state = 1;
    rel->volatile_view = v.volatile_self;
    rel->read_code.merge(v.code);
    for (std::uint32_t ref : v.relids) {
      relation* target = rel_of(ref);
      if (!target) {  // created after the relation query: unknown, so be conservative
        rel->volatile_view = true;
        continue;
      }
      if (target->kind == 'v' && !target->system) {
        expand(ref);
        auto ti = views.find(ref);
        if (ti == views.end() || ti->second.state != 2) {  // no rule loaded, or a cycle
          rel->volatile_view = true;
          continue;
        }
      } else if (target->kind == 'v') {
        rel->volatile_view = true;  // a system view: not expanded
      }
      rel->base_tables.insert(rel->base_tables.end(), target->base_tables.begin(),
                              target->base_tables.end());
      rel->volatile_view = rel->volatile_view || target->volatile_view;
      rel->read_code.merge(target->read_code);
    }
    sort_unique(rel->base_tables);
    v.state = 2;
  };
  for (relation& rel : s.relations_) {
    if (rel.kind != 'v' || rel.system) continue;
    if (views.count(rel.oid))
      expand(rel.oid);
    else
      rel.volatile_view = true;  // dropped/replaced between queries: know nothing
  }

  // FKs and inheritance.
  std::unordered_map<std::uint32_t, std::vector<std::uint32_t>> cascades, refs, up, down;
  for (const row& r : query(q_edges)) {
    char kind = char_at(r, 0, "edge kind");
    std::uint32_t child = oid_at(r, 1, "edge child"), parent = oid_at(r, 2, "edge parent");
    if (kind == 'f') {
      refs[parent].push_back(child);
      auto changes = [](char action) { return action == 'c' || action == 'n' || action == 'd'; };
      char on_update = char_at(r, 3, "confupdtype"), on_delete = char_at(r, 4, "confdeltype");
      if (changes(on_update) || changes(on_delete)) {
        cascades[parent].push_back(child);
        if (relation* p = rel_of(parent)) {
          relation::fk_action a{child, on_update, on_delete, {}, !r[5]};
          if (r[5]) a.key = parse_text_array(*r[5]);
          p->fk_actions.push_back(std::move(a));
        }
      }
    } else {
      up[child].push_back(parent);
      down[parent].push_back(child);
    }
  }
  auto known = [&](std::vector<std::uint32_t> v) {
    std::erase_if(v, [&](std::uint32_t o) { return !rel_of(o); });
    return v;
  };
  for (relation& rel : s.relations_) {
    if (cascades.count(rel.oid)) rel.cascade_targets = known(closure(rel.oid, cascades));
    if (refs.count(rel.oid)) rel.referencing = known(closure(rel.oid, refs));
    if (up.count(rel.oid) || down.count(rel.oid)) {
      rel.family = known(closure(rel.oid, up));
      auto d = known(closure(rel.oid, down));
      rel.family.insert(rel.family.end(), d.begin(), d.end());
      sort_unique(rel.family);
    }
  }

  for (const row& r : query(q_triggers)) {
    relation* rel = rel_of(oid_at(r, 0, "tgrelid"));
    if (!rel) continue;  // created after the relation query: its writes plan without it
    bool system = text_at(r, 4, "pronamespace") == "pg_catalog";
    const std::string& proname = text_at(r, 5, "proname");
    if (bool_at(r, 3, "tgisinternal") && known_internal(system, proname)) continue;
    trigger tg;
    tg.name = text_at(r, 1, "tgname");
    tg.type = static_cast<unsigned>(u64_at(r, 2, "tgtype"));
    tg.body = trigger_body(system, proname, text_at(r, 6, "lanname"), text_at(r, 7, "prosrc"),
                           bool_at(r, 8, "proconfig"));
    if (r.size() > 9 && r[9] && tg.body->unknown.empty()) {
      // A WHEN condition runs in the writing statement too: a volatile call may write.
      for (std::uint32_t f : scan_rule(*r[9]).funcids) {
        if (code_of(procs, f).volatility != 'v') continue;
        auto copy = std::make_shared<trigger_function>(*tg.body);
        copy->unknown = "volatile function in the WHEN condition of trigger " + tg.name;
        tg.body = std::move(copy);
        break;
      }
    }
    rel->triggers.push_back(std::move(tg));
  }


  auto id_rows = query(q_identity);
  if (id_rows.size() != 1)
    bad_shape("identity query returned " + std::to_string(id_rows.size()) + " rows");
  const row& id = id_rows[0];
  std::string sysid;
  if (bool_at(id, 0, "pg_control_system privilege")) {
    auto sys_rows = query(q_sysid);
    if (sys_rows.size() == 1) sysid = text_at(sys_rows[0], 0, "system_identifier");
  }
  s.identity_ = "pg:sysid=" + sysid + ";port=" + text_at(id, 1, "port") +
                ";start=" + text_at(id, 2, "postmaster start") +
                ";recovery=" + (bool_at(id, 3, "pg_is_in_recovery") ? "t" : "f") +
                ";db=" + text_at(id, 4, "database oid");
  return snap;
}

std::shared_ptr<catalog> catalog::load(const query_fn& query) {
  return std::shared_ptr<catalog>(new catalog(load_snapshot(query, 1)));
}

void catalog::refresh(const query_fn& query) {
  std::lock_guard lock(refresh_mu_);
  auto next = load_snapshot(query, generation() + 1);
  std::uint64_t gen = next->generation();
  {
    std::lock_guard publish(current_mu_);
    current_ = std::move(next);
  }
  generation_.store(gen, std::memory_order_release);
}

// --- session context ----------------------------------------------------------------

namespace {

struct context_column {
  const char* key;
  const char* expr;
};

// Order matters: parse() reads by position. The first four are not settings.
constexpr context_column context_columns[] = {
    {"database", "pg_catalog.current_database()"},
    {"current_user", "current_user"},
    {"session_user", "session_user"},
    {"schemas", "pg_catalog.current_schemas(true)::pg_catalog.text"},
    {"search_path", "pg_catalog.current_setting('search_path')"},
    {"TimeZone", "pg_catalog.current_setting('TimeZone')"},
    {"DateStyle", "pg_catalog.current_setting('DateStyle')"},
    {"IntervalStyle", "pg_catalog.current_setting('IntervalStyle')"},
    {"extra_float_digits", "pg_catalog.current_setting('extra_float_digits')"},
    {"bytea_output", "pg_catalog.current_setting('bytea_output')"},
    {"client_encoding", "pg_catalog.current_setting('client_encoding')"},
    {"standard_conforming_strings", "pg_catalog.current_setting('standard_conforming_strings')"},
    {"lc_monetary", "pg_catalog.current_setting('lc_monetary')"},
    {"lc_numeric", "pg_catalog.current_setting('lc_numeric')"},
    {"lc_time", "pg_catalog.current_setting('lc_time')"},
    {"default_text_search_config", "pg_catalog.current_setting('default_text_search_config')"},
    {"xmlbinary", "pg_catalog.current_setting('xmlbinary')"},
    {"xmloption", "pg_catalog.current_setting('xmloption')"},
    {"transform_null_equals", "pg_catalog.current_setting('transform_null_equals')"},
    {"array_nulls", "pg_catalog.current_setting('array_nulls')"},
    {"row_security", "pg_catalog.current_setting('row_security')"},
    {"default_transaction_isolation",
     "pg_catalog.current_setting('default_transaction_isolation')"},
    {"transaction_isolation", "pg_catalog.current_setting('transaction_isolation')"},
    {"default_transaction_read_only",
     "pg_catalog.current_setting('default_transaction_read_only')"},
    {"timezone_abbreviations", "pg_catalog.current_setting('timezone_abbreviations')"},
    {"quote_all_identifiers", "pg_catalog.current_setting('quote_all_identifiers')"},
    {"gin_fuzzy_search_limit", "pg_catalog.current_setting('gin_fuzzy_search_limit')"},
    {"lo_compat_privileges", "pg_catalog.current_setting('lo_compat_privileges')"},
    {"pg_trgm.similarity_threshold",
     "pg_catalog.current_setting('pg_trgm.similarity_threshold', true)"},
    {"pg_trgm.word_similarity_threshold",
     "pg_catalog.current_setting('pg_trgm.word_similarity_threshold', true)"},
    {"pg_trgm.strict_word_similarity_threshold",
     "pg_catalog.current_setting('pg_trgm.strict_word_similarity_threshold', true)"},
};
constexpr std::size_t n_context_columns = std::size(context_columns);

void append_key(std::string& out, std::string_view name, const std::optional<std::string>& v) {
  out += name;
  out += '=';
  if (!v) {
    out += "~;";  // NULL: distinct from every length-prefixed value
    return;
  }
  out += std::to_string(v->size());
  out += ':';
  out += *v;
  out += ';';
}

}  // namespace

std::string session_context::context_query(const std::vector<std::string>& extra_settings) {
  std::string q = "SELECT ";
  for (std::size_t i = 0; i < n_context_columns; ++i) {
    if (i) q += ", ";
    q += context_columns[i].expr;
  }
  for (const std::string& name : extra_settings)
    q += ", pg_catalog.current_setting(" + quoted(name, '\'') + ", true)";
  return q;
}

session_context session_context::parse(const row& r,
                                       const std::vector<std::string>& extra_settings) {
  if (r.size() != n_context_columns + extra_settings.size())
    throw std::invalid_argument("qcache session context: expected " +
                                std::to_string(n_context_columns + extra_settings.size()) +
                                " columns, got " + std::to_string(r.size()));
  auto get = [&r](std::size_t i) -> const std::string& {
    if (!r[i])
      throw std::invalid_argument(std::string("qcache session context: ") + context_columns[i].key +
                                  " is NULL");
    return *r[i];
  };
  session_context c;
  c.database = get(0);
  c.current_user = get(1);
  c.session_user = get(2);
  c.schemas = parse_text_array(get(3));
  c.search_path = get(4);
  c.row_security = get(20) == "on";
  c.isolation = get(21);
  c.transaction_isolation = get(22);
  c.default_read_only = get(23) == "on";
  c.client_encoding = get(10);
  c.standard_conforming_strings = get(11) == "on";
  for (std::size_t i = 0; i < n_context_columns; ++i)
    append_key(c.key_text, context_columns[i].key, r[i]);
  for (std::size_t i = 0; i < extra_settings.size(); ++i) {
    // Extra names are user-chosen: length-prefix them too so they cannot collide.
    c.key_text.append("+").append(std::to_string(extra_settings[i].size())).append(":");
    append_key(c.key_text, extra_settings[i], r[n_context_columns + i]);
  }
  return c;
}

std::vector<std::string> parse_text_array(std::string_view t) {
  auto bad = [&t]() -> std::invalid_argument {
    return std::invalid_argument("qcache: malformed array literal: " + std::string(t));
  };
  if (t.size() < 2 || t.front() != '{' || t.back() != '}') throw bad();
  std::vector<std::string> out;
  std::size_t i = 1, end = t.size() - 1;
  if (i == end) return out;
  while (true) {
    std::string elem;
    if (t[i] == '"') {
      ++i;
      while (true) {
        if (i >= end) throw bad();
        char c = t[i++];
        if (c == '"') break;
        if (c == '\\') {
          if (i >= end) throw bad();
          c = t[i++];
        }
        elem += c;
      }
    } else {
      std::size_t start = i;
      while (i < end && t[i] != ',') ++i;
      elem.assign(t.substr(start, i - start));
      if (elem == "NULL") elem.clear();
    }
    out.push_back(std::move(elem));
    if (i == end) break;
    if (t[i] != ',') throw bad();
    ++i;
  }
  return out;
}

}  // namespace qcache::pg
