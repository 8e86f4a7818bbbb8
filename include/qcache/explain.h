// qcache::explanation — what qcache would do with a statement, for humans and tests.
//
// Thread safety: a plain value type.
#pragma once

#include <string>
#include <vector>

namespace qcache {

struct explanation {
  std::string kind;            // "read", "write", "ddl", "txn_begin", ... or "error"
  bool cacheable = false;      // a read that may be served from the cache
  std::string reason;          // why not, when !cacheable (uncacheable_reason name or text)
  std::vector<std::string> reads;   // resolved relations read, e.g. "public.posts"
  std::vector<std::string> writes;  // resolved relations written (closure included)
  std::vector<std::string> tags;    // dependencies / invalidations, human-readable
  std::string error;           // parser message when kind == "error"

  // One line per field, for printing.
  std::string to_string() const;
};

}  // namespace qcache
