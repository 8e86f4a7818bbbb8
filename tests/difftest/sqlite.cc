// qcache-difftest, SQLite: the target (two sessions through qcache::soci::caching_factory
// plus a plain soci::session that writes behind the cache's back, all on one file; direct
// reads on the same connection through its native sqlite3 handle) and the generator.
#include <qcache/cache.h>
#include <qcache/soci.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <stdexcept>

#include "difftest.h"

namespace qcache::difftest {
namespace {

namespace sq = ::sqlite_api;
const std::string null_text = "\x01NULL";

sq::sqlite3* handle_of(::soci::session& s) {
  auto* be = qcache::soci::is_caching(s) ? qcache::soci::native_backend(s) : s.get_backend();
  return static_cast<::soci::sqlite3_session_backend*>(be)->conn_;
}

// Runs `sql` on a native handle: rows as text (the text sqlite3_column_text gives, which is
// what SOCI's std::string conversion gives too).
outcome native(sq::sqlite3* db, const std::string& sql) {
  outcome o;
  const char* tail = sql.c_str();
  while (tail && *tail) {
    sq::sqlite3_stmt* st = nullptr;
    if (sq::sqlite3_prepare_v2(db, tail, -1, &st, &tail) != SQLITE_OK) {
      o = outcome{};
      o.ok = false;
      o.error_class = "error";
      o.error_text = sq::sqlite3_errmsg(db);
      return o;
    }
    if (!st) continue;
    o.rows.clear();
    int n = sq::sqlite3_column_count(st), rc;
    while ((rc = sq::sqlite3_step(st)) == SQLITE_ROW) {
      std::string line;
      for (int j = 0; j < n; ++j) {
        if (j) line += ", ";
        if (sq::sqlite3_column_type(st, j) == SQLITE_NULL)
          line += null_text;
        else
          line += reinterpret_cast<const char*>(sq::sqlite3_column_text(st, j));
      }
      o.rows.push_back(std::move(line));
    }
    if (rc != SQLITE_DONE) {
      o = outcome{};
      o.ok = false;
      o.error_class = "error";
      o.error_text = sq::sqlite3_errmsg(db);
      sq::sqlite3_finalize(st);
      return o;
    }
    sq::sqlite3_finalize(st);
  }
  return o;
}

int column_count(sq::sqlite3* db, const std::string& sql) {
  sq::sqlite3_stmt* st = nullptr;
  if (sq::sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK || !st) return -1;
  int n = sq::sqlite3_column_count(st);
  sq::sqlite3_finalize(st);
  return n;
}

outcome soci_error_outcome(const std::exception& e) {
  outcome o;
  o.ok = false;
  o.error_class = "error";
  o.error_text = e.what();
  return o;
}

// A read through SOCI, every column into a std::string with an indicator.
outcome soci_read(::soci::session& s, const std::string& sql, int columns) {
  outcome o;
  try {
    std::vector<std::string> v(static_cast<std::size_t>(columns));
    std::vector<::soci::indicator> ind(v.size());
    ::soci::statement st(s);
    for (std::size_t j = 0; j < v.size(); ++j) st.exchange(::soci::into(v[j], ind[j]));
    st.alloc();
    st.prepare(sql);
    st.define_and_bind();
    st.execute(false);
    while (st.fetch()) {
      std::string line;
      for (std::size_t j = 0; j < v.size(); ++j) {
        if (j) line += ", ";
        line += ind[j] == ::soci::i_null ? null_text : v[j];
      }
      o.rows.push_back(std::move(line));
    }
  } catch (const ::soci::soci_error& e) {
    return soci_error_outcome(e);
  }
  return o;
}

class sqlite_target final : public target {
 public:
  explicit sqlite_target(bool self_check) : self_check_(self_check) {}

  void open(const scenario& s, int sessions) override {
    remove_files(s);
    {
      ::soci::session setup(*::soci::factory_sqlite3(), "db=" + s.location);
      sq::sqlite3* db = handle_of(setup);
      for (const auto& q : s.setup) {
        outcome o = native(db, q);
        if (!o.ok) throw std::runtime_error("sqlite setup failed: " + q + ": " + o.error_text);
      }
    }
    cache_ = std::make_shared<qcache::cache>(qcache::options{});
    factory_ = std::make_unique<qcache::soci::caching_factory>(cache_, *::soci::factory_sqlite3());
    const std::string conn = "db=" + s.location + " timeout=0";
    for (int i = 0; i < sessions; ++i) {
      if (i + 1 < sessions)
        sessions_.push_back(std::make_unique<::soci::session>(*factory_, conn));
      else
        sessions_.push_back(std::make_unique<::soci::session>(*::soci::factory_sqlite3(), conn));
      for (const auto& q : s.session_init) *sessions_.back() << q;
    }
  }

