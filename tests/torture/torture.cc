// qcache-torture: concurrency torture of the cache against a real database.
//
//   qcache-torture --engine sqlite|postgresql [--seconds 5] [--threads 4] [--seed 1]
//                  [--pg CONNINFO (default $QCACHE_PG)] [--self-check-bypass-writes]
//
// Several threads, each with its own connection through qcache (qcache::pqxx or
// qcache::soci on SQLite) and one shared cache, run a seeded random mix of point reads,
// range reads, joins, aggregates, inserts, updates (including the range predicate column
// and the join column), deletes, transactions with rollbacks and savepoints, and
// occasional DDL on a side table.
//
// Every write bumps a per-row version inside the database (`ver = ver + 1 ... RETURNING
// ver`), so a row's versions are ordered by the database itself. When a write commits, the
// thread takes a number from a global monotonic sequence and records, for each row it
// wrote, "version v of this row was committed by sequence s". A read takes a sequence
// number R before it is sent; for every (row, version v) it returns, a recorded version
// v' > v of that row with s < R is a violation: the read returned a version that a commit
// completed before the read started had already replaced. No wall clock is involved.
// (A deleted row's replacement is a tombstone version; inserted ids are never reused.)
//
// After the writers stop, every read of a fixed list (all point reads, ranges, joins,
// aggregates) is run through the cache twice and once directly on a connection without
// a cache: all three must be equal.
//
// --self-check-bypass-writes (PostgreSQL) sends autocommit writes behind qcache's back:
// the run must then report violations, which shows the checker can see staleness.
//
// Prints operations, reads checked, violations; exit status 1 on any violation or
// mismatch, 2 on a usage or setup error. Seeded: the same seed gives each thread the same
// sequence of choices (interleavings still vary).
#include <qcache/cache.h>
#include <qcache/pqxx.h>
#ifdef QCACHE_TORTURE_HAVE_SOCI
#include <qcache/soci.h>

#include <soci/soci.h>
namespace soci {
extern "C" backend_factory const* factory_sqlite3();
}
#endif

#include <pqxx/pqxx>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <unistd.h>
#include <vector>

namespace {

using table = std::vector<std::vector<long long>>;  // NULL is LLONG_MIN

struct db_error {
  std::string message;
};

// One connection. Statements run through the cache unless it was made direct.
class db {
 public:
  virtual ~db() = default;
  virtual void exec(const std::string& sql) = 0;
  virtual table query(const std::string& sql) = 0;
  virtual void begin() = 0;
  virtual void commit() = 0;
  virtual void rollback() = 0;
};

long long to_ll(const char* s) { return std::strtoll(s, nullptr, 10); }

class pg_db final : public db {
 public:
  // `bypass_writes` (self-check only): autocommit INSERT/UPDATE/DELETE go to the driver
  // behind qcache's back, so the checker must report violations.
  bool bypass_writes = false;

  pg_db(const std::string& conninfo, std::shared_ptr<qcache::cache> c) {
    if (c) qc_ = std::make_unique<qcache::pqxx::connection>(conninfo, std::move(c));
    else raw_ = std::make_unique<::pqxx::connection>(conninfo);
  }
  void exec(const std::string& sql) override { (void)run(sql); }
  table query(const std::string& sql) override {
    auto r = run(sql);
    table t;
    for (const auto& row : r) {
      std::vector<long long> v;
      for (const auto& f : row) v.push_back(f.is_null() ? LLONG_MIN : to_ll(f.c_str()));
      t.push_back(std::move(v));
    }
    return t;
  }
  void begin() override {
    if (qc_) tx_ = std::make_unique<qcache::pqxx::work>(*qc_);
    else rtx_ = std::make_unique<::pqxx::work>(*raw_);
  }
  void commit() override {
    try {
      if (tx_) tx_->commit();
      if (rtx_) rtx_->commit();
    } catch (const ::pqxx::failure& e) {
      end();
      throw db_error{e.what()};
    }
    end();
  }
  void rollback() override {
    try {
      if (tx_) tx_->abort();
      if (rtx_) rtx_->abort();
    } catch (const ::pqxx::failure& e) {
      end();
      throw db_error{e.what()};
    }
    end();
  }

