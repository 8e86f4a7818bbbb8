// qcache for libpqxx: drop-in connection and transaction types that serve repeated
// SELECTs from a qcache::cache and invalidate exactly what writes change.
//
// Thread safety: as in libpqxx, a connection and everything tied to it (transactions,
// prepared statements) is one world, used by one thread at a time. Many connections on
// many threads may share one qcache::cache.
//
// Adopting it changes declarations only:
//
//   auto cache = std::make_shared<qcache::cache>(qcache::options{});
//   qcache::pqxx::connection conn{"dbname=app", cache};        // was pqxx::connection
//   qcache::pqxx::work tx{conn};                                // was pqxx::work
//   pqxx::result r = tx.exec_params("SELECT v FROM t WHERE id = $1", 42);
//   tx.commit();
//
// Results are ordinary pqxx::result objects. A hit returns a shared, immutable result
// (libpqxx results are reference-counted and read-only), without a round trip. Errors
// are libpqxx's own exceptions, unchanged; a failed statement is never cached.
//
// What bypasses qcache: anything done through raw() (including pqxx::stream_to and
// pqxx::tablewriter on it), and writes made by other programs or other connections that
// do not go through a qcache adapter. See README "Guarantees and limitations".
#pragma once

#include <qcache/cache.h>
#include <qcache/explain.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace qcache::pqxx {

class connection;

// Per-statement annotations: dependencies the SQL text cannot show, or "never cache".
//   tx.exec_params(qcache::pqxx::annotated{sql}.depends_on("audit_log"), id);
class annotated {
 public:
  explicit annotated(std::string sql) : sql_(std::move(sql)) {}
  // The result also depends on `table` (any change to it invalidates the result).
  annotated& depends_on(std::string table) {
    deps_.push_back({std::move(table)});
    return *this;
  }
  // The result also depends on the rows of `table` where `column` = `value`
  // (invalidated by connection::invalidate_row(table, column, value) and by writes
  // qcache sees on those rows).
  annotated& depends_on(std::string table, std::string column, std::string value) {
    deps_.push_back({std::move(table), std::move(column), std::move(value)});
    return *this;
  }
  // Never serve this statement from the cache nor store its result.
  annotated& uncacheable() {
    uncacheable_ = true;
    return *this;
  }
  const std::string& sql() const noexcept { return sql_; }
  bool is_uncacheable() const noexcept { return uncacheable_; }
  const std::vector<std::vector<std::string>>& dependencies() const noexcept { return deps_; }

 private:
  std::string sql_;
  std::vector<std::vector<std::string>> deps_;
  bool uncacheable_ = false;
};

namespace detail {

// A parameter as libpqxx will send it, for the cache key.
struct key_param {
  qcache::param_type type = qcache::param_type::null;
  std::string text;
};

template <typename T>
void add_param(std::vector<key_param>& out, const T& v) {
  using D = std::decay_t<T>;
  if constexpr (std::is_same_v<D, std::nullptr_t>) {
    out.push_back({qcache::param_type::null, {}});
  } else if constexpr (std::is_same_v<D, ::pqxx::binarystring>) {
    out.push_back({qcache::param_type::binary, v.str()});
  } else if constexpr (std::is_same_v<D, std::string> || std::is_same_v<D, std::string_view>) {
    out.push_back({qcache::param_type::text, std::string(v)});
  } else if constexpr (std::is_array_v<std::remove_reference_t<T>>) {
    out.push_back({qcache::param_type::text, std::string(v)});
  } else if constexpr (std::is_same_v<D, const char*> || std::is_same_v<D, char*>) {
    if (v == nullptr) out.push_back({qcache::param_type::null, {}});
    else out.push_back({qcache::param_type::text, std::string(v)});
  } else {
    if (::pqxx::string_traits<D>::is_null(v)) {
      out.push_back({qcache::param_type::null, {}});
      return;
    }
    qcache::param_type t = std::is_same_v<D, bool>        ? qcache::param_type::boolean
                           : std::is_integral_v<D>        ? qcache::param_type::integer
                           : std::is_floating_point_v<D>  ? qcache::param_type::floating
                                                          : qcache::param_type::other;
    out.push_back({t, ::pqxx::to_string(v)});
  }
}

template <typename It>
void add_param(std::vector<key_param>& out, const ::pqxx::internal::dynamic_params<It>& d) {
  for (const auto& x : d) add_param(out, x);
}

// Runs one statement through the cache: `exec` performs the real libpqxx call.
::pqxx::result run(connection& c, ::pqxx::transaction_base& tx, char kind,
                   const std::string& sql, const std::vector<key_param>& params,
                   const annotated* note, const std::function<::pqxx::result()>& exec);
void on_begin(connection& c, const char* isolation);
// Whether libpq reports no transaction open on the connection (libpqxx rolled it back).
bool server_idle(connection& c) noexcept;
void on_commit(connection& c);
void on_abort(connection& c);
// A wrapped transaction's raw() was handed out (open) / the wrapper ends (closed).
void on_raw(connection& c, bool open) noexcept;

}  // namespace detail

