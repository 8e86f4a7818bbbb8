// qcache-difftest, PostgreSQL: the target (sessions through qcache::pqxx, direct reads on
// the same server session through raw()) and the scenario generator.
#include <qcache/cache.h>
#include <qcache/pqxx.h>
#include <unistd.h>

#include <cctype>
#include <functional>
#include <pqxx/pqxx>
#include <stdexcept>
#include <typeinfo>

#include "difftest.h"

namespace qcache::difftest {
namespace {

const std::string null_text = "\x01NULL";

outcome rows_of(const ::pqxx::result& r) {
  outcome o;
  for (const auto& row : r) {
    std::string line;
    for (const auto& f : row) {
      if (!line.empty() || f.num() > 0) line += ", ";
      line += f.is_null() ? null_text : std::string(f.c_str(), f.size());
    }
    o.rows.push_back(std::move(line));
  }
  return o;
}

template <class F>
outcome capture(F&& f) {
  try {
    return rows_of(f());
  } catch (const ::pqxx::sql_error& e) {
    outcome o;
    o.ok = false;
    o.error_class = e.sqlstate().empty() ? "sql_error" : e.sqlstate();
    o.error_text = e.what();
    return o;
  } catch (const ::pqxx::broken_connection&) {
    throw;
  } catch (const ::pqxx::failure& e) {
    // libpqxx 6 maps some SQLSTATEs (serialization failures, deadlocks) to classes that
    // carry no SQLSTATE: the class is the error class.
    outcome o;
    o.ok = false;
    o.error_class = typeid(e).name();
    o.error_text = e.what();
    return o;
  } catch (const ::pqxx::usage_error& e) {
    outcome o;
    o.ok = false;
    o.error_class = "usage_error";
    o.error_text = e.what();
    return o;
  }
}

// Statements qcache must see even in self-check mode: session and transaction control.
bool is_control(const std::string& sql) {
  std::string w;
  for (char ch : sql) {
    if (std::isalpha(static_cast<unsigned char>(ch)))
      w += static_cast<char>(std::toupper(ch));
    else if (!w.empty())
      break;
  }
  static const std::set<std::string> control = {"SET",     "RESET",      "BEGIN",     "START",
                                                "COMMIT",  "ROLLBACK",   "SAVEPOINT", "RELEASE",
                                                "PREPARE", "DEALLOCATE", "END",       "ABORT"};
  return control.count(w) > 0;
}

// `conninfo` (key=value or URI form) with application_name and server options appended:
// settings given at connection start are what RESET ALL and DISCARD ALL return to.
std::string with_startup(const std::string& conninfo, const std::string& app,
                         const std::string& options) {
  if (conninfo.rfind("postgresql://", 0) == 0 || conninfo.rfind("postgres://", 0) == 0) {
    std::string enc;
    for (char ch : options) enc += ch == ' ' ? "%20" : ch == '=' ? "%3D" : std::string(1, ch);
    return conninfo + (conninfo.find('?') == std::string::npos ? "?" : "&") +
           "application_name=" + app + "&options=" + enc;
  }
  return conninfo + " application_name='" + app + "' options='" + options + "'";
}

std::string millis(double seconds) { return std::to_string(static_cast<long>(seconds * 1000)); }

// How the server cancels a statement that ran past statement_timeout.
bool is_statement_timeout(const std::string& sqlstate, const std::string& text) {
  return sqlstate == "57014" && text.find("statement timeout") != std::string::npos;
}

class pg_target final : public target {
 public:
  // Every session connection cancels a statement after `statement_timeout_s` (a timeout is a
  // finding: nothing in a scenario may wait that long). The connections that create and
  // drop schemas allow twice that; they may wait for closed sessions' backends to go.
  // lock_timeout is a startup option too: the sessions run in ONE thread, so a session
  // waiting on a lock another session holds inside its open transaction waits forever
  // (the server cannot see that deadlock). session_init's SET lock_timeout alone was undone
  // by the role family's RESET ALL and DISCARD ALL, which return to the startup values.
  pg_target(std::string conninfo, bool self_check, double statement_timeout_s)
      : conninfo_(std::move(conninfo)),
        self_check_(self_check),
        tag_("qcache-difftest-" + std::to_string(::getpid())),
        session_options_("-c lock_timeout=50 -c statement_timeout=" + millis(statement_timeout_s)),
        admin_conninfo_(with_startup(conninfo_, tag_ + "-admin",
                                     "-c statement_timeout=" + millis(2 * statement_timeout_s))) {
    ::pqxx::connection c{admin_conninfo_};
    ::pqxx::nontransaction n{c};
    // Roles are cluster-wide and shared by concurrent runs: creating one that another run
    // just created fails with duplicate_object or unique_violation, both fine.
    for (const char* role : {"dt_reader", "dt_writer", "dt_nobody"})
      admin_exec(n,
                 std::string("DO $$ BEGIN CREATE ROLE ") + role +
                     "; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
                 true);
  }

  void open(const scenario& s, int sessions) override {
    {
      ::pqxx::connection c{admin_conninfo_};
      ::pqxx::nontransaction n{c};
      n.exec("SET client_min_messages TO error");
      for (const auto& q : s.cleanup) admin_exec(n, q, true);
      for (const auto& q : s.setup) admin_exec(n, q, false);
    }
    cache_ = std::make_shared<qcache::cache>(qcache::options{});
    conns_.clear();
    for (int i = 0; i < sessions; ++i) {
      conns_.push_back(std::make_unique<qcache::pqxx::connection>(
          with_startup(conninfo_, tag_ + "-s" + std::to_string(i), session_options_), cache_));
      for (const auto& q : s.session_init) {
        qcache::pqxx::nontransaction n{*conns_.back()};
        n.exec(q);
      }
    }
  }

  void close(const scenario& s) override {
    conns_.clear();
    if (cache_) {
      auto st = cache_->stats();
      hits += st.hits, misses += st.misses, flushes += st.flushes, uncacheable += st.uncacheable;
      single_flight_waits += st.single_flight_waits;
      for (int i = 0; i < static_cast<int>(qcache::uncacheable_reason::count_); ++i)
        by_reason[i] += st.uncacheable_by_reason[i];
      for (int i = 0; i < static_cast<int>(qcache::invalidation_cause::count_); ++i)
        by_cause[i] += st.invalidations_by_cause[i];
    }
    cache_.reset();
    ::pqxx::connection c{admin_conninfo_};
    ::pqxx::nontransaction n{c};
    n.exec("SET client_min_messages TO error");
    for (const auto& q : s.cleanup) admin_exec(n, q, true);
  }

