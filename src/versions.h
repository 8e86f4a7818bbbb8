// The version table: a fixed array of atomic counters indexed by tag hash.
//
// Thread safety: every member is safe from any thread (lock-free atomics).
//
// Each counter packs a version (high 48 bits) and the number of writes in flight on it
// (low 16 bits). begin() moves the version and adds a writer; end() moves the version
// and removes the writer. A reader may only store a result whose counters had no
// writer in flight when it captured them, and an entry is valid only while every
// counter still equals what was captured. Counters never go back and are never
// evicted, so missing metadata cannot read as "unchanged" (CORRECTNESS.md P2, P14).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace qcache::detail {

class versions {
 public:
  static constexpr std::uint64_t writer_one = 1;
  static constexpr std::uint64_t version_one = std::uint64_t{1} << 16;
  static constexpr std::uint64_t writer_mask = version_one - 1;

  explicit versions(std::size_t slots);

  // Regions by the tag's top two bits (tags.h): 0 the global tag, alone in slot 0;
  // 1 database tags, slots [1, r0); 2 table, table_epoch and column_epoch tags, [r0, r1);
  // 3 predicate tags, the rest. A read depends on the global and a database tag and on a
  // few table-level ones; sharing their counters with any of the many predicate tags
  // would make every such read miss whenever that predicate is written.
  std::uint32_t slot_of(std::uint64_t tag) const noexcept {
    std::uint64_t h = tag & ~(std::uint64_t{3} << 62);
    h ^= h >> 29;
    switch (tag >> 62) {
      case 0: return 0;
      case 1: return static_cast<std::uint32_t>(1 + h % (r0_ - 1));
      case 2: return static_cast<std::uint32_t>(r0_ + h % (r1_ - r0_));
      default: return static_cast<std::uint32_t>(r1_ + h % (mask_ + 1 - r1_));
    }
  }
  std::uint64_t load(std::uint32_t slot) const noexcept {
    return slots_[slot].load(std::memory_order_acquire);
  }
  static bool in_flight(std::uint64_t v) noexcept { return (v & writer_mask) != 0; }
  void begin(std::uint32_t slot) noexcept {
    slots_[slot].fetch_add(version_one + writer_one, std::memory_order_acq_rel);
  }
  void end(std::uint32_t slot) noexcept {
    slots_[slot].fetch_add(version_one - writer_one, std::memory_order_acq_rel);
  }
  // Moves the version without holding (begin + end at once).
  void bump(std::uint32_t slot) noexcept {
    slots_[slot].fetch_add(2 * version_one, std::memory_order_acq_rel);
  }
  std::size_t size() const noexcept { return mask_ + 1; }
  std::size_t bytes() const noexcept { return size() * sizeof(std::atomic<std::uint64_t>); }

 private:
  std::unique_ptr<std::atomic<std::uint64_t>[]> slots_;
  std::uint64_t r0_ = 0, r1_ = 0;  // region bounds (slot_of)
  std::size_t mask_;
};

}  // namespace qcache::detail
