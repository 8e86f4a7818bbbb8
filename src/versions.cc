#include "versions.h"

#include <bit>
#include <stdexcept>

namespace qcache::detail {

versions::versions(std::size_t slots) {
  if (slots < 1024) slots = 1024;
  if (slots > (std::size_t{1} << 30)) throw std::invalid_argument("qcache: version_slots above 2^30");
  slots = std::bit_ceil(slots);
  slots_ = std::make_unique<std::atomic<std::uint64_t>[]>(slots);
  for (std::size_t i = 0; i < slots; ++i) slots_[i].store(0, std::memory_order_relaxed);
  mask_ = slots - 1;
  r0_ = slots >> 8;           // databases: 1/256 (4 slots at the minimum 1024)
  r1_ = r0_ + (slots >> 4);   // table-level tags: 1/16
}

}  // namespace qcache::detail
