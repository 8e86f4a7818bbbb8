// The PostgreSQL session engine.
//
// Invariants:
//  * A read is served or stored only when every relation it reads resolved in the
//    catalog to a table-like relation that is not a system, temporary, foreign,
//    sequence or row-security relation, it calls or reaches (through operators, casts,
//    functional notation, views, aggregates, column types: snapshot::statement_code)
//    only IMMUTABLE functions (STABLE ones with options.cache_stable_functions), and it
//    is not inside REPEATABLE READ / SERIALIZABLE or a transaction that wrote one of its
//    relations. Any statement that calls or reaches a function that may write flushes.
//  * Every statement that is not a proven read takes a write hold before it is sent:
//    the tags of every relation it may change (FK cascades, inheritance and partitions
//    included, and the tables the triggers it may fire write: trigger_effects.h), or the
//    global tag (a flush) when the targets are unknown, a target has rules or a trigger
//    qcache cannot read, or the statement is DDL or unrecognised. In a transaction
//    the hold lasts until COMMIT/ROLLBACK; otherwise until the statement returned.
//  * A predicate read `t.c = v` depends on {table_epoch(t), column_epoch(t,c),
//    predicate(t,c,v)} and guards table(t). A write to t names the values of c of every
//    row it may touch before and after (predicate(t,c,v)) or moves column_epoch(t,c);
//    a write whose rows are unknown moves table_epoch(t). Columns used by predicate reads
//    are registered per database before the read captures its versions, and a write
//    reads the registry after taking its hold on table(t) (the guard), so a read that
//    registers a column after the write looked can never store a pre-write result.
//  * Any DDL, DO, CALL or unrecognised statement marks the shared catalog stale and bumps
//    the database's DDL epoch; a write planned under an older epoch flushes when it ends.
#include "pg/engine.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <unordered_set>

#include "memo.h"
#include "pg/pgoutput.h"
#include "pg/trigger_effects.h"

namespace qcache::pg {
namespace {

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return r;
}

std::string trim_lower(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return lower(s);
}

bool is_time_word(std::string_view s) {
  if (s.size() > 16) return false;
  std::string t = trim_lower(s);
  return t == "now" || t == "today" || t == "tomorrow" || t == "yesterday";
}

// PostgreSQL's integer input: optional whitespace, sign, digits, whitespace.
std::optional<std::string> canonical_int(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return std::nullopt;
  long long v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return std::to_string(v);
}

bool has_non_ascii(std::string_view s) {
  return std::any_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

// A value as the server prints or receives it as text, canonical for a column of class
// `cls`, or nullopt when equality cannot be decided textually (fail closed). Text is
// sent and received in the session's client encoding; `utf8` says it is UTF8. Sessions
// with other encodings send other bytes for the same characters, so only ASCII text is
// canonical there (every encoding PostgreSQL supports is ASCII for bytes below 0x80).
std::optional<std::string> canonical_text(std::string_view text, char cls, bool utf8) {
  if (cls == column_int) return canonical_int(text);
  if (cls == column_text) {
    if (std::memchr(text.data(), 0, text.size())) return std::nullopt;
    if (!utf8 && has_non_ascii(text)) return std::nullopt;
    return std::string(text);
  }
  return std::nullopt;
}

// What a session's settings change about its values.
struct value_context {
  bool utf8 = true;                 // client_encoding is UTF8 (see canonical_text)
  bool catalog_types_first = true;  // search_path finds pg_catalog's types first
  bool ascii_unsafe = false;        // a client-only encoding (see ascii_unsafe_encoding)
};

// The value `v` denotes for a column of class `cls`, as a canonical string, or nullopt
// when equality cannot be decided textually (fail closed: the caller falls back).
std::optional<std::string> canonical(const eq_value& v, char cls, std::span<const param> params,
                                     const value_context& vc) {
  if (v.unqualified_cast && !vc.catalog_types_first) return std::nullopt;
  std::string_view text;
  switch (v.k) {
    case eq_value::kind::param: {
      if (v.param < 1 || static_cast<std::size_t>(v.param) > params.size()) return std::nullopt;
      const param& p = params[v.param - 1];
      if (p.type == param_type::null || p.type == param_type::binary) return std::nullopt;
      text = p.text;
      break;
    }
    case eq_value::kind::integer:
      if (cls != column_int) return std::nullopt;
      text = v.text;
      break;
    case eq_value::kind::string:
      text = v.text;
      break;
    default:
      return std::nullopt;
  }
  return canonical_text(text, cls, vc.utf8);
}

// The value a write of `v` stores in column `c` of `r` (class `cls`), canonical, or
// nullopt when the stored value may differ from it: varchar(n) cuts trailing spaces off a
// value longer than n (one without them is stored as written, or rejected).
std::optional<std::string> canonical_written(const eq_value& v, char cls, const relation& r,
                                             const std::string& c, std::span<const param> params,
                                             const value_context& vc) {
  auto cv = canonical(v, cls, params, vc);
  if (cv && !cv->empty() && cv->back() == ' ' && r.trims_on_write.count(c)) return std::nullopt;
  return cv;
}

// PostgreSQL's client-only encodings: the second byte of a character may be an ASCII
// byte ('\\', and in GB18030 digits). The server converts text to its own encoding before
// lexing it; read byte by byte, such a character may end or escape a literal.
bool ascii_unsafe_encoding(std::string_view e) {
  for (const char* x : {"SJIS", "SHIFT_JIS_2004", "BIG5", "GBK", "UHC", "GB18030", "JOHAB"})
    if (e == x) return true;
  return false;
}

std::shared_ptr<const analysis> not_analysed(const char* why) {
  auto a = std::make_shared<analysis>();
  a->error = why;
  return a;
}

// What the analyzer reads of `sql`, which the server lexed with standard_conforming_strings
// `scs` (nullopt: either) and client_encoding `encoding`. Off, a plain literal with a
// backslash means what E'...' means. Text whose meaning is not known (it cannot be
// rewritten so, it depends on a setting not known, or it has non-ASCII bytes in a
// client-only encoding) is not analysed at all (ok == false: it runs uncached and
// flushes, since what looks like one SELECT may be a SELECT and an UPDATE to the server).
std::shared_ptr<const analysis> analyze_as_sent(std::string_view sql, std::optional<bool> scs,
                                                std::string_view encoding) {
  if (ascii_unsafe_encoding(encoding) && has_non_ascii(sql))
    return not_analysed("non-ASCII text in a client-only encoding");
  if (scs.value_or(false) || sql.find('\\') == std::string_view::npos) return analyze(sql);
  std::optional<std::string> text = as_escape_strings(sql);
  if (text && (scs || *text == sql)) return analyze(*text);
  return not_analysed("a string literal's meaning depends on standard_conforming_strings");
}

std::string oid_text(std::uint32_t oid) { return std::to_string(oid); }

// "schema.table" or "table", as an application names a relation in an annotation or a
// manual invalidation (as written: no case folding, no quoting).
qualified_name split_name(std::string_view table) {
  qualified_name qn;
  auto dot = table.find('.');
  if (dot == std::string_view::npos) {
    qn.name = std::string(table);
  } else {
    qn.schema = std::string(table.substr(0, dot));
    qn.name = std::string(table.substr(dot + 1));
  }
  return qn;
}

}  // namespace

// ---- Shared per-database state ------------------------------------------------------

struct database {
  std::string identity;
  // The invalidation namespace (tags, predicate registry): the identity without the
  // postmaster start time and the recovery flag. Entries are keyed by the full identity,
  // so sessions that connect after a restart or promotion start cold; but a session that
  // has not noticed it yet still serves entries of the old identity, and the writes of
  // the new identity's sessions must invalidate them.
  std::string tag_space;
  std::shared_ptr<catalog> cat;
  std::atomic<bool> catalog_stale{false};
  // Set when the object (and its catalog) was created; cleared by the first
  // session::connect that sees it (see there).
  std::atomic<bool> loaded_at_creation{true};
  // DDL and unknown statements begun / finished through qcache on this database. A write
  // planned while one was in flight, or while one began, may have been planned with a
  // catalog that misses a new trigger, rule or cascade: it flushes when it ends.
  std::atomic<std::uint64_t> ddl_started{0};
  std::atomic<std::uint64_t> ddl_finished{0};
  // Moves when a statement through qcache may have reloaded the server's configuration
  // (pg_reload_conf(), ALTER SYSTEM, unknown statements): every session re-reads its
  // context before its next statement (settings that are not reported, such as
  // search_path or bytea_output, change in every session at its next command).
  std::atomic<std::uint64_t> config_epoch{0};
  std::mutex refresh_mu;

  // Columns used by predicate reads, per relation. Shared by every database object of
  // this tag space for the life of the process: cached entries outlive the sessions that
  // registered their columns, and a write must still name their rows.
  struct predicate_registry {
    mutable std::shared_mutex mu;
    std::unordered_map<std::uint32_t, std::vector<std::string>> columns;
  };
  std::shared_ptr<predicate_registry> preds;

  bool has_predicate_column(std::uint32_t oid, const std::string& c) const {
    std::shared_lock lock(preds->mu);
    auto it = preds->columns.find(oid);
    return it != preds->columns.end() &&
           std::find(it->second.begin(), it->second.end(), c) != it->second.end();
  }
  // Registers `c` for predicate reads of `oid`. False when the registry for `oid` is full
  // (64 columns): such a read must fall back to the table tag.
  bool add_predicate_column(std::uint32_t oid, const std::string& c) {
    if (has_predicate_column(oid, c)) return true;
    std::unique_lock lock(preds->mu);
    auto& v = preds->columns[oid];
    if (std::find(v.begin(), v.end(), c) != v.end()) return true;
    if (v.size() >= 64) return false;
    v.push_back(c);
    return true;
  }
  std::vector<std::string> predicate_columns_of(std::uint32_t oid) const {
    std::shared_lock lock(preds->mu);
    auto it = preds->columns.find(oid);
    return it == preds->columns.end() ? std::vector<std::string>{} : it->second;
  }
};

namespace {

std::mutex g_databases_mu;
std::unordered_map<std::string, std::weak_ptr<database>> g_databases;
// Never dropped (a few bytes per relation with predicate reads, per tag space).
std::unordered_map<std::string, std::shared_ptr<database::predicate_registry>> g_registries;
// The most recent database object of each tag space (for the change-stream follower).
std::unordered_map<std::string, std::weak_ptr<database>> g_latest;

std::string tag_space_of(const std::string& identity) {
  std::string out;
  std::size_t i = 0;
  while (i <= identity.size()) {
    std::size_t j = std::min(identity.find(';', i), identity.size());
    std::string_view f(identity.data() + i, j - i);
    if (!f.starts_with("start=") && !f.starts_with("recovery=")) {
      if (!out.empty()) out += ';';
      out += f;
    }
    i = j + 1;
  }
  return out;
}

std::shared_ptr<database> database_for(std::shared_ptr<catalog> loaded) {
  std::string id = loaded->identity();
  std::lock_guard lock(g_databases_mu);
  auto& w = g_databases[id];
  if (auto db = w.lock()) return db;
  auto db = std::make_shared<database>();
  db->identity = id;
  db->tag_space = tag_space_of(id);
  db->cat = std::move(loaded);
  auto& reg = g_registries[db->tag_space];
  if (!reg) reg = std::make_shared<database::predicate_registry>();
  db->preds = reg;
  w = db;
  g_latest[db->tag_space] = db;
  return db;
}

// What the change-stream follower asks about a database: the most recent database object
// of its tag space (a restart gives a new identity, hence a new object and catalog).
class engine_schema final : public stream_schema {
 public:
  explicit engine_schema(std::shared_ptr<database> db)
      : tag_space_(db->tag_space), preds_(db->preds), first_(std::move(db)) {}
  const std::string& tag_space() const override { return tag_space_; }
  std::vector<std::string> predicate_columns(std::uint32_t oid) const override {
    return current()->predicate_columns_of(oid);
  }
  char column_class(std::uint32_t oid, const std::string& column) const override {
    auto snap = current()->cat->current();
    const relation* r = snap->by_oid(oid);
    return r ? r->column_class(column) : 0;
  }
  bool knows(std::uint32_t oid) const override {
    return current()->cat->current()->by_oid(oid) != nullptr;
  }
  std::vector<std::uint32_t> family(std::uint32_t oid) const override {
    auto snap = current()->cat->current();
    const relation* r = snap->by_oid(oid);
    return r ? r->family : std::vector<std::uint32_t>{};
  }
  std::optional<std::string> canonical(char cls, std::string_view text) const override {
    return canonical_text(text, cls, true);
  }
  void mark_catalog_stale() override {
    current()->catalog_stale.store(true, std::memory_order_release);
  }
  void refresh(const query_fn& run) override {
    auto db = current();
    std::lock_guard lock(db->refresh_mu);
    db->cat->refresh(run);
  }