 private:
  void end() {
    tx_.reset();
    rtx_.reset();
  }
  ::pqxx::result run(const std::string& sql) {
    try {
      if (tx_) return tx_->exec(sql);
      if (rtx_) return rtx_->exec(sql);
      if (qc_ && bypass_writes && sql.rfind("SELECT", 0) != 0) {
        ::pqxx::nontransaction n{qc_->raw()};
        return n.exec(sql);
      }
      if (qc_) {
        qcache::pqxx::nontransaction n{*qc_};
        return n.exec(sql);
      }
      ::pqxx::nontransaction n{*raw_};
      return n.exec(sql);
    } catch (const ::pqxx::failure& e) {
      throw db_error{e.what()};
    }
  }
  std::unique_ptr<qcache::pqxx::connection> qc_;
  std::unique_ptr<::pqxx::connection> raw_;
  std::unique_ptr<qcache::pqxx::work> tx_;
  std::unique_ptr<::pqxx::work> rtx_;
};

#ifdef QCACHE_TORTURE_HAVE_SOCI
class sqlite_db final : public db {
 public:
  sqlite_db(const std::string& path, const qcache::soci::caching_factory* f) {
    const std::string conn = "db=" + path + " timeout=30";
    if (f) sql_ = std::make_unique<::soci::session>(*f, conn);
    else sql_ = std::make_unique<::soci::session>(*::soci::factory_sqlite3(), conn);
  }
  void exec(const std::string& sql) override {
    try {
      *sql_ << sql;
    } catch (const ::soci::soci_error& e) {
      throw db_error{e.what()};
    }
  }
  table query(const std::string& sql) override {
    table t;
    try {
      ::soci::row r;
      ::soci::statement st = (sql_->prepare << sql, ::soci::into(r));
      st.execute(false);
      while (st.fetch()) {
        std::vector<long long> v;
        for (std::size_t j = 0; j < r.size(); ++j) {
          if (r.get_indicator(j) == ::soci::i_null) {
            v.push_back(LLONG_MIN);
            continue;
          }
          switch (r.get_properties(j).get_data_type()) {
            case ::soci::dt_integer: v.push_back(r.get<int>(j)); break;
            case ::soci::dt_long_long: v.push_back(r.get<long long>(j)); break;
            case ::soci::dt_unsigned_long_long:
              v.push_back(static_cast<long long>(r.get<unsigned long long>(j)));
              break;
            case ::soci::dt_double: v.push_back(static_cast<long long>(r.get<double>(j))); break;
            default: v.push_back(to_ll(r.get<std::string>(j).c_str()));
          }
        }
        t.push_back(std::move(v));
      }
    } catch (const ::soci::soci_error& e) {
      throw db_error{e.what()};
    }
    return t;
  }
  void begin() override { exec("BEGIN IMMEDIATE"); }
  void commit() override { exec("COMMIT"); }
  void rollback() override { exec("ROLLBACK"); }

 private:
  std::unique_ptr<::soci::session> sql_;
};
#endif

// ---- shared bookkeeping --------------------------------------------------------------

constexpr long long groups = 8;
constexpr long long group_key = 1'000'000'000;  // grps rows live above items in `history`

struct shared_state {
  std::atomic<std::uint64_t> seq{1};
  std::atomic<long long> next_id{1};
  std::atomic<bool> stop{false};
  // Self-check: no transactions or DDL, whose broad invalidations (and flushes) would
  // hide most stale entries the hidden writes leave behind.
  bool self_check = false;
  std::mutex mu;
  struct version {
    std::uint64_t seq;  // the sequence number taken after its commit returned
    bool tombstone;     // the row was deleted
  };
  std::map<long long, std::map<long long, version>> history;  // row -> ver -> commit
  // Deletes of a row sent but not yet recorded (or rolled back), and deletes ever sent: a
  // point read that finds no row is judged only when no delete of it could have committed
  // unrecorded.
  std::map<long long, int> deletes_in_flight;
  std::map<long long, std::uint64_t> deletes_started;
  std::vector<long long> ids;                                       // ids ever inserted
  std::atomic<std::uint64_t> ops{0}, reads_checked{0}, rows_checked{0}, violations{0},
      writes_committed{0}, rollbacks{0}, errors{0}, ddl{0};
  std::mutex print_mu;
  std::map<std::string, int> error_kinds;

