// qcache-slt: runs SQL Logic Test files (../shared/slt/about.wiki) against SQLite or
// PostgreSQL, directly or through qcache, and checks every result.
//
//   qcache-slt --engine sqlite|postgresql --mode direct|cached|twice|prime
//              [--pg CONNINFO] [--expect FILE] [--record-expect FILE] [-v] FILE_OR_DIR...
//
// Defaults: --engine sqlite --mode prime, --expect <source>/tests/slt/expected-outside.txt.
//
// Modes:
//   direct  no cache at all: the reference behaviour.
//   cached  every statement and query goes through the cache.
//   twice   as cached, and each query runs twice (the second is normally a hit); both
//           results are checked.
//   prime   as cached, and before each statement (a write, DDL, ...) every query that
//           follows it up to the next statement is run once through the cache, so that a
//           result the statement should invalidate is in the cache when the query is
//           checked: a missing invalidation shows up as a wrong answer.
//
// Failures print one line each (file:line, SQL, expected vs got); the last line is
// "N passed, N failed, N skipped". Failures listed in the expectations file (for reasons
// outside qcache: dialect, float rendering) must occur exactly as listed, in every mode,
// and count as passed; an expected failure that does not happen, or fails differently,
// is a failure. Exit status 0 only when nothing failed.
//
// Self-check: --bypass-writes runs INSERT, UPDATE and DELETE on the driver behind qcache's back, so the
// cache never hears of them. In prime mode that must produce wrong answers: ctest runs it
// and expects failure, proving that prime mode catches a missing invalidation.
#include "engine.h"
#include "md5.h"

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#ifndef QCACHE_SLT_DEFAULT_EXPECT
#define QCACHE_SLT_DEFAULT_EXPECT ""
#endif

namespace qcache::slt {
namespace {

enum class mode { direct, cached, twice, prime };

struct record {
  enum class type { statement, query, hash_threshold, halt, unknown } t = type::unknown;
  int line = 0;
  std::vector<std::string> skipif, onlyif;
  bool expect_ok = true;                   // statement ok / error
  std::string sql;
  std::string types, sort = "nosort", label;  // query
  bool has_results = false;
  std::vector<std::string> expected;
  int threshold = 0;  // hash-threshold
  std::string first;  // the first line, for unknown records