 private:
  std::shared_ptr<database> current() const {
    std::lock_guard lock(g_databases_mu);
    auto it = g_latest.find(tag_space_);
    if (it != g_latest.end())
      if (auto db = it->second.lock()) return db;
    return first_;
  }
  std::string tag_space_;
  std::shared_ptr<database::predicate_registry> preds_;
  std::shared_ptr<database> first_;
};

}  // namespace

// ---- Plans --------------------------------------------------------------------------

enum class action : std::uint8_t {
  empty,
  read_cacheable,
  read_uncacheable,
  write,          // known targets (may still flush: `flush`)
  ddl,            // flush + catalog refresh
  unknown,        // flush + catalog refresh + context refresh
  harmless,       // runs as is (LISTEN, LOCK, VACUUM...)
  txn_begin,
  txn_commit,
  txn_rollback,
  rollback_to,
  savepoint,
  txn_set,
  session_change,
};

struct pred_dep {
  std::string table;   // oid text
  std::uint32_t oid = 0;
  std::string column;
  char cls = column_other;
  std::vector<eq_value> values;
  // >= 0: the values are those of this result column (a correlated scalar subquery, or
  // a join to a relation restricted to one row by a key), known only after the read ran.
  int output = -1;
  bool join = false;  // the join case: an empty result names nothing (whole table then)
};

struct write_target {
  std::uint32_t oid = 0;
  std::string table;   // oid text
  write_ref ref;       // as analysed
  std::vector<std::string> closure;  // oid texts of relations whose T/E tags move too
  // BEFORE ROW triggers may store other values than the statement's: in these columns, or
  // (new_row_any) in any column.
  std::vector<std::string> trigger_columns;
  bool new_row_any = false;
};

struct plan {
  std::uint64_t catalog_generation = 0;
  std::uint32_t context_id = 0;
  action act = action::empty;
  uncacheable_reason reason = uncacheable_reason::other;
  std::shared_ptr<const analysis> a;
  std::string isolation;  // txn_begin / txn_set
  // Reads (for read_cacheable; read_oids also for the transaction-local check).
  std::vector<std::uint32_t> read_oids;
  std::vector<tags::tag> fixed_tags;  // guards depend on parameters: computed per call
  std::vector<pred_dep> preds;
  std::vector<std::string> read_names;
  // Writes.
  std::vector<write_target> writes;
  std::vector<tags::tag> write_fixed_tags;
  std::vector<std::uint32_t> written_oids;
  std::vector<std::string> write_names;
  bool flush = false;
  std::string flush_reason;
  // The statement's WHERE selects the same rows each time it is evaluated: it calls only
  // IMMUTABLE functions, no CURRENT_TIMESTAMP-like values; no 'now' literals or
  // TABLESAMPLE anywhere. A pre-image (a second evaluation of that WHERE) is only run then.
  bool preimage_ok = false;
  // The statement may change the session context: set_config(), user functions (which may
  // run SET or set_config), multi-statement strings.
  bool dirties_context = false;
  bool reloads_config = false;    // pg_reload_conf() or ALTER SYSTEM: see database::config_epoch
  bool touches_prepared = false;  // may create or drop prepared statements
  bool reaches_volatile_view = false;  // reads a view that calls a non-IMMUTABLE function
  // Reads a relation the catalog snapshot does not know: it may have been created since by
  // another client (a view or functional notation calling a writing function, say), so
  // the statement is judged again after a catalog refresh (replan_with_fresh_catalog).
  bool reads_unknown = false;
  // Still unknown after that refresh: it runs uncached (the server will most likely say
  // the relation does not exist) and, should it succeed after all, flushes.
  bool flush_if_it_runs = false;
  value_context values;          // of the session the plan was built for
  // Recent execution time of this read on this connection (EWMA, microseconds), to decide
  // whether concurrent misses should wait for each other. Touched only by the session's
  // thread.
  static constexpr std::uint32_t unmeasured = 0xffffffffu;
  mutable std::uint32_t exec_us = unmeasured;
};

// ---- Session state -----------------------------------------------------------------

struct session::state {
  std::shared_ptr<database> db;
  // The change stream of (cache, db's tag space) when options::follow_changes.
  std::shared_ptr<feed> stream;
  std::shared_ptr<const snapshot> snap;  // the catalog snapshot plans were built with
  session_context ctx;
  std::uint32_t context_id = 0;
  bool context_dirty = true;
  const server_status* status = nullptr;
  // The reported settings (kReported) when the context was read; nullopt: not reported.
  std::vector<std::optional<std::string>> reported;
  std::uint64_t config_seen = 0;     // database::config_epoch when the context was read
  std::uint64_t prepared_epoch = 0;  // see session::prepared_epoch()
  // This server session has run with standard_conforming_strings off: a statement
  // prepared earlier may have been lexed with another setting than the current one.
  bool scs_off_seen = false;
  // Own transactions (feed.h own_register): the adapter rethrows what succeeded() throws,
  // so autocommit writes may be wrapped in BEGIN ... COMMIT; raw() of a transaction
  // object is out (statements the engine does not see may join the transaction).
  bool wrap_ok = false;
  bool raw_open = false;
  key_builder kb;
  struct sv_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view v) const noexcept {
      return std::hash<std::string_view>{}(v);
    }
  };
  std::unordered_map<std::string, std::shared_ptr<const plan>, sv_hash, std::equal_to<>> plans;

  struct txn {
    bool active = false;
    bool failed = false;
    bool bypass = false;  // REPEATABLE READ / SERIALIZABLE
    bool wrote_unknown = false;
    bool ddl = false;
    bool flush_on_end = false;
    bool context_changed = false;
    bool isolation_pending = false;
    std::uint64_t ddl_epoch = 0;  // ddl_started when the transaction began
    std::uint64_t ddl_count = 0;  // DDL statements of this transaction (finished at its end)
    std::unordered_set<std::uint32_t> written;
    detail::memo_txn memo;  // the memo scope it began in (memo.h)
    detail::memo_snapshot_hold snapshot;  // while it does not read the shared state (memo.h)
    write_hold hold;
    std::uint64_t own_xid = 0;  // registered with the stream (feed::own_register)
    bool own_off = false;       // not to be registered (see own_disable)
  } tx;
};

session::session(std::shared_ptr<cache> c) : cache_(std::move(c)), st_(std::make_unique<state>()) {}
session::~session() {
  // A connection that goes away mid-transaction: the server rolls back; release holds.
  state& st = *st_;
  if (st.tx.own_xid && st.stream) st.stream->own_forget(st.tx.own_xid);
  st.tx.hold.release(false);
  if (st.db && st.tx.ddl_count) st.db->ddl_finished.fetch_add(st.tx.ddl_count);
}

bool session::in_transaction() const noexcept { return st_->tx.active; }
void session::attach(const server_status* status) noexcept { st_->status = status; }
std::uint64_t session::prepared_epoch() const noexcept { return st_->prepared_epoch; }

void session::connection_reset() {
  // A new server session: its settings are the defaults again, and the server may be a
  // different one (identity). Whatever transaction we tracked is gone.
  state& st = *st_;
  if (st.tx.own_xid && st.stream) st.stream->own_forget(st.tx.own_xid);
  st.tx.hold.release(false);
  if (st.db && st.tx.ddl_count) st.db->ddl_finished.fetch_add(st.tx.ddl_count);
  st.tx = state::txn{};
  st.context_dirty = true;
  st.reported.clear();
  ++st.prepared_epoch;
  st.db.reset();
  st.stream.reset();
  st.snap.reset();
  st.plans.clear();
  st.scs_off_seen = false;
}

