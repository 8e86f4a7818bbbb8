// Cache keys: the exact bytes of a statement, its typed parameters and the session
// context that changes its result.
//
// Thread safety: a key_builder is used by one thread at a time; a finished key is an
// immutable value. intern_context() is safe from any thread.
//
// Encoding (unambiguous, so two different statements can never share a key):
//   context id (u32) | kind byte | len-prefixed SQL | param count | params...
// where each parameter is a type tag byte followed by a length-prefixed payload. NULL
// has its own tag (distinct from ''), 1 (integer) is distinct from '1' (text), and
// ('ab','c') is distinct from ('a','bc') because every payload carries its length.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace qcache {

// 128-bit XXH3 hash of a key's bytes. Used to find an entry; a hit still compares the
// full key bytes.
struct hash128 {
  std::uint64_t low = 0;
  std::uint64_t high = 0;
  bool operator==(const hash128&) const = default;
};

hash128 hash_bytes(std::string_view bytes) noexcept;

// Type tags of parameters. The numeric values are part of the encoding.
enum class param_type : std::uint8_t {
  null = 1,
  boolean = 2,
  integer = 3,   // any signed/unsigned integer, encoded as its decimal text
  floating = 4,  // encoded as shortest round-trip text
  text = 5,
  binary = 6,
  date = 7,      // dates/times as the driver renders them
  other = 8,     // anything else, as the driver renders it
};

// A finished key.
struct key {
  std::string bytes;
  hash128 hash;
};

// Builds keys. Reuse one builder per thread/connection to avoid allocations.
class key_builder {
 public:
  // Starts a key. `context` is an id from intern_context(); `kind` distinguishes
  // entry points whose results differ in shape for the same SQL (e.g. libpqxx exec vs
  // exec_params, SOCI row vs typed into).
  void start(std::uint32_t context, char kind, std::string_view sql);
  void add(param_type t, std::string_view payload);
  void add_null() { add(param_type::null, {}); }
  // Finishes and returns the key (the builder can be started again).
  key finish();
  // Finishes into `out`, reusing its storage.
  void finish_into(key& out);

 private:
  std::string buf_;
  std::uint32_t params_ = 0;
  std::size_t count_pos_ = 0;
};

// Returns a small id for an exact context text (database identity, role, settings...).
// Equal texts get equal ids, different texts different ids, for the process lifetime.
std::uint32_t intern_context(std::string_view context_text);

}  // namespace qcache