  void close(const scenario& s) override {
    sessions_.clear();
    factory_.reset();
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
    remove_files(s);
  }

  outcome exec(int session, const std::string& sql) override {
    auto& s = *sessions_.at(static_cast<std::size_t>(session));
    if (self_check_ && !is_control(sql)) return native(handle_of(s), sql);
    try {
      s << sql;
    } catch (const ::soci::soci_error& e) {
      return soci_error_outcome(e);
    }
    return {};
  }

  void read(int session, const std::string& sql, outcome& cached, outcome& direct) override {
    auto& s = *sessions_.at(static_cast<std::size_t>(session));
    int n = column_count(handle_of(s), sql);
    cached = n < 0 ? native(handle_of(s), sql) : soci_read(s, sql, n);
    direct = native(handle_of(s), sql);
  }

  // A direct read that finds the file locked by another session's pending commit while the
  // cached one is served: the cache returned the committed state, which a retry returns too.
  bool inconclusive(const outcome& cached, const outcome& direct) const override {
    return cached.ok && !direct.ok &&
           direct.error_text.find("database is locked") != std::string::npos;
  }
  int sessions() const override { return 3; }

 private:
  static bool is_control(const std::string& sql) {
    for (const char* w : {"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "END", "PRAGMA",
                          "ATTACH", "DETACH"})
      if (sql.rfind(w, 0) == 0) return true;
    return false;
  }
  static void remove_files(const scenario& s) {
    for (const auto& f : s.cleanup)
      for (const char* suffix : {"", "-journal", "-wal", "-shm"}) std::remove((f + suffix).c_str());
  }

  bool self_check_;
  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::soci::caching_factory> factory_;
  std::vector<std::unique_ptr<::soci::session>> sessions_;
};

// ---- generator -------------------------------------------------------------------------

const std::vector<std::string> families = {
    "views",         "triggers",    "fk_cascade", "fk_set_null", "generated",
    "without_rowid", "nocase",      "rtrim",      "affinity",    "joins",
    "replace",       "upsert",      "attach",     "txn",         "savepoint",
    "plain_writer",  "temp_shadow", "wal",        "late_ddl"};

struct sgen {
  std::mt19937_64& rng;
  const generator_options& o;
  std::set<std::string> on;
  scenario sc;

  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
  bool chance(int pct) { return pick(1, 100) <= pct; }
  template <class T>
  const T& one(const std::vector<T>& v) {
    return v[static_cast<std::size_t>(pick(0, int(v.size()) - 1))];
  }
  bool has(const std::string& f) const { return on.count(f) > 0; }
  void add(const std::string& q) { sc.setup.push_back(q); }

  void choose() {
    for (const auto& f : families)
      if (!o.disabled.count(f) && chance(35)) on.insert(f);
    if (has("fk_set_null") && has("fk_cascade"))
      on.erase(chance(50) ? "fk_set_null" : "fk_cascade");
    if (has("nocase") && has("rtrim")) on.erase(chance(50) ? "nocase" : "rtrim");
  }

