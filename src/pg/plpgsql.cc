// Reading PL/pgSQL trigger functions. Invariants:
//  * pg_query_parse_plpgsql runs on the parser thread; the statements inside the body are
//    analysed there too (analyze_uncached runs inline on that thread).
//  * Fail closed: every statement type not listed in kKnownStatements, every expression
//    that does not parse, every statement that is neither a read, a write nor NOTIFY sets
//    `unknown`. A target datum is NEW-affecting unless proven to be another variable.
//  * The function's datums array is indexed by dno (PL/pgSQL's own numbering), which is what
//    statements' `varno` / `target` / `dno` fields refer to.
#include "pg/plpgsql.h"

#include <pg_query.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <mutex>
#include <unordered_map>

#include "parser_thread.h"

namespace qcache::pg {
namespace {

namespace json = boost::json;

constexpr std::size_t kMaxBody = 256u << 10;  // longer bodies are not read (unknown)

// Statement types whose effects are all in their expressions and targets.
constexpr std::string_view kKnownStatements[] = {
    "block",   "assign",    "if",      "case",   "loop",        "while",        "fori",  "fors",
    "forc",    "foreach_a", "exit",    "return", "return_next", "return_query", "raise", "assert",
    "execsql", "getdiag",   "perform", "open",   "fetch",       "close"};

bool known_statement(std::string_view type) {
  return std::find(std::begin(kKnownStatements), std::end(kKnownStatements), type) !=
         std::end(kKnownStatements);
}

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool ident_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$' ||
         static_cast<unsigned char>(c) >= 0x80;
}

// The expression of an assignment `target := expr` (or `target = expr`), or npos when the
// target is not a plain (possibly dotted, possibly quoted) name.
std::size_t assignment_value(std::string_view q) {
  std::size_t i = 0;
  auto ws = [&] {
    while (i < q.size() && std::isspace(static_cast<unsigned char>(q[i]))) ++i;
  };
  for (;;) {
    ws();
    if (i < q.size() && q[i] == '"') {
      for (++i; i < q.size(); ++i)
        if (q[i] == '"' && !(i + 1 < q.size() && q[i + 1] == '"'))
          break;
        else if (q[i] == '"')
          ++i;
      if (i >= q.size()) return std::string_view::npos;
      ++i;
    } else {
      std::size_t start = i;
      while (i < q.size() && ident_char(q[i])) ++i;
      if (i == start) return std::string_view::npos;
    }
    ws();
    if (i < q.size() && q[i] == '.') {
      ++i;
      continue;
    }
    break;
  }
  if (q.substr(i, 2) == ":=") return i + 2;
  if (q.substr(i, 1) == "=") return i + 1;
  return std::string_view::npos;  // a subscript, or something unexpected
}

struct reader {
  trigger_function out;
  const json::array* datums = nullptr;
  std::int64_t new_varno = -1, old_varno = -1;
  std::vector<std::int64_t> targets;

  void fail(std::string why) {
    if (out.unknown.empty()) out.unknown = std::move(why);
  }

  // Records what one analysed statement does; false when it is not a read or a write.
  void take(const statement& s) {
    out.statements.push_back(s);
    for (const qualified_name& f : s.functions) {
      out.functions.push_back(f);
      if (lower(f.name) == "set_config") {
        out.changes_session = true;
        fail("set_config() in the body");
      }
    }
    for (const read_ref& r : s.reads) out.reads.push_back(r.table);
    if (s.kind == stmt_kind::write) {
      for (const write_ref& w : s.writes)
        out.writes.push_back(
            {w.table, w.op, w.on_conflict == write_ref::conflict::update, w.cascade});
      return;
    }
    if (s.kind == stmt_kind::read || s.node == "NotifyStmt") return;
    if (s.kind == stmt_kind::session_set || s.kind == stmt_kind::session_reset)
      out.changes_session = true;
    fail("statement " + s.node + " in the body");
  }

  // Analyses `sql`; false when it does not parse.
  bool analyse(const std::string& sql) {
    analysis a = analyze_uncached(sql);
    if (!a.ok) return false;
    for (const statement& s : a.statements) take(s);
    return true;
  }

  void expression(std::string_view query, std::string_view key, std::string_view stmt) {
    std::string q(query);
    if (stmt == "PLpgSQL_stmt_return" && key == "expr") {
      std::string r = lower(trim(q));
      if (r != "new" && r != "old" && r != "null") out.replaces_new = true;
    }
    if (stmt == "PLpgSQL_stmt_execsql" && key == "sqlstmt") {
      if (!analyse(q)) fail("a statement that does not parse");
      return;
    }
    if (stmt == "PLpgSQL_stmt_assign" && key == "expr") {
      std::size_t at = assignment_value(q);
      if (at == std::string_view::npos) return fail("an assignment qcache cannot read");
      q.erase(0, at);
      if (!analyse("SELECT " + q)) fail("an expression that does not parse");
      return;
    }
    // Whole statements (PERFORM, FOR ... IN query, cursors) parse as they are; expressions
    // parse as a SELECT list.
    if (!analyse(q) && !analyse("SELECT " + q)) fail("an expression that does not parse");
  }

