// Statement analysis on libpg_query's JSON parse tree.
//
// Invariants:
// * Every pg_query_* call runs on the parser thread (parser_thread.h); the JSON walk runs
//   there too, so a miss costs one hop. Memo hits never leave the caller's thread.
// * Literal values are never taken from the JSON alone: libpg_query 15-4.0.0 emits 0,
//   negative integers and false as `{}`. Integer and string literals are decoded from the
//   SQL text at the node's location and cross-checked with the JSON where it has a value;
//   anything that cannot be decoded exactly becomes eq_value::kind::other, which makes the
//   conjunct unusable (fail closed).
// * A conjunct is only recorded when it is a real restriction of that one occurrence: a
//   top-level AND term of the WHERE clause (never ON, never under OR/NOT), on a column that
//   names the occurrence unambiguously.
// * CTE names are scoped per WITH list (non-recursive: a CTE sees only earlier siblings);
//   schema-qualified names and DML targets are never CTE references.
//
// JSON is read with Boost.JSON in header-only mode (boost/json/src.hpp). That header defines
// non-inline symbols, so it must be included by exactly one translation unit: this one.
#include "pg/analyzer.h"

#include <pg_query.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/json/src.hpp>
#include <cctype>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include "parser_thread.h"

namespace qcache::pg {

const char* to_string(stmt_kind k) {
  switch (k) {
    case stmt_kind::read:
      return "read";
    case stmt_kind::write:
      return "write";
    case stmt_kind::ddl:
      return "ddl";
    case stmt_kind::txn_begin:
      return "txn_begin";
    case stmt_kind::txn_commit:
      return "txn_commit";
    case stmt_kind::txn_rollback:
      return "txn_rollback";
    case stmt_kind::savepoint:
      return "savepoint";
    case stmt_kind::release:
      return "release";
    case stmt_kind::rollback_to:
      return "rollback_to";
    case stmt_kind::txn_set:
      return "txn_set";
    case stmt_kind::session_set:
      return "session_set";
    case stmt_kind::session_reset:
      return "session_reset";
    case stmt_kind::copy_to:
      return "copy_to";
    case stmt_kind::other:
      return "other";
  }
  return "?";
}

namespace {

namespace json = boost::json;

// Trees whose walk would use more stack than this are rejected (ok == false) instead of
// risking the parser thread's stack (64 MiB, see parser_thread.cc). Measured by address, so
// it holds whatever the frame sizes are (sanitizer builds use several times more).
constexpr std::uintptr_t kMaxWalkStackBytes = 40u << 20;

std::uintptr_t frame_address() {
  return reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
}

struct too_deep : std::runtime_error {
  too_deep() : std::runtime_error("statement is nested too deeply to analyze") {}
};

// ---- small JSON helpers ----------------------------------------------------------------

const json::object* obj(const json::value* v) { return v ? v->if_object() : nullptr; }
const json::object* field_obj(const json::object& o, std::string_view k) {
  return obj(o.if_contains(k));
}
const json::array* field_arr(const json::object& o, std::string_view k) {
  const json::value* v = o.if_contains(k);
  return v ? v->if_array() : nullptr;
}
std::string_view field_str(const json::object& o, std::string_view k) {
  const json::value* v = o.if_contains(k);
  if (v == nullptr || !v->is_string()) return {};
  const json::string& s = v->get_string();
  return {s.data(), s.size()};
}
bool field_bool(const json::object& o, std::string_view k) {
  const json::value* v = o.if_contains(k);
  return v != nullptr && v->is_bool() && v->get_bool();
}
std::int64_t field_int(const json::object& o, std::string_view k, std::int64_t dflt) {
  const json::value* v = o.if_contains(k);
  if (v == nullptr) return dflt;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return static_cast<std::int64_t>(v->get_uint64());
  return dflt;
}
bool nonempty(const json::array* a) { return a != nullptr && !a->empty(); }

// {"Type": {...}} -> ("Type", inner); anything else -> ("", nullptr).
std::pair<std::string_view, const json::object*> as_node(const json::value& v) {
  const json::object* o = v.if_object();
  if (o == nullptr || o->size() != 1) return {{}, nullptr};
  const auto& kv = *o->begin();
  std::string_view key(kv.key().data(), kv.key().size());
  if (key.empty() || !std::isupper(static_cast<unsigned char>(key[0]))) return {{}, nullptr};
  return {key, kv.value().if_object()};
}
const json::object* node_of(const json::value* v, std::string_view type) {
  if (v == nullptr) return nullptr;
  auto [t, o] = as_node(*v);
  return t == type ? o : nullptr;
}
// A RangeVar, wrapped (node lists) or unwrapped (typed fields).
const json::object* as_range_var(const json::value* v) {
  if (v == nullptr) return nullptr;
  if (const json::object* o = node_of(v, "RangeVar")) return o;
  const json::object* o = v->if_object();
  return o != nullptr && o->contains("relname") ? o : nullptr;
}
std::string_view string_node(const json::value& v) {
  auto [t, o] = as_node(v);
  return t == "String" && o ? field_str(*o, "sval") : std::string_view{};
}

qualified_name range_var_name(const json::object& rv) {
  return {std::string(field_str(rv, "schemaname")), std::string(field_str(rv, "relname"))};
}
std::string_view range_var_refname(const json::object& rv) {
  if (const json::object* a = field_obj(rv, "alias")) return field_str(*a, "aliasname");
  return field_str(rv, "relname");
}
bool range_var_has_alias(const json::object& rv) { return rv.contains("alias"); }

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

// A list of String nodes (possibly wrapped in {"List":{"items":[...]}}), or nullopt.
std::optional<std::vector<std::string_view>> string_list(const json::value& v) {
  const json::array* items = nullptr;
  if (const json::object* l = node_of(&v, "List")) {
    items = field_arr(*l, "items");
  } else {
    items = v.if_array();
  }
  if (items == nullptr) return std::nullopt;
  std::vector<std::string_view> out;
  for (const json::value& i : *items) {
    auto [t, o] = as_node(i);
    if (t != "String" || o == nullptr) return std::nullopt;
    out.push_back(field_str(*o, "sval"));
  }
  return out;
}

// The name parts of a ColumnRef (`a`, `t.a`, `s.t.a`); nullopt for anything else and for `*`.
std::optional<std::vector<std::string_view>> column_ref_parts(const json::value* v) {
  const json::object* cr = node_of(v, "ColumnRef");
  const json::array* fields = cr ? field_arr(*cr, "fields") : nullptr;
  if (fields == nullptr) return std::nullopt;
  return string_list(*fields);
}

qualified_name name_from_parts(const std::vector<std::string_view>& parts) {
  qualified_name q;
  if (parts.empty()) return q;
  q.name = std::string(parts.back());
  if (parts.size() >= 2) q.schema = std::string(parts[parts.size() - 2]);
  return q;
}

// ---- literal decoding from the SQL text --------------------------------------------------

bool is_ident_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$' ||
         static_cast<unsigned char>(c) >= 0x80;
}

// Integer literal at `loc`: [-][ws]digits, not followed by an identifier char or '.'.
std::optional<std::string> integer_at(std::string_view sql, std::size_t loc) {
  if (loc >= sql.size()) return std::nullopt;
  std::string out;
  std::size_t i = loc;
  if (sql[i] == '-') {
    out += '-';
    ++i;
    while (i < sql.size() && std::isspace(static_cast<unsigned char>(sql[i]))) ++i;
  }
  std::size_t start = i;
  while (i < sql.size() && std::isdigit(static_cast<unsigned char>(sql[i]))) ++i;
  if (i == start) return std::nullopt;
  if (i < sql.size() && (is_ident_char(sql[i]) || sql[i] == '.')) return std::nullopt;
  out.append(sql.substr(start, i - start));
  return out;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// String literal at `loc`: '...', E'...', N'...', $tag$...$tag$. The result is checked
// against the JSON value by the caller, so continuation lines and exotic forms (U&'...')
// simply fail.
std::optional<std::string> string_at(std::string_view sql, std::size_t loc) {
  if (loc >= sql.size()) return std::nullopt;
  std::size_t i = loc;
  bool escapes = false;
  if ((sql[i] == 'E' || sql[i] == 'e') && i + 1 < sql.size() && sql[i + 1] == '\'') {
    escapes = true;
    ++i;
  } else if ((sql[i] == 'N' || sql[i] == 'n') && i + 1 < sql.size() && sql[i + 1] == '\'') {
    ++i;
  }
  std::string out;
  if (sql[i] == '$') {
    std::size_t close = sql.find('$', i + 1);
    if (close == std::string_view::npos) return std::nullopt;
    std::string_view tag = sql.substr(i, close - i + 1);
    for (char c : tag.substr(1, tag.size() - 2)) {
      if (!is_ident_char(c) || c == '$') return std::nullopt;
    }
    std::size_t body = close + 1;
    std::size_t end = sql.find(tag, body);
    if (end == std::string_view::npos) return std::nullopt;
    return std::string(sql.substr(body, end - body));
  }
  if (sql[i] != '\'') return std::nullopt;
  ++i;
  for (;;) {
    if (i >= sql.size()) return std::nullopt;
    char c = sql[i];
    if (c == '\'') {
      if (i + 1 < sql.size() && sql[i + 1] == '\'') {
        out += '\'';
        i += 2;
        continue;
      }
      return out;
    }
    if (escapes && c == '\\') {
      if (i + 1 >= sql.size()) return std::nullopt;
      char e = sql[i + 1];
      i += 2;
      switch (e) {
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'x': {
          int v = 0, n = 0;
          while (n < 2 && i < sql.size() && hex_value(sql[i]) >= 0)
            v = v * 16 + hex_value(sql[i++]), ++n;
          if (n == 0 || v == 0) return std::nullopt;
          out += static_cast<char>(v);
          break;
        }
        case 'u':
        case 'U': {
          int digits = e == 'u' ? 4 : 8;
          std::uint32_t v = 0;
          for (int n = 0; n < digits; ++n) {
            if (i >= sql.size() || hex_value(sql[i]) < 0) return std::nullopt;
            v = v * 16 + static_cast<std::uint32_t>(hex_value(sql[i++]));
          }
          if (v == 0 || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return std::nullopt;
          append_utf8(out, v);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            int v = e - '0', n = 1;
            while (n < 3 && i < sql.size() && sql[i] >= '0' && sql[i] <= '7')
              v = v * 8 + (sql[i++] - '0'), ++n;
            if (v == 0 || v > 0xFF) return std::nullopt;
            out += static_cast<char>(v);
          } else {
            out += e;  // \\, \', \" and any other character stand for themselves
          }
      }
      continue;
    }
    out += c;
    ++i;
  }
}

// ---- the walker ---------------------------------------------------------------------------

bool is_time_word(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  std::string l = lower(s);
  return l == "now" || l == "today" || l == "tomorrow" || l == "yesterday";
}

// One FROM item of the outermost SELECT, for conjunct attribution.
struct from_leaf {
  std::string refname;               // alias, or relation name when unaliased
  const json::object* rv = nullptr;  // the RangeVar when this leaf is an eligible relation
  std::string schema;                // for schema.table.column qualification (unaliased only)
  bool aliased = false;
};

// Output columns that are plain column references (nullopt for other expressions).
using plain_outputs = std::vector<std::optional<std::vector<std::string_view>>>;


// ---- a token scanner ------------------------------------------------------------------------

// One token of PostgreSQL text, as scan_sql sees it: just enough lexing to tell what is
// inside comments, quotes and dollar quotes from what is not.
struct sql_token {
  enum kind_t : std::uint8_t {
    word,           // identifier or keyword (is_ident_char run)
    number,         // digits or '.' followed by alphanumerics and dots
    param,          // $n
    string,         // '...', or E'...' with backslash escapes (begin at the E)
    quoted_ident,   // "..."
    dollar_string,  // $tag$...$tag$
    dollar,         // a `$` that starts none of the above
    comment,        // -- to the end of the line, or /* */ (nested)
    other,          // any other single character
  } kind = other;
  std::size_t begin = 0, end = 0;
  bool unterminated = false;  // a quote, dollar quote or comment that runs to the end
};

// Calls f(const sql_token&) for each token of `sql` (whitespace skipped) until f returns
// false. Never fails: malformed text just yields unterminated tokens. `plain_escapes`: lex
// a plain '...' with backslash escapes, as the server does under
// standard_conforming_strings = off.
template <class F>
void scan_sql(std::string_view sql, F&& f, bool plain_escapes = false) {
  const std::size_t n = sql.size();
  std::size_t i = 0;
  // From the opening quote at i; returns the index after the closing one.
  auto quoted = [&](std::size_t at, char q, bool backslash, bool& open) {
    std::size_t j = at + 1;
    while (j < n) {
      if (backslash && sql[j] == '\\') {
        j += 2;
      } else if (sql[j] == q) {
        if (j + 1 < n && sql[j + 1] == q) j += 2;
        else return j + 1;
      } else {
        ++j;
      }
    }
    open = true;
    return n;
  };
  while (i < n) {
    char c = sql[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    sql_token t;
    t.begin = i;
    if (c == '-' && i + 1 < n && sql[i + 1] == '-') {
      t.kind = sql_token::comment;
      std::size_t e = sql.find('\n', i);
      i = e == std::string_view::npos ? n : e + 1;
    } else if (c == '/' && i + 1 < n && sql[i + 1] == '*') {
      t.kind = sql_token::comment;
      int level = 0;
      while (i < n) {
        if (sql[i] == '/' && i + 1 < n && sql[i + 1] == '*') {
          ++level, i += 2;
        } else if (sql[i] == '*' && i + 1 < n && sql[i + 1] == '/') {
          i += 2;
          if (--level == 0) break;
        } else {
          ++i;
        }
      }
      t.unterminated = level != 0;
    } else if (c == '\'' || c == '"') {
      t.kind = c == '\'' ? sql_token::string : sql_token::quoted_ident;
      i = quoted(i, c, c == '\'' && plain_escapes, t.unterminated);
    } else if (c == '$') {
      std::size_t j = i + 1;
      while (j < n && std::isdigit(static_cast<unsigned char>(sql[j]))) ++j;
      if (j > i + 1) {
        t.kind = sql_token::param;
        i = j;
      } else {
        while (j < n && is_ident_char(sql[j]) && sql[j] != '$') ++j;
        if (j < n && sql[j] == '$') {
          t.kind = sql_token::dollar_string;
          std::string_view tag = sql.substr(i, j - i + 1);
          std::size_t e = sql.find(tag, j + 1);
          t.unterminated = e == std::string_view::npos;
          i = t.unterminated ? n : e + tag.size();
        } else {
          t.kind = sql_token::dollar;
          ++i;
        }
      }
    } else if (std::isdigit(static_cast<unsigned char>(c)) || c == '.') {
      t.kind = sql_token::number;
      ++i;
      while (i < n && (std::isalnum(static_cast<unsigned char>(sql[i])) || sql[i] == '.')) ++i;
    } else if (is_ident_char(c)) {
      t.kind = sql_token::word;
      while (i < n && is_ident_char(sql[i])) ++i;
      if (i == t.begin + 1 && (c == 'e' || c == 'E') && i < n && sql[i] == '\'') {
        t.kind = sql_token::string;  // E'...'
        i = quoted(i, '\'', true, t.unterminated);
      }
    } else {
      ++i;
    }
    t.end = i;
    if (!f(static_cast<const sql_token&>(t))) return;
  }
}

// ---- top-level WHERE ----------------------------------------------------------------------

// The text between the only top-level WHERE keyword of a single statement and its
// top-level RETURNING (or its end, a trailing `;` excluded). Top level: outside
// parentheses/brackets, string and identifier quotes, dollar quotes and comments. nullopt
// when there is no such WHERE, more than one, a second statement, or a lexing surprise
// (an unterminated quote or comment, a stray `$`): the caller then does without.
// `params` receives the offset and length of every $n in the statement.
std::optional<std::string_view> top_level_where(
    std::string_view sql, std::vector<std::pair<std::size_t, std::size_t>>& params) {
  int depth = 0;
  std::optional<std::size_t> where_begin, where_end;
  std::size_t stmt_end = sql.size();
  bool ended = false;  // saw the terminating `;`
  bool surprise = false;
  scan_sql(sql, [&](const sql_token& t) {
    if (ended || t.unterminated || t.kind == sql_token::dollar) {
      surprise = true;  // a second statement, or text the server would not accept
      return false;
    }
    char c = sql[t.begin];
    if (t.kind == sql_token::param) {
      params.emplace_back(t.begin, t.end - t.begin);
    } else if (t.kind == sql_token::other) {
      if (c == '(' || c == '[') ++depth;
      else if (c == ')' || c == ']') --depth;
      else if (c == ';' && depth == 0) stmt_end = t.begin, ended = true;
    } else if (t.kind == sql_token::word && depth == 0) {
      std::string word = lower(sql.substr(t.begin, t.end - t.begin));
      if (word == "where") {
        if (where_begin) {
          surprise = true;
          return false;
        }
        where_begin = t.end;
      } else if (word == "returning" && where_begin && !where_end) {
        where_end = t.begin;
      }
    }
    return true;
  });
  if (surprise || !where_begin || depth != 0) return std::nullopt;
  std::size_t e = where_end.value_or(stmt_end);
  if (e < *where_begin) return std::nullopt;
  return sql.substr(*where_begin, e - *where_begin);
}

class walker {
 public:
  walker(std::string_view sql, statement& st) : sql_(sql), st_(st), stack_base_(frame_address()) {}

  void top(std::string_view type, const json::object& o);

 private:
  enum class rv_mode { read, ddl };

  void walk(const json::value& v);
  void walk_fields(const json::object& o, std::initializer_list<std::string_view> skip);
  void node(std::string_view type, const json::object& o);
  void range_var(const json::object& rv);
  bool is_cte(const json::object& rv) const;
  void with_clause(const json::object& w);
  void select(const json::object& o);
  void insert(const json::object& o);
  void update(const json::object& o);
  void del(const json::object& o);
  void merge(const json::object& o);
  void func_call(const json::object& o);
  void a_const(const json::object& o);
  write_ref& add_write(const json::object& rv, write_op op);
  void set_where_sql(const json::object& stmt, const json::object& rv, write_ref& w) const;

  std::optional<eq_value> value(const json::value& v) const;
  // Equality conjuncts of `where`'s top-level AND, each with the column's qualifier parts.
  struct raw_conjunct {
    std::vector<std::string_view> qualifier;
    eq_conjunct c;
  };
  std::vector<raw_conjunct> conjuncts(const json::value* where) const;
  void flatten_and(const json::value& e, std::vector<const json::value*>& out) const;
  std::optional<raw_conjunct> conjunct(const json::value& e) const;
  void collect_from(const json::value& item, std::vector<from_leaf>& leaves) const;
  void attribute_select_conjuncts(const json::object& select);
  void attribute_correlations(const json::object& select);
  void attribute_join_correlations(const json::object& select,
                                   const std::vector<from_leaf>& leaves,
                                   const plain_outputs& plain);
  static std::vector<eq_conjunct> target_conjuncts(const std::vector<raw_conjunct>& all,
                                                   const json::object& rv, bool allow_unqualified);

  std::string_view sql_;
  statement& st_;
  std::vector<std::vector<std::string>> scopes_;
  rv_mode mode_ = rv_mode::read;
  std::uintptr_t stack_base_;  // the stack grows down from here
  bool top_stmt_ = true;       // the statement being handled is the top-level one
  std::unordered_map<const json::object*, std::size_t> read_index_;
};

void walker::walk(const json::value& v) {
  std::uintptr_t here = frame_address();
  if (here < stack_base_ && stack_base_ - here > kMaxWalkStackBytes) throw too_deep();
  if (const json::array* a = v.if_array()) {
    for (const json::value& e : *a) walk(e);
  } else if (const json::object* o = v.if_object()) {
    auto [type, inner] = as_node(v);
    if (inner != nullptr) {
      node(type, *inner);
    } else if (o->contains("relname")) {
      range_var(*o);  // unwrapped RangeVar in a typed field
    } else {
      walk_fields(*o, {});
    }
  }
}

void walker::walk_fields(const json::object& o, std::initializer_list<std::string_view> skip) {
  for (const auto& kv : o) {
    std::string_view k(kv.key().data(), kv.key().size());
    if (std::find(skip.begin(), skip.end(), k) != skip.end()) continue;
    walk(kv.value());
  }
}

bool walker::is_cte(const json::object& rv) const {
  if (rv.contains("schemaname") || rv.contains("catalogname")) return false;
  std::string_view name = field_str(rv, "relname");
  for (const auto& frame : scopes_) {
    for (const auto& n : frame) {
      if (n == name) return true;
    }
  }
  return false;
}

void walker::range_var(const json::object& rv) {
  if (is_cte(rv)) return;
  qualified_name q = range_var_name(rv);
  if (mode_ == rv_mode::ddl) {
    if (std::find(st_.ddl_targets.begin(), st_.ddl_targets.end(), q) == st_.ddl_targets.end()) {
      st_.ddl_targets.push_back(std::move(q));
    }
    return;
  }
  read_index_[&rv] = st_.reads.size();
  st_.reads.push_back(read_ref{std::move(q), {}, std::nullopt});
}

// Collects the functions a WHERE clause calls into `w`; false when it contains a
// subquery (SubLink). Iterative: trees may be deep.
bool scan_where(const json::value& v, write_ref& w) {
  std::vector<const json::value*> todo{&v};
  while (!todo.empty()) {
    const json::value* x = todo.back();
    todo.pop_back();
    if (const json::object* o = x->if_object()) {
      for (const auto& kv : *o) {
        std::string_view key(kv.key().data(), kv.key().size());
        if (key == "SubLink") return false;
        if (key == "SQLValueFunction") w.where_value_function = true;
        if (key == "FuncCall") {
          const json::object* f = kv.value().if_object();
          const json::array* parts = f ? field_arr(*f, "funcname") : nullptr;
          if (parts) {
            std::vector<std::string_view> names;
            for (const json::value& p : *parts) names.push_back(string_node(p));
            w.where_functions.push_back(name_from_parts(names));
          }
        }
        todo.push_back(&kv.value());
      }
    } else if (const json::array* a = x->if_array()) {
      for (const json::value& e : *a) todo.push_back(&e);
    }
  }
  return true;
}

void walker::set_where_sql(const json::object& stmt, const json::object& rv,
                           write_ref& w) const {
  const json::value* where = stmt.if_contains("whereClause");
  if (where == nullptr || stmt.contains("withClause") || node_of(where, "CurrentOfExpr")) return;
  // A subquery may read other tables, or pick rows nondeterministically (LIMIT without
  // a total order): a second evaluation could select other rows.
  if (!scan_where(*where, w)) {
    w.where_functions.clear();
    return;
  }
  std::vector<std::pair<std::size_t, std::size_t>> params;
  auto text = top_level_where(sql_, params);
  if (!text) return;
  w.where_sql = std::string(*text);
  std::size_t base = static_cast<std::size_t>(text->data() - sql_.data());
  for (auto [at, len] : params)
    if (at >= base && at < base + text->size())
      w.where_params.emplace_back(static_cast<std::uint32_t>(at - base),
                                  static_cast<std::uint32_t>(len));
  if (range_var_has_alias(rv)) w.alias = std::string(range_var_refname(rv));
}

write_ref& walker::add_write(const json::object& rv, write_op op) {
  write_ref w;
  w.table = range_var_name(rv);
  w.op = op;
  w.only = rv.contains("inh") ? !field_bool(rv, "inh") : true;
  st_.writes.push_back(std::move(w));
  return st_.writes.back();
}

void walker::with_clause(const json::object& w) {
  bool recursive = field_bool(w, "recursive");
  scopes_.emplace_back();
  std::size_t frame = scopes_.size() - 1;
  const json::array* ctes = field_arr(w, "ctes");
  if (ctes == nullptr) return;
  if (recursive) {
    for (const json::value& c : *ctes) {
      if (const json::object* cte = node_of(&c, "CommonTableExpr")) {
        scopes_[frame].emplace_back(field_str(*cte, "ctename"));
      }
    }
  }
  for (const json::value& c : *ctes) {
    const json::object* cte = node_of(&c, "CommonTableExpr");
    if (cte == nullptr) continue;
    if (const json::value* q = cte->if_contains("ctequery")) walk(*q);
    if (!recursive) scopes_[frame].emplace_back(field_str(*cte, "ctename"));
  }
}

void walker::node(std::string_view type, const json::object& o) {
  if (type == "RangeVar") return range_var(o);
  if (type == "SelectStmt") return select(o);
  if (type == "InsertStmt") return insert(o);
  if (type == "UpdateStmt") return update(o);
  if (type == "DeleteStmt") return del(o);
  if (type == "MergeStmt") return merge(o);
  if (type == "FuncCall") return func_call(o);
  if (type == "A_Const") return a_const(o);
  if (type == "ColumnRef" || type == "String") return;
  if (type == "ParamRef") {
    int n = static_cast<int>(field_int(o, "number", 0));
    st_.has_params = true;
    st_.max_param = std::max(st_.max_param, n);
    return;
  }
  if (type == "SQLValueFunction") {
    std::string_view op = field_str(o, "op");
    if (op.substr(0, 6) == "SVFOP_") op.remove_prefix(6);
    if (op.size() > 2 && op.substr(op.size() - 2) == "_N") op.remove_suffix(2);
    if (std::find(st_.value_functions.begin(), st_.value_functions.end(), op) ==
        st_.value_functions.end()) {
      st_.value_functions.emplace_back(op);
    }
    return;
  }
  if (type == "LockingClause") {
    st_.locking = true;  // lockedRels name FROM items already seen; they are not reads
    return;
  }
  if (type == "RangeTableSample") st_.tablesample = true;
  walk_fields(o, {});
}

void walker::func_call(const json::object& o) {
  if (const json::array* parts = field_arr(o, "funcname")) {
    std::vector<std::string_view> names;
    for (const json::value& p : *parts) names.push_back(string_node(p));
    qualified_name q = name_from_parts(names);
    if (std::find(st_.functions.begin(), st_.functions.end(), q) == st_.functions.end()) {
      st_.functions.push_back(std::move(q));
    }
  }
  walk_fields(o, {"funcname"});
}

void walker::a_const(const json::object& o) {
  if (const json::object* s = field_obj(o, "sval")) {
    if (is_time_word(field_str(*s, "sval"))) st_.time_literal = true;
  }
}

void walker::select(const json::object& o) {
  bool top = std::exchange(top_stmt_, false);
  std::size_t saved_scopes = scopes_.size();
  rv_mode saved_mode = std::exchange(mode_, rv_mode::read);
  if (const json::object* w = field_obj(o, "withClause")) with_clause(*w);
  if (const json::object* into = field_obj(o, "intoClause")) {
    if (const json::object* rel = as_range_var(into->if_contains("rel"))) {
      add_write(*rel, write_op::select_into).only = false;
    }
  }
  walk_fields(o, {"withClause", "intoClause"});
  if (top) {
    attribute_select_conjuncts(o);
    attribute_correlations(o);
  }
  scopes_.resize(saved_scopes);
  mode_ = saved_mode;
}

void walker::insert(const json::object& o) {
  bool top = std::exchange(top_stmt_, false);
  std::size_t saved_scopes = scopes_.size();
  rv_mode saved_mode = std::exchange(mode_, rv_mode::read);
  if (const json::object* w = field_obj(o, "withClause")) with_clause(*w);
  std::size_t wi = st_.writes.size();
  if (const json::object* rel = as_range_var(o.if_contains("relation"))) {
    add_write(*rel, write_op::insert).only = false;
  }
  if (top && nonempty(field_arr(o, "returningList"))) st_.has_returning = true;
  walk_fields(o, {"withClause", "relation"});
  if (wi < st_.writes.size()) {
    write_ref& w = st_.writes[wi];
    if (const json::array* cols = field_arr(o, "cols")) {
      for (const json::value& c : *cols) {
        auto [t, rt] = as_node(c);
        w.columns.emplace_back(rt ? field_str(*rt, "name") : std::string_view{});
        if (rt == nullptr || nonempty(field_arr(*rt, "indirection"))) w.columns.back().clear();
      }
    }
    const json::object* sel = node_of(o.if_contains("selectStmt"), "SelectStmt");
    const json::array* values = sel ? field_arr(*sel, "valuesLists") : nullptr;
    bool all_plain = std::all_of(w.columns.begin(), w.columns.end(),
                                 [](const std::string& c) { return !c.empty(); });
    // OVERRIDING USER VALUE: identity columns take their sequence, not the values listed.
    bool as_listed = field_str(o, "override") != "OVERRIDING_USER_VALUE";
    if (values != nullptr && !w.columns.empty() && all_plain && as_listed &&
        !sel->contains("withClause")) {
      w.rows_known = true;
      for (const json::value& row : *values) {
        const json::object* l = node_of(&row, "List");
        const json::array* items = l ? field_arr(*l, "items") : nullptr;
        if (items == nullptr || items->size() != w.columns.size()) {
          w.rows_known = false;
          w.rows.clear();
          break;
        }
        std::vector<std::optional<eq_value>> r;
        for (const json::value& item : *items) r.push_back(value(item));
        w.rows.push_back(std::move(r));
      }
    }
    if (const json::object* oc = field_obj(o, "onConflictClause")) {
      std::string_view action = field_str(*oc, "action");
      w.on_conflict = action == "ONCONFLICT_UPDATE"    ? write_ref::conflict::update
                      : action == "ONCONFLICT_NOTHING" ? write_ref::conflict::nothing
                                                       : write_ref::conflict::none;
      if (const json::object* infer = field_obj(*oc, "infer")) {
        if (const json::array* elems = field_arr(*infer, "indexElems")) {
          for (const json::value& e : *elems) {
            auto [t, ie] = as_node(e);
            if (ie != nullptr && ie->contains("name"))
              w.conflict_columns.emplace_back(field_str(*ie, "name"));
          }
        }
      }
    }
  }
  scopes_.resize(saved_scopes);
  mode_ = saved_mode;
}

void walker::update(const json::object& o) {
  bool top = std::exchange(top_stmt_, false);
  std::size_t saved_scopes = scopes_.size();
  rv_mode saved_mode = std::exchange(mode_, rv_mode::read);
  if (const json::object* w = field_obj(o, "withClause")) with_clause(*w);
  std::size_t wi = st_.writes.size();
  const json::object* rel = as_range_var(o.if_contains("relation"));
  if (rel != nullptr) add_write(*rel, write_op::update);
  if (top && nonempty(field_arr(o, "returningList"))) st_.has_returning = true;
  walk_fields(o, {"withClause", "relation"});
  if (rel != nullptr) {
    write_ref& w = st_.writes[wi];
    if (const json::array* targets = field_arr(o, "targetList")) {
      for (const json::value& t : *targets) {
        auto [type, rt] = as_node(t);
        if (rt == nullptr) continue;
        std::optional<eq_value> v;
        const json::value* val = rt->if_contains("val");
        if (val != nullptr && !nonempty(field_arr(*rt, "indirection"))) v = value(*val);
        w.set.emplace_back(std::string(field_str(*rt, "name")), std::move(v));
      }
    }
    bool alone = !nonempty(field_arr(o, "fromClause"));
    w.where = target_conjuncts(conjuncts(o.if_contains("whereClause")), *rel, alone);
    if (top && alone) set_where_sql(o, *rel, w);
  }
  scopes_.resize(saved_scopes);
  mode_ = saved_mode;
}

void walker::del(const json::object& o) {
  bool top = std::exchange(top_stmt_, false);
  std::size_t saved_scopes = scopes_.size();
  rv_mode saved_mode = std::exchange(mode_, rv_mode::read);
  if (const json::object* w = field_obj(o, "withClause")) with_clause(*w);
  std::size_t wi = st_.writes.size();
  const json::object* rel = as_range_var(o.if_contains("relation"));
  if (rel != nullptr) add_write(*rel, write_op::del);
  if (top && nonempty(field_arr(o, "returningList"))) st_.has_returning = true;
  walk_fields(o, {"withClause", "relation"});
  if (rel != nullptr) {
    bool alone = !nonempty(field_arr(o, "usingClause"));
    st_.writes[wi].where = target_conjuncts(conjuncts(o.if_contains("whereClause")), *rel, alone);
    if (top && alone) set_where_sql(o, *rel, st_.writes[wi]);
  }
  scopes_.resize(saved_scopes);
  mode_ = saved_mode;
}

void walker::merge(const json::object& o) {
  top_stmt_ = false;
  std::size_t saved_scopes = scopes_.size();
  rv_mode saved_mode = std::exchange(mode_, rv_mode::read);
  if (const json::object* w = field_obj(o, "withClause")) with_clause(*w);
  if (const json::object* rel = as_range_var(o.if_contains("relation"))) {
    add_write(*rel, write_op::merge);
  }
  walk_fields(o, {"withClause", "relation"});
  scopes_.resize(saved_scopes);
  mode_ = saved_mode;
}

// ---- conjuncts ----------------------------------------------------------------------------

// Whether a cast to TypeName `tn` keeps the value compared or stored: only one to
// pg_catalog's text, varchar, int2, int4 or int8 exactly as is (no length or other
// modifier, no array bounds, not %TYPE or SETOF). SQL's own spellings (integer, bigint,
// varchar, character varying) come out of the parser qualified; an unqualified name
// (text, int8) is pg_catalog's only when search_path finds pg_catalog's types first.
enum class cast : std::uint8_t { changes, qualified, unqualified };
cast transparent_cast(const json::object* tn) {
  if (tn == nullptr || nonempty(field_arr(*tn, "typmods")) ||
      nonempty(field_arr(*tn, "arrayBounds")) || tn->contains("setof") || tn->contains("pct_type"))
    return cast::changes;
  const json::array* names = field_arr(*tn, "names");
  if (names == nullptr || names->empty() || names->size() > 2) return cast::changes;
  if (names->size() == 2 && string_node((*names)[0]) != "pg_catalog") return cast::changes;
  std::string_view t = string_node(names->back());
  if (t != "text" && t != "varchar" && t != "int2" && t != "int4" && t != "int8")
    return cast::changes;
  return names->size() == 2 ? cast::qualified : cast::unqualified;
}

std::optional<eq_value> walker::value(const json::value& v) const {
  auto [type, o] = as_node(v);
  if (o == nullptr) return std::nullopt;
  if (type == "TypeCast") {
    // Only a cast that cannot change which value is compared or stored: one to
    // pg_catalog's text, varchar without a length, or an integer type. Anything else may
    // truncate, pad, round or compare differently ('ab '::char(3) = 'ab', x::name cuts at
    // 63 bytes, $1::varchar(2) keeps two characters).
    const json::value* arg = o->if_contains("arg");
    cast c = transparent_cast(field_obj(*o, "typeName"));
    if (arg == nullptr || c == cast::changes) return std::nullopt;
    std::optional<eq_value> r = value(*arg);
    if (r && c == cast::unqualified) r->unqualified_cast = true;
    return r;
  }
  if (type == "ParamRef") {
    eq_value r;
    r.k = eq_value::kind::param;
    r.param = static_cast<int>(field_int(*o, "number", 0));
    if (r.param <= 0) return std::nullopt;
    return r;
  }
  if (type != "A_Const") return std::nullopt;
  std::int64_t loc = field_int(*o, "location", -1);
  if (loc < 0) return std::nullopt;
  if (const json::object* iv = field_obj(*o, "ival")) {
    std::optional<std::string> text = integer_at(sql_, static_cast<std::size_t>(loc));
    if (!text) return std::nullopt;
    // The JSON has the value only when it is positive; check it agrees with the text.
    bool negative = (*text)[0] == '-';
    std::string digits = text->substr(negative ? text->find_first_not_of("- \t\r\n\f\v") : 0);
    digits.erase(0, std::min(digits.find_first_not_of('0'), digits.size() - 1));
    if (iv->contains("ival") ? negative || digits != std::to_string(field_int(*iv, "ival", 0))
                             : !negative && digits != "0") {
      return std::nullopt;
    }
    eq_value r;
    r.k = eq_value::kind::integer;
    r.text = std::move(*text);
    return r;
  }
  if (const json::object* sv = field_obj(*o, "sval")) {
    std::optional<std::string> text = string_at(sql_, static_cast<std::size_t>(loc));
    if (!text || *text != field_str(*sv, "sval")) return std::nullopt;
    eq_value r;
    r.k = eq_value::kind::string;
    r.text = std::move(*text);
    return r;
  }
  return std::nullopt;
}

void walker::flatten_and(const json::value& e, std::vector<const json::value*>& out) const {
  auto [type, o] = as_node(e);
  if (type == "BoolExpr" && o != nullptr && field_str(*o, "boolop") == "AND_EXPR") {
    if (const json::array* args = field_arr(*o, "args")) {
      for (const json::value& a : *args) flatten_and(a, out);
    }
    return;
  }
  out.push_back(&e);
}

std::optional<walker::raw_conjunct> walker::conjunct(const json::value& e) const {
  auto [type, o] = as_node(e);
  if (type != "A_Expr" || o == nullptr) return std::nullopt;
  const json::array* name = field_arr(*o, "name");
  if (name == nullptr || name->size() != 1 || string_node((*name)[0]) != "=") return std::nullopt;
  std::string_view kind = field_str(*o, "kind");
  const json::value* l = o->if_contains("lexpr");
  const json::value* r = o->if_contains("rexpr");
  if (l == nullptr || r == nullptr) return std::nullopt;
  raw_conjunct out;
  std::optional<std::vector<std::string_view>> col = column_ref_parts(l);
  if (kind == "AEXPR_OP") {
    const json::value* v = r;
    if (!col) {
      col = column_ref_parts(r);
      v = l;
    }
    if (!col) return std::nullopt;
    std::optional<eq_value> val = value(*v);
    if (!val) return std::nullopt;
    out.c.values.push_back(std::move(*val));
  } else if (kind == "AEXPR_IN") {
    if (!col) return std::nullopt;
    const json::object* list = node_of(r, "List");
    const json::array* items = list ? field_arr(*list, "items") : nullptr;
    if (items == nullptr || items->empty()) return std::nullopt;
    for (const json::value& item : *items) {
      std::optional<eq_value> val = value(item);
      if (!val) return std::nullopt;
      out.c.values.push_back(std::move(*val));
    }
  } else {
    return std::nullopt;
  }
  if (col->empty() || col->size() > 3) return std::nullopt;
  out.c.column = std::string(col->back());
  col->pop_back();
  out.qualifier = std::move(*col);
  return out;
}

std::vector<walker::raw_conjunct> walker::conjuncts(const json::value* where) const {
  std::vector<raw_conjunct> out;
  if (where == nullptr) return out;
  std::vector<const json::value*> terms;
  flatten_and(*where, terms);
  for (const json::value* t : terms) {
    if (auto c = conjunct(*t)) out.push_back(std::move(*c));
  }
  return out;
}

// Does `qualifier` (the column's qualifier parts) name the relation `rv`?
bool qualifier_names(const std::vector<std::string_view>& qualifier, const json::object& rv) {
  if (qualifier.size() == 1) return qualifier[0] == range_var_refname(rv);
  if (qualifier.size() == 2 && !range_var_has_alias(rv)) {
    return rv.contains("schemaname") && qualifier[0] == field_str(rv, "schemaname") &&
           qualifier[1] == field_str(rv, "relname");
  }
  return false;
}

std::vector<eq_conjunct> walker::target_conjuncts(const std::vector<raw_conjunct>& all,
                                                  const json::object& rv, bool allow_unqualified) {
  std::vector<eq_conjunct> out;
  for (const raw_conjunct& c : all) {
    if (c.qualifier.empty() ? allow_unqualified : qualifier_names(c.qualifier, rv)) {
      out.push_back(c.c);
    }
  }
  return out;
}

void walker::collect_from(const json::value& item, std::vector<from_leaf>& leaves) const {
  auto [type, o] = as_node(item);
  if (o == nullptr) {
    leaves.push_back({});  // unknown shape: an anonymous leaf blocks unqualified columns
    return;
  }
  if (type == "RangeVar") {
    from_leaf l;
    l.refname = std::string(range_var_refname(*o));
    l.aliased = range_var_has_alias(*o);
    l.schema = std::string(field_str(*o, "schemaname"));
    l.rv = o;
    leaves.push_back(std::move(l));
    return;
  }
  if (type == "JoinExpr" && !o->contains("alias")) {
    if (const json::value* l = o->if_contains("larg")) collect_from(*l, leaves);
    if (const json::value* r = o->if_contains("rarg")) collect_from(*r, leaves);
    return;
  }
  // Subqueries, functions, samples, aliased joins: they name a FROM item but not a
  // relation occurrence whose rows the WHERE restricts one to one.
  from_leaf l;
  if (const json::object* a = field_obj(*o, "alias"))
    l.refname = std::string(field_str(*a, "aliasname"));
  leaves.push_back(std::move(l));
}

void walker::attribute_select_conjuncts(const json::object& select) {
  if (field_str(select, "op") != "SETOP_NONE" && select.contains("op")) return;
  const json::array* from = field_arr(select, "fromClause");
  if (from == nullptr) return;
  std::vector<raw_conjunct> all = conjuncts(select.if_contains("whereClause"));
  if (all.empty()) return;
  std::vector<from_leaf> leaves;
  for (const json::value& item : *from) collect_from(item, leaves);
  for (raw_conjunct& c : all) {
    const from_leaf* match = nullptr;
    int matches = 0;
    if (c.qualifier.empty()) {
      if (leaves.size() == 1) match = &leaves[0], matches = 1;
    } else {
      for (const from_leaf& l : leaves) {
        bool names = c.qualifier.size() == 1
                         ? c.qualifier[0] == l.refname
                         : !l.aliased && l.rv != nullptr && !l.schema.empty() &&
                               c.qualifier[0] == l.schema && c.qualifier[1] == l.refname;
        if (names) match = &l, ++matches;
      }
    }
    if (matches != 1 || match->rv == nullptr) continue;
    auto it = read_index_.find(match->rv);
    if (it == read_index_.end()) continue;  // a CTE reference
    st_.reads[it->second].conjuncts.push_back(std::move(c.c));
  }
}

// `a = b` with a column reference on each side: the name parts of both.
std::optional<std::pair<std::vector<std::string_view>, std::vector<std::string_view>>>
column_equality(const json::value* e) {
  const json::object* ax = node_of(e, "A_Expr");
  if (ax == nullptr || field_str(*ax, "kind") != "AEXPR_OP") return std::nullopt;
  const json::array* op = field_arr(*ax, "name");
  if (op == nullptr || op->size() != 1 || string_node((*op)[0]) != "=") return std::nullopt;
  auto l = column_ref_parts(ax->if_contains("lexpr"));
  auto r = column_ref_parts(ax->if_contains("rexpr"));
  if (!l || !r) return std::nullopt;
  return std::make_pair(std::move(*l), std::move(*r));
}

// The only FROM leaf called `refname`, when it is a relation occurrence; else nullptr.
const from_leaf* only_leaf(const std::vector<from_leaf>& leaves, std::string_view refname) {
  const from_leaf* found = nullptr;
  int n = 0;
  for (const from_leaf& f : leaves)
    if (f.refname == refname) found = &f, ++n;
  return n == 1 && found->rv != nullptr ? found : nullptr;
}

// The first output position showing the qualified column `col` (`t.c`), also written
// unqualified (`c`) when the FROM has a single relation; -1 when none does.
int output_position(const plain_outputs& plain, const std::vector<std::string_view>& col,
                    bool one_relation) {
  for (std::size_t k = 0; k < plain.size(); ++k) {
    if (!plain[k]) continue;
    const auto& pc = *plain[k];
    if ((pc.size() == 2 && pc[0] == col[0] && pc[1] == col[1]) ||
        (pc.size() == 1 && one_relation && pc[0] == col[1]))
      return static_cast<int>(k);
  }
  return -1;
}

void walker::attribute_correlations(const json::object& select) {
  if (select.contains("op") && field_str(select, "op") != "SETOP_NONE") return;
  if (nonempty(field_arr(select, "distinctClause")) || nonempty(field_arr(select, "groupClause")) ||
      select.contains("havingClause") || nonempty(field_arr(select, "windowClause")))
    return;
  const json::array* targets = field_arr(select, "targetList");
  const json::array* from = field_arr(select, "fromClause");
  if (targets == nullptr || from == nullptr) return;
  std::vector<from_leaf> leaves;
  for (const json::value& item : *from) collect_from(item, leaves);
  // Plain output columns by position; any `*` shifts positions: give up.
  plain_outputs plain;
  for (const json::value& t : *targets) {
    const json::object* rt = node_of(&t, "ResTarget");
    const json::value* val = rt ? rt->if_contains("val") : nullptr;
    if (val == nullptr) return;
    if (const json::object* cr = node_of(val, "ColumnRef")) {
      const json::array* fields = field_arr(*cr, "fields");
      if (fields == nullptr || !string_list(*fields)) return;  // `*` or `t.*`
    }
    plain.push_back(column_ref_parts(val));
  }
  // ORDER BY only qualified columns (an unqualified name or a position may be the subquery).
  if (const json::array* sort = field_arr(select, "sortClause")) {
    for (const json::value& s : *sort) {
      const json::object* sb = node_of(&s, "SortBy");
      auto parts = sb ? column_ref_parts(sb->if_contains("node")) : std::nullopt;
      if (!parts || parts->size() < 2) return;
    }
  }
  for (std::size_t i = 0; i < targets->size(); ++i) {
    const json::object* rt = node_of(&(*targets)[i], "ResTarget");
    const json::object* sl = node_of(rt->if_contains("val"), "SubLink");
    if (sl == nullptr || field_str(*sl, "subLinkType") != "EXPR_SUBLINK") continue;
    const json::object* q = node_of(sl->if_contains("subselect"), "SelectStmt");
    if (q == nullptr || q->contains("withClause") ||
        (q->contains("op") && field_str(*q, "op") != "SETOP_NONE"))
      continue;
    const json::array* qfrom = field_arr(*q, "fromClause");
    if (qfrom == nullptr || qfrom->size() != 1) continue;
    const json::object* rv = node_of(&(*qfrom)[0], "RangeVar");
    if (rv == nullptr) continue;
    auto ri = read_index_.find(rv);
    if (ri == read_index_.end() || st_.reads[ri->second].by_output) continue;
    std::string_view inner = range_var_refname(*rv);
    std::vector<const json::value*> ands;
    if (const json::value* w = q->if_contains("whereClause")) flatten_and(*w, ands);
    for (const json::value* e : ands) {
      auto eq = column_equality(e);
      if (!eq) continue;
      const auto& [l, r] = *eq;
      auto is_inner = [&](const std::vector<std::string_view>& c) {
        return c.size() == 1 || (c.size() == 2 && c[0] == inner);
      };
      auto is_outer = [&](const std::vector<std::string_view>& c) {
        return c.size() == 2 && c[0] != inner;
      };
      const std::vector<std::string_view>* in = nullptr;
      const std::vector<std::string_view>* out = nullptr;
      if (is_inner(l) && is_outer(r)) in = &l, out = &r;
      else if (is_inner(r) && is_outer(l)) in = &r, out = &l;
      else continue;
      // The outer qualifier names exactly one relation of the outer FROM.
      const from_leaf* leaf = only_leaf(leaves, (*out)[0]);
      if (leaf == nullptr) continue;
      int output = output_position(plain, *out, leaves.size() == 1);
      if (output < 0) continue;
      read_ref::correlation c;
      c.column = std::string(in->back());
      c.output = output;
      c.outer_table = range_var_name(*leaf->rv);
      c.outer_column = std::string((*out)[1]);
      st_.reads[ri->second].by_output = std::move(c);
      break;
    }
  }
  attribute_join_correlations(select, leaves, plain);
}

// Equalities between two relations of the outermost FROM: the WHERE's top-level AND and
// the ON conditions of inner joins reached only through inner joins.
void walker::attribute_join_correlations(const json::object& select,
                                         const std::vector<from_leaf>& leaves,
                                         const plain_outputs& plain) {
  std::vector<const json::value*> ands;
  if (const json::value* w = select.if_contains("whereClause")) flatten_and(*w, ands);
  std::vector<const json::value*> todo;
  for (const json::value& item : *field_arr(select, "fromClause")) todo.push_back(&item);
  while (!todo.empty()) {
    const json::value* item = todo.back();
    todo.pop_back();
    const json::object* j = node_of(item, "JoinExpr");
    if (j == nullptr || j->contains("alias") || field_str(*j, "jointype") != "JOIN_INNER") continue;
    if (const json::value* q = j->if_contains("quals")) flatten_and(*q, ands);
    if (const json::value* l = j->if_contains("larg")) todo.push_back(l);
    if (const json::value* r = j->if_contains("rarg")) todo.push_back(r);
  }
  // Joins need two relations: an unqualified output column is never one of theirs.
  auto output_of = [&](const std::vector<std::string_view>& col) {
    return output_position(plain, col, false);
  };
  for (const json::value* e : ands) {
    auto eq = column_equality(e);
    if (!eq) continue;
    const auto& [l, r] = *eq;
    if (l.size() != 2 || r.size() != 2 || l[0] == r[0]) continue;
    for (int side = 0; side < 2; ++side) {
      const auto& in = side ? r : l;
      const auto& out = side ? l : r;
      const from_leaf* inner = only_leaf(leaves, in[0]);
      const from_leaf* outer = only_leaf(leaves, out[0]);
      if (inner == nullptr || outer == nullptr) continue;
      auto ii = read_index_.find(inner->rv);
      auto oi = read_index_.find(outer->rv);
      if (ii == read_index_.end() || oi == read_index_.end()) continue;
      read_ref& ir = st_.reads[ii->second];
      if (ir.by_output || !ir.conjuncts.empty()) continue;
      read_ref::correlation c;
      for (const eq_conjunct& k : st_.reads[oi->second].conjuncts)
        if (k.values.size() == 1) c.outer_keys.push_back(k.column);
      if (c.outer_keys.empty()) continue;
      c.output = output_of(in);
      if (c.output < 0) c.output = output_of(out);
      if (c.output < 0) continue;
      c.column = std::string(in[1]);
      c.outer_table = range_var_name(*outer->rv);
      c.outer_column = std::string(out[1]);
      c.join = true;
      ir.by_output = std::move(c);
    }
  }
}

// ---- statement classification --------------------------------------------------------------

bool is_ddl_node(std::string_view type) {
  if (type.substr(0, 6) == "Create" || type.substr(0, 5) == "Alter" ||
      type.substr(0, 4) == "Drop") {
    return true;
  }
  static constexpr std::array<std::string_view, 13> kDdl = {
      "RenameStmt",         "GrantStmt",         "GrantRoleStmt", "CommentStmt",
      "RefreshMatViewStmt", "IndexStmt",         "ViewStmt",      "RuleStmt",
      "DefineStmt",         "CompositeTypeStmt", "SecLabelStmt",  "ImportForeignSchemaStmt",
      "ReassignOwnedStmt"};
  return std::find(kDdl.begin(), kDdl.end(), type) != kDdl.end();
}

std::string isolation_of(const json::array* options, bool& read_only) {
  std::string iso;
  if (options == nullptr) return iso;
  for (const json::value& opt : *options) {
    const json::object* d = node_of(&opt, "DefElem");
    if (d == nullptr) continue;
    std::string_view name = field_str(*d, "defname");
    const json::object* arg = node_of(d->if_contains("arg"), "A_Const");
    if (arg == nullptr) continue;
    if (name == "transaction_isolation") {
      if (const json::object* s = field_obj(*arg, "sval")) iso = lower(field_str(*s, "sval"));
    } else if (name == "transaction_read_only") {
      // READ WRITE is 0, which this libpg_query emits as "ival":{} (see the invariants).
      if (const json::object* i = field_obj(*arg, "ival"))
        read_only = field_int(*i, "ival", 0) != 0;
    }
  }
  return iso;
}

void walker::top(std::string_view type, const json::object& o) {
  st_.node = std::string(type);
  if (type == "SelectStmt") {
    node(type, o);
    st_.kind = st_.writes.empty() ? stmt_kind::read : stmt_kind::write;
    return;
  }
  if (type == "InsertStmt" || type == "UpdateStmt" || type == "DeleteStmt" || type == "MergeStmt") {
    node(type, o);
    st_.kind = stmt_kind::write;
    return;
  }
  if (type == "TruncateStmt") {
    st_.kind = stmt_kind::write;
    bool cascade = field_str(o, "behavior") == "DROP_CASCADE";
    if (const json::array* rels = field_arr(o, "relations")) {
      for (const json::value& r : *rels) {
        if (const json::object* rv = as_range_var(&r))
          add_write(*rv, write_op::truncate).cascade = cascade;
      }
    }
    return;
  }
  if (type == "CopyStmt") {
    bool from = field_bool(o, "is_from");
    if (const json::object* rv = as_range_var(o.if_contains("relation"))) {
      if (from) {
        add_write(*rv, write_op::copy_from);
      } else {
        range_var(*rv);
      }
    }
    top_stmt_ = false;
    walk_fields(o, {"relation"});
    st_.kind = from || !st_.writes.empty() ? stmt_kind::write : stmt_kind::copy_to;
    return;
  }
  if (type == "VariableShowStmt") {
    st_.kind = stmt_kind::read;
    st_.variable = lower(field_str(o, "name"));
    return;
  }
  if (type == "TransactionStmt") {
    std::string_view k = field_str(o, "kind");
    if (k == "TRANS_STMT_BEGIN" || k == "TRANS_STMT_START") {
      st_.kind = stmt_kind::txn_begin;
      st_.isolation = isolation_of(field_arr(o, "options"), st_.read_only);
    } else if (k == "TRANS_STMT_COMMIT") {
      st_.kind = stmt_kind::txn_commit;
    } else if (k == "TRANS_STMT_ROLLBACK") {
      st_.kind = stmt_kind::txn_rollback;
    } else if (k == "TRANS_STMT_SAVEPOINT") {
      st_.kind = stmt_kind::savepoint;
    } else if (k == "TRANS_STMT_RELEASE") {
      st_.kind = stmt_kind::release;
    } else if (k == "TRANS_STMT_ROLLBACK_TO") {
      st_.kind = stmt_kind::rollback_to;
    } else {
      // PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK PREPARED: two-phase commit makes
      // another transaction's writes visible (or not) at a time of its own.
      st_.kind = stmt_kind::other;
    }
    return;
  }
  if (type == "VariableSetStmt") {
    std::string_view k = field_str(o, "kind");
    std::string_view name = field_str(o, "name");
    st_.local = field_bool(o, "is_local");
    if (k == "VAR_SET_MULTI" &&
        (name.substr(0, 11) == "TRANSACTION" || name == "SESSION CHARACTERISTICS")) {
      st_.kind = stmt_kind::txn_set;
      st_.isolation = isolation_of(field_arr(o, "args"), st_.read_only);
    } else if (k == "VAR_RESET_ALL") {
      st_.kind = stmt_kind::session_reset;
    } else {
      st_.kind = stmt_kind::session_set;
      st_.variable = lower(name);
    }
    return;
  }
  if (type == "DiscardStmt") {
    st_.kind = stmt_kind::session_reset;
    return;
  }
  if (is_ddl_node(type)) {
    st_.kind = stmt_kind::ddl;
    mode_ = rv_mode::ddl;
    if (type == "DropStmt") {
      static constexpr std::array<std::string_view, 6> kRelations = {
          "OBJECT_TABLE",    "OBJECT_VIEW",          "OBJECT_MATVIEW",
          "OBJECT_SEQUENCE", "OBJECT_FOREIGN_TABLE", "OBJECT_INDEX"};
      std::string_view rt = field_str(o, "removeType");
      const json::array* objects = field_arr(o, "objects");
      if (objects != nullptr &&
          std::find(kRelations.begin(), kRelations.end(), rt) != kRelations.end()) {
        for (const json::value& obj : *objects) {
          if (auto parts = string_list(obj)) st_.ddl_targets.push_back(name_from_parts(*parts));
        }
      }
      return;
    }
    if (type == "CommentStmt") {
      std::string_view ot = field_str(o, "objtype");
      const json::value* object = o.if_contains("object");
      std::optional<std::vector<std::string_view>> parts;
      if (object != nullptr) parts = string_list(*object);
      if (parts && (ot == "OBJECT_TABLE" || ot == "OBJECT_VIEW" || ot == "OBJECT_MATVIEW" ||
                    ot == "OBJECT_FOREIGN_TABLE")) {
        st_.ddl_targets.push_back(name_from_parts(*parts));
      } else if (parts && ot == "OBJECT_COLUMN" && parts->size() >= 2) {
        parts->pop_back();
        st_.ddl_targets.push_back(name_from_parts(*parts));
      }
      return;
    }
    top_stmt_ = false;
    walk_fields(o, {});
    return;
  }
  // Everything else (DO, CALL, EXECUTE, PREPARE, EXPLAIN, LOCK, VACUUM, LISTEN, NOTIFY, ...).
  // Relations and functions they mention are still reported, for information.
  st_.kind = stmt_kind::other;
  top_stmt_ = false;
  walk_fields(o, {});
}

analysis analyze_json(std::string_view sql, const char* tree) {
  analysis out;
  json::monotonic_resource mr;
  json::parse_options opts;
  // Boost.JSON's parser recurses per nesting level; 100k levels fit the parser thread's
  // stack even in sanitizer builds (measured), and no realistic statement comes close.
  opts.max_depth = 100'000;
  opts.allow_invalid_utf8 = true;
  boost::system::error_code ec;
  json::value root = json::parse(tree, ec, &mr, opts);
  if (ec == json::error::too_deep) {
    out.error = too_deep().what();
    return out;
  }
  if (ec) {
    out.error = "cannot read libpg_query output: " + ec.message();
    return out;
  }
  const json::object* r = root.if_object();
  const json::array* stmts = r ? field_arr(*r, "stmts") : nullptr;
  if (stmts != nullptr) {
    for (const json::value& raw : *stmts) {
      const json::object* wrapper = raw.if_object();
      const json::value* stmt = wrapper ? wrapper->if_contains("stmt") : nullptr;
      auto [type, o] = stmt ? as_node(*stmt) : std::pair<std::string_view, const json::object*>{};
      statement st;
      if (o != nullptr) {
        walker w(sql, st);
        w.top(type, *o);
      }
      out.statements.push_back(std::move(st));
    }
  }
  out.ok = true;
  return out;
}

// libpg_query turns its tree into JSON recursively, so a long left-deep chain
// (`1+1+...`, `x::t::t...`) overflows even the parser thread's 64 MiB stack at ~500k levels
// (about 130 bytes of stack per level, measured). Tree depth is bounded by the number of
// tokens that can nest (operator characters, and identifiers/keywords not followed by `(`),
// so statements short enough that this cannot reach kMaxNestingTokens skip the count, and
// longer ones are refused before parsing when the count exceeds it.
constexpr std::size_t kMaxNestingTokens = 128u << 10;

std::size_t nesting_token_bound(std::string_view sql) {
  std::size_t count = 0;
  scan_sql(sql, [&](const sql_token& t) {
    char c = sql[t.begin];
    switch (t.kind) {
      case sql_token::quoted_ident:
      case sql_token::dollar:
        ++count;
        break;
      case sql_token::word: {
        std::string word = lower(sql.substr(t.begin, t.end - t.begin));
        std::size_t j = t.end;
        while (j < sql.size() && std::isspace(static_cast<unsigned char>(sql[j]))) ++j;
        bool call = j < sql.size() && sql[j] == '(';
        if (!call && word != "null" && word != "default" && word != "true" && word != "false")
          ++count;
        break;
      }
      case sql_token::other:
        if (std::strchr("+-*/<>=~!@#%^&|`?:", c) != nullptr) ++count;
        break;
      default:
        break;
    }
    return true;
  });
  return count;
}

// Runs on the parser thread.
analysis parse_and_analyze(std::string_view sql) {
  if (sql.size() > kMaxNestingTokens && nesting_token_bound(sql) > kMaxNestingTokens) {
    analysis out;
    out.error = "statement is too large or too deeply nested to analyze";
    return out;
  }
  std::string text(sql);  // libpg_query needs a NUL-terminated string
  PgQueryParseResult res = pg_query_parse(text.c_str());
  analysis out;
  try {
    if (res.error != nullptr) {
      out.error = res.error->message ? res.error->message : "parse error";
    } else {
      out = analyze_json(sql, res.parse_tree);
    }
  } catch (const std::exception& e) {
    out = analysis{};
    out.error = e.what();
  }
  pg_query_free_parse_result(res);
  return out;
}

// ---- memo ---------------------------------------------------------------------------------

// Bounded per shard by entries and by SQL bytes; a full shard is cleared (entries still held
// by callers stay valid: they are shared_ptrs).
constexpr std::size_t kShards = 16;
constexpr std::size_t kMaxEntriesPerShard = 20000 / kShards;
constexpr std::size_t kMaxBytesPerShard = 4u << 20;
constexpr std::size_t kMaxMemoSql = 64u << 10;  // longer statements are analysed every time

struct prehashed {
  std::string_view sql;
  std::size_t hash;
};
struct memo_hash {
  using is_transparent = void;
  std::size_t operator()(const prehashed& p) const noexcept { return p.hash; }
  std::size_t operator()(const std::string& s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};
struct memo_eq {
  using is_transparent = void;
  bool operator()(const std::string& a, const std::string& b) const noexcept { return a == b; }
  bool operator()(const prehashed& a, const std::string& b) const noexcept { return a.sql == b; }
  bool operator()(const std::string& a, const prehashed& b) const noexcept { return a == b.sql; }
};

struct memo_shard {
  std::mutex mu;
  std::unordered_map<std::string, std::shared_ptr<const analysis>, memo_hash, memo_eq> map;
  std::size_t bytes = 0;
};

memo_shard* memo_shards() {
  static auto* shards = new std::array<memo_shard, kShards>();  // leaked: used until exit
  return shards->data();
}

}  // namespace

std::optional<std::string> as_escape_strings(std::string_view sql) {
  std::string out;
  std::size_t copied = 0;
  bool ok = true, changed = false;
  bool after_string = false;  // the previous token other than a comment is a literal
  scan_sql(
      sql,
      [&](const sql_token& t) {
        if (t.kind == sql_token::comment) return true;
        bool continues = std::exchange(after_string, t.kind == sql_token::string);
        if (t.kind != sql_token::string || sql[t.begin] != '\'' ||
            sql.substr(t.begin, t.end - t.begin).find('\\') == std::string_view::npos)
          return true;
        // N'..', U&'..', B'..', X'..', or a continuation of the literal before (which
        // takes that one's kind): no E prefix can be added.
        if (t.unterminated || continues ||
            (t.begin > 0 && (is_ident_char(sql[t.begin - 1]) || sql[t.begin - 1] == '&'))) {
          ok = false;
          return false;
        }
        out.append(sql, copied, t.begin - copied).append("E");
        copied = t.begin;
        changed = true;
        return true;
      },
      true);
  if (!ok) return std::nullopt;
  if (!changed) return std::string(sql);
  return out.append(sql, copied, std::string_view::npos);
}

analysis analyze_uncached(std::string_view sql) {
  return detail::run_on_parser_thread([sql] { return parse_and_analyze(sql); });
}

std::shared_ptr<const analysis> analyze(std::string_view sql) {
  if (sql.size() > kMaxMemoSql) return std::make_shared<const analysis>(analyze_uncached(sql));
  std::size_t h = std::hash<std::string_view>{}(sql);
  // The low bits pick the bucket inside the map; use high bits for the shard.
  memo_shard& shard = memo_shards()[(h >> 56) % kShards];
  {
    std::lock_guard lock(shard.mu);
    auto it = shard.map.find(prehashed{sql, h});
    if (it != shard.map.end()) return it->second;
  }
  auto result = std::make_shared<const analysis>(analyze_uncached(sql));
  std::lock_guard lock(shard.mu);
  if (shard.map.size() >= kMaxEntriesPerShard || shard.bytes + sql.size() > kMaxBytesPerShard) {
    shard.map.clear();
    shard.bytes = 0;
  }
  auto [it, inserted] = shard.map.try_emplace(std::string(sql), result);
  if (inserted) shard.bytes += sql.size();
  return it->second;  // a concurrent miss may have won: everyone shares its result
}

}  // namespace qcache::pg