  outcome exec(int session, const std::string& sql) override {
    auto& c = *conns_.at(static_cast<std::size_t>(session));
    if (self_check_ && !is_control(sql)) {
      return capture([&] {
        ::pqxx::nontransaction n{c.raw()};
        return n.exec(sql);
      });
    }
    return capture([&] {
      qcache::pqxx::nontransaction n{c};
      return n.exec(sql);
    });
  }

  void read(int session, const std::string& sql, outcome& cached, outcome& direct) override {
    auto& c = *conns_.at(static_cast<std::size_t>(session));
    cached = capture([&] {
      qcache::pqxx::nontransaction n{c};
      return n.exec(sql);
    });
    direct = capture([&] {
      ::pqxx::nontransaction n{c.raw()};
      return n.exec(sql);
    });
  }

  // In an open transaction a failed cached read aborts it, so the direct read can only
  // report 25P02: nothing to compare.
  // Likewise a direct read that waits out lock_timeout (55P03) behind another session's
  // uncommitted TRUNCATE or DDL while the cached one is served the committed state.
  bool inconclusive(const outcome& cached, const outcome& direct) const override {
    if (cached.ok && !direct.ok && direct.error_class == "55P03") return true;
    return !cached.ok && !direct.ok && direct.error_class == "25P02" &&
           cached.error_class != "25P02";
  }

  bool timed_out(const outcome& o) const override {
    return !o.ok && is_statement_timeout(o.error_class, o.error_text);
  }

  // Runs on a connection of its own (the watchdog calls it while a session is blocked).
  std::string server_state() const override {
    try {
      ::pqxx::connection c{with_startup(conninfo_, tag_ + "-diag", "-c statement_timeout=10000")};
      ::pqxx::nontransaction n{c};
      std::string out = "-- server: pg_stat_activity of this database (tester connections are " +
                        tag_ + "-sN; -admin creates and drops schemas)\n";
      for (const auto& row : n.exec(activity_query)) out += "     " + join_fields(row) + "\n";
      out += "-- server: pg_locks of those backends but on system catalogs (waiting first)\n";
      for (const auto& row : n.exec(locks_query)) out += "     " + join_fields(row) + "\n";
      return out;
    } catch (const std::exception& e) {
      return std::string("-- server state unavailable: ") + e.what() + "\n";
    }
  }

  int sessions() const override { return 3; }

 private:
  static constexpr const char* activity_query =
      "SELECT 'pid=' || pid, 'app=' || application_name, 'state=' || coalesce(state, ''), "
      "'xact_age=' || coalesce(round(extract(epoch FROM now() - xact_start)::numeric, 1)::text, "
      "'-'), 'wait=' || coalesce(wait_event_type || ':' || wait_event, '-'), "
      "'blocked_by=' || pg_blocking_pids(pid)::text, 'xid=' || coalesce(backend_xid::text, '-'), "
      "'query=' || left(query, 300) FROM pg_stat_activity "
      "WHERE datname = current_database() AND backend_type = 'client backend' "
      "AND pid <> pg_backend_pid() ORDER BY application_name, pid";
  static constexpr const char* locks_query =
      "SELECT 'pid=' || l.pid, a.application_name, l.locktype, "
      "coalesce(l.relation::regclass::text, l.transactionid::text, l.virtualxid, "
      "l.objid::text, ''), l.mode, CASE WHEN l.granted THEN 'granted' ELSE 'WAITING' END "
      "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
      "WHERE a.datname = current_database() AND l.pid <> pg_backend_pid() "
      "AND l.locktype <> 'virtualxid' AND (l.relation IS NULL OR l.relation >= 16384) ORDER BY "
      "l.granted, a.application_name, l.pid LIMIT 80";

  static std::string join_fields(const ::pqxx::row& row) {
    std::string line;
    for (const auto& f : row) line += (line.empty() ? "" : " ") + std::string(f.c_str());
    return line;
  }

  // Setup and cleanup statements: errors are fatal (setup) or ignored (cleanup), but a
  // statement timeout never goes unreported.
  void admin_exec(::pqxx::nontransaction& n, const std::string& q, bool ignore_errors) const {
    try {
      n.exec(q);
    } catch (const ::pqxx::sql_error& e) {
      if (is_statement_timeout(e.sqlstate(), e.what()))
        throw std::runtime_error("statement timeout in schema setup or cleanup: " + q + "\n" +
                                 server_state());
      if (!ignore_errors) throw;
    }
  }

  std::string conninfo_;
  bool self_check_;
  std::string tag_;              // application_name prefix of this process's connections
  std::string session_options_;  // server options of every session connection
  std::string admin_conninfo_;   // setup and cleanup connections
  std::shared_ptr<qcache::cache> cache_;
  std::vector<std::unique_ptr<qcache::pqxx::connection>> conns_;
};

// ---- generator -------------------------------------------------------------------------

const std::vector<std::string> schema_families = {
    "views",          "func_views",      "fk_cascade",     "fk_set_null",
    "triggers",       "before_triggers", "rules",          "partitions",
    "inheritance",    "generated",       "typed_cols",     "domains",
    "enums",          "collations",      "functions",      "writing_functions",
    "operators",      "defaults_fn",     "identity",       "hidden_view",
    "hidden_default", "hidden_domain",   "hidden_operator"};
const std::vector<std::string> statement_families = {
    "search_path", "role",   "timezone",     "datestyle", "savepoint", "savepoint_set",
    "prepare",     "chain",  "txn_rc",       "txn_rr",    "multi",     "set_config",
    "truncate",    "upsert", "set_local",    "qualified", "typed_eq",  "temp_shadow",
    "late_schema", "scs",    "isolation_set"};

struct gen {
  std::mt19937_64& rng;
  const generator_options& o;
  std::set<std::string> on;
  std::string a, b;  // the two schemas, same table names
  std::string c;     // a schema created only by a statement (late_schema)
  scenario sc;

  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
  bool chance(int pct) { return pick(1, 100) <= pct; }
  template <class T>
  const T& one(const std::vector<T>& v) {
    return v[static_cast<std::size_t>(pick(0, int(v.size()) - 1))];
  }
  bool has(const std::string& f) const { return on.count(f) > 0; }

  void choose_features() {
    for (const auto& f : schema_families)
      if (!o.disabled.count(f) && chance(35)) on.insert(f);
    for (const auto& f : statement_families)
      if (!o.disabled.count(f) && chance(40)) on.insert(f);
    if (has("func_views") && (!has("views") || !has("functions"))) on.erase("func_views");
    if (has("writing_functions") && !has("functions")) on.erase("writing_functions");
    if (has("fk_set_null") && has("fk_cascade"))
      on.erase(chance(50) ? "fk_set_null" : "fk_cascade");
    if (has("savepoint_set") && !has("savepoint")) on.erase("savepoint_set");
  }