// A libpqxx connection with a qcache in front of it.
class connection {
 public:
  // Opens the connection (libpqxx's exceptions on failure). `cache` must not be null.
  connection(const std::string& options, std::shared_ptr<qcache::cache> cache);
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  // As pqxx::connection::prepare: `name` may then be used with exec_prepared().
  void prepare(const std::string& name, const std::string& definition);
  void unprepare(const std::string& name);

  const std::shared_ptr<qcache::cache>& cache() const noexcept;

  // What qcache does with `sql`: cacheable or not and why, relations, tags. Runs
  // catalog queries when needed (outside any transaction of this connection).
  qcache::explanation explain(const std::string& sql);

  // With options::follow_changes (the default): waits until every commit visible on the
  // server when called (by anyone: other processes, raw()) has reached this cache, so
  // that later hits reflect them. About one round trip plus the stream's lag. Call it
  // outside a transaction of this connection. Returns false when the stream is down or
  // did not catch up within options::sync_timeout (the stream is then declared lost and
  // the database bypassed until it is back: nothing stale is served either way). Without
  // follow_changes: returns true at once.
  bool sync();

  // Manual invalidation, for writes qcache cannot see (other programs, raw()).
  void invalidate_table(const std::string& table);
  void invalidate_row(const std::string& table, const std::string& column,
                      const std::string& value);

  // The underlying connection. Anything done through it bypasses qcache: reads are not
  // cached and writes invalidate nothing.
  ::pqxx::connection& raw() noexcept;

  bool is_open() const noexcept;

 private:
  friend ::pqxx::result detail::run(connection&, ::pqxx::transaction_base&, char,
                                    const std::string&, const std::vector<detail::key_param>&,
                                    const annotated*, const std::function<::pqxx::result()>&);
  friend void detail::on_begin(connection&, const char*);
  friend bool detail::server_idle(connection&) noexcept;
  friend void detail::on_commit(connection&);
  friend void detail::on_abort(connection&);
  friend void detail::on_raw(connection&, bool) noexcept;
  template <class> friend class basic_transaction;
  // raw() for the wrappers' own use (not application access).
  ::pqxx::connection& raw_for_wrapper() noexcept;
  // The SQL `name` was prepared with, or nullptr when the server has another statement
  // of that name (then it runs uncached and flushes). After SQL that can rebind prepared
  // statement names it asks the server (on `tx`); `cacheable` is false when the server
  // has no statement of that name yet (libpqxx then prepares this SQL, or fails if it
  // believes it did already: either way the result must not come from the cache).
  const std::string* prepared_sql(const std::string& name, ::pqxx::transaction_base& tx,
                                  bool& cacheable);
  struct impl;
  std::unique_ptr<impl> impl_;
};

// A libpqxx transaction (work, nontransaction, ...) whose statements go through the cache.
template <class Tx>
class basic_transaction {
 public:
  explicit basic_transaction(connection& c) : conn_(c), tx_(c.raw_for_wrapper()) { begun(); }
  basic_transaction(connection& c, const std::string& name)
      : conn_(c), tx_(c.raw_for_wrapper(), name) {
    begun();
  }
  ~basic_transaction() {
    if (open_) detail::on_abort(conn_);  // the wrapped transaction aborts itself
    if (raw_used_) detail::on_raw(conn_, false);
  }
  basic_transaction(const basic_transaction&) = delete;
  basic_transaction& operator=(const basic_transaction&) = delete;

