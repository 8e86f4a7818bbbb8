// Invalidation tags: what a cached result depends on and what a write changes.
//
// Thread safety: all functions are pure and safe from any thread.
//
// A tag is a 64-bit hash of a typed tuple. Tags map onto a fixed table of version
// counters (see cache.h); two tags that share a counter only cost extra misses.
//
//   database(db)                 every result of that database (flush of one database)
//   table(db, t)                 results that read t without a usable equality predicate;
//                                bumped by every write to t
//   table_epoch(db, t)           every result that read t, predicate or not; bumped when a
//                                write to t touched rows it cannot name
//   column_epoch(db, t, c)       results that read t through `c = value`; bumped when a
//                                write touched rows whose c values it cannot name
//   predicate(db, t, c, v)       results that read t through `c = v`; bumped when a write
//                                touched a row whose c was v before or after the write
#pragma once

#include <cstdint>
#include <string_view>

namespace qcache::tags {

using tag = std::uint64_t;

tag global() noexcept;
tag database(std::string_view db) noexcept;
tag table(std::string_view db, std::string_view table) noexcept;
tag table_epoch(std::string_view db, std::string_view table) noexcept;
tag column_epoch(std::string_view db, std::string_view table, std::string_view column) noexcept;
tag predicate(std::string_view db, std::string_view table, std::string_view column,
              std::string_view canonical_value) noexcept;

}  // namespace qcache::tags