  void add(const std::string& q) { sc.setup.push_back(q); }

  void types_and_functions(const std::string& s, int salt) {
    add("CREATE SCHEMA " + s);
    add("GRANT USAGE ON SCHEMA " + s + " TO dt_reader, dt_writer, dt_nobody");
    if (has("enums")) add("CREATE TYPE " + s + ".mood AS ENUM ('sad', 'ok', 'happy')");
    if (has("domains")) add("CREATE DOMAIN " + s + ".posint AS int CHECK (VALUE >= 0)");
    if (has("defaults_fn")) {
      add("CREATE SEQUENCE " + s + ".dseq START " + std::to_string(100 * salt));
      add("CREATE FUNCTION " + s +
          ".f_def() RETURNS int VOLATILE LANGUAGE sql AS "
          "$$SELECT nextval('" +
          s + ".dseq')::int$$");
    }
    if (has("collations"))
      add("CREATE COLLATION " + s +
          ".ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)");
  }

  void functions(const std::string& s, int salt) {
    if (has("functions")) {
      add("CREATE FUNCTION " + s +
          ".f_imm(int) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT $1 * " +
          std::to_string(salt + 1) + "'");
      add("CREATE FUNCTION " + s +
          ".f_stable(int) RETURNS bigint STABLE LANGUAGE sql AS "
          "'SELECT count(*) FROM " +
          s + ".u WHERE u.t_id = $1'");
      add("CREATE FUNCTION " + s +
          ".f_setting() RETURNS text STABLE LANGUAGE sql AS "
          "$$SELECT current_setting('TimeZone') || current_user$$");
      add("CREATE FUNCTION " + s +
          ".f_vol() RETURNS bigint VOLATILE LANGUAGE sql AS "
          "'SELECT count(*) FROM " +
          s + ".log'");
    }
    if (hidden()) hidden_writes(s);
    if (has("writing_functions"))
      add("CREATE FUNCTION " + s +
          ".f_write(int) RETURNS int VOLATILE LANGUAGE sql AS "
          "$$UPDATE " +
          s + ".t SET k = k + 1 WHERE id = $1; SELECT $1$$");
    if (has("operators")) {
      add("CREATE FUNCTION " + s +
          ".op_fn(int, int) RETURNS bool IMMUTABLE LANGUAGE sql AS "
          "'SELECT $1 % " +
          std::to_string(salt + 2) + " = $2 % " + std::to_string(salt + 2) + "'");
      add("CREATE OPERATOR " + s + ".=== (LEFTARG = int, RIGHTARG = int, FUNCTION = " + s +
          ".op_fn)");
    }
  }

  // User code the statement text never names, writing another table (P18): a view column,
  // a column default, a domain check and an operator.
  void hidden_writes(const std::string& s) {
    add("CREATE FUNCTION " + s +
        ".f_bump() RETURNS int VOLATILE LANGUAGE sql AS "
        "$$UPDATE " +
        s + ".u SET w = w + 1 WHERE id = 1; SELECT 1$$");
    add("CREATE VIEW " + s + ".v_w AS SELECT id, " + s + ".f_bump() AS b FROM " + s +
        ".t WHERE id = 1");
    add("CREATE FUNCTION " + s +
        ".f_logcheck(int) RETURNS bool VOLATILE LANGUAGE sql AS "
        "$$INSERT INTO " +
        s + ".log(what) VALUES ('check ' || $1); SELECT true$$");
    add("CREATE DOMAIN " + s + ".wdom AS int CHECK (" + s + ".f_logcheck(VALUE))");
    add("CREATE TABLE " + s + ".hw (id int PRIMARY KEY, y int DEFAULT " + s + ".f_bump())");
    add("CREATE TABLE " + s + ".hd (id int PRIMARY KEY, x " + s + ".wdom)");
    add("CREATE FUNCTION " + s +
        ".op_write(int, int) RETURNS bool VOLATILE LANGUAGE sql AS "
        "$$UPDATE " +
        s + ".t SET k = k + 1 WHERE id = $1; SELECT true$$");
    add("CREATE OPERATOR " + s + ".#> (LEFTARG = int, RIGHTARG = int, FUNCTION = " + s +
        ".op_write)");
  }

  bool hidden() const {
    return has("hidden_view") || has("hidden_default") || has("hidden_domain") ||
           has("hidden_operator");
  }

  void tables(const std::string& s) {
    std::string t = "CREATE TABLE " + s + ".t (id int";
    if (has("identity")) t += " GENERATED BY DEFAULT AS IDENTITY (START 50)";
    t += " PRIMARY KEY, k int, v text";
    if (has("collations")) t += " COLLATE " + s + ".ci";
    if (has("typed_cols"))
      t += ", vc varchar(5), ch char(4), num numeric(6,2), ts timestamp(0), tz timestamptz(1)";
    if (has("generated")) t += ", g int GENERATED ALWAYS AS (k * 10) STORED";
    if (has("domains")) t += ", d " + s + ".posint";
    if (has("enums")) t += ", m " + s + ".mood";
    if (has("defaults_fn")) t += ", df int DEFAULT " + s + ".f_def()";
    add(t + ")");
    std::string fk;
    if (has("fk_cascade")) fk = " REFERENCES " + s + ".t(id) ON DELETE CASCADE ON UPDATE CASCADE";
    if (has("fk_set_null"))
      fk = " REFERENCES " + s + ".t(id) ON DELETE SET NULL ON UPDATE SET NULL";
    add("CREATE TABLE " + s + ".u (id int PRIMARY KEY, t_id int" + fk + ", w int)");
    add("CREATE TABLE " + s + ".log (id serial PRIMARY KEY, what text)");
    if (has("partitions")) {
      add("CREATE TABLE " + s + ".p (id int, k int, v text) PARTITION BY RANGE (k)");
      add("CREATE TABLE " + s + ".p0 PARTITION OF " + s + ".p FOR VALUES FROM (MINVALUE) TO (5)");
      add("CREATE TABLE " + s + ".p1 PARTITION OF " + s + ".p FOR VALUES FROM (5) TO (MAXVALUE)");
    }
    if (has("inheritance")) {
      add("CREATE TABLE " + s + ".par (id int, k int)");
      add("CREATE TABLE " + s + ".chi (extra int) INHERITS (" + s + ".par)");
    }
  }