  void schema(const std::string& aux) {
    if (has("wal")) add("PRAGMA journal_mode=WAL");
    std::string coll = has("nocase") ? " COLLATE NOCASE" : has("rtrim") ? " COLLATE RTRIM" : "";
    std::string t = "CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v TEXT" + coll +
                    (has("affinity") ? ", a, n NUMERIC, s TEXT" : "");
    if (has("generated")) t += ", g INTEGER AS (k * 10) " + one<std::string>({"STORED", "VIRTUAL"});
    add(t + ")");
    std::string fk = has("fk_cascade") ? " REFERENCES t(id) ON DELETE CASCADE ON UPDATE CASCADE"
                     : has("fk_set_null")
                         ? " REFERENCES t(id) ON DELETE SET NULL ON UPDATE SET NULL"
                         : "";
    add("CREATE TABLE u (id INTEGER PRIMARY KEY, t_id INTEGER" + fk + ", w INTEGER)");
    add("CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT)");
    if (has("without_rowid"))
      add("CREATE TABLE wr (name TEXT" + coll + " PRIMARY KEY, k INTEGER) WITHOUT ROWID");
    if (has("views")) {
      add("CREATE VIEW v_t AS SELECT id, k, v FROM t WHERE k > 2");
      add("CREATE VIEW v_j AS SELECT t.id, t.k, u.w FROM t JOIN u ON u.t_id = t.id");
    }
    if (has("triggers")) {
      add("CREATE TRIGGER tu AFTER INSERT ON u BEGIN INSERT INTO log(what) VALUES ('ins ' || "
          "NEW.id); "
          "UPDATE t SET v = 'touched' WHERE id = NEW.t_id; END");
      add("CREATE TRIGGER td AFTER DELETE ON t BEGIN INSERT INTO log(what) VALUES ('del ' || "
          "OLD.id); END");
      if (has("views"))
        add("CREATE TRIGGER tv INSTEAD OF INSERT ON v_t BEGIN INSERT INTO t(id, k, v) VALUES "
            "(NEW.id, NEW.k, NEW.v); END");
    }
    for (int id = 1; id <= 8; ++id) add(t_insert(id));
    for (int id = 1; id <= 6; ++id)
      add("INSERT INTO u VALUES (" + std::to_string(id) + ", " + std::to_string(pick(1, 8)) + ", " +
          kv() + ")");
    if (has("without_rowid")) add("INSERT INTO wr VALUES ('a', 1), ('B', 2), ('c ', 3)");
    if (has("attach")) {
      add("ATTACH DATABASE '" + aux + "' AS aux");
      add("CREATE TABLE aux.t (id INTEGER PRIMARY KEY, k INTEGER, v TEXT)");
      add("CREATE TABLE aux.x (id INTEGER PRIMARY KEY, k INTEGER)");
      add("INSERT INTO aux.t VALUES (1, 100, 'aux'), (2, 200, 'aux')");
      add("INSERT INTO aux.x VALUES (1, 1), (2, 5)");
      add("DETACH DATABASE aux");
    }
  }

  std::string kv() { return std::to_string(pick(0, 9)); }
  std::string id() { return std::to_string(pick(1, 10)); }
  std::string text() {
    return one<std::string>({"'a'", "'A'", "'a '", "'b'", "'5'", "NULL", "'touched'"});
  }
  std::string loose() { return one<std::string>({"5", "'5'", "5.0", "'05'", "'x'", "NULL"}); }

  std::string t_insert(int id) {
    std::string cols = "id, k, v", vals = std::to_string(id) + ", " + kv() + ", " + text();
    if (has("affinity"))
      cols += ", a, n, s", vals += ", " + loose() + ", " + loose() + ", " + loose();
    return "INSERT INTO t (" + cols + ") VALUES (" + vals + ")";
  }

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

  step make_read() {
    std::vector<std::function<step()>> r = {
        [&] { return read("SELECT *, typeof(k) FROM t WHERE id = " + id()); },
        [&] {
          return read(
              "SELECT id, k, v FROM t WHERE k BETWEEN " + kv() + " AND " + kv() + " ORDER BY id",
              "", true);
        },
        [&] { return read("SELECT id, v FROM t WHERE k = " + kv()); },
        [&] { return read("SELECT count(*), sum(k), max(v) FROM t"); },
        [&] { return read("SELECT t.id, u.w FROM t JOIN u ON u.t_id = t.id WHERE t.k > " + kv()); },
        [&] {
          return read("SELECT id FROM t WHERE id IN (SELECT t_id FROM u WHERE w < " + kv() + ")");
        },
        [&] { return read("SELECT count(*), max(what) FROM log"); },
        [&] { return read("SELECT * FROM u WHERE t_id = " + id()); },
        [&] { return read("SELECT id FROM t WHERE v = " + text()); },
    };
    if (has("views")) {
      r.push_back([&] { return read("SELECT * FROM v_t WHERE id = " + id(), "views"); });
      r.push_back([&] { return read("SELECT * FROM v_j WHERE w > " + kv(), "views"); });
    }
    if (has("generated"))
      r.push_back([&] {
        return read("SELECT id, g FROM t WHERE g = " + std::to_string(10 * pick(0, 9)),
                    "generated");
      });
    if (has("without_rowid"))
      r.push_back([&] { return read("SELECT * FROM wr WHERE name = " + text(), "without_rowid"); });
    if (has("affinity"))
      r.push_back([&] {
        return read("SELECT id, a, typeof(a), n, typeof(n), s, typeof(s) FROM t WHERE " +
                        one<std::string>({"a", "n", "s"}) + " = " + loose(),
                    "affinity");
      });
    if (has("joins")) {
      r.push_back(
          [&] { return read("SELECT * FROM t JOIN u USING (id) WHERE t.k < " + kv(), "joins"); });
      r.push_back([&] { return read("SELECT * FROM t NATURAL JOIN u", "joins"); });
      r.push_back([&] {
        return read("SELECT t.id, u.id FROM t LEFT JOIN u ON u.t_id = t.id AND u.w > " + kv(),
                    "joins");
      });
    }
    if (has("attach")) {
      r.push_back([&] { return read("SELECT * FROM aux.t", "attach"); });
      r.push_back(
          [&] { return read("SELECT t.id, x.k FROM main.t JOIN aux.x ON x.id = t.id", "attach"); });
      r.push_back([&] { return read("SELECT * FROM x", "attach"); });
    }
    if (has("late_ddl")) r.push_back([&] { return read("SELECT * FROM v_late", "late_ddl"); });
    if (has("joins"))
      r.push_back([&] { return read("SELECT t.k FROM t JOIN u USING (id)", "joins"); });
    if (has("temp_shadow"))
      r.push_back([&] { return read("SELECT id, k FROM t WHERE id < 4", "temp_shadow"); });
    return one(r)();
  }

