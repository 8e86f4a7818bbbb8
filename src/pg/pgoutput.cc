// pgoutput v1 decoding (see pgoutput.h). A reader over the message bytes that fails
// closed: any read past the end marks the whole message bad.
#include "pg/pgoutput.h"

#include <charconv>
#include <cstdio>

namespace qcache::pg::pgoutput {
namespace {

class reader {
 public:
  explicit reader(std::string_view b) : b_(b) {}
  bool ok() const noexcept { return ok_; }
  bool at_end() const noexcept { return pos_ == b_.size(); }

  std::uint64_t u(int bytes) {
    if (!ok_ || b_.size() - pos_ < static_cast<std::size_t>(bytes)) return fail();
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(b_[pos_++]);
    return v;
  }
  std::uint8_t u8() { return static_cast<std::uint8_t>(u(1)); }
  std::uint16_t u16() { return static_cast<std::uint16_t>(u(2)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(u(4)); }
  std::uint64_t u64() { return u(8); }
  // A NUL-terminated string.
  std::string str() {
    if (!ok_) return {};
    std::size_t end = b_.find('\0', pos_);
    if (end == std::string_view::npos) return fail(), std::string();
    std::string s(b_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return s;
  }
  std::string bytes(std::size_t n) {
    if (!ok_ || b_.size() - pos_ < n) return fail(), std::string();
    std::string s(b_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  std::string_view rest() {
    std::string_view r = b_.substr(pos_);
    pos_ = b_.size();
    return r;
  }

 private:
  std::uint64_t fail() {
    ok_ = false;
    return 0;
  }
  std::string_view b_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

tuple read_tuple(reader& r) {
  tuple t;
  std::uint16_t n = r.u16();
  if (!r.ok()) return t;
  t.reserve(n);
  for (std::uint16_t i = 0; i < n && r.ok(); ++i) {
    datum d;
    d.kind = static_cast<char>(r.u8());
    if (d.kind == 't' || d.kind == 'b') {
      d.value = r.bytes(r.u32());
    } else if (d.kind != 'n' && d.kind != 'u') {
      r.u(1 << 30);  // unknown column kind: fail
    }
    t.push_back(std::move(d));
  }
  return t;
}

void read_relation(reader& r, message& m) {
  m.relid = r.u32();
  m.nspname = r.str();
  m.relname = r.str();
  m.replident = static_cast<char>(r.u8());
  std::uint16_t n = r.u16();
  for (std::uint16_t i = 0; i < n && r.ok(); ++i) {
    column c;
    c.key = (r.u8() & 1) != 0;
    c.name = r.str();
    c.type = r.u32();
    c.typmod = static_cast<std::int32_t>(r.u32());
    m.columns.push_back(std::move(c));
  }
}

// U and D: an optional ('K' or 'O') old tuple, then for U 'N' and the new tuple.
void read_change(reader& r, message& m, bool has_new, bool old_required) {
  m.relid = r.u32();
  char t = static_cast<char>(r.u8());
  if (t == 'K' || t == 'O') {
    m.old_kind = t;
    m.old_row = read_tuple(r);
    if (has_new) t = static_cast<char>(r.u8());
  } else if (old_required) {
    r.u(1 << 30);  // DELETE without its old key: fail
  }
  if (has_new) {
    if (t != 'N') r.u(1 << 30);
    m.new_row = read_tuple(r);
  }
}

}  // namespace

message parse(std::string_view bytes) {
  message m;
  if (bytes.empty()) return m;
  reader r(bytes.substr(1));
  switch (bytes[0]) {
    case 'B':
      m.k = kind::begin;
      m.final_lsn = r.u64();
      m.commit_ts = static_cast<std::int64_t>(r.u64());
      m.xid = r.u32();
      break;
    case 'C':
      m.k = kind::commit;
      r.u8();  // flags
      m.commit_lsn = r.u64();
      m.end_lsn = r.u64();
      m.commit_ts = static_cast<std::int64_t>(r.u64());
      break;
    case 'R':
      m.k = kind::relation;
      read_relation(r, m);
      break;
    case 'Y':
      m.k = kind::type;
      r.u32();
      r.str();
      r.str();
      break;
    case 'O':
      m.k = kind::origin;
      r.u64();
      r.str();
      break;
    case 'I': {
      m.k = kind::insert;
      m.relid = r.u32();
      if (r.u8() != 'N') r.u(1 << 30);
      m.new_row = read_tuple(r);
      break;
    }
    case 'U':
      m.k = kind::update;
      read_change(r, m, true, false);
      break;
    case 'D':
      m.k = kind::del;
      read_change(r, m, false, true);
      break;
    case 'T': {
      m.k = kind::truncate;
      std::uint32_t n = r.u32();
      m.truncate_options = r.u8();
      for (std::uint32_t i = 0; i < n && r.ok(); ++i) m.relids.push_back(r.u32());
      break;
    }
    case 'M':
      m.k = kind::message;
      m.transactional = (r.u8() & 1) != 0;
      r.u64();
      m.prefix = r.str();
      m.content = r.bytes(r.u32());
      break;
    default:
      m.k = kind::unknown;
      return m;
  }
  if (!r.ok() || !r.at_end()) m.k = kind::bad;
  return m;
}

frame parse_frame(std::string_view bytes) {
  frame f;
  if (bytes.empty()) return f;
  reader r(bytes.substr(1));
  if (bytes[0] == 'w') {
    f.data_start = r.u64();
    f.wal_end = r.u64();
    f.send_time = static_cast<std::int64_t>(r.u64());
    f.payload = r.rest();
    if (r.ok()) f.k = 'w';
  } else if (bytes[0] == 'k') {
    f.wal_end = r.u64();
    f.send_time = static_cast<std::int64_t>(r.u64());
    f.reply_requested = r.u8() != 0;
    if (r.ok() && r.at_end()) f.k = 'k';
  }
  return f;
}

std::string status_update(std::uint64_t lsn, std::int64_t now_pg_us, bool reply_requested) {
  std::string b(34, '\0');
  b[0] = 'r';
  auto put = [&b](std::size_t at, std::uint64_t v) {
    for (int i = 7; i >= 0; --i, v >>= 8)
      b[at + static_cast<std::size_t>(i)] = static_cast<char>(v & 0xff);
  };
  put(1, lsn);
  put(9, lsn);
  put(17, lsn);
  put(25, static_cast<std::uint64_t>(now_pg_us));
  b[33] = reply_requested ? 1 : 0;
  return b;
}

std::string lsn_text(std::uint64_t lsn) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%X/%X", static_cast<unsigned>(lsn >> 32),
                static_cast<unsigned>(lsn & 0xffffffffu));
  return buf;
}

std::optional<std::uint64_t> parse_lsn(std::string_view s) {
  auto slash = s.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == s.size()) return std::nullopt;
  std::uint32_t hi = 0, lo = 0;
  auto a = std::from_chars(s.data(), s.data() + slash, hi, 16);
  auto b = std::from_chars(s.data() + slash + 1, s.data() + s.size(), lo, 16);
  if (a.ec != std::errc() || a.ptr != s.data() + slash || b.ec != std::errc() ||
      b.ptr != s.data() + s.size())
    return std::nullopt;
  return (std::uint64_t{hi} << 32) | lo;
}

}  // namespace qcache::pg::pgoutput
