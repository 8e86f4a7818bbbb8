// The sqlite engine: each test file gets a fresh database file in the temp directory,
// removed afterwards. `direct` mode uses the SQLite C API, exactly as the upstream
// sqllogictest driver does; cached modes go through qcache::soci when it is built.
#include "engine.h"

#include <sqlite3.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <unistd.h>

namespace qcache::slt {
namespace {

class sqlite_direct final : public engine {
 public:
  ~sqlite_direct() override { close(); }
  const char* name() const override { return "sqlite"; }

  void open(const std::string&) override {
    close();
    const char* tmp = std::getenv("TMPDIR");
    path_ = std::string(tmp && *tmp ? tmp : "/tmp") + "/qcache-slt-XXXXXX";
    int fd = ::mkstemp(path_.data());
    if (fd < 0) throw std::runtime_error("sqlite engine: mkstemp failed for " + path_);
    ::close(fd);
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
      std::remove(path_.c_str());
      std::remove((path_ + "-journal").c_str());
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

}  // namespace

std::unique_ptr<engine> make_sqlite_engine(const engine_options& o) {
  if (o.with_cache)
    throw std::runtime_error(
        "sqlite engine: cached modes need the SOCI adapter (qcache::soci), not built yet");
  return std::make_unique<sqlite_direct>();
}

}  // namespace qcache::slt
