// The PostgreSQL engine for SOCI: qcache::pg::session behind SOCI's postgresql backend.
#include "internal.h"

namespace qcache::soci::detail {

std::unique_ptr<engine> make_postgresql_engine(std::shared_ptr<cache>, ::soci::details::session_backend&,
                                               std::shared_ptr<const factory_options>) {
  return nullptr;  // not yet: statements are delegated unchanged
}

}  // namespace qcache::soci::detail
