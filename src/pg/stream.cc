// The change-stream follower (stream.h).
//
// Invariants:
//  * a transaction's tags move at its Commit, all at once (feed::apply), after the commit
//    was recorded in the ring;
//  * anything not understood (an unknown relation, a malformed or unknown message, a
//    relation whose columns changed) moves tags::database: a flush of the database;
//  * the feed is up only between a successful START_REPLICATION (preceded by a database
//    tag move, after the slot existed) and the first sign of loss.
#include "pg/stream.h"

#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace qcache::pg {
namespace {

using pgoutput::kind;
using pgoutput::message;
using clock_type = std::chrono::steady_clock;

std::int64_t pg_now_us() {
  using namespace std::chrono;
  auto us = duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
  return us - 946684800LL * 1000000;
}

// The application connection's settings plus `extra` (replication, encoding, name). Its
// `options` are replaced (a later keyword wins): the follower's connections must not
// inherit the application's lock_timeout or statement_timeout, since creating a slot waits
// for every open write transaction (a timeout there failed the application's connect).
std::string conninfo_with(const std::string& base, const std::string& extra) {
  return base + (base.empty() ? "" : " ") +
         "options='-c lock_timeout=0 -c statement_timeout=0 "
         "-c idle_in_transaction_session_timeout=0' " +
         extra;
}

std::string quote_ident(const std::string& s) {
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

struct pg_conn {
  PGconn* c = nullptr;
  ~pg_conn() { reset(); }
  void reset() {
    if (c) PQfinish(c);
    c = nullptr;
  }
};

struct pg_result {
  PGresult* r = nullptr;
  explicit pg_result(PGresult* x) : r(x) {}
  ~pg_result() {
    if (r) PQclear(r);
  }
  pg_result(const pg_result&) = delete;
  pg_result& operator=(const pg_result&) = delete;
  bool ok(ExecStatusType want = PGRES_TUPLES_OK) const { return r && PQresultStatus(r) == want; }
  std::string text(int row, int col) const { return PQgetvalue(r, row, col); }
  std::string error() const { return r ? PQresultErrorMessage(r) : "no result"; }
  std::string sqlstate() const {
    const char* s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    return s ? s : "";
  }
};

// Runs catalog queries on a plain connection (catalog.h's query_fn).
query_fn runner_on(PGconn* c) {
  return [c](const std::string& q) {
    pg_result r(PQexec(c, q.c_str()));
    if (!r.ok() && !r.ok(PGRES_COMMAND_OK))
      throw std::runtime_error("qcache: stream catalog query: " + r.error());
    std::vector<row> rows;
    for (int i = 0; i < PQntuples(r.r); ++i) {
      row x;
      for (int j = 0; j < PQnfields(r.r); ++j) {
        if (PQgetisnull(r.r, i, j))
          x.emplace_back(std::nullopt);
        else
          x.emplace_back(
              std::string(PQgetvalue(r.r, i, j), static_cast<std::size_t>(PQgetlength(r.r, i, j))));
      }
      rows.push_back(std::move(x));
    }
    return rows;
  };
}

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error("qcache: follow_changes: " + what +
                           " (or set qcache::options::follow_changes = false)");
}

// ---- Checks at the first connection ------------------------------------------------

// Tables a FOR ALL TABLES publication would make UPDATE/DELETE fail on.
std::vector<std::string> tables_without_identity(PGconn* c) {
  pg_result r(PQexec(
      c,
      "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
      "WHERE c.relkind IN ('r','p') AND c.relpersistence = 'p' "
      "AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
      "AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i "
      "WHERE i.indrelid = c.oid AND i.indisprimary)) OR (c.relreplident = 'i' AND NOT EXISTS "
      "(SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))) ORDER BY 1"));
  std::vector<std::string> out;
  if (!r.ok()) fail("could not list tables: " + r.error());
  for (int i = 0; i < PQntuples(r.r); ++i) out.push_back(r.text(i, 0));
  return out;
}

// One row, true when publication $1 carries every change of every table.
const char* const q_publication_covers_all =
    "SELECT puballtables AND pubinsert AND pubupdate AND pubdelete AND pubtruncate "
    "FROM pg_publication WHERE pubname = $1";

// Why the publication no longer carries every change (another client dropped, replaced or
// altered it: the walsender then silently leaves changes out), or empty when it does.
std::string publication_problem(PGconn* c, const std::string& pub) {
  const char* params[1] = {pub.c_str()};
  pg_result r(PQexecParams(c, q_publication_covers_all, 1, nullptr, params, nullptr, nullptr, 0));
  if (!r.ok()) return "could not read pg_publication: " + r.error();
  if (PQntuples(r.r) != 1) return "publication \"" + pub + "\" does not exist";
  if (r.text(0, 0) != "t")
    return "publication \"" + pub + "\" no longer publishes every change of every table";
  return {};
}

void ensure_publication(PGconn* c, const std::string& pub, bool superuser,
                        const std::string& role) {
  const char* params[1] = {pub.c_str()};
  pg_result r(PQexecParams(c, q_publication_covers_all, 1, nullptr, params, nullptr, nullptr, 0));
  if (!r.ok()) fail("could not read pg_publication: " + r.error());
  if (PQntuples(r.r) == 1) {
    if (r.text(0, 0) != "t")
      fail("publication \"" + pub +
           "\" must be FOR ALL TABLES and publish insert, update, "
           "delete and truncate (writes to tables it leaves out would never invalidate); "
           "drop it or name another with qcache::options::publication");
    return;
  }
  std::string create = "CREATE PUBLICATION " + quote_ident(pub) + " FOR ALL TABLES";
  if (!superuser)
    fail("publication \"" + pub + "\" does not exist and role \"" + role +
         "\" cannot create it: as a superuser run " + create);
  std::vector<std::string> bad = tables_without_identity(c);
  if (!bad.empty()) {
    std::string list;
    for (const auto& t : bad) list += (list.empty() ? "" : ", ") + t;
    fail("publication \"" + pub +
         "\" does not exist, and creating it FOR ALL TABLES would make "
         "UPDATE and DELETE fail on these tables, which have no primary key or replica identity: " +
         list + ". Give them a primary key or REPLICA IDENTITY FULL, then reconnect (or run " +
         create + " yourself)");
  }
  pg_result x(PQexec(c, create.c_str()));
  if (!x.ok(PGRES_COMMAND_OK) && x.sqlstate() != "42710")  // 42710: created meanwhile
    fail("could not create the publication: " + x.error());
}

void check_server(PGconn* c, const std::string& pub) {
  pg_result r(PQexec(
      c,
      "SELECT current_setting('wal_level'), "
      "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), "
      "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user), current_user, "
      "current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication), "
      "current_setting('max_replication_slots')::int - (SELECT count(*) FROM "
      "pg_replication_slots)"));
  if (!r.ok() || PQntuples(r.r) != 1) fail("could not read the server's settings: " + r.error());
  std::string wal_level = r.text(0, 0), role = r.text(0, 3);
  if (wal_level != "logical")
    fail("wal_level is '" + wal_level +
         "', not 'logical': set wal_level = logical in "
         "postgresql.conf and restart PostgreSQL");
  if (r.text(0, 1) != "t")
    fail("role \"" + role + "\" has no REPLICATION privilege: as a superuser run ALTER ROLE " +
         quote_ident(role) + " REPLICATION");
  if (std::atoi(r.text(0, 4).c_str()) <= 0)
    fail(
        "no free wal sender (max_wal_senders is used up): raise max_wal_senders in "
        "postgresql.conf and restart (each cache following a database takes one)");
  if (std::atoi(r.text(0, 5).c_str()) <= 0)
    fail(
        "no free replication slot (max_replication_slots is used up): raise "
        "max_replication_slots in postgresql.conf and restart (each cache following a "
        "database takes one)");
  ensure_publication(c, pub, r.text(0, 2) == "t", role);
}

}  // namespace