namespace {

// Memo hits on the thread are refused while the transaction reads a snapshot (or failed):
// recomputing there would not give the shared state's value (memo.h).
void sync_memo_snapshot(session::state::txn& tx) noexcept {
  tx.snapshot.set(tx.active && (tx.bypass || tx.failed));
}

// Settings PostgreSQL reports with the response of any command that changed them
// (GUC_REPORT) and that the context key holds, directly or through the role
// (is_superuser, session_authorization). A reload (SIGHUP) changes them in a session only
// at its next command, and the new value arrives with that command's response.
constexpr const char* kReported[] = {"TimeZone",
                                     "DateStyle",
                                     "IntervalStyle",
                                     "client_encoding",
                                     "standard_conforming_strings",
                                     "session_authorization",
                                     "is_superuser",
                                     "default_transaction_read_only",
                                     "integer_datetimes"};

std::vector<std::optional<std::string>> read_reported(const server_status& s) {
  std::vector<std::optional<std::string>> out;
  out.reserve(std::size(kReported));
  for (const char* n : kReported) {
    const char* v = s.parameter(n);
    out.emplace_back(v ? std::optional<std::string>(v) : std::nullopt);
  }
  return out;
}

// A reported setting differs from its value when the context was read: whatever ran since
// ran under another context than the one in the key. No round trip.
bool reported_moved(const session::state& st) {
  if (!st.status || st.reported.size() != std::size(kReported)) return false;
  for (std::size_t i = 0; i < std::size(kReported); ++i) {
    const char* v = st.status->parameter(kReported[i]);
    const auto& old = st.reported[i];
    if (!v != !old || (v && *old != v)) return true;
  }
  return false;
}

// The context must be read again before the next statement that needs it, and again when
// the current transaction ends (a SET LOCAL, a rolled-back SET).
void mark_context_dirty(session::state& st) {
  st.context_dirty = true;
  if (st.tx.active) st.tx.context_changed = true;
}

void ensure_catalog(session::state& st, const run_fn& run) {
  if (!st.db) {
    st.db = database_for(catalog::load(run));
  }
  database& db = *st.db;
  if (db.catalog_stale.load(std::memory_order_acquire)) {
    std::lock_guard lock(db.refresh_mu);
    if (db.catalog_stale.exchange(false, std::memory_order_acq_rel)) {
      try {
        db.cat->refresh(run);
      } catch (...) {
        db.catalog_stale.store(true, std::memory_order_release);
        throw;
      }
    }
  }
  if (!st.snap || st.snap->generation() != db.cat->generation()) {
    // DDL may have created a schema or table that the search_path now reaches ("$user",
    // a schema listed before it existed): what names resolve to must be read again.
    if (st.snap) mark_context_dirty(st);
    st.snap = db.cat->current();
  }
}

// With options::follow_changes: joins (or starts) the change stream of (cache, database).
// Throws when the server cannot stream (feed_for says what is missing).
void ensure_stream(session::state& st, const std::shared_ptr<cache>& ch) {
  if (st.stream || !ch->settings().follow_changes) return;
  follow_request r;
  r.owner = ch;
  r.schema = std::make_shared<engine_schema>(st.db);
  r.conninfo = st.status ? st.status->conninfo() : std::string();
  r.publication = ch->settings().publication;
  if (r.conninfo.empty())
    throw std::runtime_error("qcache: follow_changes: the connection's parameters are unknown");
  st.stream = feed_for(r);
}

void ensure_context(session::state& st, const run_fn& run) {
  // Read before the context, so that a reload noted meanwhile forces another read.
  std::uint64_t config = st.db->config_epoch.load(std::memory_order_acquire);
  if (config != st.config_seen) mark_context_dirty(st);
  if (!st.context_dirty) return;
  auto rows = run(session_context::context_query());
  if (rows.size() != 1) throw std::runtime_error("qcache: session context query returned no row");
  st.ctx = session_context::parse(rows[0]);
  st.context_id = intern_context(st.db->identity + '\x1f' + st.ctx.key_text);
  st.context_dirty = false;
  st.config_seen = config;
  if (st.status) st.reported = read_reported(*st.status);
  if (st.tx.active) {
    // Read inside the transaction: its real isolation level, however it was set
    // (BEGIN, SET TRANSACTION, SET transaction_isolation, set_config, AND CHAIN, the
    // session default as reloaded).
    const std::string& iso = st.ctx.transaction_isolation;
    st.tx.isolation_pending = false;
    st.tx.bypass = !(iso == "read committed" || iso == "read uncommitted");
    sync_memo_snapshot(st.tx);
  }
  if (!st.ctx.standard_conforming_strings) st.scs_off_seen = true;
}

}  // namespace

namespace {

// Why a string of reads may write: the first function it calls or reaches that may write
// (as "volatile function NAME"), or empty.
std::string reads_writing_code(const std::vector<statement>& statements, const snapshot& cat,
                               const std::vector<std::string>& schemas) {
  for (const statement& s : statements) {
    for (const qualified_name& f : s.functions)
      if (may_write(f, cat.function_volatility(f, schemas))) return "volatile function " + f.name;
    if (code_reach code = cat.statement_code(s, schemas); code.writes)
      return "volatile function " + code.function + " reached implicitly";
  }
  return {};
}

// The tables fired trigger bodies write become table-level targets of the plan; anything
// unknown in them, or a call that may write, flushes.
void apply_trigger_effects(plan& p, const trigger_effects& fx, const snapshot& cat,
                           const std::vector<std::string>& schemas, const std::string& dbid) {
  if (!fx.flush_reason.empty()) {
    p.flush = true;
    p.flush_reason = fx.flush_reason;
  }
  // Trigger code runs in the session: read its settings again afterwards (bodies that run
  // SET or set_config() are unknown); code that may do anything may also reload the
  // configuration or rebind prepared statements (as note_session_effects decides for calls).
  if (fx.ran_user_code || fx.changes_session) p.dirties_context = true;
  auto everything = [&p] { p.dirties_context = p.reloads_config = p.touches_prepared = true; };
  if (fx.unknown_code) everything();
  for (const qualified_name& f : fx.functions) {
    char v = cat.function_volatility(f, schemas);
    if (may_write(f, v)) {
      p.flush = true;
      p.flush_reason = "trigger calls volatile function " + f.name;
    }
    if (lower(f.name) == "pg_reload_conf") p.reloads_config = true;
    if (v == 'v' && cat.user_function(f, schemas)) everything();
  }
  for (const relation* x : fx.written) {
    std::string id = oid_text(x->oid);
    p.write_fixed_tags.push_back(tags::table(dbid, id));
    p.write_fixed_tags.push_back(tags::table_epoch(dbid, id));
    p.written_oids.push_back(x->oid);
    p.write_names.push_back(x->schema + "." + x->name);
  }
}
}  // namespace

// With options::follow_changes, other clients' writes to an unlogged table or a
// materialized view (REFRESH) never reach the cache (the change stream carries neither):
// such relations are read uncached (as system relations are) rather than served stale.
static bool unseen_by_stream(const relation& r, const qcache::options& opts) {
  return opts.follow_changes && (r.persistence == 'u' || r.kind == 'm');
}

