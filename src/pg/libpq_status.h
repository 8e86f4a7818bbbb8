// Thread safety: as the connection it reads, one thread at a time.
//
// pg::server_status read from a libpq connection: PQtransactionStatus and
// PQparameterStatus, which libpq updates from every response (no round trip). Header
// only, for the adapters (they link libpq; the engine does not).
#pragma once

#include <libpq-fe.h>

#include <utility>

#include "pg/engine.h"

namespace qcache::pg {

// `GetConn` returns the connection's current PGconn* (or nullptr): drivers may replace it
// when they reconnect.
template <class GetConn>
class libpq_status final : public server_status {
 public:
  explicit libpq_status(GetConn get) : get_(std::move(get)) {}

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

 private:
  GetConn get_;
};

}  // namespace qcache::pg
