// Thread safety: as the connection it reads, one thread at a time.
//
// pg::server_status read from a libpq connection: PQtransactionStatus and
// PQparameterStatus, which libpq updates from every response (no round trip). Header
// only, for the adapters (they link libpq; the engine does not).
#pragma once

#include <libpq-fe.h>

#include <string>
#include <utility>

#include "pg/engine.h"
#include "pg/stream.h"

namespace qcache::pg {

// `GetConn` returns the connection's current PGconn* (or nullptr): drivers may replace it
// when they reconnect.
template <class GetConn>
class libpq_status final : public server_status {
 public:
  explicit libpq_status(GetConn get) : get_(std::move(get)) {
    install_follower_factory(&make_follower);  // the engine's change streams use libpq
  }

  char transaction() const noexcept override {
    PGconn* c = get_();
    if (!c) return '?';
    switch (PQtransactionStatus(c)) {
      case PQTRANS_IDLE:
        return 'I';
      case PQTRANS_INTRANS:
        return 'T';
      case PQTRANS_INERROR:
        return 'E';
      default:
        return '?';  // a command in progress, or a broken connection
    }
  }
  const char* parameter(const char* name) const noexcept override {
    PGconn* c = get_();
    return c ? PQparameterStatus(c, name) : nullptr;
  }
  std::string conninfo() const override {
    PGconn* c = get_();
    if (!c) return {};
    PQconninfoOption* opts = PQconninfo(c);
    if (!opts) return {};
    std::string out;
    for (PQconninfoOption* o = opts; o->keyword; ++o) {
      if (!o->val || !*o->val) continue;
      std::string k = o->keyword;
      // Not for the stream's own connections: a replication or pinned-options setting.
      if (k == "replication" || k == "application_name" || k == "fallback_application_name")
        continue;
      out += (out.empty() ? "" : " ") + k + "='";
      for (const char* v = o->val; *v; ++v) {
        if (*v == '\\' || *v == '\'') out += '\\';
        out += *v;
      }
      out += '\'';
    }
    PQconninfoFree(opts);
    return out;
  }

 private:
  GetConn get_;
};

}  // namespace qcache::pg