  void objects(const std::string& s) {
    if (has("views")) {
      add("CREATE VIEW " + s + ".v_t AS SELECT id, k, v FROM " + s + ".t WHERE k > 2");
      add("CREATE VIEW " + s + ".v_j AS SELECT t.id, t.k, u.w FROM " + s + ".t JOIN " + s +
          ".u ON u.t_id = t.id");
    }
    if (has("func_views"))
      add("CREATE VIEW " + s + ".v_f AS SELECT id, " + s + ".f_stable(id) AS c, " + s +
          ".f_vol() AS l FROM " + s + ".t");
    if (has("triggers")) {
      add("CREATE FUNCTION " + s +
          ".trg_u() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN "
          "INSERT INTO " +
          s +
          ".log(what) VALUES (TG_OP || ' u'); "
          "IF TG_OP <> 'DELETE' THEN UPDATE " +
          s +
          ".t SET v = 'touched' WHERE id = NEW.t_id; END IF; "
          "RETURN NULL; END$$");
      add("CREATE TRIGGER tu AFTER INSERT OR UPDATE OR DELETE ON " + s +
          ".u FOR EACH ROW EXECUTE FUNCTION " + s + ".trg_u()");
    }
    if (has("before_triggers")) {
      add("CREATE FUNCTION " + s +
          ".trg_t() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN "
          "NEW.k := abs(NEW.k) % 10; IF NEW.v IS NULL THEN NEW.v := 'b4'; END IF; RETURN NEW; "
          "END$$");
      add("CREATE TRIGGER tt BEFORE INSERT OR UPDATE ON " + s +
          ".t FOR EACH ROW EXECUTE FUNCTION " + s + ".trg_t()");
    }
    if (has("rules")) {
      add("CREATE RULE r_del AS ON DELETE TO " + s + ".u DO ALSO INSERT INTO " + s +
          ".log(what) VALUES ('rule ' || OLD.id)");
      if (has("views"))
        add("CREATE RULE r_ins AS ON INSERT TO " + s + ".v_t DO INSTEAD INSERT INTO " + s +
            ".t(id, k, v) VALUES (NEW.id, NEW.k, NEW.v)");
    }
    add("GRANT SELECT ON " + s + ".t TO dt_reader");
    if (has("views")) add("GRANT SELECT ON " + s + ".v_t TO dt_reader");
    add("GRANT ALL ON ALL TABLES IN SCHEMA " + s + " TO dt_writer");
    add("GRANT ALL ON ALL SEQUENCES IN SCHEMA " + s + " TO dt_writer");
  }

  std::string lit_text() {
    return one<std::string>({"'a'", "'A'", "'b'", "'abc'", "'x y'", "NULL", "'touched'"});
  }

  std::string t_insert(int id) {
    std::string cols = "id, k, v",
                vals = std::to_string(id) + ", " + std::to_string(pick(-2, 9)) + ", " + lit_text();
    if (has("typed_cols")) {
      cols += ", vc, ch, num, ts, tz";
      vals += ", " + one<std::string>({"'ab'", "'abcde'", "'ab '", "'x'"}) + ", " +
              one<std::string>({"'ab'", "'ab  '", "'z'"}) + ", " +
              one<std::string>({"1.5", "1.499", "2", "3.14159"}) + ", " +
              one<std::string>({"'2024-01-01 10:00:00.6'", "'2024-06-30 23:59:59'"}) + ", " +
              one<std::string>({"'2024-01-01 10:00:00+00'", "'2024-07-01 12:30:00.25+02'"});
    }
    if (has("domains")) cols += ", d", vals += ", " + std::to_string(pick(0, 5));
    if (has("enums")) cols += ", m", vals += ", " + one<std::string>({"'sad'", "'ok'", "'happy'"});
    return "INSERT INTO t (" + cols + ") VALUES (" + vals + ")";
  }

  void data(const std::string& s) {
    // Data goes in through the search_path, so both schemas get the same statements.
    add("SET search_path TO " + s);
    for (int id = 1; id <= 8; ++id) add(t_insert(id));
    for (int id = 1; id <= 6; ++id)
      add("INSERT INTO u VALUES (" + std::to_string(id) + ", " + std::to_string(pick(1, 8)) + ", " +
          std::to_string(pick(0, 9)) + ")");
    if (has("partitions"))
      for (int id = 1; id <= 5; ++id)
        add("INSERT INTO p VALUES (" + std::to_string(id) + ", " + std::to_string(pick(0, 9)) +
            ", 'p')");
    if (has("inheritance")) {
      add("INSERT INTO par VALUES (1, 1), (2, 2)");
      add("INSERT INTO chi VALUES (3, 3, 30), (4, 7, 40)");
    }
    add("RESET search_path");
  }

  // ---- statements ----
  std::string id() { return std::to_string(pick(1, 10)); }
  std::string kv() { return std::to_string(pick(0, 9)); }

  step read(std::string sql, std::string fam = "", bool ordered = false) {
    step s;
    s.k = step::kind::read;
    s.sql = std::move(sql);
    s.family = std::move(fam);
    s.ordered = ordered;
    return s;
  }
  step exec(std::string sql, std::string fam = "") {
    step s;
    s.sql = std::move(sql);
    s.family = std::move(fam);
    return s;
  }

  std::string qual() {
    return has("qualified") && chance(25) ? one<std::string>({a, b}) + "." : "";
  }

