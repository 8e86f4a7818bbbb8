// The PostgreSQL engine for SOCI: qcache::pg::session (the same analysis, catalog closure,
// predicate tags and transaction rules as the libpqxx adapter) behind SOCI's postgresql
// backend.
//
// Invariants:
//  * the statement text the engine analyses is the one SOCI sends: SOCI's own rewrite of
//    `:name` placeholders into `$n`, read from the real statement after it prepared;
//    parameters are handed over in `$n` order with the text SOCI sends for them;
//  * the into shape is part of the key (a trailing parameter the statement text never
//    references), so one SQL text read into different C++ types never shares an entry;
//  * if the engine's own bookkeeping fails, the statement still runs, as a write of
//    unknown targets (a flush), and the driver's result or error reaches the caller.
#include <qcache/tags.h>
#include <soci/postgresql/soci-postgresql.h>

#include <stdexcept>
#include <utility>

#include "internal.h"
#include "pg/engine.h"
#include "pg/libpq_status.h"

namespace qcache::soci::detail {
namespace {

struct pg_plan {
  std::string sql;                 // with $n placeholders, as sent
  std::vector<std::string> names;  // name of each $n for named binding (empty: positional)
  std::string statement;           // the server-side prepared statement's name, if any
  std::uint64_t epoch = 0;         // session prepared_epoch() when that name was confirmed
};

// The backend's current PGconn* (SOCI replaces it when it reconnects).
struct pgconn_of {
  ::soci::postgresql_session_backend* be;
  PGconn* operator()() const noexcept { return be->conn_; }
};

struct pg_exec {
  pg::call call;
  write_hold fallback;  // when the engine could not decide: everything held
};

class postgresql_engine final : public engine {
 public:
  postgresql_engine(std::shared_ptr<cache> c, ::soci::details::session_backend& real)
      : cache_(c),
        real_(real),
        session_(std::move(c)),
        conn_(static_cast<::soci::postgresql_session_backend&>(real).conn_),
        status_(pgconn_of{&static_cast<::soci::postgresql_session_backend&>(real)}) {
    session_.attach(&status_);
    // end() hands what succeeded() throws (a failed COMMIT of a wrapped autocommit write)
    // to the statement through take_error().
    session_.allow_autocommit_wrap();
    // The change stream starts (or is joined) at connection: a server that cannot stream
    // fails the connection with a message saying what is missing.
    if (cache_->settings().follow_changes) session_.connect(runner());
  }

  std::shared_ptr<void> prepare(const std::string&, const std::function<void()>& real_prepare,
                                ::soci::details::statement_backend& real) override {
    real_prepare();
    auto& st = static_cast<::soci::postgresql_statement_backend&>(real);
    auto p = std::make_shared<pg_plan>();
    p->sql = st.query_;
    p->names = st.names_;
    if (st.stType_ == ::soci::details::st_repeatable_query) p->statement = st.statementName_;
    p->epoch = session_.prepared_epoch();
    return p;
  }

  bool may_cache(const std::shared_ptr<void>& p) const noexcept override { return p != nullptr; }
  bool describe_executes() const noexcept override { return true; }

  execution begin(const std::shared_ptr<void>& pl, bool cacheable, std::string_view shape,
                  const std::vector<const use_value*>& uses,
                  ::soci::details::statement_backend&) override {
    execution ex;
    auto p = std::static_pointer_cast<pg_plan>(pl);
    auto st = std::make_shared<pg_exec>();
    ex.state = st;
    std::vector<pg::param> params;
    bool ok = p != nullptr;
    if (ok) {
      bool named = false;
      for (const auto* u : uses) named = named || !u->name.empty();
      if (named) {
        for (const auto& n : p->names) {
          const use_value* found = nullptr;
          for (const auto* u : uses)
            if (u->name == n) found = u;
          if (!found || !found->cacheable) {
            ok = false;
            break;
          }
          params.push_back({found->type, found->text});
        }
      } else {
        for (const auto* u : uses) {
          if (!u->cacheable || !u->name.empty()) cacheable = false;
          params.push_back({u->type, u->text});
        }
      }
    }
    if (!ok) cacheable = false;
    params.push_back({param_type::other, shape});
    pg::hints h;
    h.uncacheable = !cacheable;
    try {
      if (!p) throw std::runtime_error("no plan");
      // SQL through this session may have deallocated or replaced SOCI's prepared
      // statement (DEALLOCATE ALL, DISCARD ALL, ...): a deallocated one runs uncached (the
      // server's error passes through), a replaced one as unknown SQL (uncached, flushes).
      static const std::string unknown = "\x01unknown prepared statement";
      const prepared_state ps = check_prepared(*p);
      if (ps == prepared_state::absent) h.uncacheable = true;  // the server raises an error
      const std::string& sql = ps == prepared_state::other ? unknown : p->sql;
      st->call = session_.begin(sql, params, 's', runner(), &h);
    } catch (...) {
      tags::tag g = tags::global();
      st->fallback = cache_->begin_write(std::span<const tags::tag>(&g, 1), invalidation_cause::flush);
      cache_->count_uncacheable(uncacheable_reason::other);
      return ex;
    }
    if (st->call.hit) {
      ex.hit = std::static_pointer_cast<const result_table>(st->call.hit);
      ex.state.reset();
      return ex;
    }
    ex.read = st->call.store;
    ex.store = st->call.store;
    return ex;
  }

