// The libpqxx adapter: routes every statement through pg::session.
//
// Invariants:
//  * the cached value of a read is the pqxx::result the driver returned, shared and
//    never modified (libpqxx results are reference-counted, read-only handles);
//  * bookkeeping queries (catalog, session context) run on the statement's own
//    transaction, never inside a failed one;
//  * if qcache's own bookkeeping fails, the statement still runs, under a global write
//    hold (so it cannot leave anything stale), and the driver's error, if any, reaches
//    the caller unchanged.
#include <qcache/pqxx.h>

#include "pg/engine.h"
#include "pg/libpq_status.h"

namespace qcache::pqxx {
namespace {

class result_value final : public cached_value {
 public:
  explicit result_value(::pqxx::result r) : r_(std::move(r)) {
    std::size_t n = 64 + r_.columns() * 48;
    const auto rows = r_.size();
    const auto cols = r_.columns();
    for (::pqxx::result::size_type i = 0; i < rows; ++i) {
      n += 16 + cols * 16;  // PGresult's per-row and per-field bookkeeping
      for (::pqxx::row::size_type j = 0; j < cols; ++j) n += r_[i][j].size() + 1;
    }
    bytes_ = n;
  }
  std::size_t bytes() const noexcept override { return bytes_; }
  bool column_text(std::size_t col,
                   std::vector<std::optional<std::string>>& out) const override {
    if (col >= static_cast<std::size_t>(r_.columns())) return false;
    out.reserve(r_.size());
    for (const auto& row : r_) {
      const auto& f = row[static_cast<::pqxx::row::size_type>(col)];
      if (f.is_null()) out.emplace_back(std::nullopt);
      else out.emplace_back(std::string(f.c_str(), f.size()));
    }
    return true;
  }
  const ::pqxx::result& result() const noexcept { return r_; }

