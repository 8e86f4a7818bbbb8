// The caching SOCI backend: session, statement, into and use backends that wrap the real
// backend's, and the captured result table.
//
// Invariants:
//  * every into of a statement that may be cached is defined on the real backend with a
//    buffer of the user's exchange type, never with the user's variable; rows flow
//    real backend -> buffer -> result_table column -> user variable, on a miss and on a
//    hit alike, so both hand out the same values (column::fill is the only routine that
//    writes user variables);
//  * a statement that may not be cached (intos of an uncacheable type, vector uses, an
//    engine verdict at prepare time) delegates every call to the real backend unchanged;
//  * a result is offered to the cache only when it was read to its end and no error
//    occurred; exceptions from the real backend propagate unchanged after the engine has
//    released what it held.
#include "internal.h"

#include <soci/soci.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <stdexcept>

namespace qcache::soci {
namespace detail {
namespace {

using ::soci::indicator;
using ::soci::details::exchange_type;
using ::soci::details::statement_backend;

template <class T>
struct tag {
  using type = T;
};

// Calls f(tag<T>) for the C++ type of a cacheable exchange type; returns false otherwise.
template <class F>
bool with_type(exchange_type t, F&& f) {
  using namespace ::soci::details;
  switch (t) {
    case x_char: f(tag<char>{}); return true;
    case x_stdstring: f(tag<std::string>{}); return true;
    case x_short: f(tag<short>{}); return true;
    case x_integer: f(tag<int>{}); return true;
    case x_long_long: f(tag<long long>{}); return true;
    case x_unsigned_long_long: f(tag<unsigned long long>{}); return true;
    case x_double: f(tag<double>{}); return true;
    case x_stdtm: f(tag<std::tm>{}); return true;
    case x_xmltype: f(tag<::soci::xml_type>{}); return true;
    case x_longstring: f(tag<::soci::long_string>{}); return true;
    default: return false;
  }
}

template <class T>
std::size_t value_bytes(const T& v) {
  if constexpr (std::is_same_v<T, std::string>) return sizeof(T) + v.size();
  else if constexpr (std::is_same_v<T, ::soci::xml_type> || std::is_same_v<T, ::soci::long_string>)
    return sizeof(T) + v.value.size();
  else return sizeof(T);
}

[[noreturn]] void throw_null_without_indicator() {
  // The message and type the real backends (sqlite3, postgresql) use.
  throw ::soci::soci_error("Null value fetched and no indicator defined.");
}

template <class T>
class typed_column final : public column {
 public:
  explicit typed_column(exchange_type t) : column(t) {}

  void append(const void* buffer, bool vec, std::size_t n, const indicator* inds) override {
    if (vec) {
      const auto& v = *static_cast<const std::vector<T>*>(buffer);
      for (std::size_t i = 0; i < n; ++i) push(v[i], inds[i]);
    } else {
      push(*static_cast<const T*>(buffer), inds[0]);
    }
  }

  void fill(void* data, bool vec, std::size_t row, std::size_t n, indicator* inds) const override {
    if (vec) {
      auto& v = *static_cast<std::vector<T>*>(data);
      for (std::size_t i = 0; i < n; ++i) {
        indicator ind = inds_[row + i];
        if (ind == ::soci::i_null) {
          if (!inds) throw_null_without_indicator();
        } else {
          v[i] = vals_[row + i];
        }
        if (inds) inds[i] = ind;
      }
    } else {
      indicator ind = inds_[row];
      if (ind == ::soci::i_null) {
        if (!inds) throw_null_without_indicator();
      } else {
        *static_cast<T*>(data) = vals_[row];
      }
      if (inds) *inds = ind;
    }
  }

  std::unique_ptr<column> empty_clone() const override {
    return std::make_unique<typed_column<T>>(type_);
  }

  bool text_at(std::size_t row, std::string& out) const override {
    if constexpr (std::is_same_v<T, std::string>) {
      out = vals_[row];
      return true;
    } else if constexpr (std::is_same_v<T, short> || std::is_same_v<T, int> ||
                         std::is_same_v<T, long long> ||
                         std::is_same_v<T, unsigned long long>) {
      out = std::to_string(vals_[row]);
      return true;
    } else {
      (void)row;
      (void)out;
      return false;
    }
  }