// ---- Tags of one change ------------------------------------------------------------

namespace {

// The canonical old and new values of column `idx` (class `cls`); false when unknown.
bool change_values(const message& m, const message& rel, std::size_t idx, char cls,
                   stream_schema& s, std::vector<std::string>& out) {
  auto add = [&](const pgoutput::datum& d) {
    if (d.kind == 'n') return true;  // NULL = v is never true: no read saw this row
    if (d.kind != 't') return false;
    auto cv = s.canonical(cls, d.value);
    if (!cv) return false;
    out.push_back(std::move(*cv));
    return true;
  };
  bool is_key = rel.columns[idx].key;
  bool has_old = m.old_kind != 0 && idx < m.old_row.size();
  // The old value.
  if (m.k == kind::update || m.k == kind::del) {
    if (m.old_kind == 'O' && has_old) {
      if (!add(m.old_row[idx])) return false;
    } else if (m.old_kind == 'K' && has_old && is_key) {
      if (!add(m.old_row[idx])) return false;
    } else if (m.k == kind::update && m.old_kind == 0 && is_key && rel.replident != 'f') {
      // No old key sent: the replica identity did not change, so the old value of a key
      // column is the new one (added below).
    } else {
      return false;
    }
  }
  if (m.k == kind::insert || m.k == kind::update) {
    if (idx >= m.new_row.size()) return false;
    const pgoutput::datum& d = m.new_row[idx];
    if (d.kind == 'u') {
      // Unchanged TOAST: the value is the old one, named above only when 'O' sent it.
      return m.old_kind == 'O' && has_old && m.old_row[idx].kind == 't';
    }
    if (!add(d)) return false;
  }
  return true;
}

}  // namespace