  std::uint64_t next() { return seq.fetch_add(1); }

  // `rows` holds (row, version, tombstone). `deleted` lists rows this commit had sent
  // deletes for (whether or not they matched).
  void committed(const std::vector<std::tuple<long long, long long, bool>>& rows,
                 const std::vector<long long>& deleted) {
    std::uint64_t s = next();  // after the commit returned
    std::lock_guard<std::mutex> l(mu);
    for (auto [row, ver, tomb] : rows) history[row][ver] = {s, tomb};
    for (long long row : deleted) --deletes_in_flight[row];
    writes_committed += rows.size();
  }
  void delete_started(long long row) {
    std::lock_guard<std::mutex> l(mu);
    ++deletes_in_flight[row];
    ++deletes_started[row];
  }
  void deletes_abandoned(const std::vector<long long>& deleted) {
    std::lock_guard<std::mutex> l(mu);
    for (long long row : deleted) --deletes_in_flight[row];
  }
  // Before a point read of `row`: whether a delete of it is in flight, and how many began.
  std::pair<bool, std::uint64_t> delete_state(long long row) {
    std::lock_guard<std::mutex> l(mu);
    return {deletes_in_flight[row] > 0, deletes_started[row]};
  }

  // A point read of `row` started at `started` found nothing. A violation when the row's
  // latest version committed before the read is live and no delete could explain it.
  void check_absent(const std::string& sql, long long row, std::uint64_t started,
                    std::pair<bool, std::uint64_t> before) {
    ++reads_checked;
    std::lock_guard<std::mutex> l(mu);
    if (before.first || deletes_in_flight[row] > 0 || deletes_started[row] != before.second)
      return;
    auto h = history.find(row);
    if (h == history.end()) return;
    const version* latest = nullptr;
    long long latest_ver = 0;
    for (const auto& [ver, v] : h->second)
      if (v.seq < started) {
        latest = &v;
        latest_ver = ver;
      }
    if (!latest || latest->tombstone) return;
    ++violations;
    std::lock_guard<std::mutex> p(print_mu);
    std::cout << "VIOLATION: " << sql << " returned no row, but version " << latest_ver
              << " was committed at seq " << latest->seq << " before the read started at seq "
              << started << " and no delete of it was in flight\n";
  }

  void check(const std::string& sql, std::uint64_t started,
             const std::vector<std::pair<long long, long long>>& seen) {
    ++reads_checked;
    std::lock_guard<std::mutex> l(mu);
    for (auto [row, ver] : seen) {
      ++rows_checked;
      auto h = history.find(row);
      if (h == history.end()) continue;
      for (auto it = h->second.upper_bound(ver); it != h->second.end(); ++it) {
        if (it->second.seq < started) {
          ++violations;
          std::lock_guard<std::mutex> p(print_mu);
          std::cout << "VIOLATION: " << sql << " returned row " << row << " version " << ver
                    << ", but version " << it->first << " was committed at seq " << it->second.seq
                    << " before the read started at seq " << started << "\n";
          break;
        }
      }
    }
  }

  void error(const std::string& what) {
    ++errors;
    std::string kind = what.substr(0, what.find('\n')).substr(0, 80);
    std::lock_guard<std::mutex> l(print_mu);
    ++error_kinds[kind];
  }
};

// ---- one worker ----------------------------------------------------------------------

class worker {
 public:
  worker(db& d, shared_state& s, std::uint64_t seed, int index, bool pg)
      : d_(d), s_(s), rng_(seed), index_(index), pg_(pg) {}

  void run() {
    while (!s_.stop.load(std::memory_order_relaxed)) {
      ++s_.ops;
      int dice = pick(0, s_.self_check ? 799 : 999);
      try {
        if (dice < 200) point_read();
        else if (dice < 330) range_read();
        else if (dice < 400) join_read();
        else if (dice < 430) group_read();
        else if (dice < 500) aggregate();
        else if (dice < 600) insert(false);
        else if (dice < 720) update(false);
        else if (dice < 780) delete_row(false);
        else if (dice < 800) group_update(false);
        else if (dice < 995) transaction();
        else side_ddl();
      } catch (const db_error& e) {
        s_.error(e.message);
      }
    }
  }