 private:
  ::pqxx::result r_;
  std::size_t bytes_ = 0;
};

// libpqxx 6.4 keeps its PGconn* private (only its own friends may read it). An explicit
// template instantiation may name a private member (C++ [temp.spec]/6): this one defines
// a function returning the pointer to connection_base::m_conn, so the engine can read
// what libpq reports after each command (transaction status, reported settings).
struct pgconn_member {
  using type = ::pqxx::internal::pq::PGconn* ::pqxx::connection_base::*;
  friend type member_of(pgconn_member);
};
template <class Tag, typename Tag::type M>
struct expose_member {
  friend typename Tag::type member_of(Tag) { return M; }
};
template struct expose_member<pgconn_member, &::pqxx::connection_base::m_conn>;

struct pgconn_of {
  ::pqxx::connection_base* c;
  PGconn* operator()() const noexcept { return c->*member_of(pgconn_member{}); }
};

}  // namespace

struct connection::impl {
  impl(const std::string& options, std::shared_ptr<qcache::cache> c)
      : raw(options), session(std::move(c)), status(pgconn_of{&raw}) {
    session.attach(&status);
    session.allow_autocommit_wrap();  // detail::run passes what succeeded() throws
  }
  ::pqxx::connection raw;
  pg::session session;
  pg::libpq_status<pgconn_of> status;
  // Name -> SQL of statements prepared through prepare(), and the session's
  // prepared_epoch() when the server last confirmed that mapping.
  struct prepared_statement {
    std::string sql;
    std::uint64_t epoch = 0;
  };
  std::unordered_map<std::string, prepared_statement> prepared;
  int backend_pid = 0;  // the server session the engine's state describes
};

connection::~connection() = default;

const std::shared_ptr<qcache::cache>& connection::cache() const noexcept {
  return impl_->session.shared_cache();
}

::pqxx::connection& connection::raw() noexcept {
  impl_->session.raw_access();
  return impl_->raw;
}
::pqxx::connection& connection::raw_for_wrapper() noexcept { return impl_->raw; }
bool connection::is_open() const noexcept { return impl_->raw.is_open(); }

void connection::prepare(const std::string& name, const std::string& definition) {
  impl_->raw.prepare(name, definition);
  // Once SQL has touched prepared statements on this session, the server may hold another
  // statement of this name already: confirm at first use.
  const std::uint64_t epoch = impl_->session.prepared_epoch();
  impl_->prepared[name] = {definition, epoch == 0 ? epoch : ~std::uint64_t{0}};
}

void connection::unprepare(const std::string& name) {
  impl_->raw.unprepare(name);
  impl_->prepared.erase(name);
}

const std::string* connection::prepared_sql(const std::string& name, ::pqxx::transaction_base& tx,
                                            bool& cacheable) {
  auto it = impl_->prepared.find(name);
  if (it == impl_->prepared.end()) return nullptr;
  auto& ps = it->second;
  const std::uint64_t epoch = impl_->session.prepared_epoch();
  if (ps.epoch == epoch) return &ps.sql;
  // SQL run through this connection may have deallocated or replaced the statement
  // (DEALLOCATE, PREPARE, DISCARD ALL, a procedure): ask the server what the name means
  // now. Not inside a failed transaction (the question would fail; the engine runs
  // nothing cached there anyway).
  cacheable = false;
  if (impl_->status.transaction() == 'E') return &ps.sql;
  try {
    ::pqxx::result r =
        tx.exec("SELECT from_sql, statement FROM pg_catalog.pg_prepared_statements WHERE name = " +
                tx.quote(name));
    if (r.empty()) return &ps.sql;  // libpqxx prepares `ps.sql` now, or fails
    if (std::string_view(r[0][0].c_str()) == "f" &&
        std::string_view(r[0][1].c_str(), r[0][1].size()) == ps.sql) {
      ps.epoch = epoch;
      cacheable = true;
      return &ps.sql;
    }
  } catch (const ::pqxx::broken_connection&) {
    throw;
  } catch (...) {
  }
  return nullptr;  // another statement: runs uncached, as one that may write anything
}

namespace {

pg::run_fn runner(::pqxx::transaction_base& tx) {
  return [&tx](const std::string& q) {
    ::pqxx::result r = tx.exec(q);
    std::vector<pg::row> rows;
    rows.reserve(r.size());
    for (const auto& row : r) {
      pg::row out;
      out.reserve(row.size());
      for (const auto& f : row) {
        if (f.is_null()) out.emplace_back(std::nullopt);
        else out.emplace_back(std::string(f.c_str(), f.size()));
      }
      rows.push_back(std::move(out));
    }
    return rows;
  };
}

// Runs `fn` on a short-lived nontransaction of its own (the connection must have no
// transaction open, as libpqxx requires).
template <class F>
auto with_tx(::pqxx::connection& raw, F&& fn) {
  ::pqxx::nontransaction tx(raw);
  return fn(runner(tx));
}

}  // namespace

connection::connection(const std::string& options, std::shared_ptr<qcache::cache> cache) {
  if (!cache) throw std::invalid_argument("qcache::pqxx::connection: the cache is null");
  impl_ = std::make_unique<impl>(options, std::move(cache));
  if (impl_->session.shared_cache()->settings().follow_changes) {
    // The change stream starts (or is joined) now, so that a server that cannot stream
    // fails the connection with a message saying what is missing.
    with_tx(impl_->raw, [&](const pg::run_fn& run) {
      impl_->session.connect(run);
      return 0;
    });
    impl_->backend_pid = impl_->raw.backendpid();
  }
}

explanation connection::explain(const std::string& sql) {
  return with_tx(impl_->raw, [&](const pg::run_fn& run) {
    return impl_->session.explain(sql, run);
  });
}

bool connection::sync() {
  return with_tx(impl_->raw, [&](const pg::run_fn& run) { return impl_->session.sync(run); });
}

void connection::invalidate_table(const std::string& table) {
  with_tx(impl_->raw, [&](const pg::run_fn& run) {
    impl_->session.invalidate_table(table, run);
    return 0;
  });
}

void connection::invalidate_row(const std::string& table, const std::string& column,
                                const std::string& value) {
  with_tx(impl_->raw, [&](const pg::run_fn& run) {
    impl_->session.invalidate_row(table, column, value, run);
    return 0;
  });
}

namespace detail {

::pqxx::result run(connection& c, ::pqxx::transaction_base& tx, char kind,
                   const std::string& sql, const std::vector<key_param>& params,
                   const annotated* note, const std::function<::pqxx::result()>& exec) {
  pg::session& s = c.impl_->session;
  const int pid = c.impl_->raw.backendpid();
  if (pid != c.impl_->backend_pid) {
    // libpqxx may reconnect behind our back: a new server session has default settings.
    if (c.impl_->backend_pid != 0) s.connection_reset();
    c.impl_->backend_pid = pid;
  }
  pg::param ps_small[8];
  std::vector<pg::param> ps_big;
  pg::param* ps = ps_small;
  if (params.size() > 8) {
    ps_big.resize(params.size());
    ps = ps_big.data();
  }
  for (std::size_t i = 0; i < params.size(); ++i) ps[i] = {params[i].type, params[i].text};

  pg::hints h;
  if (note) {
    h.uncacheable = note->is_uncacheable();
    h.depends_on = note->dependencies();
  }

  pg::call call;
  try {
    call = s.begin(sql, std::span<const pg::param>(ps, params.size()), kind, runner(tx),
                   note ? &h : nullptr);
  } catch (const ::pqxx::broken_connection&) {
    throw;  // the statement cannot run either; this is the driver's own error
  } catch (...) {
    // qcache could not do its bookkeeping: run the statement uncached, as a write of
    // unknown targets, so that nothing cached can survive it.
    const auto& cache = s.shared_cache();
    tags::tag g = tags::global();
    write_hold hold = cache->begin_write(std::span<const tags::tag>(&g, 1),
                                         invalidation_cause::flush);
    cache->count_uncacheable(uncacheable_reason::other);
    ::pqxx::result r = exec();
    cache->flush(invalidation_cause::flush);
    return r;
  }
  if (call.hit) return static_cast<const result_value&>(*call.hit).result();
  ::pqxx::result r;
  try {
    r = exec();
  } catch (...) {
    s.failed(call);
    throw;
  }
  std::shared_ptr<const cached_value> v;
  if (call.store) {
    try {
      v = std::make_shared<result_value>(r);
    } catch (...) {
      // Out of memory building the entry: serve the result, store nothing.
    }
  }
  s.succeeded(call, std::move(v));
  return r;
}

void on_begin(connection& c, const char* isolation) {
  c.impl_->session.transaction_begun(isolation);
}
void on_commit(connection& c) { c.impl_->session.transaction_committed(); }
bool server_idle(connection& c) noexcept { return c.impl_->status.transaction() == 'I'; }
void on_abort(connection& c) { c.impl_->session.transaction_rolled_back(); }
void on_raw(connection& c, bool open) noexcept { c.impl_->session.raw_exposed(open); }

}  // namespace detail
}  // namespace qcache::pqxx