// Builds the plan for `a` under the current catalog snapshot and context (the session
// effects are added by build_plan).
std::shared_ptr<plan> build_plan_core(session::state& st, std::shared_ptr<const analysis> a,
                                      const qcache::options& opts) {
  auto p = std::make_shared<plan>();
  p->a = a;
  p->catalog_generation = st.snap->generation();
  p->context_id = st.context_id;
  p->values.utf8 = st.ctx.client_encoding == "UTF8";
  p->values.catalog_types_first = !st.ctx.schemas.empty() && st.ctx.schemas[0] == "pg_catalog";
  p->values.ascii_unsafe = ascii_unsafe_encoding(st.ctx.client_encoding);
  const snapshot& cat = *st.snap;
  const auto& schemas = st.ctx.schemas;
  const std::string& dbid = st.db->tag_space;

  if (!a->ok) {
    p->act = action::unknown;
    p->reason = uncacheable_reason::parse_error;
    p->flush = true;
    p->flush_reason = "parse error";
    return p;
  }
  if (a->statements.empty()) {
    p->act = action::empty;
    return p;
  }
  if (a->statements.size() > 1) {
    bool all_reads = std::all_of(a->statements.begin(), a->statements.end(),
                                 [](const statement& s) { return s.kind == stmt_kind::read; });
    // SELECTs may still call (or reach) a function that writes: judged like a lone SELECT.
    std::string writer = all_reads ? reads_writing_code(a->statements, cat, schemas) : "";
    p->act = all_reads && writer.empty() ? action::read_uncacheable : action::unknown;
    p->reason = uncacheable_reason::multi_statement;
    p->flush = p->act == action::unknown;
    p->flush_reason = writer.empty() ? "multi-statement string" : writer;
    return p;
  }
  const statement& s = a->statements[0];
  auto rel_name = [](const relation& r) { return r.schema + "." + r.name; };

  // Writes and DDL first: they decide the hold.
  auto add_table_tags = [&](std::vector<tags::tag>& out, const relation& r) {
    std::string id = oid_text(r.oid);
    out.push_back(tags::table(dbid, id));
    out.push_back(tags::table_epoch(dbid, id));
  };

  switch (s.kind) {
    case stmt_kind::txn_begin:
      p->act = action::txn_begin;
      p->isolation = s.isolation;
      return p;
    case stmt_kind::txn_commit: p->act = action::txn_commit; return p;
    case stmt_kind::txn_rollback: p->act = action::txn_rollback; return p;
    case stmt_kind::savepoint:
    case stmt_kind::release: p->act = action::savepoint; return p;
    case stmt_kind::rollback_to: p->act = action::rollback_to; return p;
    case stmt_kind::txn_set:
      p->act = action::txn_set;
      p->isolation = s.isolation;
      return p;
    case stmt_kind::session_set:
    case stmt_kind::session_reset: p->act = action::session_change; return p;
    case stmt_kind::copy_to:
      p->act = action::read_uncacheable;
      p->reason = uncacheable_reason::not_a_read;
      // COPY (query) TO runs its query: one that may write is a write with unknown targets.
      // A relation the snapshot does not know may be a view created since: anything.
      for (const read_ref& rr : s.reads)
        if (!cat.resolve(rr.table, schemas)) {
          p->act = action::unknown;
          p->flush = true;
          p->flush_reason = "COPY of a query reading an unknown relation " + rr.table.name;
          return p;
        }
      if (std::string why = reads_writing_code({s}, cat, schemas); !why.empty()) {
        p->act = action::unknown;
        p->reason = uncacheable_reason::volatile_function;
        p->flush = true;
        p->flush_reason = "COPY of a query: " + why;
      }
      return p;
    case stmt_kind::ddl:
      p->act = action::ddl;
      p->flush = true;
      p->flush_reason = "DDL";
      return p;
    case stmt_kind::other: {
      static const char* harmless[] = {"ListenStmt", "UnlistenStmt", "NotifyStmt", "LockStmt",
                                       "VacuumStmt", "CheckPointStmt", "DeallocateStmt",
                                       "PrepareStmt", "VariableShowStmt"};
      // VACUUM FULL and ANALYZE evaluate index expressions: user code that may write.
      if (s.node == "VacuumStmt" && cat.any_writing_write_code()) {
        p->act = action::unknown;
        p->flush = true;
        p->flush_reason = "VACUUM/ANALYZE may run index expressions that write";
        return p;
      }
      for (const char* h : harmless)
        if (s.node == h) {
          p->act = action::harmless;
          return p;
        }
      p->act = action::unknown;
      p->flush = true;
      p->flush_reason = s.node;
      return p;
    }
    case stmt_kind::write: {
      if (std::any_of(s.writes.begin(), s.writes.end(),
                      [](const write_ref& w) { return w.op == write_op::select_into; })) {
        // SELECT ... INTO creates a table (a TEMP one adds the session's temp schema and
        // shadows permanent names): DDL.
        p->act = action::ddl;
        p->flush = true;
        p->flush_reason = "SELECT INTO";
        return p;
      }
      p->act = action::write;
      trigger_effects fx;
      for (const write_ref& w : s.writes) {
        const relation* r = cat.resolve(w.table, schemas);
        if (!r) {
          p->flush = true;
          p->flush_reason = "unresolved write target " + w.table.name;
          continue;
        }
        p->write_names.push_back(rel_name(*r));
        // Triggers write what their bodies write (rules flush): see trigger_effects.h.
        unsigned events = events_of(w.op, w.on_conflict == write_ref::conflict::update);
        auto check_side_effects = [&](const relation& x, unsigned e) {
          fire_triggers(cat, schemas, x, e, fx);
        };
        check_side_effects(*r, events);
        if (r->system || r->kind == 'S' || r->kind == 'f') {
          // Writing a catalog or a foreign table: anything may change.
          p->flush = true;
          p->flush_reason = "write to " + rel_name(*r);
        }
        write_target t;
        t.oid = r->oid;
        t.table = oid_text(r->oid);
        t.ref = w;
        std::vector<const relation*> closure;
        auto add_closure = [&](std::uint32_t oid) {
          const relation* x = cat.by_oid(oid);
          if (!x) {
            p->flush = true;
            p->flush_reason = "unknown relation in closure";
            return;
          }
          check_side_effects(*x, closure_events(events));
          closure.push_back(x);
          for (std::uint32_t f : x->family) {
            if (const relation* y = cat.by_oid(f)) {
              check_side_effects(*y, closure_events(events));
              closure.push_back(y);
            }
          }
        };
        if (r->kind == 'v') {
          // An updatable view writes its base tables; their tags move wholesale.
          for (std::uint32_t b : r->base_tables) add_closure(b);
          t.ref.where.clear();
          t.ref.set.clear();
          t.ref.rows_known = false;
          t.ref.op = write_op::merge;  // rows unknown
        }
        for (std::uint32_t f : r->family) add_closure(f);
        // FK actions: ON DELETE ones on deletes, ON UPDATE ones when a key may change.
        std::vector<std::string> set_columns;
        if (w.op == write_op::update)
          for (const auto& [column, value] : w.set) set_columns.push_back(column);
        for (std::uint32_t c : fk_write_targets(cat, *r, events, &set_columns)) add_closure(c);
        if (w.op == write_op::truncate && w.cascade)
          for (std::uint32_t c : r->referencing) add_closure(c);
        for (const relation* x : closure) {
          add_table_tags(p->write_fixed_tags, *x);
          p->written_oids.push_back(x->oid);
          p->write_names.push_back(rel_name(*x));
        }
        new_row_effects before;
        before_row_effects(*r, events, before);
        for (std::uint32_t f : r->family)
          if (const relation* y = cat.by_oid(f))
            before_row_effects(*y, closure_events(events), before);
        t.new_row_any = before.all;
        t.trigger_columns = std::move(before.columns);
        p->write_fixed_tags.push_back(tags::table(dbid, t.table));
        p->written_oids.push_back(r->oid);
        p->writes.push_back(std::move(t));
      }
      apply_trigger_effects(*p, fx, cat, schemas, dbid);
      p->preimage_ok = !s.time_literal && !s.tablesample;
      for (const write_target& t : p->writes) {
        if (t.ref.where_value_function) p->preimage_ok = false;
        for (const qualified_name& f : t.ref.where_functions)
          if (cat.function_volatility(f, schemas) != 'i') p->preimage_ok = false;
      }
      // Code reached without a call (defaults, constraints, operators, views read...).
      if (code_reach code = cat.statement_code(s, schemas); code.volatility) {
        if (code.volatility != 'i') p->preimage_ok = false;  // e.g. a stable user operator
        if (code.writes) {
          p->flush = true;
          p->flush_reason = "volatile function " + code.function + " reached implicitly";
        }
      }
      // A write statement may also call functions; a user function may write anywhere.
      for (const qualified_name& f : s.functions) {
        if (may_write(f, cat.function_volatility(f, schemas))) {
          p->flush = true;
          p->flush_reason = "volatile function " + f.name;
        }
      }
      return p;
    }
    case stmt_kind::read:
      break;
  }

  // A read.
  if (s.node == "VariableShowStmt") {
    p->act = action::read_uncacheable;
    p->reason = uncacheable_reason::other;
    return p;
  }
  p->act = action::read_cacheable;
  auto refuse = [&](uncacheable_reason r) {
    if (p->act == action::read_cacheable) {
      p->act = action::read_uncacheable;
      p->reason = r;
    }
  };
  if (s.locking) refuse(uncacheable_reason::locking);
  if (s.time_literal) refuse(uncacheable_reason::time_literal);
  if (s.tablesample) refuse(uncacheable_reason::volatile_function);
  // CURRENT_TIMESTAMP, CURRENT_USER, ...: all STABLE.
  if (!s.value_functions.empty() && !opts.cache_stable_functions)
    refuse(uncacheable_reason::stable_function);
  for (const qualified_name& f : s.functions) {
    char v = cat.function_volatility(f, schemas);
    if (v == 'v') refuse(uncacheable_reason::volatile_function);
    else if (v == 's' && !opts.cache_stable_functions) refuse(uncacheable_reason::stable_function);
    if (may_write(f, v)) {
      // SELECT f() where f is a volatile user function: it may write anything.
      p->act = action::unknown;
      p->reason = uncacheable_reason::volatile_function;
      p->flush = true;
      p->flush_reason = "volatile function " + f.name + " may write";
      return p;
    }
  }
  // Code the read reaches without calling it is judged as if it called it.
  code_reach code = cat.statement_code(s, schemas);
  if (code.writes) {
    p->act = action::unknown;
    p->reason = uncacheable_reason::volatile_function;
    p->flush = true;
    p->flush_reason = "volatile function " + code.function + " reached implicitly may write";
    return p;
  }
  if (code.volatility == 'v')
    refuse(uncacheable_reason::volatile_function);
  else if (code.volatility == 's' && !opts.cache_stable_functions)
    refuse(uncacheable_reason::stable_function);
  p->fixed_tags.push_back(tags::database(dbid));
  for (const read_ref& rr : s.reads) {
    const relation* r = cat.resolve(rr.table, schemas);
    if (!r) {
      // Created since the catalog was read, or missing (the server will say so): either
      // way what it runs cannot be judged.
      p->act = action::unknown;
      p->reason = uncacheable_reason::unknown_relation;
      p->flush = true;
      p->flush_reason = "reads " + rr.table.name + ", a relation the catalog does not know";
      p->reads_unknown = true;
      return p;
    }
    p->read_names.push_back(rel_name(*r));
    if (r->system || r->kind == 'S' || r->kind == 'f' || r->kind == 'c' ||
        r->persistence == 't' || unseen_by_stream(*r, opts)) {
      refuse(uncacheable_reason::system_relation);
      continue;
    }
    if (r->rls) refuse(uncacheable_reason::row_security);
    if (r->kind == 'v') {
      if (r->volatile_view) {
        refuse(uncacheable_reason::volatile_function);
        p->reaches_volatile_view = true;
      }
      for (std::uint32_t b : r->base_tables) {
        const relation* x = cat.by_oid(b);
        if (!x || x->system || x->kind == 'S' || x->kind == 'f' || x->persistence == 't' ||
            unseen_by_stream(*x, opts)) {
          refuse(uncacheable_reason::system_relation);
          continue;
        }
        if (x->rls) refuse(uncacheable_reason::row_security);
        p->fixed_tags.push_back(tags::table(dbid, oid_text(x->oid)));
        p->read_oids.push_back(x->oid);
      }
      continue;
    }
    p->read_oids.push_back(r->oid);
    std::string id = oid_text(r->oid);
    if (rr.by_output) {
      // Named by the result's values when both columns compare the same textual way.
      const read_ref::correlation& k = *rr.by_output;
      const relation* outer = cat.resolve(k.outer_table, schemas);
      char cls = r->column_class(k.column);
      bool keyed = !k.join;
      for (const std::string& key : k.outer_keys)
        // An inheritance parent's index does not cover its children's rows; a
        // partitioned table's unique index does.
        keyed = keyed || (outer && outer->unique_columns.count(key) &&
                          (outer->family.empty() || outer->kind == 'p'));
      if (outer && keyed && (cls == column_int || cls == column_text) &&
          outer->column_class(k.outer_column) == cls && p->preds.size() < 0xffff) {
        pred_dep d;
        d.table = id;
        d.oid = r->oid;
        d.column = k.column;
        d.cls = cls;
        d.output = k.output;
        d.join = k.join;
        p->preds.push_back(std::move(d));
      } else {
        p->fixed_tags.push_back(tags::table(dbid, id));
      }
      continue;
    }
    // Pick the first equality conjunct on a column whose values compare textually.
    const eq_conjunct* use = nullptr;
    char cls = column_other;
    for (const eq_conjunct& c : rr.conjuncts) {
      char k = r->column_class(c.column);
      if (k == column_int || k == column_text) {
        use = &c;
        cls = k;
        break;
      }
    }
    if (use) {
      pred_dep d;
      d.table = id;
      d.oid = r->oid;
      d.column = use->column;
      d.cls = cls;
      d.values = use->values;
      p->preds.push_back(std::move(d));
    } else {
      p->fixed_tags.push_back(tags::table(dbid, id));
    }
  }
  return p;
}

namespace {

// What one statement may do to session state beyond its plan's action: change settings
// (user code may run SET or set_config), reload the configuration, or rebind prepared
// statement names.
void note_session_effects(plan& p, const statement& s, const snapshot& cat,
                          const std::vector<std::string>& schemas) {
  auto everything = [&p] { p.dirties_context = p.reloads_config = p.touches_prepared = true; };
  if (s.kind == stmt_kind::session_set || s.kind == stmt_kind::session_reset ||
      s.kind == stmt_kind::txn_set)
    p.dirties_context = true;
  if (s.node == "PrepareStmt" || s.node == "DeallocateStmt" || s.node == "DiscardStmt")
    p.touches_prepared = true;
  if (s.node == "AlterSystemStmt") p.reloads_config = true;
  if (s.node == "DoStmt" || s.node == "CallStmt" || s.node == "ExecuteStmt") everything();
  for (const qualified_name& f : s.functions) {
    std::string n = lower(f.name);
    if (n == "set_config") p.dirties_context = true;
    if (n == "pg_reload_conf") p.reloads_config = true;
    if (!cat.user_function(f, schemas)) continue;
    // A user function may run SET or set_config; one declared IMMUTABLE is trusted not to
    // (it would not return the same result for the same arguments), as for caching.
    char v = cat.function_volatility(f, schemas);
    if (v != 'i') p.dirties_context = true;
    if (v == 'v') everything();
  }
  // User code the text does not name (operators, casts, defaults, views, aggregates'
  // support functions, functional notation) may do the same.
  code_reach code = cat.statement_code(s, schemas);
  if (code.volatility == 's' || code.volatility == 'v') p.dirties_context = true;
  if (code.writes) everything();
}

}  // namespace

std::shared_ptr<const plan> build_plan(session::state& st, std::shared_ptr<const analysis> a,
                                       const qcache::options& opts) {
  std::shared_ptr<plan> p = build_plan_core(st, a, opts);
  if (!a->ok || p->act == action::unknown) {
    p->dirties_context = p->reloads_config = p->touches_prepared = true;
  } else {
    for (const statement& s : a->statements) note_session_effects(*p, s, *st.snap, st.ctx.schemas);
    // Strings of several statements, and statements that reach user code the text does
    // not name (triggers, rules, volatile views), may change settings too.
    if (a->statements.size() > 1 || p->flush || p->reaches_volatile_view) p->dirties_context = true;
  }
  return p;
}