 private:
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  long long some_id() {
    std::lock_guard<std::mutex> l(s_.mu);
    if (s_.ids.empty()) return 1;
    return s_.ids[std::uniform_int_distribution<std::size_t>(0, s_.ids.size() - 1)(rng_)];
  }

  // Autocommit reads: every (row, version) they return is checked.
  void checked_read(const std::string& sql, int id_col, int ver_col, bool group_cols = false) {
    std::uint64_t started = s_.next();
    table t = d_.query(sql);
    std::vector<std::pair<long long, long long>> seen;
    for (const auto& r : t) {
      seen.emplace_back(r[id_col], r[ver_col]);
      if (group_cols) seen.emplace_back(group_key + r[2], r[3]);
    }
    s_.check(sql, started, seen);
  }
  void point_read() {
    long long id = some_id();
    const std::string sql = "SELECT id, ver, val FROM items WHERE id = " + std::to_string(id);
    auto before = s_.delete_state(id);
    std::uint64_t started = s_.next();
    table t = d_.query(sql);
    if (t.empty()) return s_.check_absent(sql, id, started, before);
    s_.check(sql, started, {{t[0][0], t[0][1]}});
  }
  void range_read() {
    int lo = pick(0, 90);
    checked_read("SELECT id, ver FROM items WHERE val BETWEEN " + std::to_string(lo) + " AND " +
                     std::to_string(lo + 10) + " ORDER BY id",
                 0, 1);
  }
  void join_read() {
    checked_read("SELECT i.id, i.ver, g.id, g.ver FROM items i JOIN grps g ON g.id = i.grp "
                 "WHERE g.id = " + std::to_string(pick(0, groups - 1)) + " ORDER BY i.id",
                 0, 1, true);
  }
  // Filters on a column writes by id do not name: their pre-image (or the column's epoch)
  // must invalidate it.
  void group_read() {
    checked_read("SELECT id, ver FROM items WHERE grp = " + std::to_string(pick(0, groups - 1)) +
                     " ORDER BY id",
                 0, 1);
  }
  void aggregate() {
    static const char* q[] = {
        "SELECT grp, count(*), sum(val), max(ver) FROM items GROUP BY grp ORDER BY grp",
        "SELECT count(*) FROM items WHERE val > 50",
        "SELECT g.name, count(i.id) FROM grps g LEFT JOIN items i ON i.grp = g.id GROUP BY g.name ORDER BY g.name",
        "SELECT count(*) FROM side",
        // correlated subqueries: named by the g.id values of the result
        "SELECT g.id, g.ver, (SELECT count(*) FROM items i WHERE i.grp = g.id), (SELECT sum(ver) FROM items i WHERE i.grp = g.id AND i.val > 50) FROM grps g ORDER BY g.id"};
    (void)d_.query(q[pick(0, 4)]);
  }

  struct written {
    std::vector<std::tuple<long long, long long, bool>> rows;  // (row, version, tombstone)
    std::vector<long long> deletes;                             // rows deletes were sent for
    void append(const written& o) {
      rows.insert(rows.end(), o.rows.begin(), o.rows.end());
      deletes.insert(deletes.end(), o.deletes.begin(), o.deletes.end());
    }
  };