 private:
  void push(const T& v, indicator ind) {
    inds_.push_back(ind);
    if (ind == ::soci::i_null) {
      vals_.emplace_back();
      bytes_ += sizeof(T) + 1;
    } else {
      vals_.push_back(v);
      bytes_ += value_bytes(v) + 1;
    }
  }
  std::vector<T> vals_;
};

}  // namespace

std::unique_ptr<column> make_column(exchange_type t) {
  std::unique_ptr<column> c;
  with_type(t, [&](auto tg) { c = std::make_unique<typed_column<typename decltype(tg)::type>>(t); });
  return c;
}

buffer::buffer(exchange_type t, bool v) : type(t), vec(v) {
  with_type(t, [&](auto tg) {
    using T = typename decltype(tg)::type;
    if (vec) ptr = new std::vector<T>();
    else ptr = new T();
  });
}

buffer::~buffer() {
  with_type(type, [&](auto tg) {
    using T = typename decltype(tg)::type;
    if (vec) delete static_cast<std::vector<T>*>(ptr);
    else delete static_cast<T*>(ptr);
  });
}

void buffer::resize(std::size_t n) {
  with_type(type, [&](auto tg) {
    using T = typename decltype(tg)::type;
    if (vec) static_cast<std::vector<T>*>(ptr)->resize(n);
  });
}

namespace {

bool encode_use(use_value& u, void* data, exchange_type t, const indicator* ind) {
  using namespace ::soci::details;
  u.text.clear();
  if (ind && *ind == ::soci::i_null) {
    u.type = param_type::null;
    return true;
  }
  char buf[64];
  auto integer = [&](auto v) {
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    u.type = param_type::integer;
    u.text.assign(buf, r.ptr);
  };
  switch (t) {
    case x_char: u.type = param_type::text; u.text.assign(1, *static_cast<char*>(data)); return true;
    case x_stdstring: u.type = param_type::text; u.text = *static_cast<std::string*>(data); return true;
    case x_short: integer(*static_cast<short*>(data)); return true;
    case x_integer: integer(*static_cast<int*>(data)); return true;
    case x_long_long: integer(*static_cast<long long*>(data)); return true;
    case x_unsigned_long_long: integer(*static_cast<unsigned long long*>(data)); return true;
    case x_double: {
      auto r = std::to_chars(buf, buf + sizeof buf, *static_cast<double*>(data));
      u.type = param_type::floating;
      u.text.assign(buf, r.ptr);
      return true;
    }
    case x_stdtm: {
      const auto& tm = *static_cast<std::tm*>(data);
      int n = std::snprintf(buf, sizeof buf, "%d-%d-%d %d:%d:%d", tm.tm_year, tm.tm_mon, tm.tm_mday,
                            tm.tm_hour, tm.tm_min, tm.tm_sec);
      u.type = param_type::date;
      u.text.assign(buf, static_cast<std::size_t>(n));
      return true;
    }
    case x_xmltype:
      u.type = param_type::other;
      u.text = "xml:" + static_cast<::soci::xml_type*>(data)->value;
      return true;
    case x_longstring:
      u.type = param_type::other;
      u.text = "long:" + static_cast<::soci::long_string*>(data)->value;
      return true;
    default: return false;
  }
}

class caching_statement;

class caching_session final : public ::soci::details::session_backend {
 public:
  caching_session(std::shared_ptr<cache> c, std::unique_ptr<session_backend> real,
                  std::shared_ptr<const factory_options> opts, std::string_view connect)
      : cache_(std::move(c)), real_(std::move(real)) {
    // A backend without an engine: every statement is delegated and nothing is cached.
    engine_ = make_engine(cache_, *real_, opts, connect);
  }
  ~caching_session() override {
    engine_.reset();
    real_.reset();
  }

  session_backend& real() noexcept { return *real_; }
  engine* eng() noexcept { return engine_.get(); }
  const std::shared_ptr<cache>& shared_cache() const noexcept { return cache_; }

  bool is_connected() override { return real_->is_connected(); }

  void begin() override {
    sync();
    real_->begin();
    if (engine_) engine_->tx_begun();
  }
  void commit() override {
    try {
      real_->commit();
    } catch (...) {
      if (engine_) engine_->tx_committed(false);
      throw;
    }
    if (engine_) engine_->tx_committed(true);
  }
  void rollback() override {
    try {
      real_->rollback();
    } catch (...) {
      if (engine_) engine_->tx_rolled_back(false);
      throw;
    }
    if (engine_) engine_->tx_rolled_back(true);
  }