namespace {

// Distinct current values of some columns in the rows an UPDATE/DELETE may touch (rows
// of text, NULL as nullopt), or nullopt when they could not be read.
using preimage_fn = std::function<std::optional<std::vector<row>>(
    const write_target&, const std::vector<std::string>& columns)>;

// At most this many distinct value combinations are turned into predicate tags; a
// pre-image with more falls back to the column epochs.
constexpr std::size_t kMaxPreimageRows = 256;

// `SELECT DISTINCT cols FROM target WHERE <the statement's condition>`, its $n replaced by
// the parameters as untyped literals (what the server does with an untyped parameter:
// libpqxx and SOCI send all of them untyped). nullopt when that cannot be done exactly.
std::optional<std::string> preimage_sql(const write_target& t, const relation& r,
                                        const std::vector<std::string>& cols,
                                        std::span<const param> params, bool ascii_unsafe) {
  const write_ref& w = t.ref;
  if (w.where_sql.empty() || cols.empty()) return std::nullopt;
  std::string q = "SELECT DISTINCT ";
  for (std::size_t i = 0; i < cols.size(); ++i) q += (i ? ", " : "") + quoted(cols[i], '"');
  q += " FROM ";
  if (w.only) q += "ONLY ";
  q += quoted(r.schema, '"') + "." + quoted(r.name, '"');
  if (!w.alias.empty()) q += " AS " + quoted(w.alias, '"');
  q += " WHERE (";
  std::size_t at = 0;
  for (auto [off, len] : w.where_params) {
    q.append(w.where_sql, at, off - at);
    int k = 0;
    for (std::size_t i = off + 1; i < off + len; ++i) {
      k = k * 10 + (w.where_sql[i] - '0');
      if (k > 65535) return std::nullopt;
    }
    if (k < 1 || static_cast<std::size_t>(k) > params.size()) return std::nullopt;
    const param& x = params[static_cast<std::size_t>(k) - 1];
    if (x.type == param_type::binary) return std::nullopt;
    if (x.type == param_type::null) {
      q += "NULL";
    } else {
      if (std::memchr(x.text.data(), 0, x.text.size())) return std::nullopt;
      // In a client-only encoding a character may end in a backslash byte, which the
      // doubling below would turn into an escape of the quote after it.
      if (ascii_unsafe && has_non_ascii(x.text)) return std::nullopt;
      q += "E'";
      for (char c : x.text) {
        if (c == '\'' || c == '\\') q += c;
        q += c;
      }
      q += "'";
    }
    at = off + len;
  }
  q.append(w.where_sql, at, std::string::npos);
  q += "\n) LIMIT " + std::to_string(kMaxPreimageRows + 1);  // after a trailing -- comment
  return q;
}

// Row and column tags of a write (table tags are in plan::write_fixed_tags). Reads the
// predicate-column registry: call it only while holding the write's table tags. For an
// UPDATE/DELETE whose WHERE does not pin a registered column, `preimage` (when given)
// reads the old values of that column; what cannot be named moves the column's epoch.
void write_row_tags(const plan& p, const database& db, const snapshot& snap,
                    std::span<const param> params, const preimage_fn* preimage,
                    std::vector<tags::tag>& out) {
  const std::string& dbid = db.tag_space;
  for (const write_target& t : p.writes) {
    const write_ref& w = t.ref;
    bool rows_named = w.op == write_op::update || w.op == write_op::del ||
                      (w.op == write_op::insert && w.rows_known &&
                       w.on_conflict != write_ref::conflict::update);
    if (!rows_named || t.new_row_any) {
      out.push_back(tags::table_epoch(dbid, t.table));
      continue;
    }
    std::vector<std::string> cols = db.predicate_columns_of(t.oid);
    // Column classes come from the catalog snapshot the plan was built with.
    const relation* r = snap.by_oid(t.oid);
    std::vector<std::string> deferred;  // columns whose old values only a pre-image can name
    std::vector<char> deferred_cls;
    // The values of `c` the write touched, or (not known) the column's epoch.
    auto name = [&](const std::string& c, bool known, const std::vector<std::string>& values) {
      if (!known) out.push_back(tags::column_epoch(dbid, t.table, c));
      else
        for (const std::string& v : values) out.push_back(tags::predicate(dbid, t.table, c, v));
    };
    for (const std::string& c : cols) {
      if (std::find(t.trigger_columns.begin(), t.trigger_columns.end(), c) !=
          t.trigger_columns.end()) {
        name(c, false, {});  // a trigger computes the stored value
        continue;
      }
      char cls = r ? r->column_class(c) : column_other;
      std::vector<std::string> values;
      bool known = cls == column_int || cls == column_text;
      // A value compared (a pinned WHERE) or written (SET, VALUES).
      auto add_value = [&](const eq_value& v, bool written) {
        auto cv = written && r ? canonical_written(v, cls, *r, c, params, p.values)
                               : canonical(v, cls, params, p.values);
        if (!cv) known = false;
        else values.push_back(std::move(*cv));
      };
      bool update_or_delete = w.op == write_op::update || w.op == write_op::del;
      if (known && update_or_delete) {
        auto it = std::find_if(w.where.begin(), w.where.end(),
                               [&](const eq_conjunct& e) { return e.column == c; });
        bool pinned = it != w.where.end();
        if (pinned)
          for (const eq_value& v : it->values) add_value(v, false);
        if (known && w.op == write_op::update) {
          for (const auto& [col, val] : w.set) {
            if (col != c) continue;
            if (!val) known = false;
            else add_value(*val, true);
          }
        }
        if (known && !pinned) {
          // The new value (if SET) is named now; the old ones only by a pre-image.
          if (preimage && !w.where_sql.empty()) {
            deferred.push_back(c);
            deferred_cls.push_back(cls);
          } else {
            known = false;
          }
        }
      } else if (known) {  // INSERT ... VALUES
        auto it = std::find(w.columns.begin(), w.columns.end(), c);
        if (it == w.columns.end()) known = false;
        else {
          std::size_t idx = static_cast<std::size_t>(it - w.columns.begin());
          for (const auto& row : w.rows) {
            if (idx >= row.size() || !row[idx]) { known = false; break; }
            add_value(*row[idx], true);
          }
        }
      }
      name(c, known, values);
    }
    if (deferred.empty()) continue;
    std::optional<std::vector<row>> rows = (*preimage)(t, deferred);
    if (rows && rows->size() > kMaxPreimageRows) rows.reset();
    for (std::size_t k = 0; k < deferred.size(); ++k) {
      std::vector<std::string> values;
      bool known = rows.has_value();
      for (std::size_t i = 0; known && i < rows->size(); ++i) {
        const row& x = (*rows)[i];
        if (k >= x.size()) { known = false; break; }
        if (!x[k]) continue;  // NULL equals nothing: no read of `c = v` saw this row
        auto cv = canonical_text(*x[k], deferred_cls[k], p.values.utf8);
        if (!cv) known = false;
        else values.push_back(std::move(*cv));
      }
      name(deferred[k], known, values);
    }
  }
}

// At most this many distinct values of a result column become predicate tags; beyond, the
// read depends on the whole table.
constexpr std::size_t kMaxResultTags = 1024;

// The predicate tags a result names for its by-result dependencies; false when the
// adapter cannot give the values or there are too many.
bool result_tags(const plan& p, const std::vector<std::uint16_t>& which, const cached_value& v,
                 const std::string& dbid, std::vector<tags::tag>& out) {
  std::vector<std::optional<std::string>> col;
  std::unordered_set<std::string> seen;
  for (std::uint16_t i : which) {
    const pred_dep& d = p.preds[i];
    col.clear();
    seen.clear();
    if (!v.column_text(static_cast<std::size_t>(d.output), col)) return false;
    for (const auto& x : col) {
      if (!x) continue;  // NULL = anything is never true: no rows read
      auto cv = canonical_text(*x, d.cls, p.values.utf8);
      if (!cv) return false;
      if (!seen.insert(*cv).second) continue;
      if (seen.size() > kMaxResultTags) return false;
      out.push_back(tags::predicate(dbid, d.table, d.column, *cv));
    }
    // A join that produced no row: the outer row (if any) and the join value it would
    // have used are unknown.
    if (d.join && seen.empty()) return false;
  }
  return true;
}

bool params_have_time_word(std::span<const param> params) {
  for (const param& x : params)
    if ((x.type == param_type::text || x.type == param_type::other ||
         x.type == param_type::date) && is_time_word(x.text))
      return true;
  return false;
}

}  // namespace

namespace {

// Transaction control and SET / RESET / DISCARD need neither the catalog nor the context:
// they are planned without bookkeeping queries, which would otherwise run first inside
// the transaction (SET TRANSACTION ISOLATION LEVEL must be its first query). nullptr for
// anything else.
std::shared_ptr<const plan> control_plan(std::string_view sql) {
  auto a = analyze(sql);
  if (!a->ok || a->statements.size() != 1) return nullptr;
  const statement& s = a->statements[0];
  auto p = std::make_shared<plan>();
  switch (s.kind) {
    case stmt_kind::txn_begin:
      p->act = action::txn_begin;
      break;
    case stmt_kind::txn_commit:
      p->act = action::txn_commit;
      break;
    case stmt_kind::txn_rollback:
      p->act = action::txn_rollback;
      break;
    case stmt_kind::savepoint:
    case stmt_kind::release:
      p->act = action::savepoint;
      break;
    case stmt_kind::rollback_to:
      p->act = action::rollback_to;
      break;
    case stmt_kind::txn_set:
      p->act = action::txn_set;
      break;
    case stmt_kind::session_set:
    case stmt_kind::session_reset:
      p->act = action::session_change;
      break;
    default:
      return nullptr;
  }
  p->a = a;
  p->isolation = s.isolation;
  p->dirties_context = s.kind == stmt_kind::session_set || s.kind == stmt_kind::session_reset ||
                       s.kind == stmt_kind::txn_set;
  p->touches_prepared = s.node == "DiscardStmt";
  return p;
}

// Whether ensure_catalog() / ensure_context() would run a query now. (The hit path stays
// a lookup in the session's plans: control_plan() is only consulted here.)
bool bookkeeping_due(const session::state& st) {
  return !st.db || st.context_dirty || st.db->catalog_stale.load(std::memory_order_acquire) ||
         st.db->config_epoch.load(std::memory_order_acquire) != st.config_seen || !st.snap ||
         st.snap->generation() != st.db->cat->generation();
}

// A statement's effects on session state that the server does not report.
void apply_session_effects(session::state& st, const plan& p) {
  if (p.dirties_context) mark_context_dirty(st);
  if (p.touches_prepared) ++st.prepared_epoch;
  if (p.reloads_config && st.db) st.db->config_epoch.fetch_add(1, std::memory_order_acq_rel);
}

// ---- Own transactions (feed.h own_register) ----------------------------------------
// A transaction this session wrote in is registered with the stream by its xid before
// its COMMIT can be sent, so that the stream's copy of it moves nothing: the write hold,
// released after COMMIT returned, already invalidated a superset of it. Anything that
// makes that coverage uncertain forgets the xid before the hold is released.

std::optional<std::uint64_t> xid_of(const std::vector<row>& rows) {
  if (rows.size() != 1 || rows[0].size() != 1 || !rows[0][0]) return std::nullopt;
  std::uint64_t x = 0;
  const std::string& t = *rows[0][0];
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), x);
  if (ec != std::errc() || end != t.data() + t.size() || x == 0) return std::nullopt;
  return x;
}

// The current transaction will not be registered: a statement the engine cannot follow
// (PREPARE TRANSACTION, DDL, a procedure, a multi-statement string), or raw() access.
void own_disable(session::state& st) noexcept {
  auto& tx = st.tx;
  if (tx.own_xid && st.stream) st.stream->own_forget(tx.own_xid);
  tx.own_xid = 0;
  tx.own_off = true;
}