  void walk(const json::value& v, std::string_view key, std::string_view stmt) {
    if (const json::array* a = v.if_array()) {
      for (const json::value& x : *a) walk(x, key, stmt);
      return;
    }
    const json::object* o = v.if_object();
    if (!o) return;
    for (const auto& [k, x] : *o) {
      std::string_view name(k.data(), k.size());
      if (name.starts_with("PLpgSQL_stmt_")) {
        if (!known_statement(name.substr(13))) fail("PL/pgSQL " + std::string(name.substr(13)));
        if (name == "PLpgSQL_stmt_return") return_statement(x);
        walk(x, name, name);
      } else if (name == "PLpgSQL_expr") {
        const json::object* e = x.if_object();
        const json::value* q = e ? e->if_contains("query") : nullptr;
        if (!q || !q->is_string())
          fail("an expression without text");
        else
          expression(std::string_view(q->get_string().data(), q->get_string().size()), key, stmt);
      } else if (name == "dynquery") {
        fail("dynamic SQL");
      } else if (!stmt.empty() && (name == "varno" || name == "target" || name == "dno") &&
                 x.is_int64()) {
        targets.push_back(x.get_int64());
      } else {
        walk(x, name, stmt);
      }
    }
  }

  void return_statement(const json::value& v) {
    const json::object* o = v.if_object();
    const json::value* rv = o ? o->if_contains("retvarno") : nullptr;
    if (rv && rv->is_int64() && rv->get_int64() != new_varno && rv->get_int64() != old_varno)
      out.replaces_new = true;
  }

  // NEW itself, or one of its fields, or a row variable made of them.
  void judge_target(std::int64_t dno, int depth) {
    if (dno == new_varno) {
      out.replaces_new = true;
      return;
    }
    if (!datums || dno < 0 || static_cast<std::size_t>(dno) >= datums->size() || depth > 4) {
      out.replaces_new = true;  // not a datum we know: assume the worst
      return;
    }
    const json::object* d = (*datums)[static_cast<std::size_t>(dno)].if_object();
    if (!d) return;
    if (const json::value* f = d->if_contains("PLpgSQL_recfield")) {
      const json::object& rf = f->as_object();
      const json::value* parent = rf.if_contains("recparentno");
      const json::value* field = rf.if_contains("fieldname");
      std::int64_t p = parent && parent->is_int64() ? parent->get_int64() : 0;
      if (p != new_varno) return;
      if (!field || !field->is_string())
        out.replaces_new = true;
      else
        out.new_columns.emplace_back(field->get_string().c_str());
    } else if (const json::value* r = d->if_contains("PLpgSQL_row")) {
      if (const json::array* fields = r->as_object().if_contains("fields")
                                          ? r->as_object().at("fields").if_array()
                                          : nullptr)
        for (const json::value& f : *fields) {
          const json::object* fo = f.if_object();
          const json::value* vn = fo ? fo->if_contains("varno") : nullptr;
          if (vn && vn->is_int64()) judge_target(vn->get_int64(), depth + 1);
        }
    }
  }

  void function(const json::object& fn) {
    datums = fn.if_contains("datums") ? fn.at("datums").if_array() : nullptr;
    const json::value* nv = fn.if_contains("new_varno");
    const json::value* ov = fn.if_contains("old_varno");
    if (!nv || !nv->is_int64())
      out.replaces_new = true;  // no NEW found: assume the worst
    else
      new_varno = nv->get_int64();
    if (ov && ov->is_int64()) old_varno = ov->get_int64();
    if (datums) walk(*datums, "datums", "");
    if (const json::value* action = fn.if_contains("action")) walk(*action, "action", "");
    for (std::int64_t t : targets) judge_target(t, 0);
    std::sort(out.new_columns.begin(), out.new_columns.end());
    out.new_columns.erase(std::unique(out.new_columns.begin(), out.new_columns.end()),
                          out.new_columns.end());
  }
};

std::string literal(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += c;
    out += c;
  }
  return out + "'";
}

// Runs on the parser thread.
trigger_function read_on_parser_thread(std::string_view body) {
  reader r;
  if (body.size() > kMaxBody || body.find('\0') != std::string_view::npos) {
    r.fail("body too large");
    return r.out;
  }
  std::string sql =
      "CREATE FUNCTION qcache_trigger() RETURNS trigger LANGUAGE plpgsql AS " + literal(body);
  PgQueryPlpgsqlParseResult res = pg_query_parse_plpgsql(sql.c_str());
  try {
    if (res.error) {
      r.fail(std::string("PL/pgSQL parse error: ") +
             (res.error->message ? res.error->message : "?"));
    } else {
      json::value v = json::parse(res.plpgsql_funcs ? res.plpgsql_funcs : "");
      const json::array* fns = v.if_array();
      const json::object* f0 = fns && fns->size() == 1 ? (*fns)[0].if_object() : nullptr;
      const json::value* fn = f0 ? f0->if_contains("PLpgSQL_function") : nullptr;
      if (!fn || !fn->is_object())
        r.fail("unexpected PL/pgSQL parse tree");
      else
        r.function(fn->get_object());
    }
  } catch (const std::exception& e) {
    r.out = trigger_function{};
    r.fail(std::string("PL/pgSQL reader: ") + e.what());
  }
  pg_query_free_plpgsql_parse_result(res);
  return r.out;
}

}  // namespace

trigger_function read_trigger_function_uncached(std::string_view body) {
  return detail::run_on_parser_thread([body] { return read_on_parser_thread(body); });
}

std::shared_ptr<const trigger_function> read_trigger_function(std::string_view body) {
  // Bodies repeat across catalog loads (every DDL reloads the catalog): read each once.
  static std::mutex mu;
  static auto* memo =
      new std::unordered_map<std::string, std::shared_ptr<const trigger_function>>();
  {
    std::lock_guard lock(mu);
    auto it = memo->find(std::string(body));
    if (it != memo->end()) return it->second;
  }
  auto fn = std::make_shared<const trigger_function>(read_trigger_function_uncached(body));
  std::lock_guard lock(mu);
  if (memo->size() >= 1024) memo->clear();
  return memo->try_emplace(std::string(body), fn).first->second;
}

}  // namespace qcache::pg