  bool get_next_sequence_value(::soci::session& s, std::string const& seq, long long& v) override {
    return real_->get_next_sequence_value(s, seq, v);
  }
  bool get_last_insert_id(::soci::session& s, std::string const& t, long long& v) override {
    return real_->get_last_insert_id(s, t, v);
  }
  std::string get_table_names_query() const override { return real_->get_table_names_query(); }
  std::string get_column_descriptions_query() const override {
    return real_->get_column_descriptions_query();
  }
  std::string create_table(const std::string& t) override { return real_->create_table(t); }
  std::string drop_table(const std::string& t) override { return real_->drop_table(t); }
  std::string truncate_table(const std::string& t) override { return real_->truncate_table(t); }
  std::string create_column_type(::soci::data_type dt, int p, int s) override {
    return real_->create_column_type(dt, p, s);
  }
  std::string add_column(const std::string& t, const std::string& c, ::soci::data_type dt, int p,
                         int s) override {
    return real_->add_column(t, c, dt, p, s);
  }
  std::string alter_column(const std::string& t, const std::string& c, ::soci::data_type dt,
                           int p, int s) override {
    return real_->alter_column(t, c, dt, p, s);
  }
  std::string drop_column(const std::string& t, const std::string& c) override {
    return real_->drop_column(t, c);
  }
  std::string constraint_unique(const std::string& n, const std::string& c) override {
    return real_->constraint_unique(n, c);
  }
  std::string constraint_primary_key(const std::string& n, const std::string& c) override {
    return real_->constraint_primary_key(n, c);
  }
  std::string constraint_foreign_key(const std::string& n, const std::string& c,
                                     const std::string& rt, const std::string& rc) override {
    return real_->constraint_foreign_key(n, c, rt, rc);
  }
  std::string empty_blob() override { return real_->empty_blob(); }
  std::string nvl() override { return real_->nvl(); }
  std::string get_dummy_from_table() const override { return real_->get_dummy_from_table(); }
  std::string get_backend_name() const override { return real_->get_backend_name(); }

  statement_backend* make_statement_backend() override;
  ::soci::details::rowid_backend* make_rowid_backend() override {
    return real_->make_rowid_backend();
  }
  ::soci::details::blob_backend* make_blob_backend() override { return real_->make_blob_backend(); }

  // The session may have set a failover callback on us; the real backend reads its own.
  void sync() noexcept {
    real_->failoverCallback_ = failoverCallback_;
    real_->session_ = session_;
  }

 private:
  std::shared_ptr<cache> cache_;
  std::unique_ptr<session_backend> real_;
  std::unique_ptr<engine> engine_;
};

class caching_into;
class caching_vector_into;
class caching_use;

// Common part of the two into wrappers, as the statement drives them.
class into_base {
 public:
  virtual ~into_base() = default;
  virtual bool buffered() const noexcept = 0;
  virtual exchange_type type() const noexcept = 0;
  virtual bool vec() const noexcept = 0;
  // Drives the real into for one batch of `rows` rows read by the real statement.
  virtual void real_pre_exec(int num) = 0;
  virtual void real_pre_fetch(std::size_t batch) = 0;
  virtual void real_post_fetch(std::size_t rows, bool from_fetch, column& out) = 0;
};

class caching_statement final : public statement_backend {
 public:
  caching_statement(caching_session& s, statement_backend* real) : sess_(s), real_(real) {}
  ~caching_statement() override = default;

  statement_backend& real() noexcept { return *real_; }
  bool cache_capable() const noexcept { return may_cache_; }

  void register_into(into_base* i) { intos_.push_back(i); }
  void unregister_into(into_base* i) { std::erase(intos_, i); }
  void register_use(caching_use* u) { uses_.push_back(u); }
  void unregister_use(caching_use* u) { std::erase(uses_, u); }
  void vector_use_bound() noexcept { has_vector_use_ = true; }

  void alloc() override { real_->alloc(); }
  void clean_up() override {
    finish_execution(false);
    table_.reset();
    building_.reset();
    real_->clean_up();
    if (engine* e = sess_.eng()) e->statement_released();
  }

  void prepare(std::string const& query, ::soci::details::statement_type t) override {
    sess_.sync();
    finish_execution(false);
    sql_ = query;
    plan_.reset();
    may_cache_ = false;
    engine* e = sess_.eng();
    if (!e) {
      real_->prepare(query, t);
      return;
    }
    plan_ = e->prepare(query, [&] { real_->prepare(query, t); }, *real_);
    may_cache_ = e->may_cache(plan_);
  }

