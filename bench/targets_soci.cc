// SOCI targets: `sqlite` (an embedded SQLite file) and `soci-pg` (SOCI's postgresql
// backend). Both modes run the same SOCI code (rowset<row> reads, once-statement writes,
// session::begin/commit); only the backend factory differs: SOCI's own, or the SOCI
// adapter's qcache::soci::caching_factory wrapped around it. Without the adapter the
// cached modes are reported as unavailable.
//
// Invariants: placeholders are SOCI's (:p1, :p2, ...); values bound with use() live
// until the statement has run.
#include <soci/soci.h>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/sqlite3/soci-sqlite3.h>

#if defined(QCACHE_BENCH_HAVE_SOCI_ADAPTER)
#include <qcache/soci.h>
#endif

#include <cctype>
#include <cstdio>
#include <ctime>
#include <stdexcept>

#include "bench.h"

namespace qcache::bench {

bool soci_adapter_available() {
#if defined(QCACHE_BENCH_HAVE_SOCI_ADAPTER)
  return true;
#else
  return false;
#endif
}

namespace {

// $1 -> :p1
std::string soci_placeholders(const std::string& sql) {
  std::string out;
  for (std::size_t k = 0; k < sql.size(); ++k) {
    if (sql[k] == '$' && k + 1 < sql.size() && std::isdigit(static_cast<unsigned char>(sql[k + 1]))) {
      out += ":p";
    } else {
      out += sql[k];
    }
  }
  return out;
}

std::uint64_t consume(const ::soci::row& r, std::string* canon) {
  std::uint64_t sum = 0;
  char buf[64];
  for (std::size_t i = 0; i < r.size(); ++i) {
    if (r.get_indicator(i) == ::soci::i_null) {
      sum += 1;
      if (canon) *canon += "\\N\t";
      continue;
    }
    switch (r.get_properties(i).get_data_type()) {
      case ::soci::dt_string: {
        const std::string& s = r.get<std::string>(i);
        sum += s.size();
        if (canon) *canon += s;
        break;
      }
      case ::soci::dt_integer: {
        int v = r.get<int>(i);
        sum += static_cast<std::uint64_t>(v);
        if (canon) *canon += std::to_string(v);
        break;
      }
      case ::soci::dt_long_long: {
        long long v = r.get<long long>(i);
        sum += static_cast<std::uint64_t>(v);
        if (canon) *canon += std::to_string(v);
        break;
      }
      case ::soci::dt_unsigned_long_long: {
        unsigned long long v = r.get<unsigned long long>(i);
        sum += v;
        if (canon) *canon += std::to_string(v);
        break;
      }
      case ::soci::dt_double: {
        double v = r.get<double>(i);
        sum += static_cast<std::uint64_t>(v);
        if (canon) {
          std::snprintf(buf, sizeof buf, "%.17g", v);
          *canon += buf;
        }
        break;
      }
      case ::soci::dt_date: {
        std::tm t = r.get<std::tm>(i);
        sum += static_cast<std::uint64_t>(t.tm_sec + t.tm_min);
        if (canon) {
          std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &t);
          *canon += buf;
        }
        break;
      }
      default:
        if (canon) *canon += "?";
        break;
    }
    if (canon) *canon += '\t';
  }
  if (canon) *canon += '\n';
  return sum;
}

class soci_connection final : public connection {
 public:
  soci_connection(const ::soci::backend_factory& f, const std::string& conninfo,
                  const std::vector<std::string>& sql, bool sqlite)
      : sql_(f, conninfo), text_(sql) {
    if (sqlite) {
      sql_ << "PRAGMA synchronous = NORMAL";
      sql_ << "PRAGMA busy_timeout = 10000";
    }
  }
  std::uint64_t read(int stmt, const params& p, std::string* canon) override {
    long long iv[6];
    std::string sv[6];
    ::soci::details::prepare_temp_type pt = (sql_.prepare << text_[stmt]);
    bind(pt, p, iv, sv);
    ::soci::rowset<::soci::row> rs(pt);
    std::uint64_t sum = 0;
    for (const ::soci::row& r : rs) sum += consume(r, canon);
    return sum;
  }
  void write(int stmt, const params& p) override {
    long long iv[6];
    std::string sv[6];
    ::soci::details::once_temp_type o = (sql_ << text_[stmt]);
    bind(o, p, iv, sv);
    // Runs when `o` goes out of scope.
  }
  void begin() override { sql_.begin(); }
  void commit() override { sql_.commit(); }
  void exec_raw(const std::string& q) override { sql_ << q; }
#if defined(QCACHE_BENCH_HAVE_SOCI_ADAPTER)
  void sync() override { qcache::soci::sync(sql_); }  // no-op but for cached PostgreSQL
#endif

