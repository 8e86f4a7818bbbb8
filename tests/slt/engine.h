// The databases qcache-slt drives, behind one small interface.
//
// An engine runs one test file at a time: open() gives it a fresh, empty database (a new
// SQLite file, a new PostgreSQL schema), close() throws it away. Each statement or query
// says whether it goes through the cache (`cached`) or straight to the driver; in
// `direct` mode nothing touches a cache at all.
//
// Thread safety: one engine per thread.
#pragma once

#include <qcache/cache.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace qcache::slt {

// One result value as the database returned it. `text` is the database's own text for it
// (what a "T" column shows); `kind` and the numbers are what "I" and "R" columns convert.
struct cell {
  enum class kind { null, integer, real, text } k = kind::null;
  std::int64_t i = 0;
  double d = 0;
  std::string text;
};

struct rows {
  std::size_t columns = 0;
  std::vector<cell> cells;  // row-major
};

// Thrown for a database error (the statement failed); anything else is a runner bug.
struct db_error {
  std::string message;
};

class engine {
 public:
  virtual ~engine() = default;
  // "sqlite" or "postgresql": the name skipif/onlyif compare with.
  virtual const char* name() const = 0;
  // Starts a test file on a fresh, empty database.
  virtual void open(const std::string& label) = 0;
  // Ends the file and drops its database.
  virtual void close() = 0;
  // Runs a statement; throws db_error when the database reports an error.
  virtual void statement(const std::string& sql, bool cached) = 0;
  // Runs a query and returns every row; throws db_error on a database error.
  virtual rows query(const std::string& sql, bool cached) = 0;
  // Cache counters, for the summary (empty when there is no cache).
  virtual std::string stats() const { return {}; }
};

// One summary line of a cache's counters.
inline std::string describe(const qcache::stats& s) {
  return "cache: " + std::to_string(s.hits) + " hits, " + std::to_string(s.misses) +
         " misses, " + std::to_string(s.stores) + " stores, " +
         std::to_string(s.invalidations) + " invalidations (" + std::to_string(s.flushes) +
         " flushes), " + std::to_string(s.uncacheable) + " uncacheable";
}

struct engine_options {
  bool with_cache = false;  // false: `direct` mode, no cache object at all
  std::string pg_conninfo;
  bool sqlite_capi = false;  // sqlite: the SQLite C API instead of SOCI (direct mode only)
};

std::unique_ptr<engine> make_sqlite_engine(const engine_options& o);
std::unique_ptr<engine> make_postgresql_engine(const engine_options& o);

}  // namespace qcache::slt