  step make_write() {
    std::vector<std::function<step()>> w = {
        [&] { return exec(t_insert(pick(1, 12))); },
        [&] { return exec("UPDATE t SET k = " + kv() + " WHERE id = " + id()); },
        [&] { return exec("UPDATE t SET v = " + text() + " WHERE k = " + kv()); },
        [&] { return exec("UPDATE t SET id = id + 20 WHERE id = " + id()); },
        [&] { return exec("DELETE FROM t WHERE id = " + id()); },
        [&] {
          return exec("INSERT INTO u VALUES (" + std::to_string(pick(1, 12)) + ", " + id() + ", " +
                      kv() + ")");
        },
        [&] { return exec("DELETE FROM u WHERE w < " + kv()); },
    };
    if (has("replace"))
      w.push_back([&] {
        return exec(
            "INSERT OR REPLACE INTO t (id, k, v) VALUES (" + id() + ", " + kv() + ", 'rep')",
            "replace");
      });
    if (has("replace"))
      w.push_back([&] {
        return exec("REPLACE INTO u VALUES (" + id() + ", " + id() + ", " + kv() + ")", "replace");
      });
    if (has("upsert"))
      w.push_back([&] {
        return exec("INSERT INTO t (id, k, v) VALUES (" + id() + ", " + kv() +
                        ") ON CONFLICT (id) DO UPDATE SET k = excluded.k, v = v || '+'",
                    "upsert");
      });
    if (has("without_rowid"))
      w.push_back([&] {
        return exec("INSERT OR REPLACE INTO wr VALUES (" + text() + ", " + kv() + ")",
                    "without_rowid");
      });
    if (has("affinity"))
      w.push_back([&] {
        return exec("UPDATE t SET a = " + loose() + ", n = " + loose() + ", s = " + loose() +
                        " WHERE id = " + id(),
                    "affinity");
      });
    if (has("views") && has("triggers"))
      w.push_back([&] {
        return exec("INSERT INTO v_t VALUES (" + std::to_string(pick(9, 14)) + ", " + kv() +
                        ", 'via view')",
                    "triggers");
      });
    if (has("attach")) {
      w.push_back([&] { return exec("UPDATE aux.t SET k = k + 1", "attach"); });
      w.push_back(
          [&] { return exec("INSERT INTO x VALUES (" + id() + ", " + kv() + ")", "attach"); });
      w.push_back([&] { return exec("DELETE FROM aux.x WHERE id = " + id(), "attach"); });
    }
    if (has("joins")) {
      // USING / NATURAL joins read u.id through the join condition only.
      w.push_back([&] { return exec("UPDATE u SET id = id + 20 WHERE id = " + id(), "joins"); });
      w.push_back([&] { return exec("UPDATE t SET id = id + 20 WHERE id = " + id(), "joins"); });
    }
    if (has("late_ddl")) {
      // Schema changes after statements were prepared: SQLite re-prepares silently.
      w.push_back([&] {
        return exec(
            "CREATE TRIGGER IF NOT EXISTS tlate AFTER UPDATE ON u BEGIN "
            "UPDATE t SET k = k + 1 WHERE id = NEW.t_id; END",
            "late_ddl");
      });
      w.push_back([&] {
        return exec("CREATE VIEW IF NOT EXISTS v_late AS SELECT id, k FROM t WHERE k < 5",
                    "late_ddl");
      });
      w.push_back([&] { return exec("DROP VIEW IF EXISTS v_late", "late_ddl"); });
      w.push_back([&] { return exec("CREATE INDEX IF NOT EXISTS ik ON t(k)", "late_ddl"); });
      w.push_back([&] { return exec("UPDATE u SET w = w + 1 WHERE t_id = " + id(), "late_ddl"); });
    }
    if (has("temp_shadow"))
      w.push_back([&] {
        return exec("CREATE TEMP TABLE IF NOT EXISTS t AS SELECT id, k + 100 AS k FROM main.t",
                    "temp_shadow");
      });
    return one(w)();
  }

