// The sqlite engine: each test file gets a fresh database file in the temp directory,
// removed afterwards. It runs through SOCI's sqlite3 backend: plain soci::sqlite3 in
// `direct` mode, qcache::soci::caching_factory{cache, soci::sqlite3} in every other mode,
// so the two differ only by the cache. (`--engine sqlite-capi` runs the SQLite C API
// directly, as the upstream driver does: a reference for SOCI's own conversions.)
#include "engine.h"

#include <sqlite3.h>

#ifdef QCACHE_SLT_HAVE_SOCI
#include <qcache/cache.h>
#include <qcache/soci.h>

#include <soci/soci.h>

// soci-sqlite3.h wraps <sqlite3.h> in a namespace, which clashes with the plain include
// above; its factory is all this file needs.
namespace soci {
extern "C" backend_factory const* factory_sqlite3();
}

#include <ctime>
#endif

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <unistd.h>

namespace qcache::slt {
namespace {

// A fresh, empty database file; removes it and its journal.
std::string new_db_file() {
  const char* tmp = std::getenv("TMPDIR");
  std::string path = std::string(tmp && *tmp ? tmp : "/tmp") + "/qcache-slt-XXXXXX";
  int fd = ::mkstemp(path.data());
  if (fd < 0) throw std::runtime_error("sqlite engine: mkstemp failed for " + path);
  ::close(fd);
  return path;
}

void remove_db_file(const std::string& path) {
  std::remove(path.c_str());
  std::remove((path + "-journal").c_str());
  std::remove((path + "-wal").c_str());
  std::remove((path + "-shm").c_str());
}

class sqlite_capi final : public engine {
 public:
  ~sqlite_capi() override { close(); }
  const char* name() const override { return "sqlite"; }

  void open(const std::string&) override {
    close();
    path_ = new_db_file();
    if (sqlite3_open(path_.c_str(), &db_) != SQLITE_OK)
      throw std::runtime_error("sqlite engine: cannot open " + path_);
    // The upstream driver's settings: speed over durability for a throwaway file.
    sqlite3_exec(db_, "PRAGMA synchronous=OFF", nullptr, nullptr, nullptr);
  }

  void close() override {
    if (db_) {
      sqlite3_close_v2(db_);
      db_ = nullptr;
    }
    if (!path_.empty()) {
      remove_db_file(path_);
      path_.clear();
    }
  }

  void statement(const std::string& sql, bool) override { run(sql, nullptr); }

  rows query(const std::string& sql, bool) override {
    rows r;
    run(sql, &r);
    return r;
  }

 private:
  void run(const std::string& sql, rows* out) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK)
      throw db_error{sqlite3_errmsg(db_)};
    if (!st) return;  // only whitespace or comments
    int n = sqlite3_column_count(st);
    if (out) out->columns = static_cast<std::size_t>(n);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      if (!out) continue;
      for (int j = 0; j < n; ++j) {
        cell c;
        switch (sqlite3_column_type(st, j)) {
          case SQLITE_NULL: break;
          case SQLITE_INTEGER:
            c.k = cell::kind::integer;
            c.i = sqlite3_column_int64(st, j);
            break;
          case SQLITE_FLOAT:
            c.k = cell::kind::real;
            c.d = sqlite3_column_double(st, j);
            break;
          default: c.k = cell::kind::text;
        }
        if (c.k != cell::kind::null) {
          const auto* t = sqlite3_column_text(st, j);
          c.text.assign(reinterpret_cast<const char*>(t),
                        static_cast<std::size_t>(sqlite3_column_bytes(st, j)));
        }
        out->cells.push_back(std::move(c));
      }
    }
    if (rc != SQLITE_DONE) {
      std::string msg = sqlite3_errmsg(db_);
      sqlite3_finalize(st);
      throw db_error{msg};
    }
    sqlite3_finalize(st);
  }

  sqlite3* db_ = nullptr;
  std::string path_;
};

