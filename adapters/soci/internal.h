// Private to qcache::soci: the captured result table and the per-database engine interface.
//
// Thread safety: an engine belongs to one session (one thread at a time); result tables are
// immutable once published to the cache and shared read-only.
#pragma once

#include <qcache/cache.h>
#include <qcache/explain.h>
#include <qcache/key.h>
#include <qcache/soci.h>

#include <soci/soci-backend.h>

#include <cstdint>
#include <ctime>
#include <functional>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace qcache::pg {
struct analysis;
}

namespace qcache::soci::detail {

using ::soci::details::exchange_type;

// One column of a captured result, holding the values exactly as the real backend wrote
// them into a variable of the user's exchange type. Filling a user variable from a column
// is a plain copy, so a hit and a miss hand out identical values type for type.
class column {
 public:
  virtual ~column() = default;
  exchange_type type() const noexcept { return type_; }
  std::size_t size() const noexcept { return inds_.size(); }
  ::soci::indicator ind(std::size_t row) const noexcept { return inds_[row]; }
  std::size_t bytes() const noexcept { return bytes_; }

  // Appends the value in `buffer` (a T*, or a std::vector<T>* when `vec`) for rows
  // [0, n) with their indicators.
  virtual void append(const void* buffer, bool vec, std::size_t n,
                      const ::soci::indicator* inds) = 0;
  // Copies row `row` into the user's variable `data` (a T*), or rows [row, row + n) into
  // the user's std::vector<T>* starting at index 0 when `vec`. Null values leave the
  // variable untouched; a null without an indicator throws SOCI's own soci_error.
  virtual void fill(void* data, bool vec, std::size_t row, std::size_t n,
                    ::soci::indicator* inds) const = 0;
  virtual std::unique_ptr<column> empty_clone() const = 0;
  // Row `row`'s value as PostgreSQL prints it, for integer and string columns; false for
  // other types. Not called for null rows.
  virtual bool text_at(std::size_t row, std::string& out) const = 0;

 protected:
  explicit column(exchange_type t) : type_(t) {}
  exchange_type type_;
  std::vector<::soci::indicator> inds_;
  std::size_t bytes_ = 0;
};

// Makes a column for an exchange type, or nullptr when the type is not cacheable
// (statements, rowids, blobs).
std::unique_ptr<column> make_column(exchange_type t);

// A buffer variable of an exchange type, for the real backend to write into.
struct buffer {
  exchange_type type;
  bool vec;
  void* ptr = nullptr;
  buffer(exchange_type t, bool v);
  ~buffer();
  buffer(const buffer&) = delete;
  buffer& operator=(const buffer&) = delete;
  void resize(std::size_t n);  // vectors only
};

struct described_column {
  ::soci::data_type type;
  std::string name;
};

// A complete result: every row of every into column, plus what SOCI asks besides rows.
class result_table final : public cached_value {
 public:
  std::vector<std::unique_ptr<column>> cols;
  std::size_t rows = 0;
  bool has_description = false;
  std::vector<described_column> description;
  long long affected_rows = -1;  // recorded when the backend derives it from the result

  bool column_text(std::size_t col,
                   std::vector<std::optional<std::string>>& out) const override {
    if (col >= cols.size() || !cols[col]) return false;
    const column& c = *cols[col];
    out.reserve(rows);
    for (std::size_t i = 0; i < rows && i < c.size(); ++i) {
      if (c.ind(i) == ::soci::i_null) {
        out.emplace_back(std::nullopt);
        continue;
      }
      std::string v;
      if (!c.text_at(i, v)) return false;
      out.emplace_back(std::move(v));
    }
    return out.size() == rows;
  }

  std::size_t bytes() const noexcept override {
    std::size_t b = sizeof(*this) + 64;
    for (const auto& c : cols) b += c->bytes() + 64;
    for (const auto& d : description) b += d.name.size() + sizeof(d);
    return b;
  }
};

// One use (bound parameter) as the key sees it.
struct use_value {
  std::string name;  // empty for positional
  bool cacheable = true;
  param_type type = param_type::null;
  std::string text;  // canonical value text
};

// What an engine decided for one execution.
struct execution {
  std::shared_ptr<const result_table> hit;  // serve this
  bool read = false;     // a cacheable read: materialise, and store when complete
  bool store = false;    // storing allowed (subject to completeness and size)
  std::shared_ptr<void> state;  // engine-private
};

// The engine for one connection: analysis, keys, freshness, invalidation.
class engine {
 public:
  virtual ~engine() = default;