  exec_fetch_result execute(int number) override;
  exec_fetch_result fetch(int number) override;

  long long get_affected_rows() override {
    if (serving_ && table_ && table_->affected_rows >= 0) return table_->affected_rows;
    return real_->get_affected_rows();
  }
  int get_number_of_rows() override {
    if (serving_) return static_cast<int>(batch_);
    return real_->get_number_of_rows();
  }
  std::string get_parameter_name(int index) const override {
    return real_->get_parameter_name(index);
  }
  std::string rewrite_for_procedure_call(std::string const& q) override {
    return real_->rewrite_for_procedure_call(q);
  }

  int prepare_for_describe() override;
  void describe_column(int col, ::soci::data_type& dt, std::string& name) override;
  void describe_real(int col, ::soci::data_type& dt, std::string& name);

  ::soci::details::standard_into_type_backend* make_into_type_backend() override;
  ::soci::details::standard_use_type_backend* make_use_type_backend() override;
  ::soci::details::vector_into_type_backend* make_vector_into_type_backend() override;
  ::soci::details::vector_use_type_backend* make_vector_use_type_backend() override;

  // For the into wrappers while serving: the current batch.
  bool serving() const noexcept { return serving_; }
  const result_table* table() const noexcept { return table_.get(); }
  std::size_t cursor() const noexcept { return cursor_; }
  std::size_t batch() const noexcept { return batch_; }
  std::size_t column_of(const into_base* i) const {
    for (std::size_t k = 0; k < intos_.size(); ++k)
      if (intos_[k] == i) return k;
    return intos_.size();
  }

 private:
  bool cacheable_now() const {
    if (!may_cache_ || has_vector_use_) return false;
    for (auto* i : intos_)
      if (!i->buffered()) return false;
    return true;
  }
  std::string shape() const {
    std::string s;
    if (describing_) s += 'D';
    if (row_mode_) s += 'R';
    for (auto* i : intos_) {
      s += static_cast<char>('a' + static_cast<int>(i->type()));
      s += i->vec() ? 'v' : 's';
    }
    return s;
  }
  std::size_t fetch_size() const;
  bool start_execution();  // returns true when served from the cache
  std::size_t pull(std::size_t n, bool first);
  exec_fetch_result serve(std::size_t n);
  void finish_execution(bool ok) noexcept;

  caching_session& sess_;
  std::unique_ptr<statement_backend> real_;
  std::string sql_;
  std::shared_ptr<void> plan_;
  bool may_cache_ = false;
  bool has_vector_use_ = false;
  bool row_mode_ = false;
  bool describing_ = false;
  std::vector<into_base*> intos_;
  std::vector<caching_use*> uses_;

  // The current execution.
  bool active_ = false;     // an engine execution is open (begin called, end not yet)
  execution exec_;
  bool serving_ = false;    // the user is served from table_
  std::shared_ptr<const result_table> table_;
  std::shared_ptr<result_table> building_;  // rows read from the real statement
  bool real_done_ = true;   // the real statement has no more rows
  bool real_started_ = false;
  bool complete_ = false;   // building_ holds every row
  std::size_t cursor_ = 0;  // first row of the current batch
  std::size_t batch_ = 0;   // rows in the current batch
};

class caching_use final : public ::soci::details::standard_use_type_backend {
 public:
  caching_use(caching_statement& st, ::soci::details::standard_use_type_backend* real)
      : st_(st), real_(real) {
    st_.register_use(this);
  }
  ~caching_use() override { st_.unregister_use(this); }

  void bind_by_pos(int& pos, void* data, exchange_type t, bool ro) override {
    data_ = data;
    type_ = t;
    value_.name.clear();
    real_->bind_by_pos(pos, data, t, ro);
  }
  void bind_by_name(std::string const& name, void* data, exchange_type t, bool ro) override {
    data_ = data;
    type_ = t;
    value_.name = name;
    real_->bind_by_name(name, data, t, ro);
  }
  void pre_exec(int num) override { real_->pre_exec(num); }
  void pre_use(indicator const* ind) override {
    real_->pre_use(ind);
    value_.cacheable = encode_use(value_, data_, type_, ind);
  }
  void post_use(bool got, indicator* ind) override { real_->post_use(got, ind); }
  void clean_up() override { real_->clean_up(); }

  const use_value& value() const noexcept { return value_; }

