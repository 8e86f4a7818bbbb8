// qcache-difftest without qcache::soci: the sqlite engine is unavailable.
#include <stdexcept>

#include "difftest.h"

namespace qcache::difftest {

std::vector<std::string> sqlite_families() { return {}; }
scenario generate_sqlite(std::mt19937_64&, int, const generator_options&) {
  throw std::runtime_error("the sqlite engine needs qcache::soci, which this build lacks");
}
std::unique_ptr<target> make_sqlite_target(bool) {
  throw std::runtime_error("the sqlite engine needs qcache::soci, which this build lacks");
}

}  // namespace qcache::difftest
