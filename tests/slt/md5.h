// A small MD5 (RFC 1321), written for qcache-slt: the SQL Logic Test format hashes large
// result sets with MD5 ("N values hashing to <hex>"). Not for security.
//
// Thread safety: an md5 object is used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace qcache::slt {

class md5 {
 public:
  md5();
  void update(std::string_view data);
  // The lower-case hex digest; the object must not be updated afterwards.
  std::string hex();

 private:
  void block(const unsigned char* p);
  std::uint32_t a_, b_, c_, d_;
  std::uint64_t length_ = 0;  // bytes
  unsigned char buffer_[64];
  std::size_t used_ = 0;
};

inline std::string md5_hex(std::string_view data) {
  md5 m;
  m.update(data);
  return m.hex();
}

}  // namespace qcache::slt