  // Prepares `sql` by calling `real_prepare` (which may throw: pass it through) and
  // returns the engine's analysis of it, or nullptr for "never cache, just run it and
  // treat it as a statement that may write anything".
  virtual std::shared_ptr<void> prepare(const std::string& sql,
                                        const std::function<void()>& real_prepare,
                                        ::soci::details::statement_backend& real) = 0;
  // True when executions of this plan may be served from the cache.
  virtual bool may_cache(const std::shared_ptr<void>& plan) const noexcept = 0;

  // Called before each execution. `cacheable` is false when the statement's intos or uses
  // cannot be cached (the engine still does its write bookkeeping). `shape` describes the
  // into side; `uses` the parameters.
  virtual execution begin(const std::shared_ptr<void>& plan, bool cacheable, std::string_view shape,
                          const std::vector<const use_value*>& uses,
                          ::soci::details::statement_backend& real) = 0;
  // After the statement ran (ok) or threw (!ok). `value` is the complete result of a
  // cacheable read, or null.
  virtual void end(execution& e, bool ok, std::shared_ptr<const result_table> value) noexcept = 0;
  // The statement's error that an end(ok == true) produced and could not throw (a COMMIT
  // the engine added around an autocommit write failed), once; the caller raises it.
  virtual std::exception_ptr take_error() noexcept { return nullptr; }

  // Called after the real session's begin/commit/rollback (ok == it did not throw).
  virtual void tx_begun() {}
  virtual void tx_committed(bool ok) = 0;
  virtual void tx_rolled_back(bool ok) = 0;

  virtual void invalidate_all() = 0;
  // Manual invalidation by name and explain (qcache/soci.h's functions of those names).
  virtual void invalidate_table(const std::string& table) = 0;
  virtual void invalidate_row(const std::string& table, const std::string& column,
                              const std::string& value) = 0;
  virtual explanation explain_sql(const std::string& sql) = 0;
  // PostgreSQL with options::follow_changes: waits for the change stream (pg::session::
  // sync). Other engines: nothing to wait for.
  virtual bool sync() { return true; }
  // PostgreSQL: describing a statement executes it, and affected rows of a SELECT come
  // from its result; both are recorded with the result and replayed on a hit.
  virtual bool describe_executes() const noexcept { return false; }
  // SQLite: executing without data exchange steps nothing until fetch(); end() of an
  // execution that is not served waits until its rows are drained.
  virtual bool steps_in_fetch() const noexcept { return false; }
  // After a statement was released (finalized): SQLite commits an autocommit write whose
  // statement was not run to its end (UPDATE ... RETURNING read one row) only then.
  virtual void statement_released() noexcept {}
};

// Reads a statement for column-equality predicates (qcache's PostgreSQL analyzer,
// pg::analyze), or nullptr in a build without it (qcache::soci_sqlite links no
// libpg_query): the SQLite engine's reads then depend on rowid predicates and table tags.
using statement_analyzer = std::shared_ptr<const pg::analysis> (*)(std::string_view sql);

// `connect` is SOCI's connect string: it tells a plain ":memory:" database (private to the
// connection) from a memory database other connections may share.
std::unique_ptr<engine> make_sqlite_engine(std::shared_ptr<cache> c,
                                           ::soci::details::session_backend& real,
                                           std::shared_ptr<const factory_options> opts,
                                           std::string_view connect,
                                           statement_analyzer analyze);
std::unique_ptr<engine> make_postgresql_engine(std::shared_ptr<cache> c,
                                               ::soci::details::session_backend& real,
                                               std::shared_ptr<const factory_options> opts);

// The engine for `real`'s backend, or nullptr (every statement delegated, nothing cached)
// for a backend this build of the adapter has none for. Defined once per library:
// engines.cc (qcache::soci: sqlite3 and postgresql), engines_sqlite.cc (qcache::soci_sqlite).
std::unique_ptr<engine> make_engine(std::shared_ptr<cache> c,
                                    ::soci::details::session_backend& real,
                                    std::shared_ptr<const factory_options> opts,
                                    std::string_view connect);

}  // namespace qcache::soci::detail
