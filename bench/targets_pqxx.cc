// PostgreSQL targets through libpqxx: `postgresql` (plain libpqxx vs qcache::pqxx, unix
// socket) and `pgpool` (plain libpqxx straight to PostgreSQL over TCP vs through
// pgpool-II's query cache over TCP).
//
// Invariants:
//  * the uncached modes contain no qcache code: plain ::pqxx::connection and transactions;
//  * both modes of a target run the same calls (exec_prepared, or literal SQL through
//    exec for pgpool, whose cache only avoids the server with the simple protocol);
//  * all connections use the benchmark database (target_config::database), created on
//    first use, so pg_stat_database counts only the benchmark's transactions.
#include <qcache/pqxx.h>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <thread>
#include <type_traits>

#include "bench.h"

namespace qcache::bench {
namespace {

std::string with_db(const std::string& conninfo, const std::string& db) {
  return conninfo + " dbname=" + db;
}

}  // namespace

void ensure_pg_database(const std::string& conninfo, const std::string& db) {
  ::pqxx::connection c(conninfo);
  ::pqxx::nontransaction tx(c);
  if (tx.exec_params("SELECT 1 FROM pg_database WHERE datname = $1", db).empty()) {
    try {
      tx.exec("CREATE DATABASE " + tx.quote_name(db));
    } catch (const ::pqxx::sql_error&) {
      // Created concurrently by another process: fine if it exists now.
      if (tx.exec_params("SELECT 1 FROM pg_database WHERE datname = $1", db).empty()) throw;
    }
  }
}

namespace {

// SQL with $n placeholders split for literal substitution.
struct literal_sql {
  std::vector<std::string> pieces;  // pieces[k] precedes parameter index[k]
  std::vector<int> index;
  explicit literal_sql(const std::string& sql) {
    std::string cur;
    for (std::size_t k = 0; k < sql.size(); ++k) {
      if (sql[k] == '$' && k + 1 < sql.size() && std::isdigit(static_cast<unsigned char>(sql[k + 1]))) {
        int v = 0;
        while (k + 1 < sql.size() && std::isdigit(static_cast<unsigned char>(sql[k + 1])))
          v = v * 10 + (sql[++k] - '0');
        pieces.push_back(cur);
        index.push_back(v - 1);
        cur.clear();
      } else {
        cur += sql[k];
      }
    }
    pieces.push_back(cur);
  }
  std::string render(const params& p) const {
    std::string out = pieces[0];
    for (std::size_t k = 0; k < index.size(); ++k) {
      int i = index[k];
      if (p.text[i]) {
        out += '\'';
        for (char ch : p.s[i]) {
          if (ch == '\'') out += '\'';
          out += ch;
        }
        out += '\'';
      } else {
        out += std::to_string(p.i[i]);
      }
      out += pieces[k + 1];
    }
    return out;
  }
};

std::uint64_t consume(const ::pqxx::result& r, std::string* canon) {
  std::uint64_t sum = 0;
  for (const auto& row : r) {
    for (const auto& f : row) {
      if (f.is_null()) {
        sum += 1;
        if (canon) *canon += "\\N\t";
      } else {
        const char* s = f.c_str();
        sum += f.size() + static_cast<unsigned char>(s[0]);
        if (canon) {
          canon->append(s, f.size());
          *canon += '\t';
        }
      }
    }
    if (canon) *canon += '\n';
  }
  return sum;
}

// One libpqxx connection, plain or qcache's: Conn/NonTx/Work are either the pqxx types
// or the qcache::pqxx ones. Statements outside begin()/commit() run in a nontransaction
// (autocommit).
template <class Conn, class NonTx, class Work>
class pqxx_connection final : public connection {
 public:
  template <class... A>
  pqxx_connection(const std::vector<statement>& stmts, bool literal, A&&... a)
      : conn_(std::forward<A>(a)...), stmts_(stmts), literal_(literal) {
    for (const auto& s : stmts_) {
      if (literal_) sql_.emplace_back(s.sql);
      else conn_.prepare(s.name, s.sql);
    }
    ntx_.emplace(conn_);
  }
  ~pqxx_connection() override {
    work_.reset();
    ntx_.reset();
  }

  std::uint64_t read(int stmt, const params& p, std::string* canon) override {
    return consume(run(stmt, p), canon);
  }
  void write(int stmt, const params& p) override { run(stmt, p); }
  void begin() override {
    ntx_.reset();
    work_.emplace(conn_);
  }
  void commit() override {
    if (!work_) return;
    try {
      work_->commit();
    } catch (...) {
      work_.reset();
      ntx_.emplace(conn_);
      throw;
    }
    work_.reset();
    ntx_.emplace(conn_);
  }
  void exec_raw(const std::string& sql) override {
    if (work_) work_->exec(sql);
    else ntx_->exec(sql);
  }
  void sync() override {
    if constexpr (std::is_same_v<Conn, qcache::pqxx::connection>) {
      if (work_) return;  // sync() is for between transactions
      ntx_.reset();       // libpqxx runs one transaction object at a time
      conn_.sync();
      ntx_.emplace(conn_);
    }
  }

 private:
  ::pqxx::result run(int stmt, const params& p) {
    if (work_) return run_on(*work_, stmt, p);
    return run_on(*ntx_, stmt, p);
  }
  template <class Tx>
  ::pqxx::result run_on(Tx& tx, int stmt, const params& p) {
    if (literal_) return tx.exec(sql_[stmt].render(p));
    const std::string& name = stmts_[stmt].name;
    if (p.n == 0) return tx.exec_prepared(name);
    if (p.n == 1 && !p.text[0]) return tx.exec_prepared(name, p.i[0]);
    std::vector<std::string> v;
    v.reserve(p.n);
    for (int k = 0; k < p.n; ++k) v.push_back(p.as_text(k));
    return tx.exec_prepared(name, ::pqxx::prepare::make_dynamic_params(v));
  }

