// qcache-difftest: a differential tester in the spirit of SQLancer (issue 9).
//
//   qcache-difftest --engine postgresql|sqlite [--seconds N] [--seed S] [--schemas K]
//                   [--features=-fam1,-fam2] [--pg CONNINFO] [--self-check] [-v]
//
// Each scenario is a generated schema using risky features (views, triggers, rules, FK
// cascades, partitions, generated columns, domains, enums, collations, user functions and
// operators, ...; each family on or off by seed) and a random mix of reads, writes and
// session changes spread over 2-3 sessions that share ONE qcache::cache. The sessions run
// strictly one statement at a time, so the database state is deterministic. Every read runs
// through qcache and then, immediately, directly in the same session state (PostgreSQL: the
// same server session through raw(), inside the same transaction; SQLite: the same
// connection's native handle). Both must agree: same rows (in order when the read has ORDER
// BY), or the same error class (SQLSTATE / message). A cached result that differs from what
// the database returns right after it is stale or wrong.
//
// A failing scenario is shrunk (statements dropped while the same failure class remains)
// and printed as a reproducer: seed, schema and statement sequence. The run ends with
// "N passed, N failed" and the counts; exit status 1 on any failure, 2 on a usage error.
//
// --features=-a,-b switches families off (see --help for the names); --self-check sends
// writes behind qcache's back, so failures MUST be found (ctest expects them).
//
// Stalls are bounded and diagnosed: PostgreSQL sessions cancel any statement after
// --statement-timeout seconds (20), and a cancelled statement is a failure reported with
// the tester's and the server's view of every session; a heartbeat line every --heartbeat
// seconds (60) says where the run is; a watchdog ends the run with exit status 3 after
// --stall seconds (60) without progress, printing the same state (watchdog.h).
#include <qcache/cache.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>

#include "difftest.h"
#include "watchdog.h"