#ifdef QCACHE_SLT_HAVE_SOCI
// sqlite3_column_text's rendering of a REAL.
std::string sqlite_real_text(double d) {
  char* t = sqlite3_mprintf("%!.15g", d);
  std::string s = t ? t : "";
  sqlite3_free(t);
  return s;
}

class sqlite_soci final : public engine {
 public:
  explicit sqlite_soci(bool with_cache) {
    if (with_cache) {
      cache_ = std::make_shared<qcache::cache>(qcache::options{});
      factory_ = std::make_unique<qcache::soci::caching_factory>(cache_, *::soci::factory_sqlite3());
    }
  }
  ~sqlite_soci() override { close(); }
  const char* name() const override { return "sqlite"; }

  void open(const std::string&) override {
    close();
    path_ = new_db_file();
    const std::string conn = "db=" + path_ + " synchronous=off";
    if (factory_) sql_ = std::make_unique<::soci::session>(*factory_, conn);
    else sql_ = std::make_unique<::soci::session>(*::soci::factory_sqlite3(), conn);
  }

  void close() override {
    sql_.reset();
    if (!path_.empty()) {
      remove_db_file(path_);
      path_.clear();
    }
  }

  // In cached modes everything goes through the caching session (`cached` is only false
  // for --bypass-writes, which this engine does not support).
  void statement(const std::string& text, bool) override {
    try {
      *sql_ << text;
    } catch (const ::soci::soci_error& e) {
      throw db_error{e.what()};
    }
  }

  rows query(const std::string& text, bool) override {
    rows out;
    try {
      ::soci::row r;
      ::soci::statement st = (sql_->prepare << text, ::soci::into(r));
      st.execute(false);
      out.columns = r.size();
      while (st.fetch())
        for (std::size_t j = 0; j < r.size(); ++j) out.cells.push_back(convert(r, j));
    } catch (const ::soci::soci_error& e) {
      throw db_error{e.what()};
    }
    return out;
  }

  std::string stats() const override { return cache_ ? describe(cache_->stats()) : std::string(); }

 private:
  static cell convert(const ::soci::row& r, std::size_t j) {
    cell c;
    if (r.get_indicator(j) == ::soci::i_null) return c;
    switch (r.get_properties(j).get_data_type()) {
      case ::soci::dt_double:
        c.k = cell::kind::real;
        c.d = r.get<double>(j);
        c.text = sqlite_real_text(c.d);
        break;
      case ::soci::dt_integer:
        c.k = cell::kind::integer;
        c.i = r.get<int>(j);
        c.text = std::to_string(c.i);
        break;
      case ::soci::dt_long_long:
        c.k = cell::kind::integer;
        c.i = r.get<long long>(j);
        c.text = std::to_string(c.i);
        break;
      case ::soci::dt_unsigned_long_long:
        c.k = cell::kind::integer;
        c.i = static_cast<std::int64_t>(r.get<unsigned long long>(j));
        c.text = std::to_string(c.i);
        break;
      case ::soci::dt_date: {
        std::tm t = r.get<std::tm>(j);
        char buf[32];
        std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &t);
        c.k = cell::kind::text;
        c.text = buf;
        break;
      }
      default:
        c.k = cell::kind::text;
        c.text = r.get<std::string>(j);
    }
    return c;
  }

  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::soci::caching_factory> factory_;
  std::unique_ptr<::soci::session> sql_;
  std::string path_;
};
#endif

}  // namespace

std::unique_ptr<engine> make_sqlite_engine(const engine_options& o) {
#ifdef QCACHE_SLT_HAVE_SOCI
  if (!o.sqlite_capi) return std::make_unique<sqlite_soci>(o.with_cache);
#endif
  if (o.with_cache)
    throw std::runtime_error("sqlite engine: cached modes need the SOCI adapter (qcache::soci)");
  return std::make_unique<sqlite_capi>();
}

}  // namespace qcache::slt
