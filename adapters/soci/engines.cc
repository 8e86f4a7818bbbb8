// qcache::soci's engines: SQLite (with qcache's PostgreSQL analyzer for column predicates)
// and PostgreSQL (pg::session). qcache::soci_sqlite has engines_sqlite.cc instead.
#include "internal.h"
#include "pg/analyzer.h"

namespace qcache::soci::detail {

std::unique_ptr<engine> make_engine(std::shared_ptr<cache> c,
                                    ::soci::details::session_backend& real,
                                    std::shared_ptr<const factory_options> opts,
                                    std::string_view connect) {
  const std::string name = real.get_backend_name();
  if (name == "sqlite3")
    return make_sqlite_engine(std::move(c), real, std::move(opts), connect, &pg::analyze);
  if (name == "postgresql") return make_postgresql_engine(std::move(c), real, std::move(opts));
  return nullptr;
}

}  // namespace qcache::soci::detail