  step make_txn() {
    std::vector<std::function<step()>> s = {[&] { return make_write(); }};
    if (has("txn"))
      s.push_back([&] {
        return exec(one<std::string>({"BEGIN", "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK", "COMMIT"}),
                    "txn");
      });
    if (has("savepoint"))
      s.push_back([&] {
        return exec(one<std::string>({"SAVEPOINT a", "ROLLBACK TO a", "RELEASE a"}), "savepoint");
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
      step st = r <= 50 ? pooled_read(pool) : r <= 80 ? make_write() : make_txn();
      st.session = pick(0, 1);
      if (has("plain_writer") && st.k == step::kind::exec && chance(30)) {
        st.session = 2;
        if (st.family.empty()) st.family = "plain_writer";
      }
      if (st.k == step::kind::read && st.family.empty() && chance(30)) sc.steps.push_back(st);
      if ((has("txn") || has("savepoint")) && chance(8)) {
        for (auto& y : snapshot_snippet(pool)) sc.steps.push_back(std::move(y));
        continue;
      }
      close_transactions(st);
      bool wrote = st.k == step::kind::exec;
      sc.steps.push_back(std::move(st));
      if (wrote && chance(50)) {
        // Re-read a pooled read right after a write, from any session.
        step again = one(pool);
        again.session = pick(0, 1);
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

  // A read transaction with another connection writing in the middle (P23: in WAL mode
  // the reader keeps its snapshot), then reads from both.
  std::vector<step> snapshot_snippet(const std::vector<step>& pool) {
    int me = pick(0, 1), other = has("plain_writer") && chance(50) ? 2 : 1 - me;
    step x = one(pool);
    std::vector<step> out;
    auto r = [&](int sess) {
      step y = x;
      y.session = sess;
      out.push_back(y);
    };
    auto e = [&](int sess, const std::string& sql) {
      step y = exec(sql, "txn");
      y.session = sess;
      out.push_back(std::move(y));
    };
    bool sp = has("savepoint") && chance(50);
    e(me, sp ? "SAVEPOINT a" : one<std::string>({"BEGIN", "BEGIN DEFERRED"})), r(me);
    step w = make_write();
    w.session = other;
    out.push_back(w);
    r(me), r(1 - me), r(me), e(me, sp ? "RELEASE a" : "COMMIT"), r(me);
    return out;
  }

  step pooled_read(const std::vector<step>& pool) { return chance(80) ? one(pool) : make_read(); }
};

std::string temp_dir() {
  const char* t = std::getenv("TMPDIR");
  return t && *t ? t : "/tmp";
}

}  // namespace

std::vector<std::string> sqlite_families() { return families; }

scenario generate_sqlite(std::mt19937_64& rng, int index, const generator_options& o) {
  std::uint64_t seed = rng();
  std::mt19937_64 local(seed);
  sgen g{local, o, {}, {}};
  g.sc.seed = seed;
  g.choose();
  g.sc.features = g.on;
  const std::string base =
      temp_dir() + "/qcache-difftest-" + std::to_string(::getpid()) + "-" + std::to_string(index);
  g.sc.location = base + ".db";
  g.sc.cleanup = {base + ".db", base + ".aux.db"};
  g.schema(base + ".aux.db");
  if (g.has("fk_cascade") || g.has("fk_set_null"))
    g.sc.session_init.push_back("PRAGMA foreign_keys = ON");
  if (g.has("attach")) g.sc.session_init.push_back("ATTACH DATABASE '" + base + ".aux.db' AS aux");
  g.statements(g.pick(30, 80));
  return g.sc;
}

std::unique_ptr<target> make_sqlite_target(bool self_check) {
  return std::make_unique<sqlite_target>(self_check);
}

}  // namespace qcache::difftest