  Conn conn_;
  const std::vector<statement>& stmts_;
  bool literal_;
  std::vector<literal_sql> sql_;
  std::optional<NonTx> ntx_;
  std::optional<Work> work_;
};

using plain_connection = pqxx_connection<::pqxx::connection, ::pqxx::nontransaction, ::pqxx::work>;
using cached_connection = pqxx_connection<qcache::pqxx::connection, qcache::pqxx::nontransaction,
                                          qcache::pqxx::work>;

std::optional<std::uint64_t> count_transactions(const std::string& conninfo, double settle_s) {
  auto read = [&] {
    ::pqxx::connection c(conninfo);
    ::pqxx::nontransaction tx(c);
    return tx.exec("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                   "WHERE datname = current_database()")[0][0]
        .as<std::uint64_t>();
  };
  std::uint64_t v = read();
  // Backends publish their counters when they exit or, when idle, up to ~10 s later;
  // wait until nothing but our own polls moves the counter.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(settle_s);
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    std::uint64_t w = read();
    bool settled = w - v <= 2;
    v = w;
    if (settled) break;
  }
  return v;
}

class postgresql_target final : public target {
 public:
  explicit postgresql_target(const target_config& c)
      : conninfo_(with_db(c.pg, c.database)),
        cache_(std::make_shared<qcache::cache>(c.cache_options)) {
    if (c.pg.empty())
      throw std::runtime_error("target postgresql needs QCACHE_PG (or --pg CONNINFO)");
    ensure_pg_database(c.pg, c.database);
  }
  std::string name() const override { return "postgresql"; }
  dialect sql_dialect() const override { return dialect::postgresql; }
  bool supports(mode, std::string*) const override { return true; }
  void set_statements(const std::vector<statement>& s) override { stmts_ = s; }
  std::unique_ptr<connection> connect(mode m) override {
    if (m == mode::cached) return std::make_unique<cached_connection>(stmts_, false, conninfo_, cache_);
    return std::make_unique<plain_connection>(stmts_, false, conninfo_);
  }
  std::unique_ptr<connection> connect_direct() override {
    return std::make_unique<plain_connection>(stmts_, false, conninfo_);
  }
  void reset_cache(mode m, const std::vector<std::string>&) override {
    if (m == mode::cached) cache_->flush(qcache::invalidation_cause::manual);
  }
  std::optional<qcache::stats> cache_stats(mode m) override {
    if (m == mode::cached) return cache_->stats();
    return std::nullopt;
  }
  std::optional<std::uint64_t> server_transactions(double settle_s) override {
    return count_transactions(conninfo_, settle_s);
  }
  std::string database_key() const override { return "pg"; }

 private:
  std::string conninfo_;
  std::shared_ptr<qcache::cache> cache_;
  std::vector<statement> stmts_;
};

class pgpool_target final : public target {
 public:
  explicit pgpool_target(const target_config& c)
      : direct_(with_db(c.pg_tcp.empty() ? c.pg : c.pg_tcp, c.database)),
        stats_(with_db(c.pg, c.database)),
        pool_(c.pgpool.empty() ? "" : with_db(c.pgpool, c.database)),
        prepared_(c.pgpool_prepared) {
    if (c.pg.empty()) throw std::runtime_error("target pgpool needs QCACHE_PG (or --pg CONNINFO)");
    ensure_pg_database(c.pg, c.database);
  }
  std::string name() const override { return "pgpool"; }
  dialect sql_dialect() const override { return dialect::postgresql; }
  bool supports(mode m, std::string* why) const override {
    if (m == mode::cached && pool_.empty()) {
      if (why) *why = "QCACHE_PGPOOL is not set (scripts/pgpool start DIR PGPORT; source DIR/pgpool.env)";
      return false;
    }
    return true;
  }
  void set_statements(const std::vector<statement>& s) override { stmts_ = s; }
  std::unique_ptr<connection> connect(mode m) override {
    if (m == mode::cached) return std::make_unique<plain_connection>(stmts_, !prepared_, pool_);
    return std::make_unique<plain_connection>(stmts_, !prepared_, direct_);
  }
  std::unique_ptr<connection> connect_direct() override {
    return std::make_unique<plain_connection>(stmts_, false, direct_);
  }
  // pgpool drops every cached result of a table on any write to it through pgpool, even
  // one that matches no row (PGPOOL.md).
  void reset_cache(mode m, const std::vector<std::string>& tables) override {
    if (m != mode::cached) return;
    ::pqxx::connection c(pool_);
    ::pqxx::nontransaction tx(c);
    for (const auto& t : tables) tx.exec("DELETE FROM " + t + " WHERE false");
  }
  std::optional<qcache::stats> cache_stats(mode) override { return std::nullopt; }
  std::optional<std::uint64_t> server_transactions(double settle_s) override {
    return count_transactions(stats_, settle_s);
  }
  std::string database_key() const override { return "pg"; }

 private:
  std::string direct_, stats_, pool_;
  bool prepared_;
  std::vector<statement> stmts_;
};

}  // namespace

std::unique_ptr<target> make_postgresql_target(const target_config& c) {
  return std::make_unique<postgresql_target>(c);
}
std::unique_ptr<target> make_pgpool_target(const target_config& c) {
  return std::make_unique<pgpool_target>(c);
}

}  // namespace qcache::bench