void change_tags(const message& m, const message* rel, stream_schema& s,
                 std::vector<tags::tag>& out) {
  const std::string& ts = s.tag_space();
  if (!rel || !s.knows(m.relid)) {
    out.push_back(tags::database(ts));
    s.mark_catalog_stale();
    return;
  }
  std::string id = std::to_string(m.relid);
  out.push_back(tags::table(ts, id));
  for (std::uint32_t f : s.family(m.relid)) {
    out.push_back(tags::table(ts, std::to_string(f)));
    out.push_back(tags::table_epoch(ts, std::to_string(f)));
  }
  for (const std::string& c : s.predicate_columns(m.relid)) {
    auto it = std::find_if(rel->columns.begin(), rel->columns.end(),
                           [&](const pgoutput::column& x) { return x.name == c; });
    char cls = s.column_class(m.relid, c);
    std::vector<std::string> values;
    bool known =
        it != rel->columns.end() &&
        change_values(m, *rel, static_cast<std::size_t>(it - rel->columns.begin()), cls, s, values);
    if (!known)
      out.push_back(tags::column_epoch(ts, id, c));
    else
      for (const std::string& v : values) out.push_back(tags::predicate(ts, id, c, v));
  }
}

// ---- The follower thread -----------------------------------------------------------

namespace {

std::atomic<std::uint64_t> g_slot_serial{0};

class follower final : public feed {
 public:
  follower(const follow_request& r)
      : feed(r.owner, r.schema), conninfo_(r.conninfo), publication_(r.publication) {
    if (::pipe(wake_fd_) != 0) throw std::runtime_error("qcache: follow_changes: pipe() failed");
    wake = [fd = wake_fd_[1]] { [[maybe_unused]] auto n = ::write(fd, "x", 1); };
  }
  ~follower() override {
    stop_.store(true);
    wake();
    if (thread_.joinable()) thread_.join();
    ::close(wake_fd_[0]);
    ::close(wake_fd_[1]);
  }

  void start() {
    thread_ = std::thread([this] { run(); });
  }

  std::optional<std::uint64_t> current_lsn() noexcept override {
    std::lock_guard lock(lsn_mu_);
    if (!lsn_conn_.c || PQstatus(lsn_conn_.c) != CONNECTION_OK) {
      lsn_conn_.reset();
      lsn_conn_.c = PQconnectdb(conninfo_with(conninfo_, "application_name=qcache_lsn").c_str());
      if (PQstatus(lsn_conn_.c) != CONNECTION_OK) return std::nullopt;
    }
    pg_result r(PQexec(lsn_conn_.c, "SELECT pg_catalog.pg_current_wal_lsn()::text"));
    if (!r.ok() || PQntuples(r.r) != 1) return std::nullopt;
    return pgoutput::parse_lsn(r.text(0, 0));
  }

  // Waits until the stream is up, the first attempt failed, or `limit` passed. Returns
  // the first attempt's error, if it failed.
  std::string wait_started(std::chrono::milliseconds limit) {
    std::unique_lock lock(start_mu_);
    start_cv_.wait_for(lock, limit, [&] { return started_ || !first_error_.empty(); });
    return started_ ? std::string() : first_error_;
  }

 private:
  void run();
  bool connect();                   // slot + START_REPLICATION; false (with error_) on failure
  void stream();                    // until loss or stop
  bool handle(std::string_view b);  // one CopyData; false: loss
  void on_message(const message& m);
  void learn(std::uint32_t relid);  // refreshes the catalog once for an unknown relation
  void resolve_unknown();           // at Commit: see unknown_
  bool wait_visible(std::uint32_t xid32, std::chrono::milliseconds limit);
  void confirm_visibility();
  bool send_status(bool reply);
  void lost(const std::string& why);
  void forget_history_if_other(const std::string& systemid, const std::string& timeline,
                               std::uint64_t consistent_point);
  void report_start(const std::string& error);
  std::optional<PGresult*> exec_interruptible(PGconn* c, const std::string& q);