namespace qcache::difftest {
namespace {

struct options {
  std::string engine;
  double seconds = 10;
  std::uint64_t seed = 1;
  long schemas = -1;  // -1: as many as the time allows
  bool verbose = false;
  bool self_check = false;
  double heartbeat = 60, stall = 60, statement_timeout = 20;  // seconds; 0: off
  std::string pg;
  generator_options gen;
};

struct counters {
  std::uint64_t scenarios = 0, statements = 0, reads = 0, inconclusive = 0, passed = 0, failed = 0;
  std::uint64_t exec_timeouts = 0;  // failures that are not reads
};

std::string join_rows(const std::vector<std::string>& rows, std::size_t limit = 6) {
  std::string s;
  for (std::size_t i = 0; i < rows.size() && i < limit; ++i) s += (i ? " | " : "") + rows[i];
  if (rows.size() > limit) s += " | ... (" + std::to_string(rows.size()) + " rows)";
  if (rows.empty()) s = "(no rows)";
  return s;
}

std::string describe(const outcome& o) {
  if (!o.ok) return "error " + o.error_class + ": " + o.error_text.substr(0, 160);
  return join_rows(o.rows);
}

bool same(const outcome& a, const outcome& b, bool ordered) {
  if (a.ok != b.ok) return false;
  if (!a.ok) return a.error_class == b.error_class;
  if (ordered) return a.rows == b.rows;
  auto x = a.rows, y = b.rows;
  std::sort(x.begin(), x.end());
  std::sort(y.begin(), y.end());
  return x == y;
}

// The families of the statements just before step `i` (a failure class's likely cause).
std::string recent_families(const scenario& s, std::size_t i) {
  std::set<std::string> f;
  for (std::size_t j = i >= 6 ? i - 6 : 0; j < i; ++j)
    if (s.steps[j].k == step::kind::exec && !s.steps[j].family.empty()) f.insert(s.steps[j].family);
  std::string out;
  for (const auto& x : f) out += x + ",";
  return out;
}

// A statement of step `i` cancelled by the statement timeout: a failure of its own class,
// with what every session was doing when it happened (the other sessions still hold
// whatever the statement waited for).
mismatch timeout_finding(const target& t, const scenario& s, std::size_t i, const char* phase,
                         const outcome& o) {
  const step& st = s.steps[i];
  mismatch m;
  m.step_index = i;
  m.family = st.family;
  m.sql = st.sql;
  m.timeout = true;
  m.detail = std::string("TIMEOUT in s") + std::to_string(st.session) + " " + phase + ": " +
             describe(o) + "\n" + run_progress().describe() + t.server_state();
  m.signature = "timeout|" + st.family + "|" + phase;
  return m;
}

// Runs one step, telling the progress record (heartbeat, watchdog) before and after.
outcome tracked_exec(target& t, std::size_t i, const step& st) {
  run_progress().begin_step(i, st, "exec");
  outcome o = t.exec(st.session, st.sql);
  run_progress().end_step(describe(o));
  return o;
}

void tracked_read(target& t, std::size_t i, const step& st, outcome& cached, outcome& direct) {
  run_progress().begin_step(i, st, "read");
  t.read(st.session, st.sql, cached, direct);
  run_progress().end_step(describe(cached) +
                          (same(cached, direct, st.ordered) ? "" : " (differs)"));
}

// Runs the steps of `s` listed in `keep` (all when empty) on a fresh schema and cache.
std::vector<mismatch> run(target& t, const scenario& s, const std::vector<std::size_t>& keep,
                          counters* c, bool verbose) {
  std::vector<mismatch> out;
  t.open(s, t.sessions());
  run_progress().mark();
  std::vector<std::size_t> order = keep;
  if (order.empty())
    for (std::size_t i = 0; i < s.steps.size(); ++i) order.push_back(i);
  for (std::size_t i : order) {
    const step& st = s.steps[i];
    if (c) ++c->statements;
    if (st.k == step::kind::exec) {
      outcome o = tracked_exec(t, i, st);
      if (verbose)
        std::cout << "  s" << st.session << " exec " << st.sql << " -> " << describe(o) << "\n";
      if (!t.timed_out(o)) continue;
      if (c) ++c->exec_timeouts;
      out.push_back(timeout_finding(t, s, i, "exec", o));
      continue;
    }
    outcome cached, direct;
    tracked_read(t, i, st, cached, direct);
    if (verbose)
      std::cout << "  s" << st.session << " read " << st.sql << " -> " << describe(cached) << "\n";
    if (t.timed_out(cached) || t.timed_out(direct)) {
      if (c) ++c->reads;
      out.push_back(t.timed_out(cached) ? timeout_finding(t, s, i, "cached read", cached)
                                        : timeout_finding(t, s, i, "direct read", direct));
      continue;
    }
    if (t.inconclusive(cached, direct)) {
      if (c) ++c->inconclusive;
      continue;
    }
    if (c) ++c->reads;
    if (same(cached, direct, st.ordered)) continue;
    mismatch m;
    m.step_index = i;
    m.family = st.family;
    m.sql = st.sql;
    m.detail = "cached: " + describe(cached) + "\n    direct: " + describe(direct);
    m.signature = st.family + "|" + (cached.ok ? "ok" : cached.error_class) + "|" +
                  (direct.ok ? "ok" : direct.error_class) + "|" + recent_families(s, i);
    out.push_back(std::move(m));
  }
  t.close(s);
  run_progress().mark();
  return out;
}

bool still_fails(target& t, const scenario& s, const std::vector<std::size_t>& keep,
                 const std::string& signature) {
  for (const auto& m : run(t, s, keep, nullptr, false))
    if (m.signature == signature) return true;
  return false;
}

// Drops statements (halves first, then one at a time) while the failure class remains,
// within `budget` seconds. Returns the kept step indexes.
std::vector<std::size_t> shrink(target& t, const scenario& s, const mismatch& m, double budget) {
  auto start = std::chrono::steady_clock::now();
  auto left = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < budget;
  };
  std::vector<std::size_t> keep;
  for (std::size_t i = 0; i <= m.step_index; ++i) keep.push_back(i);
  for (std::size_t chunk = keep.size() / 2; chunk >= 1 && left(); chunk /= 2) {
    for (std::size_t at = 0; at + 1 < keep.size() && left();) {
      std::vector<std::size_t> trial;
      for (std::size_t j = 0; j < keep.size(); ++j)
        if (j < at || j >= at + chunk || j + 1 == keep.size()) trial.push_back(keep[j]);
      if (trial.size() < keep.size() && still_fails(t, s, trial, m.signature))
        keep = trial;
      else
        at += chunk;
    }
    if (chunk == 1) break;
  }
  return keep;
}

// The shrunk sequence's own mismatch (the one to print), or `m` when it no longer shows.
mismatch confirm(target& t, const scenario& s, const std::vector<std::size_t>& keep,
                 const mismatch& m) {
  for (const auto& x : run(t, s, keep, nullptr, false))
    if (x.signature == m.signature) return x;
  return m;
}

void print_reproducer(const scenario& s, const std::vector<std::size_t>& keep, const mismatch& m,
                      const std::string& engine, bool shrunk) {
  std::cout << "\n==== FAILURE [" << (m.family.empty() ? "base" : m.family) << "] engine " << engine
            << " scenario seed " << s.seed << (shrunk ? " (shrunk)" : " (not shrunk)") << "\n";
  std::cout << "-- families of the kept statements:";
  std::set<std::string> fams;
  for (std::size_t i : keep) fams.insert(s.steps[i].family.empty() ? "base" : s.steps[i].family);
  for (const auto& f : fams) std::cout << " " << f;
  std::cout << "\n-- schema features:";
  for (const auto& f : s.features) std::cout << " " << f;
  std::cout << "\n-- schema (run directly):\n";
  for (const auto& q : s.setup) std::cout << q << ";\n";
  std::cout << "-- each session first runs through qcache:\n";
  for (const auto& q : s.session_init) std::cout << q << ";\n";
  std::cout << "-- statements (sN = session N; reads are compared):\n";
  for (std::size_t i : keep) {
    const step& st = s.steps[i];
    std::cout << "s" << st.session << (st.k == step::kind::read ? " read: " : " exec: ") << st.sql
              << ";\n";
  }
  std::cout << (m.timeout ? "-- timed out: " : "-- mismatch at the last read: ") << m.sql
            << "\n    " << m.detail << "\n";
}

[[noreturn]] void usage(const std::string& why) {
  std::cerr
      << "qcache-difftest: " << why
      << "\nusage: qcache-difftest --engine postgresql|sqlite [--seconds N] [--seed S]"
         " [--schemas K] [--features=-fam,... | only:fam,...] [--pg CONNINFO] [--self-check] [-v]"
         " [--heartbeat S] [--stall S] [--statement-timeout S]\n"
         "postgresql families:";
  for (const auto& f : postgresql_families()) std::cerr << " " << f;
  std::cerr << "\nsqlite families:";
  for (const auto& f : sqlite_families()) std::cerr << " " << f;
  std::cerr << "\n";
  std::exit(2);
}

// "-a,-b" switches families off, "+a" back on; "only:a,b" switches every other family off.
void parse_features(std::string list, options& o) {
  if (list.rfind("only:", 0) == 0) {
    for (const auto& f : o.engine == "sqlite" ? sqlite_families() : postgresql_families())
      o.gen.disabled.insert(f);
    list = list.substr(5);
    std::string plus;
    for (char ch : list) plus += ch == ',' ? std::string(",+") : std::string(1, ch);
    list = "+" + plus;
  }
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    bool off = item[0] == '-';
    std::string name = item.substr(item[0] == '-' || item[0] == '+' ? 1 : 0);
    auto fams = o.engine == "sqlite" ? sqlite_families() : postgresql_families();
    if (std::find(fams.begin(), fams.end(), name) == fams.end())
      usage("unknown feature family '" + name + "' for engine " + o.engine);
    if (off)
      o.gen.disabled.insert(name);
    else
      o.gen.disabled.erase(name);
  }
}