  step make_read() {
    std::vector<std::function<step()>> r = {
        [&] { return read("SELECT * FROM " + qual() + "t WHERE id = " + id()); },
        [&] {
          return read("SELECT id, k, v FROM " + qual() + "t WHERE k BETWEEN " + kv() + " AND " +
                          kv() + " ORDER BY id",
                      "", true);
        },
        [&] { return read("SELECT id, v FROM t WHERE k = " + kv()); },
        [&] { return read("SELECT count(*), sum(k), max(v) FROM " + qual() + "t"); },
        [&] { return read("SELECT t.id, u.w FROM t JOIN u ON u.t_id = t.id WHERE t.k > " + kv()); },
        [&] {
          return read("SELECT id FROM t WHERE id IN (SELECT t_id FROM u WHERE w < " + kv() + ")");
        },
        [&] { return read("SELECT t_id, count(*) FROM u GROUP BY t_id"); },
        [&] { return read("SELECT count(*), max(what) FROM log"); },
        [&] { return read("SELECT * FROM u WHERE t_id = " + id()); },
        [&] { return read("SELECT v FROM t WHERE v = 'a'"); },
    };
    if (has("views")) {
      r.push_back([&] { return read("SELECT * FROM v_t WHERE id = " + id(), "views"); });
      r.push_back([&] { return read("SELECT * FROM v_j WHERE w > " + kv(), "views"); });
    }
    if (has("func_views"))
      r.push_back([&] { return read("SELECT * FROM v_f WHERE id = " + id(), "func_views"); });
    if (has("functions")) {
      r.push_back(
          [&] { return read("SELECT id, f_stable(id) FROM t WHERE id = " + id(), "functions"); });
      r.push_back([&] { return read("SELECT f_imm(k) FROM t WHERE id = " + id(), "functions"); });
      r.push_back([&] { return read("SELECT f_setting(), f_imm(2)", "functions"); });
      r.push_back([&] { return read("SELECT f_vol()", "functions"); });
    }
    if (has("partitions")) {
      r.push_back([&] { return read("SELECT * FROM p WHERE k = " + kv(), "partitions"); });
      r.push_back([&] {
        return read("SELECT count(*) FROM " + one<std::string>({"p0", "p1"}), "partitions");
      });
    }
    if (has("inheritance")) {
      r.push_back([&] { return read("SELECT * FROM par WHERE k < " + kv(), "inheritance"); });
      r.push_back([&] { return read("SELECT * FROM ONLY par", "inheritance"); });
    }
    if (has("typed_cols")) {
      r.push_back([&] {
        return read("SELECT id, vc, ch, num, ts, tz FROM t WHERE id = " + id(), "typed_cols");
      });
      r.push_back(
          [&] { return read("SELECT id FROM t WHERE ch = 'ab' OR num = 1.5", "typed_cols"); });
    }
    if (has("generated"))
      r.push_back([&] {
        return read("SELECT id, g FROM t WHERE g = " + std::to_string(10 * pick(0, 9)),
                    "generated");
      });
    if (has("enums"))
      r.push_back([&] { return read("SELECT id FROM t WHERE m > 'sad'", "enums"); });
    if (has("domains"))
      r.push_back([&] {
        return read("SELECT id, d FROM t WHERE d = " + std::to_string(pick(0, 5)), "domains");
      });
    if (has("collations"))
      r.push_back([&] { return read("SELECT id FROM t WHERE v = 'A'", "collations"); });
    if (has("operators"))
      r.push_back([&] { return read("SELECT id FROM t WHERE k === " + kv(), "operators"); });
    if (has("defaults_fn"))
      r.push_back([&] { return read("SELECT id, df FROM t WHERE id = " + id(), "defaults_fn"); });
    if (has("timezone") || has("datestyle"))
      r.push_back([&] {
        return read("SELECT '2024-01-01 10:00:00+00'::timestamptz, '2024-03-04'::date", "timezone");
      });
    if (has("role"))
      r.push_back([&] { return read("SELECT * FROM u WHERE id = " + id(), "role"); });
    if (has("set_config"))
      r.push_back([&] { return read("SELECT current_setting('dt.x', true)", "set_config"); });
    if (has("prepare")) r.push_back([&] { return read("EXECUTE q1(" + id() + ")", "prepare"); });
    if (has("typed_eq"))
      r.push_back([&] {
        auto [c, v] = typed_value();
        return read("SELECT id, " + c + " FROM t WHERE " + c + " = " + v, "typed_eq");
      });
    if (hidden()) {
      r.push_back([&] { return read("SELECT * FROM u WHERE id = 1", "hidden"); });
      r.push_back([&] {
        return read("SELECT count(*), max(what) FROM log WHERE what LIKE 'check%'", "hidden");
      });
      r.push_back([&] { return read("SELECT * FROM hw", "hidden"); });
      r.push_back([&] { return read("SELECT id, k FROM t WHERE id < 4", "hidden"); });
    }
    if (has("scs")) r.push_back([&] { return read("SELECT id, v FROM t WHERE id = 3", "scs"); });
    return one(r)();
  }

  // Equivalent-but-different literals per typed column (P20): stored or compared equal.
  std::pair<std::string, std::string> typed_value() {
    std::vector<std::pair<std::string, std::vector<std::string>>> pools;
    if (has("typed_cols")) {
      pools.push_back({"vc", {"'ab'", "'ab '", "'abcde'", "'abcde   '", "'x'"}});
      pools.push_back({"ch", {"'ab'", "'ab  '", "'ab '", "'z'"}});
      pools.push_back({"num", {"1.5", "1.50", "1.499", "1.501", "1.5049", "2"}});
      pools.push_back(
          {"ts", {"'2024-01-01 10:00:00'", "'2024-01-01 09:59:59.6'", "'2024-01-01 10:00:00.4'"}});
      pools.push_back({"tz",
                       {"'2024-01-01 10:00:00+00'", "'2024-01-01 11:00:00+01'",
                        "'2024-01-01 05:00:00.04-05'"}});
    }
    if (has("collations")) pools.push_back({"v", {"'a'", "'A'", "'b'"}});
    if (has("enums")) pools.push_back({"m", {"'ok'", "'sad'", "'ok'::text::" + a + ".mood"}});
    if (has("domains")) pools.push_back({"d", {"1", "2", "1.4", "'1'"}});
    pools.push_back({"k", {"3", "3.4", "'3'", "2.5"}});
    auto& p = one(pools);
    return {p.first, one(p.second)};
  }