  bool applies(const std::string& engine) const {
    for (const auto& s : skipif)
      if (s == engine) return false;
    for (const auto& s : onlyif)
      if (s != engine) return false;
    return true;
  }
};

std::vector<std::string> split_ws(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

std::string rstrip(std::string s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
  return s;
}

std::vector<record> parse(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::vector<record> out;
  std::vector<std::pair<int, std::string>> block;
  auto flush = [&] {
    if (block.empty()) return;
    record r;
    std::size_t i = 0;
    for (; i < block.size(); ++i) {
      auto w = split_ws(block[i].second);
      if (w.size() >= 2 && w[0] == "skipif") r.skipif.push_back(w[1]);
      else if (w.size() >= 2 && w[0] == "onlyif") r.onlyif.push_back(w[1]);
      else break;
    }
    if (i == block.size()) {
      block.clear();
      return;
    }
    r.line = block[i].first;
    r.first = block[i].second;
    auto w = split_ws(block[i].second);
    ++i;
    if (w[0] == "statement") {
      r.t = record::type::statement;
      r.expect_ok = !(w.size() > 1 && w[1] == "error");
      for (; i < block.size(); ++i) r.sql += (r.sql.empty() ? "" : "\n") + block[i].second;
    } else if (w[0] == "query") {
      r.t = record::type::query;
      if (w.size() > 1) r.types = w[1];
      if (w.size() > 2) r.sort = w[2];
      if (w.size() > 3) r.label = w[3];
      for (; i < block.size() && block[i].second != "----"; ++i)
        r.sql += (r.sql.empty() ? "" : "\n") + block[i].second;
      if (i < block.size()) {
        r.has_results = true;
        for (++i; i < block.size(); ++i) r.expected.push_back(block[i].second);
      }
    } else if (w[0] == "hash-threshold") {
      r.t = record::type::hash_threshold;
      r.threshold = w.size() > 1 ? std::atoi(w[1].c_str()) : 0;
    } else if (w[0] == "halt") {
      r.t = record::type::halt;
    }
    out.push_back(std::move(r));
    block.clear();
  };
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    line = rstrip(line);
    if (line.empty()) {
      flush();
      continue;
    }
    if (line[0] == '#') continue;
    block.emplace_back(n, line);
  }
  flush();
  return out;
}

// ---- value rendering, as the upstream driver (slt_sqlite.c) does -------------------------

// sqlite3_column_int64 of a text value: leading blanks, sign, digits; saturating.
std::int64_t text_to_int(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  bool neg = false;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
  unsigned long long v = 0;
  bool overflow = false;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
    if (v > (ULLONG_MAX - 9) / 10) overflow = true;
    else v = v * 10 + unsigned(s[i] - '0');
  }
  if (overflow || v > static_cast<unsigned long long>(LLONG_MAX))
    return neg ? LLONG_MIN : LLONG_MAX;
  return neg ? -static_cast<std::int64_t>(v) : static_cast<std::int64_t>(v);
}

std::int64_t real_to_int(double d) {
  if (!(d == d)) return 0;
  if (d <= -9223372036854775808.0) return LLONG_MIN;
  if (d >= 9223372036854775807.0) return LLONG_MAX;
  return static_cast<std::int64_t>(d);
}

std::string render(const cell& c, char type) {
  if (c.k == cell::kind::null) return "NULL";
  char buf[64];
  switch (type) {
    case 'I': {
      std::int64_t v = c.k == cell::kind::integer ? c.i
                       : c.k == cell::kind::real  ? real_to_int(c.d)
                                                  : text_to_int(c.text);
      std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
      return buf;
    }
    case 'R': {
      double v = c.k == cell::kind::integer ? double(c.i)
                 : c.k == cell::kind::real  ? c.d
                                            : std::strtod(c.text.c_str(), nullptr);
      // sqlite3_snprintf, as upstream: it prints at most 16 significant digits.
      sqlite3_snprintf(sizeof buf, buf, "%.3f", v);
      return buf;
    }
    default: {
      if (c.text.empty()) return "(empty)";
      std::string s = c.text;
      for (auto& ch : s)
        if (static_cast<unsigned char>(ch) < ' ' || static_cast<unsigned char>(ch) > '~') ch = '@';
      return s;
    }
  }
}

std::string hash_of(const std::vector<std::string>& values) {
  md5 m;
  for (const auto& v : values) {
    m.update(v);
    m.update("\n");
  }
  return std::to_string(values.size()) + " values hashing to " + m.hex();
}

std::string one_line(const std::string& s, std::size_t max = 160) {
  std::string out;
  for (char c : s) out += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
  if (out.size() > max) out = out.substr(0, max) + "...";
  return out;
}

std::string values_text(const std::vector<std::string>& v, std::size_t max = 200) {
  std::string out;
  for (const auto& x : v) {
    if (!out.empty()) out += ' ';
    out += x;
    if (out.size() > max) return out.substr(0, max) + "... (" + std::to_string(v.size()) + " values)";
  }
  return "[" + out + "]";
}

// ---- expectations ----------------------------------------------------------------------

// "<engine> <path>:<line> <digest> <reason...>": this record fails in direct mode for a
// reason outside qcache, and its result digests to <digest> (8 hex digits of the MD5 of
// what it returned, "error" included; several may be listed, separated by '|').
struct expectation {
  std::string engine, path, digest, reason;
  int line = 0;
  bool seen = false;
};

// `listed` is one digest or several separated by '|'.
bool digest_listed(const std::string& listed, const std::string& digest) {
  std::size_t start = 0;
  while (start <= listed.size()) {
    std::size_t bar = listed.find('|', start);
    if (bar == std::string::npos) bar = listed.size();
    if (listed.compare(start, bar - start, digest) == 0) return true;
    start = bar + 1;
  }
  return false;
}

bool path_matches(const std::string& file, const std::string& suffix) {
  if (file.size() < suffix.size()) return false;
  if (file.compare(file.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
  return file.size() == suffix.size() || file[file.size() - suffix.size() - 1] == '/';
}

std::vector<expectation> load_expectations(const std::string& path) {
  std::vector<expectation> out;
  if (path.empty()) return out;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read expectations file " + path);
  std::string line;
  while (std::getline(in, line)) {
    line = rstrip(line);
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    expectation e;
    std::string where;
    ls >> e.engine >> where >> e.digest;
    std::getline(ls, e.reason);
    auto colon = where.rfind(':');
    if (colon == std::string::npos || e.digest.empty())
      throw std::runtime_error("bad expectation line: " + line);
    e.path = where.substr(0, colon);
    e.line = std::atoi(where.c_str() + colon + 1);
    out.push_back(std::move(e));
  }
  return out;
}

// ---- the runner --------------------------------------------------------------------------

struct totals {
  long passed = 0, failed = 0, skipped = 0, expected = 0;
};

class runner {
 public:
  runner(engine& e, mode m, std::vector<expectation>& ex, std::ostream* record_to, bool verbose,
         bool bypass_writes)
      : e_(e), m_(m), ex_(ex), record_to_(record_to), verbose_(verbose),
        bypass_writes_(bypass_writes) {}

  void run_file(const std::string& path) {
    auto t0 = std::chrono::steady_clock::now();
    std::vector<record> recs;
    try {
      recs = parse(path);
    } catch (const std::exception& x) {
      std::cout << path << ": " << x.what() << "\n";
      ++t_.failed;
      return;
    }
    file_ = path;
    labels_.clear();
    threshold_ = 0;
    const totals before = t_;
    e_.open(path);
    const std::string engine = e_.name();
    for (std::size_t i = 0; i < recs.size(); ++i) {
      const record& r = recs[i];
      if (r.t == record::type::hash_threshold) {
        threshold_ = r.threshold;
        continue;
      }
      if (!r.applies(engine)) {
        if (r.t == record::type::statement || r.t == record::type::query) ++t_.skipped;
        continue;
      }
      if (r.t == record::type::halt) break;
      if (r.t == record::type::unknown) {
        ++t_.skipped;
        continue;
      }
      if (r.t == record::type::statement) {
        if (m_ == mode::prime) prime(recs, i + 1);
        run_statement(r);
      } else {
        run_query(r, m_ != mode::direct, "");
        if (m_ == mode::twice) run_query(r, true, " (second run)");
      }
    }
    e_.close();
    check_unseen(path);
    if (verbose_) {
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - t0)
                    .count();
      std::cerr << path << ": " << (t_.passed - before.passed) << " passed, "
                << (t_.failed - before.failed) << " failed, " << ms << " ms\n";
    }
  }

  const totals& result() const { return t_; }

 private:
  // Runs once through the cache every query from `from` up to the next statement.
  void prime(const std::vector<record>& recs, std::size_t from) {
    for (std::size_t j = from; j < recs.size(); ++j) {
      const record& q = recs[j];
      if (q.t == record::type::statement || q.t == record::type::halt) {
        if (q.applies(e_.name())) break;
        continue;
      }
      if (q.t != record::type::query || !q.applies(e_.name())) continue;
      try {
        (void)e_.query(q.sql, true);
      } catch (const db_error&) {
      }
    }
  }

  static bool is_dml(const std::string& sql) {
    auto w = split_ws(sql);
    if (w.empty()) return false;
    std::string k = w[0];
    for (auto& ch : k) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    return k == "INSERT" || k == "UPDATE" || k == "DELETE";
  }

  void run_statement(const record& r) {
    std::string err;
    bool ok = true;
    try {
      e_.statement(r.sql, m_ != mode::direct && !(bypass_writes_ && is_dml(r.sql)));
    } catch (const db_error& x) {
      ok = false;
      err = x.message;
    }
    if (ok == r.expect_ok) return pass();
    fail(r, r.expect_ok ? "ok" : "error", ok ? "ok" : "error: " + one_line(err, 120),
         ok ? "ok" : "error", "");
  }

  void run_query(const record& r, bool cached, const char* suffix) {
    rows got;
    try {
      got = e_.query(r.sql, cached);
    } catch (const db_error& x) {
      return fail(r, expected_text(r), "error: " + one_line(x.message, 120), "error", suffix);
    }
    const std::size_t ncol = r.types.size();
    if (got.columns != ncol) {
      std::string g = std::to_string(got.columns) + " columns";
      return fail(r, std::to_string(ncol) + " columns", g, g, suffix);
    }
    std::vector<std::string> values;
    values.reserve(got.cells.size());
    for (std::size_t k = 0; k < got.cells.size(); ++k)
      values.push_back(render(got.cells[k], r.types[k % ncol]));
    if (r.sort == "rowsort" && ncol > 0) {
      std::vector<std::vector<std::string>> rowv;
      for (std::size_t k = 0; k < values.size(); k += ncol)
        rowv.emplace_back(values.begin() + long(k), values.begin() + long(k + ncol));
      std::sort(rowv.begin(), rowv.end());
      values.clear();
      for (auto& row : rowv)
        for (auto& v : row) values.push_back(std::move(v));
    } else if (r.sort == "valuesort") {
      std::sort(values.begin(), values.end());
    }
    const std::string hash = hash_of(values);
    bool ok;
    std::string got_text;
    if (r.expected.size() == 1 && r.expected[0].find(" values hashing to ") != std::string::npos) {
      ok = r.expected[0] == hash;
      got_text = hash;
    } else {
      ok = matches(r.expected, values, ncol);
      got_text = threshold_ > 0 && values.size() > std::size_t(threshold_) ? hash
                                                                          : values_text(values);
    }
    if (ok && !r.label.empty()) {
      auto [it, fresh] = labels_.emplace(r.label, hash);
      if (!fresh && it->second != hash)
        return fail(r, "label " + r.label + " = " + it->second, hash, hash, suffix);
    }
    if (ok) return pass();
    fail(r, expected_text(r), got_text, hash, suffix);
  }

  static bool matches(const std::vector<std::string>& exp, const std::vector<std::string>& got,
                      std::size_t ncol) {
    if (exp.size() == got.size()) return exp == got;
    // Older scripts put a row per line, its values separated by blanks.
    if (ncol > 1 && exp.size() * ncol == got.size()) {
      for (std::size_t k = 0; k < exp.size(); ++k) {
        std::string row;
        for (std::size_t c = 0; c < ncol; ++c) row += (c ? " " : "") + got[k * ncol + c];
        if (row != exp[k]) return false;
      }
      return true;
    }
    return false;
  }

  static std::string expected_text(const record& r) {
    if (r.expected.size() == 1 && r.expected[0].find(" values hashing to ") != std::string::npos)
      return r.expected[0];
    return values_text(r.expected);
  }

  void pass() { ++t_.passed; }

  // `digest_of` is what identifies this failure's outcome in the expectations file.
  void fail(const record& r, const std::string& expected, const std::string& got,
            const std::string& digest_of, const char* suffix) {
    const std::string digest = md5_hex(digest_of).substr(0, 8);
    for (auto& e : ex_) {
      if (e.engine == e_.name() && e.line == r.line && path_matches(file_, e.path)) {
        e.seen = true;
        if (digest_listed(e.digest, digest)) {
          ++t_.expected;
          ++t_.passed;
          return;
        }
      }
    }
    ++t_.failed;
    std::cout << file_ << ":" << r.line << suffix << ": " << one_line(r.sql) << ": expected "
              << expected << ", got " << got << " [" << digest << "]\n";
    if (record_to_)
      *record_to_ << e_.name() << " " << file_ << ":" << r.line << " " << digest << " "
                  << one_line(got, 100) << "\n";
  }

  void check_unseen(const std::string& path) {
    for (auto& e : ex_) {
      if (e.engine != e_.name() || !path_matches(path, e.path)) continue;
      if (!e.seen) {
        ++t_.failed;
        std::cout << path << ":" << e.line << ": expected an outside failure [" << e.digest
                  << "] (" << one_line(e.reason, 80) << "), but the record passed or was not run\n";
      }
      e.seen = false;  // the same file may be given twice
    }
  }

  engine& e_;
  mode m_;
  std::vector<expectation>& ex_;
  std::ostream* record_to_;
  bool verbose_;
  bool bypass_writes_;
  totals t_;
  std::string file_;
  std::map<std::string, std::string> labels_;
  int threshold_ = 0;
};

void collect(const std::filesystem::path& p, std::vector<std::string>& out) {
  namespace fs = std::filesystem;
  if (fs::is_directory(p)) {
    std::vector<std::string> found;
    for (auto& e : fs::recursive_directory_iterator(p))
      if (e.is_regular_file() && e.path().extension() == ".test") found.push_back(e.path().string());
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  } else {
    out.push_back(p.string());
  }
}

int usage() {
  std::cerr << "usage: qcache-slt --engine sqlite|postgresql --mode direct|cached|twice|prime\n"
               "                  [--pg CONNINFO (default $QCACHE_PG)] [--expect FILE]\n"
               "                  [--record-expect FILE] [-v] FILE_OR_DIR...\n";
  return 2;
}

int main_(int argc, char** argv) {
  std::string engine_name = "sqlite", mode_name = "prime", expect = QCACHE_SLT_DEFAULT_EXPECT,
              record_path;
  const char* env_pg = std::getenv("QCACHE_PG");
  std::string pg = env_pg ? env_pg : "";
  bool verbose = false;
  bool bypass_writes = false;  // self-check: statements skip the cache (see the header)
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--engine") engine_name = value();
    else if (a == "--mode") mode_name = value();
    else if (a == "--pg") pg = value();
    else if (a == "--expect") expect = value();
    else if (a == "--record-expect") record_path = value();
    else if (a == "-v" || a == "--verbose") verbose = true;
    else if (a == "--bypass-writes") bypass_writes = true;
    else if (a == "-h" || a == "--help") return usage();
    else if (!a.empty() && a[0] == '-') return usage();
    else collect(a, files);
  }
  if (files.empty()) return usage();
  mode m;
  if (mode_name == "direct") m = mode::direct;
  else if (mode_name == "cached") m = mode::cached;
  else if (mode_name == "twice") m = mode::twice;
  else if (mode_name == "prime") m = mode::prime;
  else return usage();
  engine_options o;
  o.with_cache = m != mode::direct;
  o.pg_conninfo = pg;
  std::unique_ptr<engine> e;
  if (engine_name == "sqlite") e = make_sqlite_engine(o);
  else if (engine_name == "sqlite-capi") {
    o.sqlite_capi = true;
    e = make_sqlite_engine(o);
  }
  else if (engine_name == "postgresql") e = make_postgresql_engine(o);
  else return usage();
  auto ex = load_expectations(expect);
  std::ofstream record_file;
  if (!record_path.empty()) record_file.open(record_path);
  runner r(*e, m, ex, record_path.empty() ? nullptr : &record_file, verbose,
           bypass_writes);
  auto t0 = std::chrono::steady_clock::now();
  for (const auto& f : files) r.run_file(f);
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const totals& t = r.result();
  std::string s = e->stats();
  std::cout << engine_name << " " << mode_name << ": " << files.size() << " files, "
            << std::fixed;
  std::cout.precision(1);
  std::cout << secs << " s" << (s.empty() ? "" : "; " + s) << "\n";
  if (t.expected) std::cout << t.expected << " outside failures as listed in " << expect << "\n";
  std::cout << t.passed << " passed, " << t.failed << " failed, " << t.skipped << " skipped\n";
  return t.failed ? 1 : 0;
}

}  // namespace
}  // namespace qcache::slt

int main(int argc, char** argv) {
  try {
    return qcache::slt::main_(argc, argv);
  } catch (const std::exception& e) {
    std::cout << "qcache-slt: " << e.what() << "\n0 passed, 1 failed\n";
    return 1;
  }
}