// An application transaction's write succeeded: learn its xid (assigned now, unless the
// write changed no row) and register it. Never inside a failed transaction.
void own_learn(session::state& st, const run_fn& run) {
  auto& tx = st.tx;
  if (!st.stream || !tx.active || tx.failed || tx.own_xid || tx.own_off || st.raw_open) return;
  if (st.status && st.status->transaction() != 'T') return;
  try {
    auto x = xid_of(run("SELECT pg_catalog.pg_current_xact_id_if_assigned()::text"));
    if (!x) return;  // nothing written yet: asked again after the next write
    if (st.stream->own_register(*x)) tx.own_xid = *x;
    else tx.own_off = true;
  } catch (...) {
    // The server's error ends the transaction; the application hears it next statement.
    tx.own_off = true;
  }
}

// The transaction ends (before its hold is released). True when its copy will be
// skipped. A failure that left the server idle rolled it back; anything else (the
// connection broke during COMMIT) leaves the outcome unknown: the stream goes down.
bool own_end(session::state& st, bool commit) noexcept {
  auto& tx = st.tx;
  std::uint64_t x = std::exchange(tx.own_xid, 0);
  tx.own_off = false;
  if (!x || !st.stream) return false;
  if (commit) return true;
  if (st.status && st.status->transaction() == 'I') st.stream->own_forget(x);
  else st.stream->own_outcome_unknown(x);
  return false;
}

// One plain INSERT/UPDATE/DELETE/MERGE sent outside any transaction block, by an adapter
// that can report a COMMIT's error, on a followed database, in a session whose default
// isolation is READ COMMITTED: under REPEATABLE READ or SERIALIZABLE the wrapped statement
// would run on the snapshot of the wrapper's own SELECT, one round trip older than the
// one it takes in autocommit, and a row committed by another client in between would
// make it fail where autocommit succeeds (those sessions' writes wait for their copy).
bool own_wrappable(const session::state& st, const plan& p) {
  if (!st.stream || !st.wrap_ok || st.raw_open || st.tx.active || p.flush || !st.status ||
      st.status->transaction() != 'I' || !p.a || !p.a->ok || p.a->statements.size() != 1 ||
      st.ctx.isolation != "read committed")
    return false;
  const statement& s = p.a->statements[0];
  return s.kind == stmt_kind::write && (s.node == "InsertStmt" || s.node == "UpdateStmt" ||
                                        s.node == "DeleteStmt" || s.node == "MergeStmt");
}

// Wraps an autocommit write: BEGIN, deferred constraints checked at the statement as in
// autocommit, no idle-in-transaction timeout (the application opened no transaction: a
// short idle_in_transaction_session_timeout must not end its session between our round
// trips), and the xid assigned now (one round trip; a write that changes no row spends
// an xid). Any failure here comes before the application's statement, which then runs
// unwrapped as it would have.
void own_wrap_begin(session::state& st, call& c, const run_fn& run) {
  try {
    auto x = xid_of(run("BEGIN; SET CONSTRAINTS ALL IMMEDIATE; "
                        "SET LOCAL idle_in_transaction_session_timeout = 0; "
                        "SELECT pg_catalog.pg_current_xact_id()::text"));
    if (x && st.stream->own_register(*x)) {
      c.own_xid = *x;
      c.own_run = run;
      return;
    }
  } catch (...) {
  }
  try {
    if (st.status->transaction() != 'I') run("ROLLBACK");
  } catch (...) {
  }
}

// After the wrapped statement succeeded: COMMIT. Its error, if any, is returned for the
// caller (as autocommit would have raised it), the xid forgotten first.
std::exception_ptr own_wrap_commit(session::state& st, call& c) {
  try {
    c.own_run("COMMIT");
    c.own_run = nullptr;
    return nullptr;
  } catch (...) {
    std::exception_ptr e = std::current_exception();
    if (st.status && st.status->transaction() == 'I') st.stream->own_forget(c.own_xid);
    else st.stream->own_outcome_unknown(c.own_xid);
    c.own_xid = 0;
    c.own_run = nullptr;
    return e;
  }
}

// After the wrapped statement failed: ROLLBACK (the statement's error is the caller's).
void own_wrap_rollback(session::state& st, call& c) noexcept {
  st.stream->own_forget(c.own_xid);
  try {
    c.own_run("ROLLBACK");
  } catch (...) {
  }
  c.own_xid = 0;
  c.own_run = nullptr;
}

void reconcile_transaction(session& s, session::state& st, cache& ch, call& c);

}  // namespace

void session::allow_autocommit_wrap() noexcept { st_->wrap_ok = true; }

void session::raw_access() noexcept {
  if (st_->tx.active) own_disable(*st_);
}

void session::raw_exposed(bool open) noexcept {
  raw_access();
  st_->raw_open = open;
}

// A plan that reads a relation the catalog does not know: the catalog is read again and
// the statement planned again, once. Still unknown, it runs uncached and flushes only if
// it succeeds (a relation created between this refresh and the statement could run
// anything); such a plan is not kept.
std::shared_ptr<const plan> replan_with_fresh_catalog(session::state& st, std::string_view sql,
                                                      std::optional<bool> scs, const run_fn& run,
                                                      const qcache::options& opts) {
  st.db->catalog_stale.store(true, std::memory_order_release);
  ensure_catalog(st, run);
  ensure_context(st, run);
  auto p = build_plan(st, analyze_as_sent(sql, scs, st.ctx.client_encoding), opts);
  if (!p->reads_unknown) {
    if (scs) st.plans.insert_or_assign(std::string(sql), p);
    return p;
  }
  // A missing relation: an error is not worth a flush. A relation created since the
  // refresh above (a race of microseconds) makes the statement succeed: it flushes then.
  st.plans.erase(std::string(sql));
  auto missing = std::make_shared<plan>(*p);
  missing->act = action::read_uncacheable;
  missing->flush = false;
  missing->flush_if_it_runs = true;
  return missing;
}

call session::begin(std::string_view sql, std::span<const param> params, char kind,
                    const run_fn& run, const hints* h) {
  call c;
  state& st = *st_;
  cache& ch = *cache_;
  state::txn& tx = st.tx;

  if (tx.active && tx.failed) {
    // The server refuses everything but ROLLBACK now; let it say so unchanged.
    auto a = analyze(sql);
    if (a->ok && a->statements.size() == 1) {
      stmt_kind k = a->statements[0].kind;
      if (k == stmt_kind::txn_rollback || k == stmt_kind::rollback_to ||
          k == stmt_kind::txn_commit) {
        auto p = std::make_shared<plan>();
        p->act = k == stmt_kind::rollback_to ? action::rollback_to
                 : k == stmt_kind::txn_commit ? action::txn_commit
                                               : action::txn_rollback;
        c.p = std::move(p);
      }
    }
    ch.count_uncacheable(uncacheable_reason::transaction_local);
    return c;
  }
  if (bookkeeping_due(st)) {
    if (auto cp = control_plan(sql)) {
      c.p = std::move(cp);
      return c;
    }
  }

  ensure_catalog(st, run);
  ensure_stream(st, cache_);
  ensure_context(st, run);
  if (tx.active && tx.isolation_pending && !st.context_dirty) {
    const std::string& iso = st.ctx.transaction_isolation;
    tx.isolation_pending = false;
    tx.bypass = !(iso == "read committed" || iso == "read uncommitted");
    sync_memo_snapshot(tx);
  }

  std::shared_ptr<const plan> p;
  // Simple-protocol text ('e') is lexed now; other calls may run a statement the server
  // prepared earlier, under whatever standard_conforming_strings was then.
  std::optional<bool> scs = st.ctx.standard_conforming_strings;
  if (kind != 'e' && st.scs_off_seen && sql.find('\\') != std::string_view::npos) scs.reset();
  auto it = scs ? st.plans.find(sql) : st.plans.end();
  if (it != st.plans.end() && it->second->catalog_generation == st.snap->generation() &&
      it->second->context_id == st.context_id) {
    p = it->second;
  } else {
    p = build_plan(st, analyze_as_sent(sql, scs, st.ctx.client_encoding), ch.settings());
    if (st.plans.size() > 4096) st.plans.clear();
    if (scs) st.plans.insert_or_assign(std::string(sql), p);
  }
  if (p->reads_unknown) [[unlikely]]
    p = replan_with_fresh_catalog(st, sql, scs, run, ch.settings());
  c.p = p;

  switch (p->act) {
    case action::read_cacheable: {
      if (h && h->uncacheable) {
        ch.count_uncacheable(uncacheable_reason::annotated);
        return c;
      }
      if (tx.active) {
        if (tx.bypass) {
          ch.count_uncacheable(uncacheable_reason::isolation);
          return c;
        }
        bool local = tx.wrote_unknown;
        for (std::uint32_t o : p->read_oids) local = local || tx.written.count(o);
        if (local) {
          ch.count_uncacheable(uncacheable_reason::transaction_local);
          return c;
        }
      }
      if (st.stream && !st.stream->serving()) [[unlikely]] {
        // No stream, no news of other writers: neither served nor stored until it is back.
        ch.count_uncacheable(uncacheable_reason::stream_down);
        return c;
      }
      st.kb.start(st.context_id, kind, sql);
      for (const param& x : params) st.kb.add(x.type, x.text);
      st.kb.finish_into(c.k);
      if (auto v = ch.lookup(c.k)) {
        c.hit = std::move(v);
        return c;
      }
      // Miss: dependencies for these parameter values.
      dependencies deps;
      deps.tags = p->fixed_tags;
      const std::string& dbid = st.db->tag_space;
      for (std::size_t i = 0; i < p->preds.size(); ++i) {
        const pred_dep& d = p->preds[i];
        if (d.output >= 0) {
          // Values known from the result: no write to the table may happen until it is
          // stored (a fence), then the predicate tags of its values are read.
          if (st.db->add_predicate_column(d.oid, d.column)) {
            deps.tags.push_back(tags::table_epoch(dbid, d.table));
            deps.tags.push_back(tags::column_epoch(dbid, d.table, d.column));
            deps.fences.push_back(tags::table(dbid, d.table));
            c.by_result.push_back(static_cast<std::uint16_t>(i));
          } else {
            deps.tags.push_back(tags::table(dbid, d.table));
          }
          continue;
        }
        std::vector<std::string> values;
        bool ok = true;
        for (const eq_value& v : d.values) {
          auto cv = canonical(v, d.cls, params, p->values);
          if (!cv) { ok = false; break; }
          values.push_back(std::move(*cv));
        }
        if (ok) ok = st.db->add_predicate_column(d.oid, d.column);
        if (ok) {
          deps.tags.push_back(tags::table_epoch(dbid, d.table));
          deps.tags.push_back(tags::column_epoch(dbid, d.table, d.column));
          for (const std::string& v : values)
            deps.tags.push_back(tags::predicate(dbid, d.table, d.column, v));
          deps.guards.push_back(tags::table(dbid, d.table));
        } else {
          deps.tags.push_back(tags::table(dbid, d.table));
        }
      }
      if (h) {
        for (const auto& dep : h->depends_on) {
          if (dep.empty()) continue;
          const relation* r = st.snap->resolve(split_name(dep[0]), st.ctx.schemas);
          std::string id = r ? oid_text(r->oid) : "name:" + dep[0];
          if (dep.size() >= 3 && r) {
            // As a predicate read `dep[1] = dep[2]` would: the value canonical for the
            // column, the column registered so that writes name their values of it.
            std::optional<std::string> v =
                canonical_text(dep[2], r->column_class(dep[1]), p->values.utf8);
            if (v && st.db->add_predicate_column(r->oid, dep[1])) {
              deps.tags.push_back(tags::table_epoch(dbid, id));
              deps.tags.push_back(tags::column_epoch(dbid, id, dep[1]));
              deps.tags.push_back(tags::predicate(dbid, id, dep[1], *v));
              deps.guards.push_back(tags::table(dbid, id));
            } else {
              deps.tags.push_back(tags::table(dbid, id));
            }
          } else if (dep.size() >= 3) {
            deps.tags.push_back(tags::predicate(dbid, id, dep[1], dep[2]));
            deps.tags.push_back(tags::table_epoch(dbid, id));
          } else {
            deps.tags.push_back(tags::table(dbid, id));
          }
        }
      }
      if (params_have_time_word(params)) {
        ch.count_uncacheable(uncacheable_reason::time_literal);
        ch.count_miss();
        return c;
      }
      // Capture first: when a write is in flight on a dependency the result cannot be
      // stored, so neither leading nor waiting for a flight would help anyone. A follower
      // that ends up executing itself keeps its earlier (more conservative) snapshot.
      c.snap = ch.capture(deps);
      if (st.stream) {
        // After the capture, before the query: see feed.h.
        c.stream = st.stream;
        c.mark = st.stream->mark();
      }
      const auto min_us = static_cast<std::uint64_t>(ch.settings().single_flight_min_latency.count());
      if (c.snap.storable() && (p->exec_us == plan::unmeasured || p->exec_us >= min_us)) {
        c.flight = ch.join_flight(c.k, deps);
        if (!c.flight.leader() && c.flight.value()) {
          c.hit = c.flight.value();
          return c;
        }
      }
      ch.count_miss();
      c.store = true;
      c.started = std::chrono::steady_clock::now();
      return c;
    }
    case action::read_uncacheable:
      ch.count_uncacheable(p->reason);
      return c;
    case action::write:
    case action::ddl:
    case action::unknown: {
      if (p->act == action::unknown && (p->reason == uncacheable_reason::parse_error ||
                                        p->reason == uncacheable_reason::unknown_relation))
        ch.count_uncacheable(p->reason);
      // First hold the relations' own tags (and the global one for a flush): a predicate
      // read that registers a column from now on sees table(t) in flight and will not
      // store. Only then read the registry for the row and column tags.
      std::vector<tags::tag> t(p->write_fixed_tags);
      if (p->flush || p->act != action::write) t.push_back(tags::global());
      if (p->act != action::write) {
        st.db->ddl_started.fetch_add(1, std::memory_order_acq_rel);
        if (tx.active) ++tx.ddl_count;
        else c.ddl_owned = true;
      }
      // Was a DDL statement in flight, or did one start, since the catalog we plan with?
      std::uint64_t finished = st.db->ddl_finished.load(std::memory_order_acquire);
      c.ddl_seen = st.db->ddl_started.load(std::memory_order_acquire);
      c.ddl_quiet = finished + (c.ddl_owned ? 1 : 0) + (tx.active ? tx.ddl_count : 0) == c.ddl_seen;
      invalidation_cause cause = p->act == action::ddl ? invalidation_cause::ddl
                                 : p->flush            ? invalidation_cause::flush
                                                       : invalidation_cause::write;
      write_hold& hold = tx.active ? tx.hold : c.statement_hold;
      if (tx.active && !hold.empty()) {
        hold.add(t);
        ch.count_invalidation(cause);
      } else {
        hold = ch.begin_write(t, cause);
      }
      // Outside a transaction a failed pre-image costs nothing but precision; inside one it
      // would abort the application's transaction, so it is not tried there.
      bool try_preimage = ch.settings().write_preimage && !tx.active && !p->flush &&
                          p->act == action::write && p->preimage_ok &&
                          sql.find('\\') == std::string_view::npos &&
                          !params_have_time_word(params);
      std::optional<preimage_fn> pre;  // built only for writes that may use it
      if (try_preimage)
        pre.emplace([&](const write_target& t, const std::vector<std::string>& cols)
                        -> std::optional<std::vector<row>> {
          const relation* r = st.snap->by_oid(t.oid);
          if (!r) return std::nullopt;
          auto q = preimage_sql(t, *r, cols, params, p->values.ascii_unsafe);
          if (!q) return std::nullopt;
          try {
            return run(*q);
          } catch (...) {
            return std::nullopt;
          }
        });
      std::vector<tags::tag> rows;
      write_row_tags(*p, *st.db, *st.snap, params, pre ? &*pre : nullptr, rows);
      hold.add(rows);
      if (st.stream) {
        if (tx.active && p->act != action::write) own_disable(st);
        else if (tx.active && !tx.own_xid && !tx.own_off) c.own_run = run;  // own_learn
        else if (own_wrappable(st, *p)) own_wrap_begin(st, c, run);
      }
      if (tx.active) {
        tx.written.insert(p->written_oids.begin(), p->written_oids.end());
        if (p->flush || p->act != action::write) tx.wrote_unknown = true;
        if (p->act != action::write) tx.ddl = true;
        if (p->flush || !c.ddl_quiet) tx.flush_on_end = true;
      }
      return c;
    }
    default:
      return c;
  }
}