  step make_write() {
    std::vector<std::function<step()>> w = {
        [&] { return exec(t_insert(pick(1, 12)) + (chance(60) ? " ON CONFLICT DO NOTHING" : "")); },
        [&] { return exec("UPDATE " + qual() + "t SET k = " + kv() + " WHERE id = " + id()); },
        [&] { return exec("UPDATE t SET v = " + lit_text() + " WHERE k = " + kv()); },
        [&] { return exec("UPDATE t SET id = id + 20 WHERE id = " + id()); },
        [&] { return exec("DELETE FROM " + qual() + "t WHERE id = " + id()); },
        [&] {
          return exec("INSERT INTO u VALUES (" + std::to_string(pick(1, 12)) + ", " + id() + ", " +
                      kv() + ") ON CONFLICT DO NOTHING");
        },
        [&] { return exec("UPDATE u SET t_id = " + id() + " WHERE id = " + id()); },
        [&] { return exec("DELETE FROM u WHERE w < " + kv()); },
    };
    if (has("typed_eq")) {
      w.push_back([&] {
        auto [c, v] = typed_value();
        return exec("UPDATE t SET " + c + " = " + v + " WHERE id = " + id(), "typed_eq");
      });
      w.push_back([&] {
        auto [c, v] = typed_value();
        return exec("INSERT INTO t (id, " + c + ") VALUES (" + std::to_string(pick(9, 14)) + ", " +
                        v + ") ON CONFLICT DO NOTHING",
                    "typed_eq");
      });
      w.push_back([&] {
        auto [c, v] = typed_value();
        return exec("UPDATE t SET k = k + 1 WHERE " + c + " = " + v, "typed_eq");
      });
    }
    if (has("hidden_view")) w.push_back([&] { return exec("SELECT * FROM v_w", "hidden_view"); });
    if (has("hidden_default"))
      w.push_back([&] {
        return exec("INSERT INTO hw (id) VALUES (" + id() + ") ON CONFLICT DO NOTHING",
                    "hidden_default");
      });
    if (has("hidden_domain"))
      w.push_back([&] {
        return exec("INSERT INTO hd VALUES (" + id() + ", " + kv() +
                        ") ON CONFLICT (id) DO UPDATE SET x = EXCLUDED.x",
                    "hidden_domain");
      });
    if (has("hidden_operator"))
      w.push_back([&] { return exec("SELECT " + id() + " #> 0", "hidden_operator"); });
    if (has("scs")) {
      // Under standard_conforming_strings=off this is ONE update of row 3 (the backslash
      // escapes the quote); under on it is two updates and a comment (P19).
      w.push_back([&] {
        return exec(
            "UPDATE t SET v = 'q\\' WHERE id = 1; UPDATE u SET w = 99 WHERE id = 2; --' WHERE id = "
            "3",
            "scs");
      });
    }
    if (has("temp_shadow"))
      w.push_back([&] {
        return exec(one<std::string>({"CREATE TEMP TABLE IF NOT EXISTS t AS SELECT * FROM " + a +
                                          ".t WHERE id < 4",
                                      "SELECT * INTO TEMP TABLE u FROM " + a + ".u WHERE id > 3"}),
                    "temp_shadow");
      });
    if (has("late_schema"))
      w.push_back([&] {
        return exec("CREATE SCHEMA IF NOT EXISTS " + c + "; CREATE TABLE IF NOT EXISTS " + c +
                        ".t AS SELECT * FROM " + a + ".t WHERE id > 5",
                    "late_schema");
      });
    if (has("upsert"))
      w.push_back([&] {
        return exec("INSERT INTO t (id, k, v) VALUES (" + id() + ", " + kv() +
                        ", 'up') ON CONFLICT (id) DO UPDATE SET k = EXCLUDED.k, v = t.v || '+'",
                    "upsert");
      });
    if (has("truncate"))
      w.push_back([&] {
        return exec(one<std::string>({"TRUNCATE u", "TRUNCATE log", "TRUNCATE t CASCADE"}),
                    "truncate");
      });
    if (has("partitions")) {
      w.push_back([&] { return exec("UPDATE p SET k = k + 5 WHERE id = " + id(), "partitions"); });
      w.push_back([&] {
        return exec("INSERT INTO p VALUES (" + id() + ", " + kv() + ", 'n')", "partitions");
      });
      w.push_back([&] { return exec("DELETE FROM p1 WHERE id = " + id(), "partitions"); });
    }
    if (has("inheritance")) {
      w.push_back([&] {
        return exec("UPDATE par SET k = " + kv() + " WHERE id = " + std::to_string(pick(1, 4)),
                    "inheritance");
      });
      w.push_back([&] {
        return exec("INSERT INTO chi VALUES (" + id() + ", " + kv() + ", 1)", "inheritance");
      });
    }
    if (has("writing_functions"))
      w.push_back([&] { return exec("SELECT f_write(" + id() + ")", "writing_functions"); });
    if (has("rules") && has("views"))
      w.push_back([&] {
        return exec("INSERT INTO v_t VALUES (" + std::to_string(pick(9, 14)) + ", " + kv() +
                        ", 'via rule')",
                    "rules");
      });
    if (has("typed_cols"))
      w.push_back([&] {
        return exec(
            "UPDATE t SET ch = 'ab', num = 1.499, tz = '2024-01-01 10:00:00+00' WHERE id = " + id(),
            "typed_cols");
      });
    if (has("generated"))
      w.push_back([&] {
        return exec("UPDATE t SET k = k + 1 WHERE g > " + std::to_string(10 * pick(0, 9)),
                    "generated");
      });
    if (has("multi"))
      w.push_back([&] {
        return exec("UPDATE t SET k = " + kv() + " WHERE id = " + id() +
                        "; DELETE FROM u WHERE id = " + id(),
                    "multi");
      });
    return one(w)();
  }

  step make_session_change() {
    std::vector<std::function<step()>> s;
    if (has("search_path"))
      s.push_back([&] {
        return exec("SET search_path TO " + one<std::string>({a, b, b + ", " + a}), "search_path");
      });
    if (has("role"))
      s.push_back([&] {
        return exec(one<std::string>({"SET ROLE dt_reader", "SET ROLE dt_writer",
                                      "SET ROLE dt_nobody", "RESET ROLE"}),
                    "role");
      });
    if (has("timezone"))
      s.push_back([&] {
        return exec(
            "SET TimeZone TO '" + one<std::string>({"UTC", "America/New_York", "Asia/Tokyo"}) + "'",
            "timezone");
      });
    if (has("datestyle"))
      s.push_back([&] {
        return exec(
            "SET DateStyle TO '" + one<std::string>({"ISO, MDY", "SQL, DMY", "German"}) + "'",
            "datestyle");
      });
    if (has("set_config"))
      s.push_back([&] {
        return exec(one<std::string>({"SELECT set_config('dt.x', 'one', false)",
                                      "SELECT set_config('dt.x', 'two', true)",
                                      "SELECT set_config('search_path', '" + b + "', false)",
                                      "SELECT set_config('TimeZone', 'Asia/Tokyo', true)"}),
                    "set_config");
      });
    if (has("set_local"))
      s.push_back([&] {
        return exec(
            one<std::string>({"SET LOCAL search_path TO " + b, "SET LOCAL TimeZone TO 'Asia/Tokyo'",
                              "SET LOCAL ROLE dt_reader"}),
            "set_local");
      });
    if (has("prepare"))
      s.push_back([&] {
        return exec(one<std::string>({"PREPARE q1(int) AS SELECT k, v FROM t WHERE id = $1",
                                      "PREPARE q1(int) AS SELECT w FROM u WHERE t_id = $1",
                                      "DEALLOCATE q1", "DEALLOCATE ALL"}),
                    "prepare");
      });
    if (has("scs"))
      s.push_back([&] {
        return exec(one<std::string>({"SET standard_conforming_strings TO off",
                                      "SET standard_conforming_strings TO on"}),
                    "scs");
      });
    if (has("late_schema"))
      s.push_back([&] { return exec("SET search_path TO " + c + ", " + a, "late_schema"); });
    if (has("isolation_set"))
      s.push_back([&] {
        return exec(
            one<std::string>(
                {"SET transaction_isolation TO 'repeatable read'",
                 "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                 "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                 "SET default_transaction_isolation TO 'read committed'"}),
            "isolation_set");
      });
    if (has("multi"))
      s.push_back([&] {
        return exec("SET search_path TO " + one<std::string>({a, b}) + "; SET TimeZone TO 'UTC'",
                    "multi");
      });
    if (s.empty()) return make_write();
    return one(s)();
  }

