// The postgresql engine: libpqxx directly (`direct`) or through qcache::pqxx (every other
// mode). Each test file runs in a fresh schema that is first on search_path and dropped
// afterwards; one cache serves every file of a run, so files that reuse table names in
// different schemas also check that names resolve per search_path.
#include "engine.h"

#include <qcache/cache.h>
#include <qcache/pqxx.h>

#include <pqxx/pqxx>

#include <cstdlib>
#include <stdexcept>
#include <unistd.h>

namespace qcache::slt {
namespace {

constexpr unsigned oid_bool = 16, oid_int8 = 20, oid_int2 = 21, oid_int4 = 23, oid_oid = 26,
                   oid_float4 = 700, oid_float8 = 701, oid_numeric = 1700;

rows convert(const ::pqxx::result& r) {
  rows out;
  out.columns = static_cast<std::size_t>(r.columns());
  out.cells.reserve(r.size() * out.columns);
  std::vector<unsigned> types;
  for (::pqxx::row::size_type j = 0; j < r.columns(); ++j) types.push_back(r.column_type(j));
  for (const auto& row : r) {
    for (::pqxx::row::size_type j = 0; j < r.columns(); ++j) {
      const auto& f = row[j];
      cell c;
      if (f.is_null()) {
        out.cells.push_back(std::move(c));
        continue;
      }
      c.text.assign(f.c_str(), f.size());
      switch (types[j]) {
        case oid_bool:
          c.k = cell::kind::integer;
          c.i = c.text == "t" ? 1 : 0;
          break;
        case oid_int2:
        case oid_int4:
        case oid_int8:
        case oid_oid:
          c.k = cell::kind::integer;
          c.i = std::strtoll(c.text.c_str(), nullptr, 10);
          break;
        case oid_float4:
        case oid_float8:
        case oid_numeric:
          c.k = cell::kind::real;
          c.d = std::strtod(c.text.c_str(), nullptr);
          break;
        default: c.k = cell::kind::text;
      }
      out.cells.push_back(std::move(c));
    }
  }
  return out;
}

class postgresql_engine final : public engine {
 public:
  explicit postgresql_engine(const engine_options& o) : conninfo_(o.pg_conninfo) {
    if (conninfo_.empty())
      throw std::runtime_error("postgresql engine: no conninfo (--pg or QCACHE_PG)");
    if (o.with_cache) cache_ = std::make_shared<qcache::cache>(qcache::options{});
  }
  ~postgresql_engine() override {
    try {
      close();
    } catch (...) {
    }
  }

  const char* name() const override { return "postgresql"; }

  void open(const std::string&) override {
    schema_ = "slt_" + std::to_string(::getpid()) + "_" + std::to_string(++files_);
    const std::string setup = "SET client_min_messages TO error";
    if (cache_) {
      qc_ = std::make_unique<qcache::pqxx::connection>(conninfo_, cache_);
      exec_cached("CREATE SCHEMA " + schema_);
      exec_cached(setup);
      exec_cached("SET search_path TO " + schema_);
    } else {
      raw_ = std::make_unique<::pqxx::connection>(conninfo_);
      exec_direct("CREATE SCHEMA " + schema_);
      exec_direct(setup);
      exec_direct("SET search_path TO " + schema_);
    }
  }

  void close() override {
    if (!qc_ && !raw_) return;
    auto finish = [&](auto&& exec) {
      try {
        exec("ROLLBACK");  // a file may end inside BEGIN
      } catch (...) {
      }
      exec("DROP SCHEMA " + schema_ + " CASCADE");
    };
    if (qc_) finish([&](const std::string& s) { exec_cached(s); });
    else finish([&](const std::string& s) { exec_direct(s); });
    qc_.reset();
    raw_.reset();
  }

  void statement(const std::string& sql, bool cached) override { run(sql, cached); }

  rows query(const std::string& sql, bool cached) override { return convert(run(sql, cached)); }

  std::string stats() const override { return cache_ ? describe(cache_->stats()) : std::string(); }

 private:
  ::pqxx::result exec_cached(const std::string& sql) {
    qcache::pqxx::nontransaction tx{*qc_};
    return tx.exec(sql);
  }
  ::pqxx::result exec_direct(const std::string& sql) {
    ::pqxx::nontransaction tx{*raw_};
    return tx.exec(sql);
  }

  ::pqxx::result run(const std::string& sql, bool cached) {
    try {
      if (qc_) {
        if (cached) return exec_cached(sql);
        // Uncached in a cached mode: the adapter's connection, bypassing the cache. Only
        // used for reads (see the runner), which can never make the cache stale.
        ::pqxx::nontransaction tx{qc_->raw()};
        return tx.exec(sql);
      }
      return exec_direct(sql);
    } catch (const ::pqxx::broken_connection&) {
      throw;
    } catch (const ::pqxx::sql_error& e) {
      throw db_error{e.what()};
    } catch (const ::pqxx::usage_error& e) {
      throw db_error{e.what()};
    }
  }

  std::string conninfo_;
  std::shared_ptr<qcache::cache> cache_;
  std::unique_ptr<qcache::pqxx::connection> qc_;
  std::unique_ptr<::pqxx::connection> raw_;
  std::string schema_;
  unsigned files_ = 0;
};

}  // namespace

std::unique_ptr<engine> make_postgresql_engine(const engine_options& o) {
  return std::make_unique<postgresql_engine>(o);
}

}  // namespace qcache::slt