 private:
  caching_statement& st_;
  std::unique_ptr<::soci::details::standard_use_type_backend> real_;
  void* data_ = nullptr;
  exchange_type type_ = ::soci::details::x_integer;
  use_value value_;
};

class caching_vector_use final : public ::soci::details::vector_use_type_backend {
 public:
  caching_vector_use(caching_statement& st, ::soci::details::vector_use_type_backend* real)
      : st_(st), real_(real) {}
  void bind_by_pos(int& pos, void* data, exchange_type t) override {
    st_.vector_use_bound();
    real_->bind_by_pos(pos, data, t);
  }
  void bind_by_pos_bulk(int& pos, void* data, exchange_type t, std::size_t b,
                        std::size_t* e) override {
    st_.vector_use_bound();
    real_->bind_by_pos_bulk(pos, data, t, b, e);
  }
  void bind_by_name(std::string const& n, void* data, exchange_type t) override {
    st_.vector_use_bound();
    real_->bind_by_name(n, data, t);
  }
  void bind_by_name_bulk(std::string const& n, void* data, exchange_type t, std::size_t b,
                         std::size_t* e) override {
    st_.vector_use_bound();
    real_->bind_by_name_bulk(n, data, t, b, e);
  }
  void pre_exec(int num) override { real_->pre_exec(num); }
  void pre_use(indicator const* ind) override { real_->pre_use(ind); }
  std::size_t size() override { return real_->size(); }
  void clean_up() override { real_->clean_up(); }

 private:
  caching_statement& st_;
  std::unique_ptr<::soci::details::vector_use_type_backend> real_;
};

class caching_into final : public ::soci::details::standard_into_type_backend, public into_base {
 public:
  caching_into(caching_statement& st, ::soci::details::standard_into_type_backend* real)
      : st_(st), real_(real) {
    st_.register_into(this);
  }
  ~caching_into() override { st_.unregister_into(this); }

  void define_by_pos(int& pos, void* data, exchange_type t) override {
    data_ = data;
    type_ = t;
    buf_.reset();
    if (st_.cache_capable() && make_column(t)) {
      buf_ = std::make_unique<buffer>(t, false);
      real_->define_by_pos(pos, buf_->ptr, t);
    } else {
      real_->define_by_pos(pos, data, t);
    }
  }
  void pre_exec(int num) override {
    if (!buf_) real_->pre_exec(num);
  }
  void pre_fetch() override {
    if (!buf_) real_->pre_fetch();
  }
  void post_fetch(bool got, bool from_fetch, indicator* ind) override {
    if (!buf_) {
      real_->post_fetch(got, from_fetch, ind);
      return;
    }
    if (!got || !st_.serving() || st_.batch() == 0) return;
    const result_table* t = st_.table();
    std::size_t c = st_.column_of(this);
    t->cols[c]->fill(data_, false, st_.cursor(), 1, ind);
  }
  void clean_up() override { real_->clean_up(); }

  bool buffered() const noexcept override { return buf_ != nullptr; }
  exchange_type type() const noexcept override { return type_; }
  bool vec() const noexcept override { return false; }
  void real_pre_exec(int num) override { real_->pre_exec(num); }
  void real_pre_fetch(std::size_t) override { real_->pre_fetch(); }
  void real_post_fetch(std::size_t rows, bool from_fetch, column& out) override {
    if (rows == 0) return;
    indicator ind = ::soci::i_ok;
    real_->post_fetch(true, from_fetch, &ind);
    out.append(buf_->ptr, false, 1, &ind);
  }