  step make_txn() {
    std::vector<std::function<step()>> s = {[&] { return exec("BEGIN"); },
                                            [&] { return exec("COMMIT"); },
                                            [&] { return exec("ROLLBACK"); }};
    if (has("txn_rc"))
      s.push_back([&] { return exec("BEGIN ISOLATION LEVEL READ COMMITTED", "txn_rc"); });
    if (has("txn_rr"))
      s.push_back([&] { return exec("BEGIN ISOLATION LEVEL REPEATABLE READ", "txn_rr"); });
    if (has("chain"))
      s.push_back([&] {
        return exec(one<std::string>({"COMMIT AND CHAIN", "ROLLBACK AND CHAIN"}), "chain");
      });
    if (has("savepoint"))
      s.push_back([&] {
        return exec(one<std::string>({"SAVEPOINT s1", "ROLLBACK TO SAVEPOINT s1",
                                      "RELEASE SAVEPOINT s1", "SAVEPOINT s2", "ROLLBACK TO s2"}),
                    "savepoint");
      });
    if (has("savepoint_set"))
      s.push_back([&] {
        return exec(one<std::string>({"SAVEPOINT s1; SET search_path TO " + b,
                                      "SAVEPOINT s1; SET ROLE dt_reader",
                                      "SAVEPOINT s1; SET TimeZone TO 'Asia/Tokyo'"}),
                    "savepoint_set");
      });
    return one(s)();
  }

  void statements(int n) {
    // Reads come mostly from a small pool, so the same text is read again after writes
    // (a hit is what can be stale).
    std::vector<step> pool;
    for (int i = 0; i < 8; ++i) pool.push_back(make_read());
    for (int i = 0; i < n; ++i) {
      int r = pick(1, 100);
      step st = r <= 45   ? pooled_read(pool)
                : r <= 72 ? make_write()
                : r <= 84 ? make_session_change()
                          : make_txn();
      st.session = pick(0, 2);
      if (st.family.empty() && st.k == step::kind::read && chance(30)) {
        // Read again right after: a cached read right after a miss is the common hit.
        sc.steps.push_back(st);
      }
      if (chance(12)) {
        for (auto& y : make_snippet(pool)) sc.steps.push_back(std::move(y));
        continue;
      }
      close_transactions(st);
      bool wrote = st.k == step::kind::exec;
      sc.steps.push_back(std::move(st));
      if (wrote && chance(50)) {
        // Re-read a pooled read right after a write, from any session.
        step again = one(pool);
        again.session = pick(0, 2);
        sc.steps.push_back(std::move(again));
      }
    }
  }

  // Transactions stay short: a session's BEGIN is followed, a few of its statements
  // later, by COMMIT or ROLLBACK (the statement before is kept).
  std::vector<int> open_for = std::vector<int>(3, -1);
  void close_transactions(const step& st) {
    int& left = open_for[static_cast<std::size_t>(st.session)];
    if (st.sql.rfind("BEGIN", 0) == 0 || st.sql.find("AND CHAIN") != std::string::npos) {
      left = pick(2, 6);
      return;
    }
    if (st.sql == "COMMIT" || st.sql == "ROLLBACK") left = -1;
    if (left < 0 || --left > 0) return;
    left = -1;
    step end;
    end.session = st.session;
    end.sql = one<std::string>({"COMMIT", "ROLLBACK", "COMMIT"});
    sc.steps.push_back(std::move(end));
  }