  ::pqxx::result exec(const std::string& query, const std::string& desc = std::string{}) {
    if (closed_) return tx_.exec(query, desc);  // libpqxx throws its usage_error
    return guarded([&] {
      return detail::run(conn_, tx_, 'e', query, {}, nullptr,
                         [&] { return tx_.exec(query, desc); });
    });
  }
  ::pqxx::result exec(const annotated& q, const std::string& desc = std::string{}) {
    if (closed_) return tx_.exec(q.sql(), desc);
    return guarded([&] {
      return detail::run(conn_, tx_, 'e', q.sql(), {}, &q, [&] { return tx_.exec(q.sql(), desc); });
    });
  }
  ::pqxx::result exec0(const std::string& query, const std::string& desc = std::string{}) {
    return expect(exec(query, desc), 0, query_what(desc));
  }
  ::pqxx::row exec1(const std::string& query, const std::string& desc = std::string{}) {
    return expect(exec(query, desc), 1, query_what(desc)).front();
  }
  ::pqxx::result exec_n(std::size_t rows, const std::string& query,
                        const std::string& desc = std::string{}) {
    return expect(exec(query, desc), rows, query_what(desc));
  }

  template <typename... Args>
  ::pqxx::result exec_params(const std::string& query, Args&&... args) {
    if (closed_) return tx_.exec_params(query, std::forward<Args>(args)...);
    std::vector<detail::key_param> ps;
    (detail::add_param(ps, args), ...);
    return guarded([&] {
      return detail::run(conn_, tx_, 'p', query, ps, nullptr,
                         [&] { return tx_.exec_params(query, std::forward<Args>(args)...); });
    });
  }
  template <typename... Args>
  ::pqxx::result exec_params(const annotated& q, Args&&... args) {
    if (closed_) return tx_.exec_params(q.sql(), std::forward<Args>(args)...);
    std::vector<detail::key_param> ps;
    (detail::add_param(ps, args), ...);
    return guarded([&] {
      return detail::run(conn_, tx_, 'p', q.sql(), ps, &q,
                         [&] { return tx_.exec_params(q.sql(), std::forward<Args>(args)...); });
    });
  }
  template <typename... Args>
  ::pqxx::row exec_params1(const std::string& query, Args&&... args) {
    return expect(exec_params(query, std::forward<Args>(args)...), 1, "parameterised query")
        .front();
  }
  template <typename... Args>
  ::pqxx::result exec_params0(const std::string& query, Args&&... args) {
    return expect(exec_params(query, std::forward<Args>(args)...), 0,
                  "parameterised query");
  }
  template <typename... Args>
  ::pqxx::result exec_params_n(std::size_t rows, const std::string& query, Args&&... args) {
    return expect(exec_params(query, std::forward<Args>(args)...), rows,
                  "parameterised query");
  }

  template <typename... Args>
  ::pqxx::result exec_prepared(const std::string& name, Args&&... args) {
    if (closed_) return tx_.exec_prepared(name, std::forward<Args>(args)...);
    std::vector<detail::key_param> ps;
    (detail::add_param(ps, args), ...);
    bool cacheable = true;
    const std::string* sql = conn_.prepared_sql(name, tx_, cacheable);
    // A statement prepared behind qcache's back (raw()) cannot be analysed: an empty
    // SQL text makes run() treat it as unknown (uncached, and it flushes).
    static const std::string unknown = "\x01unknown prepared statement";
    std::optional<annotated> uncached;
    if (sql && !cacheable) uncached.emplace(*sql).uncacheable();
    return guarded([&] {
      return detail::run(conn_, tx_, 'p', sql ? *sql : unknown, ps, uncached ? &*uncached : nullptr,
                         [&] { return tx_.exec_prepared(name, std::forward<Args>(args)...); });
    });
  }
  template <typename... Args>
  ::pqxx::row exec_prepared1(const std::string& name, Args&&... args) {
    return expect(exec_prepared(name, std::forward<Args>(args)...), 1,
                  "prepared statement '" + name + "'")
        .front();
  }
  template <typename... Args>
  ::pqxx::result exec_prepared0(const std::string& name, Args&&... args) {
    return expect(exec_prepared(name, std::forward<Args>(args)...), 0,
                  "prepared statement '" + name + "'");
  }
  template <typename... Args>
  ::pqxx::result exec_prepared_n(std::size_t rows, const std::string& name, Args&&... args) {
    return expect(exec_prepared(name, std::forward<Args>(args)...), rows,
                  "prepared statement '" + name + "'");
  }

