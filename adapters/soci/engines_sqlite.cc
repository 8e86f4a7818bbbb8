// qcache::soci_sqlite's engines: SQLite only, without qcache's PostgreSQL analyzer (so the
// library links neither libpq nor libpg_query). SQLite reads depend on rowid predicates and
// table tags; a session of any other backend runs uncached.
#include "internal.h"

namespace qcache::soci::detail {

std::unique_ptr<engine> make_engine(std::shared_ptr<cache> c,
                                    ::soci::details::session_backend& real,
                                    std::shared_ptr<const factory_options> opts,
                                    std::string_view connect) {
  if (real.get_backend_name() == "sqlite3")
    return make_sqlite_engine(std::move(c), real, std::move(opts), connect, nullptr);
  return nullptr;
}

}  // namespace qcache::soci::detail
