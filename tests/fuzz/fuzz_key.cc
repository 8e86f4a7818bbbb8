// libFuzzer target: the key encoding (include/qcache/key.h) is unambiguous. Two keys are
// built from fuzzed parts (context id, kind, SQL, typed parameters); their bytes must be
// equal exactly when the parts are equal, and equal bytes must hash equal.
#include <fuzzer/FuzzedDataProvider.h>
#include <qcache/key.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

namespace {

struct parts {
  std::uint32_t context = 0;
  char kind = 0;
  std::string sql;
  std::vector<std::pair<std::uint8_t, std::string>> params;
  bool operator==(const parts&) const = default;
};

parts take(FuzzedDataProvider& p) {
  parts x;
  // Small ranges so that the two sides are often equal or nearly equal.
  x.context = p.ConsumeIntegralInRange<std::uint32_t>(0, 3);
  x.kind = static_cast<char>(p.ConsumeIntegralInRange<int>(0, 2));
  x.sql = p.ConsumeRandomLengthString(64);
  std::size_t n = p.ConsumeIntegralInRange<std::size_t>(0, 6);
  for (std::size_t i = 0; i < n; ++i) {
    auto tag = p.ConsumeIntegralInRange<std::uint8_t>(1, 8);  // param_type::null..other
    x.params.emplace_back(tag, p.ConsumeRandomLengthString(300));  // > 127: 2-byte lengths
  }
  return x;
}

qcache::key build(qcache::key_builder& b, const parts& x) {
  b.start(x.context, x.kind, x.sql);
  for (const auto& [t, payload] : x.params) b.add(static_cast<qcache::param_type>(t), payload);
  return b.finish();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider p(data, size);
  bool mirror = p.ConsumeBool();
  parts a = take(p);
  // Either a second independent set of parts, or a mutation of the first that moves
  // bytes between adjacent fields (the ('ab','c') vs ('a','bc') family).
  parts b = a;
  if (!mirror) {
    b = take(p);
  } else if (!b.params.empty()) {
    std::size_t i = p.ConsumeIntegralInRange<std::size_t>(0, b.params.size() - 1);
    auto& cur = b.params[i].second;
    if (i + 1 < b.params.size() && !cur.empty()) {
      b.params[i + 1].second.insert(0, 1, cur.back());
      cur.pop_back();
    } else if (!b.sql.empty()) {
      cur.insert(0, 1, b.sql.back());
      b.sql.pop_back();
    }
  } else if (!b.sql.empty()) {
    b.params.emplace_back(5, std::string(1, b.sql.back()));
    b.sql.pop_back();
  }
  qcache::key_builder kb;
  qcache::key ka = build(kb, a);
  qcache::key kb2 = build(kb, b);  // the builder is reused, as in the adapters
  if ((ka.bytes == kb2.bytes) != (a == b)) std::abort();
  if (ka.bytes == kb2.bytes && !(ka.hash == kb2.hash)) std::abort();
  if (!(ka.hash == qcache::hash_bytes(ka.bytes))) std::abort();
  return 0;
}