  // Short scripted sequences around the session and transaction state qcache must track
  // (P22): a read before, inside and after the change, another session writing between.
  std::vector<step> make_snippet(const std::vector<step>& pool) {
    int me = pick(0, 2), other = (me + 1 + pick(0, 1)) % 3;
    step x = one(pool);
    std::vector<step> out;
    auto r = [&](int sess) {
      step y = x;
      y.session = sess;
      out.push_back(y);
    };
    auto e = [&](int sess, const std::string& sql, const std::string& fam) {
      step y = exec(sql, fam);
      y.session = sess;
      out.push_back(std::move(y));
    };
    auto write_other = [&] {
      step w = make_write();
      w.session = other;
      out.push_back(w);
    };
    std::vector<std::function<void()>> snippets;
    if (has("savepoint_set"))
      snippets.push_back([&] {
        const std::string fam = "savepoint_set";
        e(me, "BEGIN", fam), r(me), e(me, "SAVEPOINT s1", fam);
        e(me,
          one<std::string>({"SET search_path TO " + b, "SET ROLE dt_nobody", "SET ROLE dt_reader",
                            "SET TimeZone TO 'Asia/Tokyo'", "SET LOCAL search_path TO " + b}),
          fam);
        r(me), e(me, "ROLLBACK TO SAVEPOINT s1", fam), r(me), r(other), e(me, "COMMIT", fam), r(me);
      });
    if (has("chain"))
      snippets.push_back([&] {
        const std::string fam = "chain";
        e(me, one<std::string>({"BEGIN ISOLATION LEVEL REPEATABLE READ", "BEGIN"}), fam), r(me);
        e(me, one<std::string>({"COMMIT AND CHAIN", "ROLLBACK AND CHAIN"}), fam), r(me),
            write_other(), r(me), r(other);
        e(me, "COMMIT", fam), r(me);
      });
    if (has("isolation_set"))
      snippets.push_back([&] {
        const std::string fam = "isolation_set";
        if (chance(50))
          e(me, "BEGIN", fam),
              e(me,
                one<std::string>({"SET transaction_isolation TO 'repeatable read'",
                                  "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"}),
                fam);
        else
          e(me, "SET default_transaction_isolation TO 'repeatable read'", fam), e(me, "BEGIN", fam);
        r(me), write_other(), r(other), r(me), e(me, "COMMIT", fam), r(me);
        e(me, "SET default_transaction_isolation TO 'read committed'", fam);
      });
    if (has("txn_rr"))
      snippets.push_back([&] {
        const std::string fam = "txn_rr";
        e(me, "BEGIN ISOLATION LEVEL REPEATABLE READ", fam), r(me), write_other(), r(other), r(me),
            e(me, "COMMIT", fam), r(me);
      });
    if (has("prepare"))
      snippets.push_back([&] {
        const std::string fam = "prepare";
        step q = read("EXECUTE q1(" + id() + ")", fam);
        e(me, "DEALLOCATE ALL", fam),
            e(me, "PREPARE q1(int) AS SELECT k, v FROM t WHERE id = $1", fam);
        q.session = me, out.push_back(q), e(me, "DEALLOCATE q1", fam);
        e(me,
          one<std::string>({"PREPARE q1(int) AS SELECT w FROM u WHERE t_id = $1",
                            "PREPARE q1(int) AS SELECT k, v FROM " + b + ".t WHERE id = $1"}),
          fam);
        out.push_back(q);
        q.session = other, out.push_back(q);
      });
    if (has("set_local"))
      snippets.push_back([&] {
        const std::string fam = "set_local";
        e(me, "BEGIN", fam), r(me);
        e(me,
          one<std::string>({"SET LOCAL search_path TO " + b, "SET LOCAL ROLE dt_nobody",
                            "SELECT set_config('search_path', '" + b + "', true)"}),
          fam);
        r(me), e(me, one<std::string>({"COMMIT", "ROLLBACK"}), fam), r(me);
      });
    if (has("role"))
      snippets.push_back([&] {
        const std::string fam = "role";
        r(me), e(me,
                 one<std::string>({"SET ROLE dt_nobody", "SET ROLE dt_reader",
                                   "SET SESSION AUTHORIZATION dt_reader"}),
                 fam);
        r(me), r(other),
            e(me,
              one<std::string>(
                  {"RESET ROLE", "RESET SESSION AUTHORIZATION", "RESET ALL", "DISCARD ALL"}),
              fam),
            r(me);
      });
    if (has("late_schema"))
      snippets.push_back([&] {
        const std::string fam = "late_schema";
        e(me, "SET search_path TO " + c + ", " + a, fam), r(me);
        e(other,
          "CREATE SCHEMA IF NOT EXISTS " + c + "; CREATE TABLE IF NOT EXISTS " + c +
              ".t AS SELECT * FROM " + a +
              ".t WHERE id > 5; "
              "CREATE TABLE IF NOT EXISTS " +
              c + ".u AS SELECT * FROM " + a + ".u WHERE id > 3",
          fam);
        r(me);
      });
    if (has("scs"))
      snippets.push_back([&] {
        const std::string fam = "scs";
        step q = read("SELECT id, v FROM t WHERE id = 3", fam);
        q.session = other, out.push_back(q);
        e(me, "SET standard_conforming_strings TO off", fam);
        e(me,
          "UPDATE t SET v = 'q\\' WHERE id = 1; UPDATE u SET w = 99 WHERE id = 2; --' WHERE id = 3",
          fam);
        out.push_back(q), e(me, "SET standard_conforming_strings TO on", fam);
      });
    if (has("search_path"))
      snippets.push_back([&] {
        const std::string fam = "search_path";
        r(me), e(me,
                 one<std::string>({"SET search_path TO " + b,
                                   "SELECT set_config('search_path', '" + b + "', false)",
                                   "SET search_path TO " + b + "; SELECT 1"}),
                 fam);
        r(me), r(other), e(me, "SET search_path TO " + a, fam), r(me);
      });
    if (has("timezone") || has("datestyle"))
      snippets.push_back([&] {
        const std::string fam = "timezone";
        step q = read(
            one<std::string>({"SELECT '2024-01-01 10:00:00+00'::timestamptz",
                              "SELECT '01/02/2024'::date", "SELECT id, tz FROM t WHERE id < 3"}),
            fam);
        if (!has("typed_cols")) q.sql = "SELECT '2024-01-01 10:00:00+00'::timestamptz";
        q.session = me, out.push_back(q);
        e(me,
          one<std::string>({"SET TimeZone TO 'Asia/Tokyo'", "SET DateStyle TO 'SQL, DMY'",
                            "SET DateStyle TO 'German'", "SET intervalstyle TO 'sql_standard'",
                            "SET extra_float_digits TO -3"}),
          fam);
        out.push_back(q), q.session = other, out.push_back(q);
        e(me, "RESET ALL; SET search_path TO " + a + "; SET lock_timeout TO '50ms'", fam);
      });
    if (snippets.empty()) return {};
    one(snippets)();
    return out;
  }

  step pooled_read(const std::vector<step>& pool) { return chance(80) ? one(pool) : make_read(); }
};

}  // namespace

std::vector<std::string> postgresql_families() {
  std::vector<std::string> v = schema_families;
  v.insert(v.end(), statement_families.begin(), statement_families.end());
  return v;
}

scenario generate_postgresql(std::mt19937_64& rng, int index, const generator_options& o) {
  std::uint64_t seed = rng();
  std::mt19937_64 local(seed);
  // Schema names carry the process id: several runs may share one server (ctest -j).
  const std::string tag = std::to_string(::getpid()) + "_" + std::to_string(index);
  gen g{local, o, {}, "dta" + tag, "dtb" + tag, "dtc" + tag, {}};
  g.sc.seed = seed;
  g.choose_features();
  g.sc.features = g.on;
  int salt = 1;
  for (const auto& s : {g.a, g.b}) {
    g.types_and_functions(s, salt);
    g.tables(s);
    g.functions(s, salt);
    g.objects(s);
    g.data(s);
    ++salt;
  }
  g.sc.cleanup = {"DROP SCHEMA IF EXISTS " + g.a + " CASCADE",
                  "DROP SCHEMA IF EXISTS " + g.b + " CASCADE",
                  "DROP SCHEMA IF EXISTS " + g.c + " CASCADE"};
  g.sc.session_init = {"SET client_min_messages TO error", "SET lock_timeout TO '50ms'",
                       "SET search_path TO " + g.a};
  g.statements(g.pick(30, 80));
  return g.sc;
}

std::unique_ptr<target> make_postgresql_target(const std::string& conninfo, bool self_check,
                                               double statement_timeout_s) {
  return std::make_unique<pg_target>(conninfo, self_check, statement_timeout_s);
}

}  // namespace qcache::difftest