namespace {
// A statement that changed session state (SET, RESET, set_config(), SET TRANSACTION,
// ROLLBACK TO) inside a memoized function: a hit would skip it, so the value is not stored.
void memo_session_effects(const plan& p) noexcept {
  if (p.dirties_context || p.act == action::session_change || p.act == action::txn_set ||
      p.act == action::rollback_to)
    detail::memo_spoil("the function changed session state");
}
}  // namespace

void session::succeeded(call& c, std::shared_ptr<const cached_value> value) {
  state& st = *st_;
  cache& ch = *cache_;
  if (c.own_xid) [[unlikely]] {
    if (std::exception_ptr e = own_wrap_commit(st, c)) {
      failed(c);
      std::rethrow_exception(e);
    }
  } else if (c.own_run) [[unlikely]] {
    own_learn(st, c.own_run);
    c.own_run = nullptr;
  }
  if (reported_moved(st)) {
    // The statement ran under settings other than the key's (a reload took effect, or a
    // function changed them): its result is not stored, and the context is read again.
    mark_context_dirty(st);
    c.store = false;
  }
  if (c.store) {
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now() - c.started).count();
    auto x = static_cast<std::uint32_t>(std::min<std::int64_t>(us, 0x7fffffff));
    if (c.p) c.p->exec_us = c.p->exec_us == plan::unmeasured ? x : (3 * c.p->exec_us + x) / 4;
  }
  if (c.store && value && c.stream && !c.stream->may_store(c.mark, c.snap)) {
    ch.count_uncacheable(c.stream->serving() ? uncacheable_reason::stream_unconfirmed
                                             : uncacheable_reason::stream_down);
    c.store = false;
  }
  if (c.store && value) {
    if (c.by_result.empty() || !c.p) {
      ch.store(c.k, c.snap, std::move(value));
    } else {
      std::vector<tags::tag> named;
      if (result_tags(*c.p, c.by_result, *value, st.db->tag_space, named))
        ch.store_named(c.k, c.snap, std::move(value), named);
      else
        ch.store(c.k, c.snap, std::move(value));  // the fences become dependencies
    }
  }
  c.store = false;
  c.flight.done();
  if (!c.p) return;
  const plan& p = *c.p;
  state::txn& tx = st.tx;
  if (detail::tl_memo) [[unlikely]]
    memo_session_effects(p);
  switch (p.act) {
    case action::write:
    case action::ddl:
    case action::unknown:
      reconcile_transaction(*this, st, ch, c);
      if (p.act == action::unknown && p.a && p.a->ok && p.a->statements.size() > 1 &&
          (!st.status || st.status->transaction() == '?')) {
        // Follow transaction control inside a multi-statement string. If it leaves a
        // transaction open, that transaction keeps the (global) hold until it ends.
        bool was_active = tx.active;
        for (const statement& s : p.a->statements) {
          if (s.kind == stmt_kind::txn_begin) transaction_begun(s.isolation);
          else if (s.kind == stmt_kind::txn_commit) transaction_committed();
          else if (s.kind == stmt_kind::txn_rollback) transaction_rolled_back();
        }
        if (!was_active && tx.active) {
          tx.hold = std::move(c.statement_hold);
          if (c.ddl_owned) ++tx.ddl_count;
          c.ddl_owned = false;
          tx.wrote_unknown = tx.flush_on_end = true;
          tx.context_changed = true;
          st.context_dirty = true;
          break;
        }
      }
      if (tx.active && p.act == action::unknown && p.a && p.a->ok &&
          p.a->statements.size() == 1 && p.a->statements[0].node == "TransactionStmt") {
        // PREPARE TRANSACTION ended the transaction on the server. Its writes become
        // visible at COMMIT PREPARED, which flushes again (an unknown statement).
        transaction_committed();
        break;
      }
      if (!tx.active) {
        bool flush = p.flush || p.act != action::write || !c.ddl_quiet ||
                     st.db->ddl_started.load(std::memory_order_acquire) != c.ddl_seen;
        if (p.act != action::write) {
          st.db->catalog_stale.store(true, std::memory_order_release);
          st.context_dirty = true;
        }
        if (flush) ch.flush(p.act == action::ddl ? invalidation_cause::ddl : invalidation_cause::flush);
        if (c.ddl_owned) st.db->ddl_finished.fetch_add(1, std::memory_order_acq_rel);
        c.ddl_owned = false;
        bool wrote = !c.statement_hold.empty() && !c.own_xid;
        c.statement_hold.release(false);
        if (wrote && st.stream) st.stream->await_echo(ch.settings().sync_timeout);
      }
      break;
    case action::read_uncacheable:
    case action::read_cacheable:
      if (p.flush_if_it_runs) [[unlikely]] {
        st.db->catalog_stale.store(true, std::memory_order_release);
        ch.invalidate(std::array{tags::database(st.db->tag_space)}, invalidation_cause::flush);
      }
      if (p.dirties_context) {
        st.context_dirty = true;
        if (tx.active) tx.context_changed = true;
      }
      break;
    case action::txn_begin: transaction_begun(p.isolation); break;
    case action::txn_commit: transaction_committed(); break;
    case action::txn_rollback: transaction_rolled_back(); break;
    case action::rollback_to:
      // ROLLBACK TO undoes every SET (role, search_path, ...) made after the savepoint.
      tx.failed = false;
      mark_context_dirty(st);
      break;
    case action::txn_set:
      if (tx.active && !p.isolation.empty() && p.isolation != "read committed" &&
          p.isolation != "read uncommitted")
        tx.bypass = true;
      st.context_dirty = true;
      // The key holds transaction_isolation: read it again once the transaction ends.
      if (tx.active) tx.context_changed = true;
      break;
    case action::session_change:
      mark_context_dirty(st);
      break;
    default:
      break;
  }
  apply_session_effects(st, p);
  reconcile_transaction(*this, st, ch, c);
}