  // Each write returns the (row, version) it produced; in a transaction they are
  // recorded at COMMIT, otherwise at once.
  void insert(bool in_tx, written* w = nullptr) {
    written local;
    if (!w) w = &local;
    long long id = s_.next_id.fetch_add(1);
    auto t = d_.query("INSERT INTO items(id, grp, val, ver) VALUES(" + std::to_string(id) + ", " +
                      std::to_string(pick(0, groups - 1)) + ", " + std::to_string(pick(0, 100)) +
                      ", 1) RETURNING id, ver");
    {
      std::lock_guard<std::mutex> l(s_.mu);
      s_.ids.push_back(id);
    }
    record(t, in_tx, *w, false);
  }
  void update(bool in_tx, written* w = nullptr) {
    written local;
    if (!w) w = &local;
    std::string set = pick(0, 1) ? "val = " + std::to_string(pick(0, 100))      // range column
                                 : "grp = " + std::to_string(pick(0, groups - 1));  // join column
    // Mostly one row by id; sometimes every row of one val (several rows, none named).
    std::string where = pick(0, 3) ? "id = " + std::to_string(some_id())
                                   : "val = " + std::to_string(pick(0, 100));
    auto t = d_.query("UPDATE items SET " + set + ", ver = ver + 1 WHERE " + where +
                      " RETURNING id, ver");
    record(t, in_tx, *w, false);
  }
  void delete_row(bool in_tx, written* w = nullptr) {
    written local;
    if (!w) w = &local;
    long long id = some_id();
    s_.delete_started(id);
    w->deletes.push_back(id);
    table t;
    try {
      // The tombstone is the version after the deleted one.
      t = d_.query("DELETE FROM items WHERE id = " + std::to_string(id) + " RETURNING id, ver + 1");
    } catch (const db_error&) {
      if (!in_tx) s_.deletes_abandoned(w->deletes);
      throw;  // in a transaction, the caller abandons them with the rest
    }
    record(t, in_tx, *w, true);
  }
  void group_update(bool in_tx, written* w = nullptr) {
    written local;
    if (!w) w = &local;
    auto t = d_.query("UPDATE grps SET name = 'g" + std::to_string(pick(0, 99)) +
                      "', ver = ver + 1 WHERE id = " + std::to_string(pick(0, groups - 1)) +
                      " RETURNING id + " + std::to_string(group_key) + ", ver");
    record(t, in_tx, *w, false);
  }
  // Autocommit writes are recorded at once; in a transaction, at COMMIT.
  void record(const table& t, bool in_tx, written& w, bool tombstone) {
    for (const auto& r : t) w.rows.emplace_back(r[0], r[1], tombstone);
    if (!in_tx) s_.committed(w.rows, w.deletes);
  }

  void some_write(written& w) {
    switch (pick(0, 3)) {
      case 0: insert(true, &w); break;
      case 1: update(true, &w); break;
      case 2: delete_row(true, &w); break;
      default: group_update(true, &w);
    }
  }

  void transaction() {
    written w, inner;  // inner: the writes after the savepoint, until it is resolved
    try {
      d_.begin();
      int n = pick(1, 4);
      for (int i = 0; i < n; ++i) {
        some_write(w);
        if (pick(0, 2) == 0) (void)d_.query("SELECT count(*), max(ver) FROM items");
        // Point reads after own writes: what they return must stay private (P8).
        if (pick(0, 1) == 0)
          (void)d_.query("SELECT id, ver, val FROM items WHERE id = " + std::to_string(some_id()));
      }
      if (pick(0, 2) == 0) {
        d_.exec("SAVEPOINT sp");
        int m = pick(1, 3);
        for (int i = 0; i < m; ++i) some_write(inner);
        (void)d_.query("SELECT id, ver FROM items WHERE val < 10");
        if (pick(0, 1)) {
          d_.exec("ROLLBACK TO SAVEPOINT sp");
          inner.rows.clear();  // its deletes stay in flight until the transaction ends
        } else {
          d_.exec("RELEASE SAVEPOINT sp");
        }
        w.append(inner);
        inner = written{};
      }
      if (pick(0, 3) == 0) {
        d_.rollback();
        ++s_.rollbacks;
        s_.deletes_abandoned(w.deletes);
        return;
      }
      d_.commit();
      s_.committed(w.rows, w.deletes);
    } catch (const db_error& e) {
      s_.error(e.message);
      try {
        d_.rollback();
      } catch (const db_error&) {
      }
      s_.deletes_abandoned(w.deletes);
      s_.deletes_abandoned(inner.deletes);
    }
  }