  std::string conninfo_, publication_;
  int wake_fd_[2] = {-1, -1};
  std::thread thread_;
  std::atomic<bool> stop_{false};
  pg_conn repl_, plain_;
  std::mutex lsn_mu_;  // lsn_conn_, used by application threads (current_lsn)
  pg_conn lsn_conn_;
  std::string slot_, error_;
  // The system and timeline of the last stream that went up: the history the ring's
  // xids belong to.
  std::string systemid_;
  std::string timeline_;
  // The current transaction.
  bool in_txn_ = false;
  std::uint32_t xid_ = 0;
  std::vector<tags::tag> txn_tags_;
  // Relations of the current transaction the catalog did not know even after learn():
  // resolved at its Commit, once the commit is visible (resolve_unknown).
  std::vector<std::uint32_t> unknown_;
  std::unordered_set<std::uint32_t> resolved_for_;  // refreshed for once visible
  std::unordered_set<std::uint32_t> ever_known_;    // relations whose changes were tagged
  std::unordered_set<std::uint32_t> dropped_;       // unknown once visible, never known
  std::unordered_map<std::uint32_t, message> relations_;
  std::unordered_set<std::uint32_t> refreshed_for_;
  std::uint64_t confirmed_lsn_ = 0;  // what status updates report
  clock_type::time_point last_received_, last_status_;
  clock_type::time_point last_publication_check_;
  std::mutex start_mu_;
  std::condition_variable start_cv_;
  bool started_ = false;
  std::string first_error_;
  bool first_done_ = false;
};

void follower::report_start(const std::string& error) {
  if (first_done_) return;
  first_done_ = true;
  std::lock_guard lock(start_mu_);
  if (error.empty())
    started_ = true;
  else
    first_error_ = error;
  start_cv_.notify_all();
}

void follower::run() {
  auto backoff = std::chrono::milliseconds(50);
  // Until stopped, or until the cache is gone (feed.h: the registry then drops the feed).
  while (!stop_.load() && !orphaned()) {
    if (connect()) {
      report_start({});
      backoff = std::chrono::milliseconds(50);
      stream();
      continue;
    }
    report_start(error_.empty() ? "could not start the stream" : error_);
    go_down();
    repl_.reset();
    plain_.reset();
    // Backoff, interruptible by stop.
    pollfd p{wake_fd_[0], POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(backoff.count()));
    char buf[64];
    if (p.revents & POLLIN) [[maybe_unused]]
      auto n = ::read(wake_fd_[0], buf, sizeof buf);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
  }
  go_down();
  // Orphaned: the slot (temporary) and the wal sender go now, not when the registry drops
  // this feed.
  repl_.reset();
  plain_.reset();
  std::lock_guard lock(lsn_mu_);
  lsn_conn_.reset();
}

// Runs `q` on `c` without blocking the stop flag for long (CREATE_REPLICATION_SLOT waits
// for every open write transaction). nullopt when stopped or the connection broke.
std::optional<PGresult*> follower::exec_interruptible(PGconn* c, const std::string& q) {
  if (!PQsendQuery(c, q.c_str())) return std::nullopt;
  PGresult* last = nullptr;
  while (true) {
    while (!PQisBusy(c)) {
      PGresult* r = PQgetResult(c);
      if (!r) return last ? std::optional<PGresult*>(last) : std::nullopt;
      if (last) PQclear(last);
      last = r;
      if (PQresultStatus(r) == PGRES_COPY_BOTH) return last;
    }
    pollfd p[2] = {{PQsocket(c), POLLIN, 0}, {wake_fd_[0], POLLIN, 0}};
    ::poll(p, 2, 100);
    if (stop_.load()) {
      if (last) PQclear(last);
      return std::nullopt;
    }
    if (p[1].revents & POLLIN) {
      char buf[64];
      [[maybe_unused]] auto n = ::read(wake_fd_[0], buf, sizeof buf);
    }
    if (!PQconsumeInput(c)) {
      if (last) PQclear(last);
      return std::nullopt;
    }
  }
}

bool follower::connect() {
  error_.clear();
  relations_.clear();
  refreshed_for_.clear();
  in_txn_ = false;
  txn_tags_.clear();
  unknown_.clear();
  resolved_for_.clear();
  dropped_.clear();
  plain_.c = PQconnectdb(conninfo_with(conninfo_, "application_name=qcache_confirm").c_str());
  if (PQstatus(plain_.c) != CONNECTION_OK) {
    error_ = std::string("could not connect: ") + PQerrorMessage(plain_.c);
    return false;
  }
  // The publication may have changed since the first connection (checked there): a slot
  // on one that leaves tables out would serve their rows stale.
  error_ = publication_problem(plain_.c, publication_);
  if (!error_.empty()) return false;
  last_publication_check_ = clock_type::now();
  repl_.c = PQconnectdb(
      conninfo_with(conninfo_,
                    "replication=database client_encoding=UTF8 application_name=qcache_stream")
          .c_str());
  if (PQstatus(repl_.c) != CONNECTION_OK) {
    error_ = std::string("could not open the replication connection: ") + PQerrorMessage(repl_.c);
    return false;
  }
  std::string systemid, timeline;
  {
    pg_result id(PQexec(repl_.c, "IDENTIFY_SYSTEM"));
    if (!id.ok() || PQntuples(id.r) != 1) {
      error_ = "IDENTIFY_SYSTEM failed: " + id.error();
      return false;
    }
    systemid = id.text(0, 0);
    timeline = id.text(0, 1);
  }
  slot_ = "qcache_" + std::to_string(::getpid()) + "_" + std::to_string(++g_slot_serial);
  auto r = exec_interruptible(repl_.c, "CREATE_REPLICATION_SLOT " + slot_ +
                                           " TEMPORARY LOGICAL pgoutput (SNAPSHOT 'nothing')");
  if (!r) {
    error_ = std::string("could not create the replication slot: ") + PQerrorMessage(repl_.c);
    return false;
  }
  std::optional<std::uint64_t> consistent_point;
  {
    pg_result slot(*r);
    if (!slot.ok() || PQntuples(slot.r) != 1) {
      error_ = "could not create the replication slot: " + slot.error();
      return false;
    }
    consistent_point = pgoutput::parse_lsn(slot.text(0, 1));
    if (!consistent_point) {
      error_ = "the new slot's consistent point is unreadable: " + slot.text(0, 1);
      return false;
    }
  }
  // Every change before the slot's consistent point is unknowable: flush. Positions count
  // from that point, whatever the previous stream reached (another system or timeline
  // may be behind it): status updates and sync() see only this server's WAL.
  go_down();
  forget_history_if_other(systemid, timeline, *consistent_point);
  confirmed_lsn_ = *consistent_point;
  restart_processed(*consistent_point);
  std::string start = "START_REPLICATION SLOT " + slot_ +
                      " LOGICAL 0/0 (proto_version '1', publication_names '" +
                      quote_ident(publication_) + "')";
  auto s = exec_interruptible(repl_.c, start);
  if (!s) {
    error_ = std::string("START_REPLICATION failed: ") + PQerrorMessage(repl_.c);
    return false;
  }
  pg_result started(*s);
  if (!started.ok(PGRES_COPY_BOTH)) {
    error_ = "START_REPLICATION failed: " + started.error();
    return false;
  }
  PQsetnonblocking(repl_.c, 1);
  last_received_ = last_status_ = clock_type::now();
  go_up();
  return true;
}

// Another history answers (another system, a new timeline after a failover or a
// restore, or WAL behind what was processed: a copy of the data directory): the
// unconfirmed commits of the old one will never become visible here, and their xids mean
// other transactions, or none. Waiting for them would refuse every store of their tags,
// and hold back every later commit's confirmation, until this server's xids pass them.
// They are confirmed: the database tag has moved since they were applied, and any read
// from now on comes from this history.
void follower::forget_history_if_other(const std::string& systemid, const std::string& timeline,
                                       std::uint64_t consistent_point) {
  bool other = !systemid_.empty() &&
               (systemid != systemid_ || timeline != timeline_ || consistent_point < processed());
  if (other) confirm(applied());
  systemid_ = systemid;
  timeline_ = timeline;
}

void follower::lost(const std::string& why) {
  error_ = why;
  go_down();
  repl_.reset();
  plain_.reset();
}

bool follower::send_status(bool reply) {
  std::string b = pgoutput::status_update(confirmed_lsn_, pg_now_us(), reply);
  if (PQputCopyData(repl_.c, b.data(), static_cast<int>(b.size())) != 1) return false;
  if (PQflush(repl_.c) < 0) return false;
  last_status_ = clock_type::now();
  return true;
}

void follower::stream() {
  using namespace std::chrono;
  while (!stop_.load() && !orphaned()) {
    // Drain what arrived.
    while (true) {
      char* buf = nullptr;
      int n = PQgetCopyData(repl_.c, &buf, 1);
      if (n > 0) {
        bool ok = handle(std::string_view(buf, static_cast<std::size_t>(n)));
        PQfreemem(buf);
        if (!ok) return;
        continue;
      }
      if (n == 0) break;
      // -1: the server ended the stream; -2: an error (server gone, slot dropped...).
      return lost(std::string("stream ended: ") + PQerrorMessage(repl_.c));
    }
    if (!in_txn_ && applied() > 0 && !unconfirmed().empty()) confirm_visibility();
    if (!plain_.c) return lost(error_);
    if (lost_wanted.exchange(false)) return lost("sync() timed out");
    auto now = clock_type::now();
    if (now - last_publication_check_ > seconds(1)) {  // changed while streaming
      std::string problem = publication_problem(plain_.c, publication_);
      if (!problem.empty()) return lost(problem);
      last_publication_check_ = now;
    }
    bool reply = reply_wanted.exchange(false);
    if (now - last_received_ > silence_limit) return lost("no reply from the server");
    if (reply || now - last_status_ > seconds(1)) {
      if (!send_status(true))
        return lost(std::string("status update failed: ") + PQerrorMessage(repl_.c));
    }
    int wait_ms = unconfirmed().empty() ? 200 : 1;
    pollfd p[2] = {{PQsocket(repl_.c), POLLIN, 0}, {wake_fd_[0], POLLIN, 0}};
    ::poll(p, 2, wait_ms);
    if (p[1].revents & POLLIN) {
      char b[64];
      [[maybe_unused]] auto n = ::read(wake_fd_[0], b, sizeof b);
    }
    if (!PQconsumeInput(repl_.c))
      return lost(std::string("stream lost: ") + PQerrorMessage(repl_.c));
  }
}

bool follower::handle(std::string_view b) {
  last_received_ = clock_type::now();
  pgoutput::frame f = pgoutput::parse_frame(b);
  if (f.k == 'k') {
    if (!in_txn_) {
      confirmed_lsn_ = std::max(confirmed_lsn_, f.wal_end);
      set_processed(f.wal_end);
    }
    if (f.reply_requested && !send_status(false)) {
      lost("status update failed");
      return false;
    }
    return true;
  }
  if (f.k != 'w') {
    lost("unknown replication frame");
    return false;
  }
  on_message(pgoutput::parse(f.payload));
  return true;
}

void follower::on_message(const message& m) {
  stream_schema& s = schema();
  const std::string& ts = s.tag_space();
  switch (m.k) {
    case kind::begin:
      in_txn_ = true;
      xid_ = m.xid;
      txn_tags_.clear();
      unknown_.clear();
      return;
    case kind::commit:
      if (!unknown_.empty()) resolve_unknown();
      apply(xid_, std::move(txn_tags_));
      txn_tags_.clear();
      in_txn_ = false;
      confirmed_lsn_ = std::max(confirmed_lsn_, m.end_lsn);
      set_processed(m.end_lsn);
      return;
    case kind::relation: {
      // A relation whose shape changed (external DDL): what the catalog says of it may be
      // out of date. Flush and reload rather than guess.
      auto it = relations_.find(m.relid);
      if (it != relations_.end()) {
        bool same = it->second.columns.size() == m.columns.size();
        for (std::size_t i = 0; same && i < m.columns.size(); ++i)
          same = it->second.columns[i].name == m.columns[i].name &&
                 it->second.columns[i].type == m.columns[i].type;
        if (!same) {
          s.mark_catalog_stale();
          txn_tags_.push_back(tags::database(ts));
        }
      }
      relations_[m.relid] = m;
      return;
    }
    case kind::insert:
    case kind::update:
    case kind::del: {
      learn(m.relid);
      auto it = relations_.find(m.relid);
      if (it != relations_.end() && !s.knows(m.relid)) {
        unknown_.push_back(m.relid);
        return;
      }
      ever_known_.insert(m.relid);
      change_tags(m, it == relations_.end() ? nullptr : &it->second, s, txn_tags_);
      return;
    }
    case kind::truncate:
      for (std::uint32_t r : m.relids) {
        learn(r);
        if (!s.knows(r)) {
          unknown_.push_back(r);
          continue;
        }
        ever_known_.insert(r);
        txn_tags_.push_back(tags::table(ts, std::to_string(r)));
        txn_tags_.push_back(tags::table_epoch(ts, std::to_string(r)));
        for (std::uint32_t f : s.family(r)) {
          txn_tags_.push_back(tags::table(ts, std::to_string(f)));
          txn_tags_.push_back(tags::table_epoch(ts, std::to_string(f)));
        }
      }
      return;
    case kind::type:
    case kind::origin:
    case kind::message:
      return;
    case kind::bad:
    case kind::unknown:
      if (in_txn_) {
        txn_tags_.push_back(tags::database(ts));
      } else {
        apply(0, {tags::database(ts)});
      }
      return;
  }
}

// A relation the catalog does not know (created by another client or process since it
// was read): read the catalog again, once per relation and connection, rather than flush
// the database at each of its commits. Still unknown afterwards: change_tags flushes.
void follower::learn(std::uint32_t relid) {
  stream_schema& s = schema();
  if (s.knows(relid) || !plain_.c || !refreshed_for_.insert(relid).second) return;
  try {
    s.refresh(runner_on(plain_.c));
  } catch (...) {  // unknown it stays: its changes flush the database
  }
}

namespace {
// Whether snapshot text `snap` (xmin:xmax:xip,...) sees the commit of 32-bit `xid32`. The
// commit is recent: its full xid is within 2^31 of xmax, below it or (not yet completed
// in the proc array) at or above.
bool snapshot_sees(const std::string& snap, std::uint32_t xid32) {
  auto c1 = snap.find(':'), c2 = snap.find(':', c1 + 1);
  if (c1 == std::string::npos || c2 == std::string::npos) return false;
  std::uint64_t xmin = std::strtoull(snap.substr(0, c1).c_str(), nullptr, 10);
  std::uint64_t xmax = std::strtoull(snap.substr(c1 + 1, c2 - c1 - 1).c_str(), nullptr, 10);
  std::uint64_t xid = (xmax & ~std::uint64_t{0xffffffff}) | xid32;
  if (xid > xmax + (std::uint64_t{1} << 31) && xid >= (std::uint64_t{1} << 32))
    xid -= std::uint64_t{1} << 32;
  else if (xid + (std::uint64_t{1} << 31) < xmax)
    xid += std::uint64_t{1} << 32;
  if (xid < xmin) return true;
  if (xid >= xmax) return false;
  std::string needle = std::to_string(xid);
  for (std::size_t i = c2 + 1; i < snap.size();) {
    std::size_t j = std::min(snap.find(',', i), snap.size());
    if (snap.compare(i, j - i, needle) == 0) return false;
    i = j + 1;
  }
  return true;
}
}  // namespace

// Relations the catalog did not know when their changes were decoded: tables created by
// other clients (tests, migrations, staging tables), often filled in the same transaction,
// whose creation the refresh in learn() could not see yet (a commit is decoded before it
// is visible). So wait (briefly) until this commit is visible and read the catalog again:
//  * a relation known now moves its table tags and its family's (its ancestors' reads
//    include its rows);
//  * one still unknown was dropped by a commit visible now. If this stream never saw it
//    known, its changes are skipped: no entry depends on its own tags (every plan that
//    named it was built with a catalog that did not know it, so it ran uncached), and
//    an ancestor's reads could only include its rows while it existed, between this
//    commit and the DROP, which is a schema change made outside qcache (README: not
//    seen) and already visible. One it saw known before (entries may be older than
//    that catalog) and a commit that did not become visible within the wait flush the
//    database, as before.
void follower::resolve_unknown() {
  stream_schema& s = schema();
  std::sort(unknown_.begin(), unknown_.end());
  unknown_.erase(std::unique(unknown_.begin(), unknown_.end()), unknown_.end());
  // A catalog read once per relation and stream connection (a relation the catalog never
  // loads would otherwise cost one at each commit).
  std::vector<std::uint32_t> fresh;
  for (std::uint32_t r : unknown_)
    if (!dropped_.count(r) && resolved_for_.insert(r).second) fresh.push_back(r);
  bool refreshed = false;
  if (!fresh.empty() && wait_visible(xid_, std::chrono::milliseconds(1000))) {
    try {
      s.refresh(runner_on(plain_.c));
      refreshed = true;
    } catch (...) {
    }
  }
  for (std::uint32_t r : unknown_) {
    if (s.knows(r)) {
      ever_known_.insert(r);
      std::string id = std::to_string(r);
      txn_tags_.push_back(tags::table(s.tag_space(), id));
      txn_tags_.push_back(tags::table_epoch(s.tag_space(), id));
      for (std::uint32_t f : s.family(r)) {
        txn_tags_.push_back(tags::table(s.tag_space(), std::to_string(f)));
        txn_tags_.push_back(tags::table_epoch(s.tag_space(), std::to_string(f)));
      }
      continue;
    }
    bool is_fresh = std::find(fresh.begin(), fresh.end(), r) != fresh.end();
    if (!dropped_.count(r) && refreshed && is_fresh && !ever_known_.count(r)) dropped_.insert(r);
    if (dropped_.count(r)) continue;
    s.mark_catalog_stale();
    txn_tags_.push_back(tags::database(s.tag_space()));
    break;
  }
  unknown_.clear();
}

// Polls pg_current_snapshot() on the plain connection until it sees `xid32` committed.
bool follower::wait_visible(std::uint32_t xid32, std::chrono::milliseconds limit) {
  auto deadline = clock_type::now() + limit;
  while (plain_.c && !stop_.load()) {
    pg_result r(PQexec(plain_.c, "SELECT pg_current_snapshot()::text"));
    if (!r.ok() || PQntuples(r.r) != 1) return false;
    if (snapshot_sees(r.text(0, 0), xid32)) return true;
    if (clock_type::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return false;
}

// One pg_current_snapshot() on the plain connection confirms every applied commit it
// sees (xid < xmin, or < xmax and not in xip), in seq order up to the first it does not.
void follower::confirm_visibility() {
  auto pending = unconfirmed();
  if (pending.empty()) return;
  // Only commits without tags (own ones): nothing to ask the server.
  std::uint64_t tagless = 0;
  for (const auto& [seq, xid32] : pending) {
    if (xid32 != 0) break;
    tagless = seq;
  }
  if (tagless == pending.back().first) return confirm(tagless);
  pg_result r(PQexec(plain_.c, "SELECT pg_current_snapshot()::text"));
  if (!r.ok() || PQntuples(r.r) != 1) {
    error_ = "visibility check failed: " + r.error();
    plain_.reset();
    return;
  }
  std::string snap = r.text(0, 0);  // xmin:xmax:xip,xip,...
  auto c1 = snap.find(':'), c2 = snap.find(':', c1 + 1);
  std::uint64_t xmin = std::strtoull(snap.substr(0, c1).c_str(), nullptr, 10);
  std::uint64_t xmax = std::strtoull(snap.substr(c1 + 1, c2 - c1 - 1).c_str(), nullptr, 10);
  std::vector<std::uint64_t> xip;
  for (std::size_t i = c2 + 1; i < snap.size();) {
    std::size_t j = std::min(snap.find(',', i), snap.size());
    xip.push_back(std::strtoull(snap.substr(i, j - i).c_str(), nullptr, 10));
    i = j + 1;
  }
  std::uint64_t upto = 0;
  for (const auto& [seq, xid32] : pending) {
    // Widen the 32-bit xid with xmax's epoch. The commit is recent: its full xid is
    // within 2^31 of xmax, below it or (not yet completed in the proc array) at or above.
    std::uint64_t xid = (xmax & ~std::uint64_t{0xffffffff}) | xid32;
    if (xid > xmax + (std::uint64_t{1} << 31) && xid >= (std::uint64_t{1} << 32))
      xid -= std::uint64_t{1} << 32;
    else if (xid + (std::uint64_t{1} << 31) < xmax)
      xid += std::uint64_t{1} << 32;
    bool visible = xid32 == 0 || xid < xmin ||
                   (xid < xmax && std::find(xip.begin(), xip.end(), xid) == xip.end());
    if (!visible) break;
    upto = seq;
  }
  if (upto) confirm(upto);
}

}  // namespace

std::shared_ptr<feed> make_follower(const follow_request& r) {
  {
    pg_conn c;
    c.c = PQconnectdb(r.conninfo.c_str());
    if (PQstatus(c.c) != CONNECTION_OK)
      fail(std::string("could not connect to check the server: ") + PQerrorMessage(c.c));
    check_server(c.c, r.publication);
  }
  auto f = std::make_shared<follower>(r);
  f->start();
  auto wait = r.owner->settings().stream_start_wait;
  std::string error = f->wait_started(wait);
  if (!error.empty()) fail(error);
  return f;  // up, or still starting (the database is bypassed until it is)
}

}  // namespace qcache::pg