void session::failed(call& c) noexcept {
  state& st = *st_;
  if (c.own_xid) [[unlikely]] own_wrap_rollback(st, c);
  c.own_run = nullptr;
  c.store = false;
  c.flight.done();
  if (!c.p) return;
  const plan& p = *c.p;
  state::txn& tx = st.tx;
  if (reported_moved(st)) mark_context_dirty(st);
  if (p.act == action::txn_commit || p.act == action::txn_rollback) {
    // A failed COMMIT (e.g. a serialization failure) ends the transaction too.
    transaction_rolled_back();
    reconcile_transaction(*this, st, *cache_, c);
    return;
  }
  if (p.act == action::write || p.act == action::ddl || p.act == action::unknown) {
    reconcile_transaction(*this, st, *cache_, c);  // e.g. "BEGIN; <failing statement>"
    if (!tx.active) {
      if (p.act != action::write) {
        st.db->catalog_stale.store(true, std::memory_order_release);
        st.context_dirty = true;
      }
      if (c.ddl_owned) st.db->ddl_finished.fetch_add(1, std::memory_order_acq_rel);
      c.ddl_owned = false;
      c.statement_hold.release(false);
    }
  }
  if (p.act == action::unknown || p.act == action::session_change) mark_context_dirty(st);
  // An earlier statement of a failed multi-statement string may have run.
  apply_session_effects(st, p);
  if (tx.active) tx.failed = true;
  reconcile_transaction(*this, st, *cache_, c);
}

void session::transaction_begun(std::string_view isolation) {
  state& st = *st_;
  state::txn& tx = st.tx;
  if (tx.active) {
    // BEGIN inside a transaction is a warning in PostgreSQL, but its modes still apply to
    // the open transaction ("BEGIN; BEGIN ISOLATION LEVEL REPEATABLE READ" runs one
    // snapshot): bypass now, and read the real level again inside the transaction.
    if (isolation.empty()) return;
    const std::string iso = lower(isolation);
    if (iso != "read committed" && iso != "read uncommitted") tx.bypass = true;
    st.context_dirty = true;
    tx.context_changed = true;
    return;
  }
  tx.active = true;
  tx.own_xid = 0;
  tx.own_off = false;
  tx.memo = detail::tl_memo ? detail::memo_txn_begun() : detail::memo_txn{};
  tx.failed = false;
  tx.wrote_unknown = tx.ddl = tx.flush_on_end = tx.context_changed = false;
  tx.written.clear();
  if (isolation.empty() && (st.context_dirty || !st.db)) {
    // The session default is not known yet: bypass until the first statement of the
    // transaction reads the context (transaction_isolation is then exact).
    tx.isolation_pending = true;
    tx.bypass = true;
  } else {
    std::string iso = isolation.empty() ? st.ctx.isolation : lower(isolation);
    tx.isolation_pending = false;
    tx.bypass = !(iso.empty() || iso == "read committed" || iso == "read uncommitted");
  }
  tx.ddl_epoch = st.db ? st.db->ddl_started.load(std::memory_order_acquire) : 0;
  tx.ddl_count = 0;
  sync_memo_snapshot(tx);
}

namespace {
void end_transaction(session::state& st, cache& ch, bool commit) noexcept {
  auto& tx = st.tx;
  if (!tx.active) return;
  if (detail::tl_memo || tx.memo.frame) [[unlikely]]
    detail::memo_txn_ended(std::exchange(tx.memo, {}));
  bool epoch_moved = st.db && !tx.hold.empty() &&
                     st.db->ddl_started.load(std::memory_order_acquire) !=
                         tx.ddl_epoch + tx.ddl_count;
  if (tx.ddl && st.db) {
    st.db->catalog_stale.store(true, std::memory_order_release);
  }
  if (tx.ddl || tx.context_changed || tx.wrote_unknown) st.context_dirty = true;
  if (tx.flush_on_end || tx.ddl || epoch_moved)
    ch.flush(tx.ddl ? invalidation_cause::ddl : invalidation_cause::flush);
  bool own = own_end(st, commit);
  bool wrote = !tx.hold.empty();
  tx.hold.release(commit);
  if (commit && wrote && !own && st.stream) st.stream->await_echo(ch.settings().sync_timeout);
  if (st.db && tx.ddl_count) st.db->ddl_finished.fetch_add(tx.ddl_count, std::memory_order_acq_rel);
  tx.ddl_count = 0;
  tx.active = false;
  tx.failed = false;
  tx.bypass = false;
  tx.written.clear();
  sync_memo_snapshot(tx);
}

// Brings the engine's idea of the transaction in line with the server's report after a
// statement ran: COMMIT AND CHAIN and ROLLBACK AND CHAIN open a new transaction, BEGIN
// or COMMIT may hide in a multi-statement string or a procedure. The hold of a statement
// taken as autocommit that turned out to run inside a transaction block stays until that
// transaction ends; a transaction the engine did not see begin bypasses the shared cache
// until the context (its isolation level) has been read inside it.
void reconcile_transaction(session& s, session::state& st, cache& ch, call& c) {
  sync_memo_snapshot(st.tx);
  if (!st.status) return;
  auto& tx = st.tx;
  char t = st.status->transaction();
  if ((t == 'T' || t == 'E') && !tx.active) {
    st.context_dirty = true;
    s.transaction_begun();
    tx.context_changed = true;
    if (!c.statement_hold.empty()) {
      tx.hold = std::move(c.statement_hold);
      tx.wrote_unknown = tx.flush_on_end = true;
    }
    if (c.ddl_owned) {
      ++tx.ddl_count;
      tx.ddl = true;
      c.ddl_owned = false;
    }
  }
  if (t == 'E' && tx.active) tx.failed = true;
  if (t == 'I' && tx.active) end_transaction(st, ch, false);
  sync_memo_snapshot(tx);
}
}  // namespace

void session::transaction_committed() { end_transaction(*st_, *cache_, true); }
void session::transaction_rolled_back() { end_transaction(*st_, *cache_, false); }

namespace {
// A relation named by the application (annotation, manual invalidation), resolved with the
// session's current catalog and search_path; nullptr when it does not resolve.
const relation* resolve_named(session::state& st, std::string_view table, const run_fn& run) {
  ensure_catalog(st, run);
  ensure_context(st, run);
  return st.snap->resolve(split_name(table), st.ctx.schemas);
}
}  // namespace

void session::connect(const run_fn& run) {
  ensure_catalog(*st_, run);
  ensure_stream(*st_, cache_);
  // The process's first statement on a database used to read the catalog itself, so DDL
  // made by other clients between connecting and that statement (a migration, a test's
  // setup) was known to it. Read now only to start the stream, the catalog is read again
  // at that statement, once per database object: reading it early must not make it older.
  if (st_->db->loaded_at_creation.exchange(false, std::memory_order_acq_rel))
    st_->db->catalog_stale.store(true, std::memory_order_release);
}

bool session::sync(const run_fn& run) {
  state& st = *st_;
  if (!cache_->settings().follow_changes) return true;
  if (!st.stream) connect(run);
  auto rows = run("SELECT pg_catalog.pg_current_wal_lsn()::text");
  std::optional<std::uint64_t> lsn;
  if (rows.size() == 1 && rows[0].size() == 1 && rows[0][0]) lsn = pgoutput::parse_lsn(*rows[0][0]);
  if (!lsn) throw std::runtime_error("qcache: sync(): pg_current_wal_lsn() gave no LSN");
  return st.stream->wait_processed(*lsn, cache_->settings().sync_timeout);
}

void session::invalidate_table(std::string_view table, const run_fn& run) {
  state& st = *st_;
  const relation* r = resolve_named(st, table, run);
  const std::string& dbid = st.db->tag_space;
  std::vector<tags::tag> t;
  if (!r) {
    t.push_back(tags::table(dbid, "name:" + std::string(table)));
  } else {
    std::vector<std::uint32_t> oids{r->oid};
    oids.insert(oids.end(), r->family.begin(), r->family.end());
    for (std::uint32_t o : oids) {
      t.push_back(tags::table(dbid, oid_text(o)));
      t.push_back(tags::table_epoch(dbid, oid_text(o)));
    }
  }
  cache_->invalidate(t, invalidation_cause::manual);
}

void session::invalidate_row(std::string_view table, std::string_view column,
                             std::string_view value, const run_fn& run) {
  state& st = *st_;
  const relation* r = resolve_named(st, table, run);
  const std::string& dbid = st.db->tag_space;
  std::vector<tags::tag> t;
  if (!r) {
    t.push_back(tags::table(dbid, "name:" + std::string(table)));
    t.push_back(tags::predicate(dbid, "name:" + std::string(table), column, value));
  } else {
    std::string id = oid_text(r->oid);
    t.push_back(tags::table(dbid, id));
    char cls = r->column_class(column);
    auto cv = canonical_text(value, cls, st.ctx.client_encoding == "UTF8");
    if (cv) t.push_back(tags::predicate(dbid, id, column, *cv));
    else t.push_back(tags::column_epoch(dbid, id, column));
    for (std::uint32_t o : r->family) {
      t.push_back(tags::table(dbid, oid_text(o)));
      t.push_back(tags::table_epoch(dbid, oid_text(o)));
    }
  }
  cache_->invalidate(t, invalidation_cause::manual);
}

explanation session::explain(std::string_view sql, const run_fn& run) {
  state& st = *st_;
  ensure_catalog(st, run);
  ensure_context(st, run);
  auto a = analyze_as_sent(sql, st.ctx.standard_conforming_strings, st.ctx.client_encoding);
  explanation e;
  if (!a->ok) {
    e.kind = "error";
    e.error = a->error;
    e.reason = "parse_error: runs uncached and flushes (a statement qcache cannot read may write)";
    return e;
  }
  auto p = build_plan(st, a, cache_->settings());
  e.kind = a->statements.size() == 1 ? to_string(a->statements[0].kind)
                                     : (a->statements.empty() ? "empty" : "multi");
  e.cacheable = p->act == action::read_cacheable;
  if (!e.cacheable) {
    if (p->act == action::read_uncacheable) e.reason = to_string(p->reason);
    else if (p->flush) e.reason = "not_a_read; flushes: " + p->flush_reason;
    else e.reason = "not_a_read";
  }
  e.reads = p->read_names;
  e.writes = p->write_names;
  for (const pred_dep& d : p->preds) {
    std::string vals = d.output >= 0 ? "each value of result column " + std::to_string(d.output + 1)
                                     : std::string();
    for (const eq_value& v : d.values) {
      if (!vals.empty()) vals += ",";
      if (v.k == eq_value::kind::param) vals.append("$").append(std::to_string(v.param));
      else vals += v.text;
    }
    const relation* r = st.snap->by_oid(d.oid);
    std::string tag = "predicate ";
    tag.append(r ? r->schema : std::string()).append(r ? "." : "");
    tag.append(r ? r->name : d.table).append(".").append(d.column).append(" = ").append(vals);
    e.tags.push_back(std::move(tag));
  }
  for (const std::string& n : p->read_names) e.tags.push_back("reads " + n);
  if (p->flush) e.tags.push_back("flush (" + p->flush_reason + ")");
  for (const std::string& n : p->write_names) e.tags.push_back("invalidates " + n);
  return e;
}

}  // namespace qcache::pg
