// Key encoding, context interning and tag hashing.
//
// Invariant: the key encoding is prefix-free per field (every variable-length field is
// preceded by its length), so equal key bytes imply equal (context, kind, SQL, params).
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <qcache/key.h>
#include <qcache/tags.h>

#include <mutex>
#include <string>
#include <unordered_map>
#include <cstring>

namespace qcache {
namespace {

void put_u32(std::string& b, std::uint32_t v) {
  char c[4];
  std::memcpy(c, &v, 4);
  b.append(c, 4);
}

void put_len(std::string& b, std::size_t n) {
  // LEB128 varint.
  while (n >= 0x80) {
    b.push_back(static_cast<char>((n & 0x7f) | 0x80));
    n >>= 7;
  }
  b.push_back(static_cast<char>(n));
}

}  // namespace

hash128 hash_bytes(std::string_view bytes) noexcept {
  XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  return hash128{h.low64, h.high64};
}

void key_builder::start(std::uint32_t context, char kind, std::string_view sql) {
  buf_.clear();
  put_u32(buf_, context);
  buf_.push_back(kind);
  put_len(buf_, sql.size());
  buf_.append(sql);
  count_pos_ = buf_.size();
  put_u32(buf_, 0);  // parameter count, patched in finish
  params_ = 0;
}

void key_builder::add(param_type t, std::string_view payload) {
  buf_.push_back(static_cast<char>(t));
  put_len(buf_, payload.size());
  buf_.append(payload);
  ++params_;
}

key key_builder::finish() {
  key k;
  finish_into(k);
  return k;
}

void key_builder::finish_into(key& out) {
  std::memcpy(buf_.data() + count_pos_, &params_, 4);
  out.bytes.assign(buf_);
  out.hash = hash_bytes(out.bytes);
}

std::uint32_t intern_context(std::string_view context_text) {
  static std::mutex mu;
  static std::unordered_map<std::string, std::uint32_t> ids;
  std::lock_guard lock(mu);
  auto it = ids.find(std::string(context_text));
  if (it != ids.end()) return it->second;
  auto id = static_cast<std::uint32_t>(ids.size() + 1);
  ids.emplace(std::string(context_text), id);
  return id;
}

namespace tags {
namespace {

tag hash_parts(char kind, std::initializer_list<std::string_view> parts) noexcept {
  XXH3_state_t st;
  XXH3_64bits_reset(&st);
  XXH3_64bits_update(&st, &kind, 1);
  for (auto p : parts) {
    std::uint64_t n = p.size();
    XXH3_64bits_update(&st, &n, sizeof n);
    XXH3_64bits_update(&st, p.data(), p.size());
  }
  return XXH3_64bits_digest(&st);
}

}  // namespace

// The top two bits say which region of the version table a tag maps to (see
// detail::versions::slot_of), so the few tags nearly every read depends on never share a
// counter with the many predicate tags.
namespace {
tag in_region(tag h, std::uint64_t region) noexcept { return (h >> 2) | (region << 62); }
}  // namespace

tag global() noexcept { return in_region(hash_parts('G', {}), 0); }
tag database(std::string_view db) noexcept { return in_region(hash_parts('D', {db}), 1); }
tag table(std::string_view db, std::string_view t) noexcept {
  return in_region(hash_parts('T', {db, t}), 2);
}
tag table_epoch(std::string_view db, std::string_view t) noexcept {
  return in_region(hash_parts('E', {db, t}), 2);
}
tag column_epoch(std::string_view db, std::string_view t, std::string_view c) noexcept {
  return in_region(hash_parts('C', {db, t, c}), 2);
}
tag predicate(std::string_view db, std::string_view t, std::string_view c,
              std::string_view v) noexcept {
  return in_region(hash_parts('P', {db, t, c, v}), 3);
}

}  // namespace tags
}  // namespace qcache