 private:
  template <class T>
  static void bind(T& t, const params& p, long long* iv, std::string* sv) {
    for (int k = 0; k < p.n; ++k) {
      if (p.text[k]) {
        sv[k] = p.s[k];
        t, ::soci::use(sv[k]);
      } else {
        iv[k] = p.i[k];
        t, ::soci::use(iv[k]);
      }
    }
  }
  ::soci::session sql_;
  const std::vector<std::string>& text_;
};

class soci_target final : public target {
 public:
  soci_target(std::string name, const ::soci::backend_factory& backend, std::string conninfo,
              std::string key, bool sqlite, const qcache::options& o)
      : name_(std::move(name)), backend_(backend), conninfo_(std::move(conninfo)),
        key_(std::move(key)), sqlite_(sqlite), cache_(std::make_shared<qcache::cache>(o))
#if defined(QCACHE_BENCH_HAVE_SOCI_ADAPTER)
        , caching_(cache_, backend)
#endif
  {
  }
  std::string name() const override { return name_; }
  dialect sql_dialect() const override { return sqlite_ ? dialect::sqlite : dialect::postgresql; }
  bool supports(mode m, std::string* why) const override {
    if (m == mode::cached && !soci_adapter_available()) {
      if (why) *why = "the SOCI adapter (qcache::soci) was not built";
      return false;
    }
    return true;
  }
  void set_statements(const std::vector<statement>& s) override {
    for (const auto& st : s) text_.push_back(soci_placeholders(st.sql));
  }
  std::unique_ptr<connection> connect(mode m) override {
#if defined(QCACHE_BENCH_HAVE_SOCI_ADAPTER)
    if (m == mode::cached)
      return std::make_unique<soci_connection>(caching_, conninfo_, text_, sqlite_);
#else
    if (m == mode::cached) throw std::runtime_error("the SOCI adapter was not built");
#endif
    return std::make_unique<soci_connection>(backend_, conninfo_, text_, sqlite_);
  }
  std::unique_ptr<connection> connect_direct() override {
    return std::make_unique<soci_connection>(backend_, conninfo_, text_, sqlite_);
  }
  void reset_cache(mode m, const std::vector<std::string>&) override {
    if (m == mode::cached) cache_->flush(qcache::invalidation_cause::manual);
  }
  std::optional<qcache::stats> cache_stats(mode m) override {
    if (m == mode::cached && soci_adapter_available()) return cache_->stats();
    return std::nullopt;
  }
  std::string database_key() const override { return key_; }

 private:
  std::string name_;
  const ::soci::backend_factory& backend_;
  std::string conninfo_, key_;
  bool sqlite_;
  std::shared_ptr<qcache::cache> cache_;
#if defined(QCACHE_BENCH_HAVE_SOCI_ADAPTER)
  qcache::soci::caching_factory caching_;
#endif
  std::vector<std::string> text_;
};

}  // namespace

std::unique_ptr<target> make_sqlite_target(const target_config& c) {
  {
    // WAL lets readers run while a writer commits; it is a property of the file.
    ::soci::session s(::soci::sqlite3, "db=" + c.sqlite_file);
    s << "PRAGMA journal_mode = WAL";
  }
  return std::make_unique<soci_target>("sqlite", ::soci::sqlite3, "db=" + c.sqlite_file + " timeout=10",
                                       "sqlite:" + c.sqlite_file, true, c.cache_options);
}

std::unique_ptr<target> make_soci_pg_target(const target_config& c) {
  if (c.pg.empty()) throw std::runtime_error("target soci-pg needs QCACHE_PG (or --pg CONNINFO)");
  ensure_pg_database(c.pg, c.database);
  return std::make_unique<soci_target>("soci-pg", ::soci::postgresql, c.pg + " dbname=" + c.database,
                                       "pg", false, c.cache_options);
}

}  // namespace qcache::bench