 private:
  caching_statement& st_;
  std::unique_ptr<::soci::details::standard_into_type_backend> real_;
  void* data_ = nullptr;
  exchange_type type_ = ::soci::details::x_integer;
  std::unique_ptr<buffer> buf_;
};

class caching_vector_into final : public ::soci::details::vector_into_type_backend,
                                  public into_base {
 public:
  caching_vector_into(caching_statement& st, ::soci::details::vector_into_type_backend* real)
      : st_(st), real_(real) {
    st_.register_into(this);
  }
  ~caching_vector_into() override { st_.unregister_into(this); }

  void define_by_pos(int& pos, void* data, exchange_type t) override {
    data_ = data;
    type_ = t;
    buf_.reset();
    if (st_.cache_capable() && make_column(t)) {
      buf_ = std::make_unique<buffer>(t, true);
      real_->define_by_pos(pos, buf_->ptr, t);
    } else {
      real_->define_by_pos(pos, data, t);
    }
  }
  void define_by_pos_bulk(int& pos, void* data, exchange_type t, std::size_t b,
                          std::size_t* e) override {
    // Bulk iterators: not cached, delegated as is.
    data_ = data;
    type_ = t;
    buf_.reset();
    bulk_ = true;
    real_->define_by_pos_bulk(pos, data, t, b, e);
  }
  void pre_exec(int num) override {
    if (!buf_) real_->pre_exec(num);
  }
  void pre_fetch() override {
    if (!buf_) real_->pre_fetch();
  }
  void post_fetch(bool got, indicator* ind) override {
    if (!buf_) {
      real_->post_fetch(got, ind);
      return;
    }
    if (!got || !st_.serving() || st_.batch() == 0) return;
    const result_table* t = st_.table();
    std::size_t c = st_.column_of(this);
    t->cols[c]->fill(data_, true, st_.cursor(), st_.batch(), ind);
  }
  void resize(std::size_t sz) override {
    if (!buf_) {
      real_->resize(sz);
      return;
    }
    with_type(type_, [&](auto tg) {
      static_cast<std::vector<typename decltype(tg)::type>*>(data_)->resize(sz);
    });
  }
  std::size_t size() override {
    if (!buf_) return real_->size();
    std::size_t n = 0;
    with_type(type_, [&](auto tg) {
      n = static_cast<std::vector<typename decltype(tg)::type>*>(data_)->size();
    });
    return n;
  }
  void clean_up() override { real_->clean_up(); }

  bool buffered() const noexcept override { return buf_ != nullptr && !bulk_; }
  exchange_type type() const noexcept override { return type_; }
  bool vec() const noexcept override { return true; }
  void real_pre_exec(int num) override { real_->pre_exec(num); }
  void real_pre_fetch(std::size_t batch) override {
    real_->resize(batch);
    real_->pre_fetch();
  }
  void real_post_fetch(std::size_t rows, bool, column& out) override {
    real_->resize(rows);
    if (rows == 0) return;
    inds_.assign(rows, ::soci::i_ok);
    real_->post_fetch(true, inds_.data());
    out.append(buf_->ptr, true, rows, inds_.data());
  }

 private:
  caching_statement& st_;
  std::unique_ptr<::soci::details::vector_into_type_backend> real_;
  void* data_ = nullptr;
  exchange_type type_ = ::soci::details::x_integer;
  std::unique_ptr<buffer> buf_;
  std::vector<indicator> inds_;
  bool bulk_ = false;
};

statement_backend* caching_session::make_statement_backend() {
  sync();
  return new caching_statement(*this, real_->make_statement_backend());
}

::soci::details::standard_into_type_backend* caching_statement::make_into_type_backend() {
  return new caching_into(*this, real_->make_into_type_backend());
}
::soci::details::standard_use_type_backend* caching_statement::make_use_type_backend() {
  return new caching_use(*this, real_->make_use_type_backend());
}
::soci::details::vector_into_type_backend* caching_statement::make_vector_into_type_backend() {
  return new caching_vector_into(*this, real_->make_vector_into_type_backend());
}
::soci::details::vector_use_type_backend* caching_statement::make_vector_use_type_backend() {
  return new caching_vector_use(*this, real_->make_vector_use_type_backend());
}

std::size_t caching_statement::fetch_size() const {
  std::size_t n = 1;
  for (auto* i : intos_) {
    if (i->vec()) {
      auto* v = dynamic_cast<caching_vector_into*>(i);
      if (v) n = std::max<std::size_t>(n, v->size());
    }
  }
  return n;
}

void caching_statement::finish_execution(bool ok) noexcept {
  if (active_) {
    active_ = false;
    if (engine* e = sess_.eng()) e->end(exec_, ok, nullptr);
  }
  exec_ = execution{};
}

// Opens an engine execution for the current parameters. Returns true on a hit.
bool caching_statement::start_execution() {
  finish_execution(true);
  serving_ = false;
  table_.reset();
  building_.reset();
  real_started_ = false;
  real_done_ = true;
  complete_ = false;
  cursor_ = batch_ = 0;
  std::vector<const use_value*> uses;
  uses.reserve(uses_.size());
  for (auto* u : uses_) uses.push_back(&u->value());
  std::string sh;
  bool capable = cacheable_now();
  if (capable) sh = shape();
  exec_ = sess_.eng()->begin(plan_, capable, sh, uses, *real_);
  active_ = true;
  if (exec_.hit) {
    table_ = exec_.hit;
    serving_ = true;
    return true;
  }
  return false;
}

// Reads one batch of up to `n` rows from the real statement into building_. Returns the
// number of rows read.
std::size_t caching_statement::pull(std::size_t n, bool first) {
  if (!building_) {
    building_ = std::make_shared<result_table>();
  }
  if (building_->cols.empty() && !intos_.empty()) {
    for (auto* i : intos_) building_->cols.push_back(make_column(i->type()));
  }
  for (auto* i : intos_) i->real_pre_exec(static_cast<int>(n));
  for (auto* i : intos_) i->real_pre_fetch(n);
  exec_fetch_result r = first ? real_->execute(static_cast<int>(n)) : real_->fetch(static_cast<int>(n));
  real_started_ = true;
  std::size_t rows = 0;
  if (n > 0) {
    int nr = real_->get_number_of_rows();
    if (r == ef_success) rows = n == 1 ? 1 : std::min<std::size_t>(n, nr > 0 ? nr : 0);
    else rows = n > 1 ? static_cast<std::size_t>(nr > 0 ? nr : 0) : 0;
  }
  if (intos_.empty()) rows = 0;
  for (std::size_t k = 0; k < intos_.size(); ++k)
    intos_[k]->real_post_fetch(rows, !first, *building_->cols[k]);
  building_->rows += rows;
  real_done_ = (r == ef_no_data) || n == 0 || intos_.empty();
  return rows;
}

statement_backend::exec_fetch_result caching_statement::serve(std::size_t n) {
  std::size_t avail = table_->rows - cursor_;
  batch_ = std::min(n, avail);
  return (n > 0 && batch_ == n) ? ef_success : ef_no_data;
}

statement_backend::exec_fetch_result caching_statement::execute(int number) {
  engine* e = sess_.eng();
  if (!e) return real_->execute(number);
  bool opened_by_describe = describing_;
  describing_ = false;
  if (opened_by_describe ? serving_ : start_execution()) {
    if (number <= 0) {
      batch_ = 0;
      return ef_success;
    }
    return serve(static_cast<std::size_t>(number));
  }
  if (!cacheable_now()) {
    // Intos are defined on the user's variables: delegate.
    serving_ = false;
    exec_fetch_result r;
    try {
      r = real_->execute(number);
    } catch (...) {
      finish_execution(false);
      throw;
    }
    // Without data exchange SOCI's SQLite backend steps the statement only in fetch(): the
    // engine's end() (which sees what it wrote) waits until the rows are drained.
    if (number > 0 || r == ef_no_data || !e->steps_in_fetch()) finish_execution(true);
    if (std::exception_ptr x = e->take_error()) std::rethrow_exception(x);
    return r;
  }
  // Rows flow through our buffers: read everything for a cacheable read (so it can be
  // stored), otherwise one batch at a time.
  std::size_t n = number > 0 ? static_cast<std::size_t>(number) : fetch_size();
  std::size_t limit = sess_.shared_cache()->max_entry_bytes();
  try {
    pull(n, true);
    if (exec_.read) {
      while (!real_done_ && building_->bytes() <= limit) pull(n, false);
    }
  } catch (...) {
    building_.reset();
    finish_execution(false);
    throw;
  }
  complete_ = real_done_;
  table_ = building_;
  serving_ = true;
  if (exec_.read && complete_) {
    if (e->describe_executes() && building_->affected_rows < 0)
      building_->affected_rows = real_->get_affected_rows();
    active_ = false;
    e->end(exec_, true, building_);
    exec_ = execution{};
  } else {
    finish_execution(true);
    if (std::exception_ptr x = e->take_error()) std::rethrow_exception(x);
  }
  if (number <= 0) {
    batch_ = 0;
    return ef_success;
  }
  return serve(static_cast<std::size_t>(number));
}

statement_backend::exec_fetch_result caching_statement::fetch(int number) {
  if (!serving_) {
    exec_fetch_result r;
    try {
      r = real_->fetch(number);
    } catch (...) {
      finish_execution(false);
      throw;
    }
    if (r == ef_no_data) finish_execution(true);
    return r;
  }
  std::size_t n = static_cast<std::size_t>(number > 0 ? number : 0);
  cursor_ += batch_;
  batch_ = 0;
  if (cursor_ >= table_->rows && !real_done_ && building_ && table_ == building_) {
    // Streaming an uncached result: drop what was served and read the next batch.
    auto fresh = std::make_shared<result_table>();
    for (auto& c : building_->cols) fresh->cols.push_back(c->empty_clone());
    building_ = fresh;
    table_ = building_;
    cursor_ = 0;
    pull(n, false);
    table_ = building_;
  }
  return serve(n);
}

int caching_statement::prepare_for_describe() {
  row_mode_ = true;
  engine* e = sess_.eng();
  if (!e || !e->describe_executes() || !cacheable_now()) return real_->prepare_for_describe();
  // Describing executes the statement (PostgreSQL): open the execution now, so a hit
  // answers the description too.
  describing_ = true;
  if (start_execution()) {
    if (table_->has_description) return static_cast<int>(table_->description.size());
  }
  int n = 0;
  try {
    n = real_->prepare_for_describe();
  } catch (...) {
    describing_ = false;
    finish_execution(false);
    throw;
  }
  building_ = std::make_shared<result_table>();
  building_->has_description = true;
  return n;
}

void caching_statement::describe_column(int col, ::soci::data_type& dt, std::string& name) {
  if (describing_ && serving_ && table_ && table_->has_description) {
    const auto& d = table_->description.at(static_cast<std::size_t>(col - 1));
    dt = d.type;
    name = d.name;
    return;
  }
  describe_real(col, dt, name);
  if (describing_ && building_) building_->description.push_back({dt, name});
}

// SOCI 4.0's SQLite backend fills a static type map on its first describe_column, with
// no lock: two sessions describing their first row set at once race on it (ThreadSanitizer
// caught it under SqliteHunt.ThreadsWritingAndReadingOneFile). The first describe of the
// process goes through here alone, so that every session of a cache is safe.
void caching_statement::describe_real(int col, ::soci::data_type& dt, std::string& name) {
  static std::atomic<bool> first_done{false};
  static std::mutex first_mu;
  if (first_done.load(std::memory_order_acquire) ||
      sess_.real().get_backend_name() != "sqlite3") {
    real_->describe_column(col, dt, name);
    return;
  }
  std::lock_guard lock(first_mu);
  real_->describe_column(col, dt, name);
  first_done.store(true, std::memory_order_release);
}

}  // namespace
}  // namespace detail

caching_factory::caching_factory(std::shared_ptr<qcache::cache> c,
                                 const ::soci::backend_factory& real, factory_options opts)
    : cache_(std::move(c)), real_(real),
      opts_(std::make_shared<const factory_options>(std::move(opts))) {
  if (!cache_) throw std::invalid_argument("qcache::soci::caching_factory: the cache is null");
}

::soci::details::session_backend* caching_factory::make_session(
    const ::soci::connection_parameters& params) const {
  std::unique_ptr<::soci::details::session_backend> real(real_.make_session(params));
  return new detail::caching_session(cache_, std::move(real), opts_, params.get_connect_string());
}

::soci::details::session_backend* native_backend(::soci::session& sql) noexcept {
  auto* s = dynamic_cast<detail::caching_session*>(sql.get_backend());
  return s ? &s->real() : nullptr;
}

bool sync(::soci::session& sql) {
  auto* s = dynamic_cast<detail::caching_session*>(sql.get_backend());
  return s && s->eng() ? s->eng()->sync() : true;
}

bool is_caching(::soci::session& sql) noexcept {
  return dynamic_cast<detail::caching_session*>(sql.get_backend()) != nullptr;
}

void invalidate_all(::soci::session& sql) {
  auto* s = dynamic_cast<detail::caching_session*>(sql.get_backend());
  if (s && s->eng()) s->eng()->invalidate_all();
}

void invalidate_table(::soci::session& sql, const std::string& table) {
  auto* s = dynamic_cast<detail::caching_session*>(sql.get_backend());
  if (s && s->eng()) s->eng()->invalidate_table(table);
}

void invalidate_row(::soci::session& sql, const std::string& table, const std::string& column,
                    const std::string& value) {
  auto* s = dynamic_cast<detail::caching_session*>(sql.get_backend());
  if (s && s->eng()) s->eng()->invalidate_row(table, column, value);
}

qcache::explanation explain(::soci::session& sql, const std::string& query) {
  auto* s = dynamic_cast<detail::caching_session*>(sql.get_backend());
  if (s && s->eng()) return s->eng()->explain_sql(query);
  qcache::explanation e;
  e.reason = "not cached: the session was not opened through a qcache::soci::caching_factory"
             " (or its backend has no qcache engine)";
  return e;
}

}  // namespace qcache::soci