  void side_ddl() {
    ++s_.ddl;
    std::string n = std::to_string(index_) + "_" + std::to_string(++ddl_count_);
    switch (pick(0, 3)) {
      case 0: d_.exec("CREATE INDEX side_ix_" + n + " ON side(x)"); break;
      case 1: d_.exec("ALTER TABLE side ADD COLUMN c_" + n + " INTEGER"); break;
      case 2: d_.exec("INSERT INTO side(x) VALUES(" + std::to_string(pick(0, 9)) + ")"); break;
      default: d_.exec("DELETE FROM side WHERE x = " + std::to_string(pick(0, 9)));
    }
  }

  db& d_;
  shared_state& s_;
  std::mt19937_64 rng_;
  int index_;
  bool pg_;
  int ddl_count_ = 0;
};

// The reads compared after the writers stop: cached twice, then direct.
std::vector<std::string> final_reads(shared_state& s) {
  std::vector<std::string> q = {
      "SELECT grp, count(*), sum(val), max(ver) FROM items GROUP BY grp ORDER BY grp",
      "SELECT count(*) FROM items WHERE val > 50",
      "SELECT count(*) FROM side",
      "SELECT g.id, g.ver, (SELECT count(*) FROM items i WHERE i.grp = g.id), (SELECT sum(ver) FROM items i WHERE i.grp = g.id AND i.val > 50) FROM grps g ORDER BY g.id",
      "SELECT id, ver, val, grp FROM items ORDER BY id"};
  for (int lo = 0; lo <= 90; lo += 5)
    q.push_back("SELECT id, ver FROM items WHERE val BETWEEN " + std::to_string(lo) + " AND " +
                std::to_string(lo + 10) + " ORDER BY id");
  for (int g = 0; g < groups; ++g)
    q.push_back("SELECT i.id, i.ver, g.id, g.ver FROM items i JOIN grps g ON g.id = i.grp "
                "WHERE g.id = " + std::to_string(g) + " ORDER BY i.id");
  std::lock_guard<std::mutex> l(s.mu);
  for (long long id : s.ids)
    q.push_back("SELECT id, ver, val FROM items WHERE id = " + std::to_string(id));
  return q;
}

int usage() {
  std::cerr << "usage: qcache-torture --engine sqlite|postgresql [--seconds N] [--threads N]"
               " [--seed N] [--pg CONNINFO]\n";
  return 2;
}

int main_(int argc, char** argv) {
  std::string engine;
  double seconds = 5;
  int threads = 4;
  std::uint64_t seed = 1;
  const char* env_pg = std::getenv("QCACHE_PG");
  std::string pg = env_pg ? env_pg : "";
  bool bypass = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--self-check-bypass-writes") {
      bypass = true;
      continue;
    }
    if (i + 1 >= argc) return usage();
    std::string v = argv[++i];
    if (a == "--engine") engine = v;
    else if (a == "--seconds") seconds = std::atof(v.c_str());
    else if (a == "--threads") threads = std::atoi(v.c_str());
    else if (a == "--seed") seed = std::strtoull(v.c_str(), nullptr, 10);
    else if (a == "--pg") pg = v;
    else return usage();
  }
  if ((engine != "sqlite" && engine != "postgresql") || threads < 1) return usage();

  auto cache = std::make_shared<qcache::cache>(qcache::options{});
  std::function<std::unique_ptr<db>(bool cached)> connect;
  std::string schema, path;
#ifdef QCACHE_TORTURE_HAVE_SOCI
  std::unique_ptr<qcache::soci::caching_factory> factory;