options parse(int argc, char** argv) {
  options o;
  std::vector<std::string> feature_args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value after " + a);
      return argv[++i];
    };
    if (a == "--engine")
      o.engine = value();
    else if (a == "--seconds")
      o.seconds = std::stod(value());
    else if (a == "--seed")
      o.seed = std::stoull(value());
    else if (a == "--schemas")
      o.schemas = std::stol(value());
    else if (a == "--pg")
      o.pg = value();
    else if (a == "--features")
      feature_args.push_back(value());
    else if (a.rfind("--features=", 0) == 0)
      feature_args.push_back(a.substr(11));
    else if (a == "--heartbeat")
      o.heartbeat = std::stod(value());
    else if (a == "--stall")
      o.stall = std::stod(value());
    else if (a == "--statement-timeout")
      o.statement_timeout = std::stod(value());
    else if (a == "--self-check")
      o.self_check = true;
    else if (a == "-v" || a == "--verbose")
      o.verbose = true;
    else if (a == "--help" || a == "-h")
      usage("help");
    else
      usage("unknown argument " + a);
  }
  if (o.engine != "postgresql" && o.engine != "sqlite") usage("--engine postgresql|sqlite");
  for (const auto& f : feature_args) parse_features(f, o);
  if (o.pg.empty() && std::getenv("QCACHE_PG")) o.pg = std::getenv("QCACHE_PG");
  return o;
}

// What the run has reported so far: each failure class is shrunk and printed once.
struct reports {
  std::set<std::string> signatures, printed;
  std::map<std::string, std::uint64_t> by_family;
};

