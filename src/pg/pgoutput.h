// Decoding of PostgreSQL's streaming-replication CopyData frames and of the pgoutput
// (protocol version 1) logical replication messages they carry.
//
// Thread safety: pure functions over the bytes given; safe from any thread.
//
// Every integer on the wire is big-endian. A frame is 'w' XLogData (int64 dataStart,
// int64 walEnd, int64 sendTime, then one pgoutput message) or 'k' keepalive (int64
// walEnd, int64 sendTime, byte replyRequested). pgoutput messages: B(egin), C(ommit),
// R(elation), Y(type), O(rigin), I(nsert), U(pdate), D(elete), T(runcate), M(essage).
// Anything malformed or unknown decodes as `bad` / `unknown`: the caller must then
// assume it missed a change (flush) rather than guess.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qcache::pg::pgoutput {

// One column value of a TupleData: 'n' null, 'u' unchanged TOAST (value not sent),
// 't' text, 'b' binary.
struct datum {
  char kind = 'n';
  std::string value;
};
using tuple = std::vector<datum>;

struct column {
  bool key = false;
  std::string name;
  std::uint32_t type = 0;
  std::int32_t typmod = -1;
};

enum class kind : std::uint8_t {
  bad,      // malformed: truncated, wrong lengths, trailing bytes
  unknown,  // a message type this decoder does not know
  begin,
  commit,
  relation,
  type,
  origin,
  insert,
  update,
  del,
  truncate,
  message,
};

struct message {
  kind k = kind::bad;
  // begin / commit
  std::uint64_t final_lsn = 0;   // begin: the commit's LSN
  std::uint64_t commit_lsn = 0;  // commit
  std::uint64_t end_lsn = 0;     // commit: end of the commit record
  std::int64_t commit_ts = 0;
  std::uint32_t xid = 0;  // begin
  // relation / insert / update / delete
  std::uint32_t relid = 0;
  std::string nspname, relname;
  char replident = 'd';
  std::vector<column> columns;
  // insert / update: the new row; update / delete: the old row when sent, with
  // old_kind 'K' (key columns only, others 'n') or 'O' (the whole old row).
  char old_kind = 0;
  tuple old_row, new_row;
  // truncate
  std::vector<std::uint32_t> relids;
  std::uint8_t truncate_options = 0;  // 1 CASCADE, 2 RESTART IDENTITY
  // message ('M')
  bool transactional = false;
  std::string prefix, content;
};

// Decodes one pgoutput message.
message parse(std::string_view bytes);

struct frame {
  char k = 0;  // 'w', 'k', or 0 when malformed or unknown
  std::uint64_t data_start = 0;
  std::uint64_t wal_end = 0;
  std::int64_t send_time = 0;
  bool reply_requested = false;  // keepalive
  std::string_view payload;      // XLogData: the pgoutput message (points into the input)
};

// Decodes one CopyData frame from the server.
frame parse_frame(std::string_view bytes);

// A standby status update ('r'): written/flushed/applied positions, the client's clock
// (microseconds since 2000-01-01), and whether the server should answer at once.
std::string status_update(std::uint64_t lsn, std::int64_t now_pg_us, bool reply_requested);

// "X/Y" as PostgreSQL prints an LSN, and back (nullopt when malformed).
std::string lsn_text(std::uint64_t lsn);
std::optional<std::uint64_t> parse_lsn(std::string_view s);

}  // namespace qcache::pg::pgoutput