  void end(execution& ex, bool ok, std::shared_ptr<const result_table> value) noexcept override {
    auto st = std::static_pointer_cast<pg_exec>(ex.state);
    ex.state.reset();
    if (!st) return;
    if (!st->fallback.empty()) {
      st->fallback.release();
      cache_->flush(invalidation_cause::flush);
      return;
    }
    if (!ok) return session_.failed(st->call);
    try {
      session_.succeeded(st->call, std::move(value));
    } catch (...) {
      error_ = std::current_exception();
    }
  }
  std::exception_ptr take_error() noexcept override { return std::exchange(error_, nullptr); }

  void tx_begun() override { session_.transaction_begun(); }
  // A COMMIT that threw did not commit, or its outcome is unknown: the engine must not
  // count on the stream skipping its copy (pg::session own transactions).
  void tx_committed(bool ok) override {
    if (ok) session_.transaction_committed();
    else session_.transaction_rolled_back();
  }
  void tx_rolled_back(bool) override { session_.transaction_rolled_back(); }
  void invalidate_all() override { cache_->flush(invalidation_cause::manual); }
  bool sync() override { return session_.sync(runner()); }

  // As qcache::pqxx::connection's, but in the session's current transaction; when the
  // catalog cannot be read there, the invalidation is not lost: the cache is flushed.
  void invalidate_table(const std::string& table) override {
    try {
      session_.invalidate_table(table, runner());
    } catch (...) {
      cache_->flush(invalidation_cause::manual);
    }
  }
  void invalidate_row(const std::string& table, const std::string& column,
                      const std::string& value) override {
    try {
      session_.invalidate_row(table, column, value, runner());
    } catch (...) {
      cache_->flush(invalidation_cause::manual);
    }
  }
  explanation explain_sql(const std::string& sql) override {
    return session_.explain(as_sent(sql), runner());
  }

 private:
  // Whether the server still has `p`'s prepared statement with the SQL it was prepared
  // with (SOCI prepares eagerly: absent means executing it fails), another statement of
  // that name, or none; asked only after SQL that may rebind prepared statement names.
  enum class prepared_state { same, absent, other };
  prepared_state check_prepared(pg_plan& p) {
    const std::uint64_t epoch = session_.prepared_epoch();
    if (p.statement.empty() || p.epoch == epoch) return prepared_state::same;
    if (status_.transaction() == 'E') return prepared_state::absent;  // nothing runs there
    try {
      auto rows = runner()(
          "SELECT from_sql, statement FROM pg_catalog.pg_prepared_statements WHERE name = " +
          pg::quoted(p.statement, '\''));
      if (rows.empty()) return prepared_state::absent;
      if (rows.size() == 1 && rows[0].size() == 2 && rows[0][0] == "f" && rows[0][1] == p.sql) {
        p.epoch = epoch;
        return prepared_state::same;
      }
    } catch (...) {
    }
    return prepared_state::other;
  }

  // `sql` as SOCI's postgresql backend sends it: its own rewrite of `:name` placeholders
  // into $n, made by preparing a one-time statement (which contacts no server).
  std::string as_sent(const std::string& sql) {
    std::unique_ptr<::soci::details::statement_backend> st(real_.make_statement_backend());
    st->alloc();
    st->prepare(sql, ::soci::details::st_one_time_query);
    std::string sent = static_cast<::soci::postgresql_statement_backend&>(*st).query_;
    st->clean_up();
    return sent;
  }

  // Bookkeeping queries run on the same connection, in its current transaction.
  pg::run_fn runner() {
    return [this](const std::string& q) {
      PGresult* r = PQexec(conn_, q.c_str());
      ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
      if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK) {
        // As SOCI's own errors: the server's message and SQLSTATE (a failed COMMIT of a
        // wrapped autocommit write reaches the application as its statement's error).
        std::string msg = r ? PQresultErrorMessage(r) : PQerrorMessage(conn_);
        const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
        std::string sqlstate = state ? state : "08006";
        if (r) PQclear(r);
        throw ::soci::postgresql_soci_error(msg, sqlstate.c_str());
      }
      std::vector<pg::row> rows;
      int n = PQntuples(r), m = PQnfields(r);
      rows.reserve(static_cast<std::size_t>(n));
      for (int i = 0; i < n; ++i) {
        pg::row row;
        row.reserve(static_cast<std::size_t>(m));
        for (int j = 0; j < m; ++j) {
          if (PQgetisnull(r, i, j)) row.emplace_back(std::nullopt);
          else row.emplace_back(std::string(PQgetvalue(r, i, j),
                                            static_cast<std::size_t>(PQgetlength(r, i, j))));
        }
        rows.push_back(std::move(row));
      }
      PQclear(r);
      return rows;
    };
  }

  std::shared_ptr<cache> cache_;
  ::soci::details::session_backend& real_;
  pg::session session_;
  std::exception_ptr error_;  // see take_error()
  PGconn* conn_;
  pg::libpq_status<pgconn_of> status_;  // what libpq reports after each statement
};

}  // namespace

std::unique_ptr<engine> make_postgresql_engine(std::shared_ptr<cache> c,
                                               ::soci::details::session_backend& real,
                                               std::shared_ptr<const factory_options>) {
  return std::make_unique<postgresql_engine>(std::move(c), real);
}

}  // namespace qcache::soci::detail