  void commit() {
    closed_ = true;
    try {
      tx_.commit();
    } catch (...) {
      end(false);
      throw;
    }
    end(true);
  }
  void abort() {
    closed_ = true;
    try {
      tx_.abort();
    } catch (...) {
      end(false);
      throw;
    }
    end(false);
  }

  template <typename T> std::string quote(const T& t) const { return tx_.quote(t); }
  std::string esc(const std::string& s) const { return tx_.esc(s); }
  std::string quote_name(const std::string& s) const { return tx_.quote_name(s); }
  std::string quote_raw(const unsigned char* bin, std::size_t len) const {
    return tx_.quote_raw(bin, len);
  }

  connection& conn() const noexcept { return conn_; }
  // The wrapped libpqxx transaction. Statements run through it bypass qcache (with
  // follow_changes the change stream still reports what they write).
  Tx& raw() noexcept {
    if (!raw_used_) detail::on_raw(conn_, true);
    raw_used_ = true;
    return tx_;
  }

 private:
  static constexpr bool transactional = !std::is_same_v<Tx, ::pqxx::nontransaction>;
  // libpqxx aborts a transaction whose exec() failed (it rolls back; the next statement
  // throws usage_error): so does this wrapper, and the engine hears that it ended. Not
  // when the server's transaction is still there (exec_params/exec_prepared do not abort).
  template <class F>
  ::pqxx::result guarded(F&& f) {
    try {
      return f();
    } catch (...) {
      if (transactional && open_ && detail::server_idle(conn_)) {
        closed_ = true;
        end(false);
      }
      throw;
    }
  }
  void begun() {
    open_ = transactional;
    if (open_) detail::on_begin(conn_, isolation_of(static_cast<Tx*>(nullptr)));
  }
  void end(bool committed) {
    if (!open_) return;
    open_ = false;
    if (committed) detail::on_commit(conn_);
    else detail::on_abort(conn_);
  }
  // The isolation level a libpqxx transaction type asks for; "" = the session default.
  template <::pqxx::isolation_level I, ::pqxx::readwrite_policy R>
  static const char* isolation_of(::pqxx::transaction<I, R>*) {
    return I == ::pqxx::serializable       ? "serializable"
           : I == ::pqxx::repeatable_read  ? "repeatable read"
                                           : "";
  }
  static const char* isolation_of(void*) { return ""; }
  // libpqxx's own unexpected_rows messages, word for word.
  static std::string query_what(const std::string& desc) {
    return desc.empty() ? "query " : "query '" + desc + "'";
  }
  static ::pqxx::result expect(::pqxx::result r, std::size_t rows, const std::string& what) {
    if (r.size() != rows)
      throw ::pqxx::unexpected_rows("Expected " + ::pqxx::to_string(rows) +
                                    " row(s) of data from " + what + ", got " +
                                    ::pqxx::to_string(r.size()) + ".");
    return r;
  }

  connection& conn_;
  Tx tx_;
  bool open_ = false;
  bool raw_used_ = false;  // raw() was handed out: see detail::on_raw
  // After commit()/abort() nothing may be served from the cache: libpqxx refuses the
  // statement (usage_error), and so must we.
  bool closed_ = false;
};

using work = basic_transaction<::pqxx::work>;
using read_transaction = basic_transaction<::pqxx::read_transaction>;
using nontransaction = basic_transaction<::pqxx::nontransaction>;
template <::pqxx::isolation_level I = ::pqxx::read_committed,
          ::pqxx::readwrite_policy R = ::pqxx::read_write>
using transaction = basic_transaction<::pqxx::transaction<I, R>>;

}  // namespace qcache::pqxx