#endif
  if (engine == "postgresql") {
    if (pg.empty()) {
      std::cerr << "qcache-torture: no PostgreSQL conninfo (--pg or QCACHE_PG)\n";
      return 2;
    }
    schema = "torture_" + std::to_string(::getpid());
    // Every connection works in the run's own schema.
    std::string conninfo = pg + " options='-csearch_path=" + schema + "'";
    connect = [conninfo, cache, bypass](bool cached) -> std::unique_ptr<db> {
      auto d = std::make_unique<pg_db>(conninfo, cached ? cache : nullptr);
      d->bypass_writes = bypass;
      return d;
    };
    pg_db setup(pg, nullptr);
    setup.exec("CREATE SCHEMA " + schema);
  } else {
#ifdef QCACHE_TORTURE_HAVE_SOCI
    const char* tmp = std::getenv("TMPDIR");
    path = std::string(tmp && *tmp ? tmp : "/tmp") + "/qcache-torture-" +
           std::to_string(::getpid()) + ".db";
    factory = std::make_unique<qcache::soci::caching_factory>(cache, *::soci::factory_sqlite3());
    auto* f = factory.get();
    connect = [path, f](bool cached) -> std::unique_ptr<db> {
      return std::make_unique<sqlite_db>(path, cached ? f : nullptr);
    };
    sqlite_db setup(path, nullptr);
    setup.exec("PRAGMA journal_mode=WAL");
#else
    std::cerr << "qcache-torture: built without qcache::soci\n";
    return 2;
#endif
  }

  shared_state s;
  s.self_check = bypass;
  {
    auto d = connect(true);
    d->exec("CREATE TABLE items(id INTEGER PRIMARY KEY, grp INTEGER, val INTEGER, ver INTEGER)");
    d->exec("CREATE INDEX items_val ON items(val)");
    d->exec("CREATE TABLE grps(id INTEGER PRIMARY KEY, name VARCHAR(10), ver INTEGER)");
    d->exec("CREATE TABLE side(x INTEGER)");
    for (int g = 0; g < groups; ++g)
      d->exec("INSERT INTO grps VALUES(" + std::to_string(g) + ", 'g', 1)");
    d->begin();
    for (int i = 0; i < 200; ++i) {
      long long id = s.next_id.fetch_add(1);
      d->exec("INSERT INTO items VALUES(" + std::to_string(id) + ", " + std::to_string(id % groups) +
              ", " + std::to_string(id % 101) + ", 1)");
      s.ids.push_back(id);
    }
    d->commit();
  }

  std::vector<std::unique_ptr<db>> conns;
  for (int t = 0; t < threads; ++t) conns.push_back(connect(true));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      worker w(*conns[t], s, seed * 1000003 + std::uint64_t(t), t, engine == "postgresql");
      w.run();
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  s.stop = true;
  for (auto& th : pool) th.join();

  // Quiescent: cached (twice) must equal direct.
  auto cached = connect(true);
  auto direct = connect(false);
  std::uint64_t compared = 0, mismatches = 0;
  for (const auto& q : final_reads(s)) {
    table a = cached->query(q), b = cached->query(q), c = direct->query(q);
    ++compared;
    if (a != c || b != c) {
      ++mismatches;
      std::cout << "MISMATCH after quiescence: " << q << " (cached " << a.size() << "/" << b.size()
                << " rows, direct " << c.size() << " rows)\n";
    }
  }
  auto st = cache->stats();
  std::cout << engine << ": " << threads << " threads, " << seconds << " s, seed " << seed << "\n"
            << "operations " << s.ops << ", reads checked " << s.reads_checked << " ("
            << s.rows_checked << " row versions), writes committed " << s.writes_committed
            << ", rollbacks " << s.rollbacks << ", ddl " << s.ddl << ", errors " << s.errors
            << "\n"
            << "cache: " << st.hits << " hits, " << st.misses << " misses, " << st.stores
            << " stores, " << st.stores_dropped_stale << " stores dropped stale, "
            << st.stale_rejected << " stale rejected, " << st.invalidations << " invalidations\n"
            << "final reads compared " << compared << ", mismatches " << mismatches << "\n";
  for (const auto& [k, n] : s.error_kinds) std::cout << "  error x" << n << ": " << k << "\n";
  std::cout << "violations " << s.violations << "\n";

  conns.clear();
  cached.reset();
  direct.reset();
  if (!schema.empty()) {
    pg_db cleanup(pg, nullptr);
    cleanup.exec("DROP SCHEMA " + schema + " CASCADE");
  }
  if (!path.empty())
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) std::remove((path + suffix).c_str());
  return s.violations || mismatches ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return main_(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "qcache-torture: " << e.what() << "\n";
    return 2;
  } catch (const db_error& e) {
    std::cerr << "qcache-torture: " << e.message << "\n";
    return 2;
  }
}
