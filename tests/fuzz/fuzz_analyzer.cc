// libFuzzer target: qcache::pg::analyze_uncached on arbitrary bytes. It must never crash,
// hang or throw; a failed parse must carry the parser's message, and a successful one at
// least one statement with consistent fields.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "pg/analyzer.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view sql(reinterpret_cast<const char*>(data), size);
  qcache::pg::analysis a = qcache::pg::analyze_uncached(sql);
  if (!a.ok) {
    if (a.error.empty()) std::abort();  // a rejected statement always says why
    return 0;
  }
  for (const auto& s : a.statements) {
    // $0 parses (has_params with max_param 0); the server rejects it.
    if (s.max_param < 0 || (s.max_param > 0 && !s.has_params)) std::abort();
    for (const auto& r : s.reads) {
      if (r.table.name.empty()) std::abort();
      for (const auto& c : r.conjuncts)
        for (const auto& v : c.values)
          if (v.k == qcache::pg::eq_value::kind::param && (v.param < 1 || v.param > s.max_param))
            std::abort();
    }
    for (const auto& w : s.writes)
      if (w.table.name.empty()) std::abort();
  }
  // The memoized entry point agrees with the uncached one.
  auto m = qcache::pg::analyze(sql);
  if (m->ok != a.ok || m->statements.size() != a.statements.size()) std::abort();
  return 0;
}