// Counts and reports one failure of scenario `s`: a new class is shrunk (within the
// run's bounds) and printed as a reproducer; a timeout is printed unshrunk.
void report_failure(target& t, const scenario& s, const mismatch& m, const options& o,
                    double elapsed, reports& r) {
  run_progress().count_failure();
  ++r.by_family[m.timeout ? "timeout" : m.family.empty() ? "base" : m.family];
  if (m.timeout) {
    // Not shrunk: every trial could wait out the timeout again. The seed replays it.
    r.signatures.insert(m.signature);
    std::vector<std::size_t> upto;
    for (std::size_t k = 0; k <= m.step_index; ++k) upto.push_back(k);
    print_reproducer(s, upto, m, o.engine, false);
    return;
  }
  // Each new failure class is shrunk once; shrinking stops after a minute in all (a
  // self-check shrinks one) so a bounded run stays bounded.
  bool may_shrink = elapsed < o.seconds + (o.self_check ? 0 : 60);
  bool fresh = r.signatures.insert(m.signature).second;
  if (fresh && may_shrink) {
    auto keep = shrink(t, s, m, o.self_check ? 5 : 12);
    std::string key = std::to_string(s.seed);
    for (std::size_t k : keep) key += "\n" + s.steps[k].sql;
    if (r.printed.insert(key).second)
      print_reproducer(s, keep, confirm(t, s, keep, m), o.engine, true);
  } else if (o.verbose || fresh) {
    std::cout << "FAILURE (not shrunk) [" << m.family << "] seed " << s.seed << " step "
              << m.step_index << ": " << m.sql << "\n    " << m.detail << "\n";
  }
}

void print_summary(const target& t, counters& c, const reports& r, bool verbose) {
  c.passed = c.reads - (c.failed - c.exec_timeouts);
  std::cout << "\nfailures by family:";
  for (const auto& [f, n] : r.by_family) std::cout << " " << f << "=" << n;
  std::cout << "\nscenarios " << c.scenarios << ", statements " << c.statements
            << ", reads compared " << c.reads << ", inconclusive " << c.inconclusive
            << ", distinct failure classes " << r.signatures.size() << "\n";
  std::cout << "cache: " << t.hits << " hits, " << t.misses << " misses, " << t.flushes
            << " flushes, " << t.uncacheable << " uncacheable, " << t.single_flight_waits
            << " single-flight waits\n";
  if (verbose) {
    std::cout << "uncacheable by reason:";
    for (int i = 0; i < static_cast<int>(qcache::uncacheable_reason::count_); ++i)
      if (t.by_reason[i])
        std::cout << " " << qcache::to_string(static_cast<qcache::uncacheable_reason>(i)) << "="
                  << t.by_reason[i];
    std::cout << "\ninvalidations by cause:";
    for (int i = 0; i < static_cast<int>(qcache::invalidation_cause::count_); ++i)
      if (t.by_cause[i])
        std::cout << " " << qcache::to_string(static_cast<qcache::invalidation_cause>(i)) << "="
                  << t.by_cause[i];
    std::cout << "\n";
  }
  std::cout << c.passed << " passed, " << c.failed << " failed\n";
}

int main_impl(int argc, char** argv) {
  options o = parse(argc, argv);
  if (o.engine == "postgresql" && o.pg.empty()) usage("no PostgreSQL conninfo (--pg or QCACHE_PG)");
  std::unique_ptr<target> t = o.engine == "postgresql"
                                  ? make_postgresql_target(o.pg, o.self_check, o.statement_timeout)
                                  : make_sqlite_target(o.self_check);
  watchdog dog(*t, o.heartbeat, o.stall);
  generator gen = o.engine == "postgresql" ? generate_postgresql : generate_sqlite;
  std::mt19937_64 rng(o.seed);
  counters c;
  reports r;
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  for (long i = 0; o.schemas < 0 || i < o.schemas; ++i) {
    if (o.schemas < 0 && elapsed() >= o.seconds) break;
    scenario s = gen(rng, static_cast<int>(i), o.gen);
    ++c.scenarios;
    run_progress().begin_scenario(static_cast<std::uint64_t>(i), s.seed, s.steps.size());
    if (o.verbose) std::cout << "scenario " << i << " seed " << s.seed << "\n";
    std::vector<mismatch> ms = run(*t, s, {}, &c, o.verbose);
    c.failed += ms.size();
    for (const auto& m : ms) report_failure(*t, s, m, o, elapsed(), r);
  }
  print_summary(*t, c, r, o.verbose);
  return c.failed ? 1 : 0;
}

}  // namespace
}  // namespace qcache::difftest

int main(int argc, char** argv) {
  // Line-buffered even into a file: a long run that is killed (a stall, a timeout) still
  // leaves every reproducer and progress line it printed.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    return qcache::difftest::main_impl(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "qcache-difftest: setup error: " << e.what() << "\n";
    return 2;
  }
}
