// The SQLite engine: analysis by SQLite itself (authorizer at prepare time) and by qcache's
// PostgreSQL analyzer (equality conjuncts), row tags from the update and preupdate hooks,
// transaction tracking by the commit/rollback hooks, and detection
// of writes made by other connections or processes to the same file.
//
// Invariants:
//  * a statement is a cacheable read only when SQLite reports it read-only, its authorizer
//    callbacks are only SELECT/READ/FUNCTION/RECURSIVE, every function is deterministic,
//    and every table it reads is an ordinary table (views expand to their base tables;
//    shadow tables of virtual tables are not ordinary). The tables it reads are those the
//    authorizer reports plus every b-tree its bytecode opens (the authorizer is silent for
//    USING/NATURAL join columns); a virtual table opened makes it uncacheable. Anything
//    else that is not read-only is a write, and a write whose targets SQLite did not name
//    (VACUUM, unknown actions) flushes every database of the connection;
//  * a read of rowid/INTEGER PRIMARY KEY = ? (proved from the statement's bytecode: one
//    cursor, one SeekRowid from that parameter, no loops) depends on a predicate tag of that
//    rowid plus the table's epoch and its rowid epoch;
//  * otherwise a read whose tables qcache's PostgreSQL analyzer maps one to one onto the
//    tables SQLite reported, restricted by `c = value` on a column whose affinity
//    (INTEGER/NUMERIC or TEXT) and BINARY collation make equality textual, depends on
//    {table_epoch(t), column_epoch(t,c), predicate(t,c,v)} and guards table(t); the column
//    is registered (per database file, for the process) before its versions are captured.
//    Every other table read depends on its table tag;
//  * every write holds the table tag of each table it writes (so no predicate read can be
//    stored while it is in flight) and, after it ran and again at COMMIT (never after a
//    ROLLBACK), bumps the rowid tag of each row the update hook named and, from the
//    preupdate hook (which fires for every row of a real table: triggers, FK cascades,
//    REPLACE-deleted rows, WITHOUT ROWID tables, and disables the truncate optimisation),
//    predicate(t,c,old) and predicate(t,c,new) for every registered column c, or
//    column_epoch(t,c) when a value cannot be named. The hook reads the registry while the
//    write holds table(t). Where the update hook may be silent (WITHOUT ROWID, triggers,
//    REPLACE anywhere, UPDATE of the rowid, DELETE without WHERE) the write also moves the
//    rowid epoch; where the preupdate hook may be (virtual tables, fewer rows seen than
//    deleted) the table's epoch. Tables the hooks saw changed that the statement did not
//    declare (application functions, virtual table modules) are held table-wide. A
//    transaction is settled only when no write transaction is open;
//  * an analysis holds for the schema it was made under: a write re-checks its files and
//    is analysed again when the schema epochs moved; SQLite re-preparing a statement while
//    it runs means the schema changed (a read stores nothing, a write flushes);
//  * every read depends on its databases' tags; DDL, ATTACH/DETACH and external writes
//    bump them. Database identity is the file's device and inode (a file renamed over the
//    path is another database), proven at every schema refresh, plus a generation: it
//    lives while a connection of the process has the file attached (its inode cannot be
//    reused meanwhile) and is never given again, so an inode reused by a new file is a new
//    database. A memo hit proves the path still names the file by one epoll_wait of the
//    process's path watch when nothing changed on the path since the last look, else by a
//    stat (path_watch.h). A file that cannot be identified is not cached. temp and a
//    plain :memory: main get an identity private to the connection; other memory
//    databases (shared cache) too, watched by data_version;
//  * qcache never opens a descriptor of a database file (closing it would drop the
//    process's POSIX locks on the file, SQLite's included): the header is mapped through
//    SQLite's own descriptor, and what is held per file (file_pin) is released with the
//    last connection attaching it;
//  * inside an explicit transaction a read uses the cache only while the files it reads
//    have not changed since the transaction began (its snapshot is current), and no miss
//    is stored while another statement holds a WAL snapshot;
//  * another connection or process writing the file moves the file's change counter
//    (rollback journal) or the WAL index's change counter (WAL). Before a hit and around a
//    miss the counter is compared with the last value seen in this process; a change not
//    proven to be our own commit (of a file the transaction wrote, moved by exactly one)
//    invalidates the database before anything is served or stored. A WAL index's counter
//    restarts when the index is rebuilt (opened with no connection open): it is forgotten
//    when the process's last connection to the file closes;
//  * the statement text the predicate analyzer reads has no comments (PostgreSQL's lexer
//    and SQLite's disagree on where they end).
#include "internal.h"

// soci-sqlite3.h includes <sqlite3.h> inside namespace sqlite_api: it must come first.
#include <soci/sqlite3/soci-sqlite3.h>

#include <qcache/memoize.h>
#include <qcache/tags.h>

#include "memo.h"
#include "path_watch.h"
#include "pg/analyzer.h"

// Debian's libsqlite3 is built with SQLITE_ENABLE_PREUPDATE_HOOK, but <sqlite3.h> only
// declares the preupdate interface when the includer defines it too.
#ifndef SQLITE_ENABLE_PREUPDATE_HOOK
namespace sqlite_api {
extern "C" {
void* sqlite3_preupdate_hook(sqlite3* db,
                             void (*x)(void*, sqlite3*, int, char const*, char const*,
                                       sqlite3_int64, sqlite3_int64),
                             void*);
int sqlite3_preupdate_old(sqlite3*, int, sqlite3_value**);
int sqlite3_preupdate_count(sqlite3*);
int sqlite3_preupdate_new(sqlite3*, int, sqlite3_value**);
}
}  // namespace sqlite_api
#endif

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstring>
#include <deque>
#include <optional>
#include <shared_mutex>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace qcache::soci::detail {
namespace {

namespace sq = ::sqlite_api;

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

bool contains_ci(std::string_view hay, std::string_view needle) {
  return lower(hay).find(needle) != std::string::npos;
}

// ---- Process-wide state per database file -------------------------------------------

// The file's first 100 bytes mapped read-only, unmapped with the last pin sharing them. A
// mapping holds the inode as an open descriptor does (it cannot be reused by another file),
// and unmapping it, unlike closing a descriptor, drops no POSIX lock.
struct header_map {
  const volatile unsigned char* p = nullptr;
  explicit header_map(const volatile unsigned char* m) : p(m) {}
  header_map(const header_map&) = delete;
  header_map& operator=(const header_map&) = delete;
  ~header_map() { ::munmap(const_cast<unsigned char*>(p), 100); }
};

// What keeps a database file's inode from being reused while qcache relies on its identity,
// and lets it read the file without a lock: the header mapped through SQLite's own
// descriptor, and the private read-only connection memo checks read a WAL index through.
// Shared by the connections attached to the file and, for the length of one check, by memo
// checks: closed and unmapped when the last of them lets go.
struct file_pin {
  std::atomic<const volatile unsigned char*> header{nullptr};  // map->p, set once under mu
  std::mutex mu;                                               // guards map and watch
  std::shared_ptr<const header_map> map;
  const bool may_watch = true;   // false for an idle file's pin: no descriptor is opened
  sq::sqlite3* watch = nullptr;  // memo checks' connection: its WAL index mapping is shm
  std::atomic<const volatile char*> shm{nullptr};
  file_pin() = default;
  // A pin sharing `other`'s header mapping, with no watch connection of its own yet.
  file_pin(file_pin& other, bool watch_allowed) : may_watch(watch_allowed) {
    std::lock_guard lock(other.mu);
    map = other.map;
    header.store(other.header.load(std::memory_order_acquire), std::memory_order_release);
  }
  file_pin(const file_pin&) = delete;
  file_pin& operator=(const file_pin&) = delete;
  ~file_pin() {
    if (watch) sq::sqlite3_close_v2(watch);  // SQLite keeps its descriptor while locks need it
  }
};

// The last change counter seen for a file, shared by every connection of the process that
// has it attached. One file_state lives while at least one connection of the process has the
// file attached through qcache (`attached`), or while it is idle (detach_file): its pin holds
// the inode meanwhile. Its identity carries a generation that is never given again, so once
// it is retired and the inode may be reused by another file, nothing cached under the old
// identity can be reached by a new connection, and a memo check still holding the old state
// refuses its hits (file_memo_check).
struct file_state {
  static constexpr std::uint64_t unknown = ~std::uint64_t{0};
  std::atomic<std::uint64_t> last{unknown};
  dev_t dev = 0;  // the file (fixed at creation)
  ino_t ino = 0;
  std::string key;       // path@dev:ino, its entry in the process's table while attached
  std::string identity;  // key#generation: what tags and contexts name
  // Moved by every schema change made through qcache and every change to the file that
  // this process did not prove to be its own commit (which may have been DDL): a memoized
  // statement analysis taken under another value is not reused.
  std::atomic<std::uint64_t> schema_epoch{0};
  // Guarded by mu (changed under g_files_mu too): connections of this process that have
  // the file attached, and the pin while there is one (null once the state is retired; an
  // idle state's pin only maps the header).
  mutable std::mutex mu;
  int attached = 0;
  std::shared_ptr<file_pin> pin;

  // The pin while the state is attached or idle, else null (the state is retired).
  std::shared_ptr<file_pin> current_pin() const;
};

std::mutex g_files_mu;
std::unordered_map<std::string, std::shared_ptr<file_state>>& g_files() {
  static auto* files = new std::unordered_map<std::string, std::shared_ptr<file_state>>;
  return *files;  // never destroyed: engines may detach during static destruction
}
std::atomic<std::uint64_t> g_file_generations{0};
// Files no connection has attached any more whose entries stay valid (detach_file), oldest
// first; guarded by g_files_mu. Bounded: what they hold is one mapping each.
constexpr std::size_t idle_files = 16;
std::deque<std::shared_ptr<file_state>>& g_idle() {
  static auto* idle = new std::deque<std::shared_ptr<file_state>>;
  return *idle;
}

std::shared_ptr<file_pin> file_state::current_pin() const {
  std::lock_guard lock(mu);
  return pin;
}

void drop_registry(const std::string& identity);

// Attaches the file (dev, ino) for one connection: the state of the process's
// connections that have it attached, or a new one with a new identity when none has.
// `key` names (path, dev, ino): see sqlite_engine::file_identity.
std::shared_ptr<file_state> attach_state(const std::string& key, dev_t dev, ino_t ino) {
  std::lock_guard lock(g_files_mu);
  auto& p = g_files()[key];
  if (!p) {
    p = std::make_shared<file_state>();
    p->dev = dev;
    p->ino = ino;
    p->key = key;
    p->identity = key + "#" + std::to_string(++g_file_generations);
    p->pin = std::make_shared<file_pin>();
  }
  std::lock_guard state_lock(p->mu);
  if (p->attached++ == 0 && !p->pin->may_watch) {  // idle: attached again
    std::erase(g_idle(), p);
    p->pin = std::make_shared<file_pin>(*p->pin, true);
  }
  return p;
}

// A connection attaches a state it already has attached again (a file renamed since).
void attach_file(file_state& fs) {
  std::lock_guard lock(g_files_mu);
  std::lock_guard state_lock(fs.mu);
  ++fs.attached;
}

// Retires `fs`: the inode is no longer held once its pin's last user lets go, so its
// identity must never be met again (the next connection to the path gets a new state).
// Returns the pin, to be released after the locks. REQUIRES: g_files_mu and fs.mu held.
std::shared_ptr<file_pin> retire_locked(file_state& fs) {
  auto it = g_files().find(fs.key);
  if (it != g_files().end() && it->second.get() == &fs) g_files().erase(it);
  return std::move(fs.pin);
}

// A connection detaches `fs` (refresh_schemas, close). When the last one does, a file in
// rollback-journal mode whose header is mapped goes idle: the mapping (no descriptor) keeps
// the inode, so the identity and the last counter (in the file itself) stay valid and a
// later connection finds its entries; the oldest idle file beyond `idle_files` is retired.
// Any other file is retired at once (a WAL index is rebuilt, its counter from zero, when
// no connection has the file open). A retired identity's predicate registry goes with it:
// no connection can write under it any more.
void detach_file(file_state& fs) {
  std::vector<std::shared_ptr<file_pin>> released;  // after the locks
  std::vector<std::string> dropped;
  {
    std::lock_guard lock(g_files_mu);
    std::unique_lock state_lock(fs.mu);
    if (--fs.attached > 0) return;
    std::uint64_t last = fs.last.load(std::memory_order_acquire);
    auto it = g_files().find(fs.key);
    if (it == g_files().end() || it->second.get() != &fs || !fs.pin ||
        !fs.pin->header.load(std::memory_order_acquire) || last == file_state::unknown ||
        (last >> 32) != 1) {
      released.push_back(retire_locked(fs));
      dropped.push_back(fs.identity);
    } else {
      released.push_back(std::exchange(fs.pin, std::make_shared<file_pin>(*fs.pin, false)));
      g_idle().push_back(it->second);
      state_lock.unlock();
      while (g_idle().size() > idle_files) {
        std::shared_ptr<file_state> old = std::move(g_idle().front());
        g_idle().pop_front();
        std::lock_guard old_lock(old->mu);
        released.push_back(retire_locked(*old));
        dropped.push_back(old->identity);
      }
    }
  }
  for (const auto& id : dropped) drop_registry(id);
}

// The unix VFS's file object begins with these members (os_unix.c, struct unixFile, the
// same from SQLite 3.7 through Debian 12's 3.40): its descriptor is `h`.
struct unix_file_head {
  const sq::sqlite3_io_methods* pMethod;
  sq::sqlite3_vfs* pVfs;
  void* pInode;
  int h;
};

// SQLite's descriptor of schema `db`'s file, when its VFS is one of the unix VFSes and the
// descriptor is open on (dev, ino); else -1. Never closed by us: it is SQLite's.
int sqlite_descriptor(sq::sqlite3* conn, const char* db, dev_t dev, ino_t ino) {
  sq::sqlite3_vfs* vfs = nullptr;
  sq::sqlite3_file* f = nullptr;
  if (sq::sqlite3_file_control(conn, db, SQLITE_FCNTL_VFS_POINTER, &vfs) != SQLITE_OK || !vfs ||
      !vfs->zName || std::strncmp(vfs->zName, "unix", 4) != 0)
    return -1;
  if (sq::sqlite3_file_control(conn, db, SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK || !f ||
      !f->pMethods)
    return -1;
  int h = reinterpret_cast<const unix_file_head*>(f)->h;
  struct stat sb;
  if (h < 0 || ::fstat(h, &sb) != 0 || sb.st_dev != dev || sb.st_ino != ino) return -1;
  return h;
}

// Maps the first 100 bytes of the file of `fs` into `pin` once the file has them, through
// the descriptor SQLite has open for schema `db` of `conn` (proven to be that file). No
// descriptor of our own is ever opened: closing one would drop every POSIX lock the process
// holds on the file, SQLite's included.
// REQUIRES: pin.mu held.
void map_header_locked(const file_state& fs, file_pin& pin, sq::sqlite3* conn, const char* db) {
  if (pin.header.load(std::memory_order_acquire)) return;
  int h = sqlite_descriptor(conn, db, fs.dev, fs.ino);
  struct stat sb;
  if (h < 0 || ::fstat(h, &sb) != 0 || sb.st_size < 100) return;
  void* p = ::mmap(nullptr, 100, PROT_READ, MAP_SHARED, h, 0);
  if (p == MAP_FAILED) return;
  pin.map = std::make_shared<const header_map>(static_cast<const volatile unsigned char*>(p));
  pin.header.store(pin.map->p, std::memory_order_release);
}
void map_header(const file_state& fs, file_pin& pin, sq::sqlite3* conn, const char* db) {
  std::lock_guard lock(pin.mu);
  map_header_locked(fs, pin, conn, db);
}

std::atomic<std::uint64_t> g_connection_ids{0};

// Columns used by equality-predicate reads, per table (lower-case names), per database
// identity. Lives for the process: cached entries outlive the connections that registered
// their columns, and a later write on any connection must still name their rows. A write
// reads it only while holding its tables' tags (the predicate reads' guard).
struct predicate_registry {
  std::shared_mutex mu;
  std::unordered_map<std::string, std::vector<std::string>> columns;
  std::atomic<std::uint64_t> version{0};

  void add(const std::string& table, const std::string& column) {
    {
      std::shared_lock lock(mu);
      auto it = columns.find(table);
      if (it != columns.end() &&
          std::find(it->second.begin(), it->second.end(), column) != it->second.end())
        return;
    }
    std::unique_lock lock(mu);
    auto& v = columns[table];
    if (std::find(v.begin(), v.end(), column) == v.end()) {
      v.push_back(column);
      version.fetch_add(1, std::memory_order_acq_rel);
    }
  }
  std::vector<std::string> of(const std::string& table) {
    std::shared_lock lock(mu);
    auto it = columns.find(table);
    return it == columns.end() ? std::vector<std::string>{} : it->second;
  }
};

// Moved by writes whose rows the update hook may not name: rowid-predicate reads depend
// on it (column-predicate reads do not: the preupdate hook names those rows).
tags::tag rowid_epoch(std::string_view id, std::string_view table) {
  return tags::column_epoch(id, table, "\x01rowid");
}

std::mutex g_registries_mu;
std::unordered_map<std::string, std::unique_ptr<predicate_registry>> g_registries;

predicate_registry& registry_for(const std::string& identity) {
  std::lock_guard lock(g_registries_mu);
  auto& r = g_registries[identity];
  if (!r) r = std::make_unique<predicate_registry>();
  return *r;
}

// A :memory: or temp database dies with its connection, a file's identity with the last
// connection attaching it (detach_file): so can its registry.
void drop_registry(const std::string& identity) {
  std::lock_guard lock(g_registries_mu);
  g_registries.erase(identity);
}

// Column classes for predicates: values compare textually after canonicalisation.
constexpr char class_none = 0;
constexpr char class_int = 'i';   // INTEGER or NUMERIC affinity, BINARY collation
constexpr char class_text = 't';  // TEXT affinity, BINARY collation

// SQLite's affinity rules for a declared type (section 3.1 of datatype3.html).
char class_of_declared(std::string_view decl) {
  std::string d;
  for (char c : decl) d.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  if (d.find("INT") != std::string::npos) return class_int;
  if (d.find("CHAR") != std::string::npos || d.find("CLOB") != std::string::npos ||
      d.find("TEXT") != std::string::npos)
    return class_text;
  if (d.empty() || d.find("BLOB") != std::string::npos) return class_none;
  if (d.find("REAL") != std::string::npos || d.find("FLOA") != std::string::npos ||
      d.find("DOUB") != std::string::npos)
    return class_none;
  if (d == "ANY") return class_none;  // STRICT tables: no affinity
  return class_int;                   // NUMERIC
}

// "-?(0|[1-9][0-9]*)" within 64 bits, as its canonical decimal text; nullopt otherwise.
std::optional<std::string> strict_int(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  std::size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return std::nullopt;
  if (s[i] == '0' && (s.size() != i + 1 || i == 1)) return std::nullopt;  // 0 only, no -0/05
  for (std::size_t k = i; k < s.size(); ++k)
    if (s[k] < '0' || s[k] > '9') return std::nullopt;
  long long v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return std::to_string(v);
}

// The integer a literal written in SQL denotes (leading zeros allowed), as decimal text.
std::optional<std::string> literal_int(std::string_view s) {
  if (s.empty() || s.size() > 40) return std::nullopt;
  for (std::size_t k = s[0] == '-' ? 1 : 0; k < s.size(); ++k)
    if (s[k] < '0' || s[k] > '9') return std::nullopt;
  long long v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return std::to_string(v);
}

// Rewrites SQLite parameters (?, ?NNN, :name, @name, $name) as PostgreSQL's $n, n being
// SQLite's own parameter number, so that qcache's PostgreSQL analyzer can read the
// statement. `names[n]` receives SQLite's name of parameter n ("" for a bare ?). Fails
// (nullopt) on anything it does not understand: the caller then does without predicates.
std::optional<std::string> to_pg_placeholders(std::string_view sql, sq::sqlite3_stmt* stmt,
                                              std::vector<std::string>& names) {
  int count = sq::sqlite3_bind_parameter_count(stmt);
  names.assign(static_cast<std::size_t>(count) + 1, std::string());
  std::vector<bool> seen(static_cast<std::size_t>(count) + 1, false);
  auto ident = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' ||
           static_cast<unsigned char>(c) >= 0x80;
  };
  std::string out;
  out.reserve(sql.size() + 8);
  int max = 0;
  std::size_t i = 0, n = sql.size();
  while (i < n) {
    char c = sql[i];
    if (c == '\'' || c == '"') {
      std::size_t j = i + 1;
      while (j < n) {
        if (sql[j] == c) {
          if (j + 1 < n && sql[j + 1] == c) {
            j += 2;
            continue;
          }
          break;
        }
        ++j;
      }
      if (j >= n) return std::nullopt;
      out.append(sql.substr(i, j + 1 - i));
      i = j + 1;
    } else if (c == '[' || c == '`') {
      return std::nullopt;  // SQLite-only quoting
    } else if (c == '-' && i + 1 < n && sql[i + 1] == '-') {
      // Comments are not copied: PostgreSQL's lexer ends a `--` comment at a carriage
      // return too and nests `/* */`, SQLite's does neither, so a copied comment could hide
      // SQL from one of them (`/* /* */ OR c = 2 -- */`). SQLite's extent, as a space.
      std::size_t j = sql.find('\n', i);
      if (j == std::string_view::npos) j = n;
      out += ' ';
      i = j;
    } else if (c == '/' && i + 1 < n && sql[i + 1] == '*') {
      std::size_t j = sql.find("*/", i + 2);
      if (j == std::string_view::npos) return std::nullopt;
      out += ' ';
      i = j + 2;
    } else if (c == '?' || c == ':' || c == '@' || c == '$') {
      std::size_t j = i + 1;
      int number = 0;
      std::string token;
      if (c == '?') {
        while (j < n && std::isdigit(static_cast<unsigned char>(sql[j]))) ++j;
        if (j == i + 1) {
          number = ++max;
        } else {
          token = std::string(sql.substr(i, j - i));
          if (j - i > 6) return std::nullopt;
          number = std::atoi(token.c_str() + 1);
        }
      } else {
        while (j < n && ident(sql[j])) ++j;
        if (j == i + 1) return std::nullopt;
        token = std::string(sql.substr(i, j - i));
        number = sq::sqlite3_bind_parameter_index(stmt, token.c_str());
      }
      if (j < n && (sql[j] == ':' || sql[j] == '(' || sql[j] == '$')) return std::nullopt;
      if (number <= 0 || number > count) return std::nullopt;
      max = std::max(max, number);
      const char* real = sq::sqlite3_bind_parameter_name(stmt, number);
      if (c == '?' && token.empty() ? real != nullptr
                                    : (!real || token != real))
        return std::nullopt;
      if (seen[static_cast<std::size_t>(number)] && names[static_cast<std::size_t>(number)] != token)
        return std::nullopt;
      seen[static_cast<std::size_t>(number)] = true;
      names[static_cast<std::size_t>(number)] = token;
      out += '$';
      out += std::to_string(number);
      i = j;
    } else {
      out += c;
      ++i;
    }
  }
  return out;
}

// True when `sql` (SQL text with PostgreSQL placeholders) contains a cast (`CAST(` or
// `::`) outside literals and comments. qcache's analyzer looks through casts, which is
// right for PostgreSQL but not for SQLite, where a CAST gives its value an affinity that
// changes what `=` matches (`c = CAST(5 AS INTEGER)` on a TEXT column matches '05').
bool has_cast(std::string_view sql) {
  std::size_t i = 0, n = sql.size();
  auto ident = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  while (i < n) {
    char c = sql[i];
    if (c == '\'' || c == '"') {
      std::size_t j = sql.find(c, i + 1);
      while (j != std::string_view::npos && j + 1 < n && sql[j + 1] == c) j = sql.find(c, j + 2);
      if (j == std::string_view::npos) return true;
      i = j + 1;
    } else if (c == '-' && i + 1 < n && sql[i + 1] == '-') {
      std::size_t j = sql.find('\n', i);
      i = j == std::string_view::npos ? n : j;
    } else if (c == '/' && i + 1 < n && sql[i + 1] == '*') {
      std::size_t j = sql.find("*/", i + 2);
      if (j == std::string_view::npos) return true;
      i = j + 2;
    } else if (c == ':' && i + 1 < n && sql[i + 1] == ':') {
      return true;
    } else if (ident(c)) {
      std::size_t j = i;
      while (j < n && ident(sql[j])) ++j;
      if (lower(sql.substr(i, j - i)) == "cast") return true;
      i = j;
    } else {
      ++i;
    }
  }
  return false;
}

// True when `conn` has the WAL of schema `db` open (SQLITE_FCNTL_JOURNAL_POINTER names the
// WAL file once the pager opened it, else the rollback journal, open only in a write).
bool wal_open(sq::sqlite3* conn, const char* db) {
  sq::sqlite3_file* j = nullptr;
  return sq::sqlite3_file_control(conn, db, SQLITE_FCNTL_JOURNAL_POINTER, &j) == SQLITE_OK && j &&
         j->pMethods;
}

// Reads the change counter of schema `db` without a lock: (source << 32) | counter, where
// source 1 is the rollback-journal header counter and 2 the WAL index's change counter.
// Returns file_state::unknown when it cannot be read.
std::uint64_t change_counter(sq::sqlite3* conn, const char* db, const file_pin* pin) {
  unsigned char hdr[28] = {};
  const volatile unsigned char* mapped =
      pin ? pin->header.load(std::memory_order_acquire) : nullptr;
  sq::sqlite3_file* f = nullptr;
  if (mapped) {
    for (int i = 18; i < 28; ++i) hdr[i] = mapped[i];
  } else {
    if (sq::sqlite3_file_control(conn, db, SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK || !f ||
        !f->pMethods)
      return file_state::unknown;
    int rc = f->pMethods->xRead(f, hdr, sizeof hdr, 0);
    if (rc == SQLITE_IOERR_SHORT_READ) return std::uint64_t{1} << 32;  // empty file
    if (rc != SQLITE_OK) return file_state::unknown;
  }
  if (hdr[18] == 2) {  // WAL mode: the change counter of the WAL index header
    if (!f && (sq::sqlite3_file_control(conn, db, SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK ||
               !f || !f->pMethods))
      return file_state::unknown;
    if (f->pMethods->iVersion < 2 || !f->pMethods->xShmMap || !f->pMethods->xShmUnmap)
      return file_state::unknown;
    // SQLite unmaps the WAL index when it closes the WAL; a connection that has not opened
    // its WAL yet would never unmap it (the index's descriptor and mapping would outlive the
    // connection): it is then only borrowed for this read.
    bool borrowed = !wal_open(conn, db);
    void volatile* p = nullptr;
    std::uint64_t c = file_state::unknown;
    if (f->pMethods->xShmMap(f, 0, 32768, 0, &p) == SQLITE_OK && p) {
      std::uint32_t ichange;
      std::memcpy(&ichange, const_cast<const char*>(static_cast<volatile char*>(p)) + 8, 4);
      std::atomic_thread_fence(std::memory_order_acquire);
      c = (std::uint64_t{2} << 32) | ichange;
    }
    if (borrowed) f->pMethods->xShmUnmap(f, 0);
    return c;
  }
  std::uint32_t c = (std::uint32_t{hdr[24]} << 24) | (std::uint32_t{hdr[25]} << 16) |
                    (std::uint32_t{hdr[26]} << 8) | std::uint32_t{hdr[27]};
  return (std::uint64_t{1} << 32) | c;
}

// A memoized value's check of one database file (cache.h, memo_check): a memo hit runs no
// statement, so nothing would compare the file's change counter with the last one this
// process saw (check_external). This does it through the file's pin (the header mapped,
// and a private read-only connection for the WAL index, under the pin's mutex), held for
// the length of the check; the file must still be the one the reads identified, else the
// database is invalidated. Once the state is retired (its inode may be reused by another
// file) every hit is refused; an idle state's pin opens no connection (a WAL file: refused).
class file_memo_check final : public qcache::memo_check {
 public:
  file_memo_check(qcache::cache* c, std::string path, std::shared_ptr<file_state> fs)
      : cache_(c),
        path_(std::move(path)),
        fs_(std::move(fs)),
        watch_(watch_path(path_, fs_->dev, fs_->ino)) {}
  void run() noexcept override {
    std::shared_ptr<file_pin> pin = fs_->current_pin();
    std::uint64_t c = pin ? fast_counter(*pin) : file_state::unknown;
    if (pin && c == file_state::unknown) {
      std::lock_guard lock(pin->mu);
      c = counter(*pin);
    }
    std::uint64_t last = fs_->last.load(std::memory_order_acquire);
    if (c == file_state::unknown || c != last) {
      fs_->schema_epoch.fetch_add(1, std::memory_order_acq_rel);
      cache_->invalidate(std::array{tags::database(fs_->identity)}, invalidation_cause::external);
      if (c != file_state::unknown) fs_->last.store(c, std::memory_order_release);
    }
  }

 private:
  // The path still names the file: a stat, or one epoll_wait proving nothing that could
  // change what the path names happened since the last look (path_watch.h).
  bool same_file() const noexcept { return watch_->still_names(); }
  // change_counter() without a system call beyond the identity check: the file header
  // mapped by the pin and the WAL index its connection mapped (it stays mapped while the
  // connection is open). Unknown until both are there.
  std::uint64_t fast_counter(const file_pin& pin) const noexcept {
    const volatile unsigned char* hdr = pin.header.load(std::memory_order_acquire);
    if (!hdr || !same_file()) return file_state::unknown;
    if (hdr[18] == 2) {
      const volatile char* shm = pin.shm.load(std::memory_order_acquire);
      if (!shm) return file_state::unknown;
      std::uint32_t ichange;
      std::memcpy(&ichange, const_cast<const char*>(shm) + 8, 4);
      std::atomic_thread_fence(std::memory_order_acquire);
      return (std::uint64_t{2} << 32) | ichange;
    }
    std::uint32_t c = (std::uint32_t{hdr[24]} << 24) | (std::uint32_t{hdr[25]} << 16) |
                      (std::uint32_t{hdr[26]} << 8) | std::uint32_t{hdr[27]};
    return (std::uint64_t{1} << 32) | c;
  }
  // REQUIRES: pin.mu held.
  std::uint64_t counter(file_pin& pin) noexcept {
    if (!same_file() || !pin.may_watch) return file_state::unknown;  // renamed or replaced
    if (!pin.watch && sq::sqlite3_open_v2(path_.c_str(), &pin.watch, SQLITE_OPEN_READONLY,
                                          nullptr) != SQLITE_OK) {
      sq::sqlite3_close_v2(pin.watch);
      pin.watch = nullptr;
      return file_state::unknown;
    }
    // The watch connection opened the path after the check above: it must have opened the
    // pinned file, else it is of no use (and is closed: it is SQLite's to close).
    if (sqlite_descriptor(pin.watch, "main", fs_->dev, fs_->ino) < 0) {
      sq::sqlite3_close_v2(pin.watch);
      pin.watch = nullptr;
      return file_state::unknown;
    }
    map_header_locked(*fs_, pin, pin.watch, "main");
    // A first read opens the WAL (which maps its index, and unmaps it at close).
    if (!wal_open(pin.watch, "main"))
      sq::sqlite3_exec(pin.watch, "PRAGMA main.data_version", nullptr, nullptr, nullptr);
    std::uint64_t c = change_counter(pin.watch, "main", &pin);
    if ((c >> 32) == 2 && !pin.shm.load(std::memory_order_acquire) && wal_open(pin.watch, "main")) {
      sq::sqlite3_file* f = nullptr;
      void volatile* p = nullptr;
      if (sq::sqlite3_file_control(pin.watch, "main", SQLITE_FCNTL_FILE_POINTER, &f) == SQLITE_OK &&
          f && f->pMethods && f->pMethods->iVersion >= 2 && f->pMethods->xShmMap &&
          f->pMethods->xShmMap(f, 0, 32768, 0, &p) == SQLITE_OK && p)
        pin.shm.store(static_cast<const volatile char*>(p), std::memory_order_release);
    }
    return c;
  }

  qcache::cache* cache_;  // owns the entries holding this check
  std::string path_;
  std::shared_ptr<file_state> fs_;  // its identity retired once no connection attaches it
  std::shared_ptr<watched_path> watch_;
};

// ---- Analysis -------------------------------------------------------------------------

struct auth_event {
  int action;
  std::string a3, a4, db, trigger;
  bool operator==(const auth_event&) const = default;
};

enum class kind : std::uint8_t { read, uncacheable_read, write, ddl, attach, tx, pragma, unknown };

struct write_target {
  std::string schema, table;
  bool maybe_silent = false;  // the update hook may not name every row
  bool rows_unknown = false;  // neither may the preupdate hook (virtual, not a table)
  bool top_delete = false;    // a DELETE not from a trigger (truncate optimisation check)
};

struct plan {
  std::string sql;
  kind k = kind::unknown;
  uncacheable_reason reason = uncacheable_reason::other;
  std::vector<std::pair<std::string, std::string>> reads;  // (schema, table)
  std::vector<write_target> writes;
  bool pragma_sets = false;  // a PRAGMA with an argument that may change results
  // Predicate read: SQLite parameter number of the rowid, and its name (":id") if any.
  int rowid_param = 0;
  std::string rowid_param_name;
  // Resolved for a generation of the connection's schema-name mapping.
  std::uint64_t gen = ~std::uint64_t{0};
  std::vector<std::string> read_ids;  // identity per read, parallel to reads
  std::vector<std::string> read_schemas;  // distinct schemas read
  dependencies table_deps;
  std::vector<tags::tag> write_hold_tags;
  // Column-equality predicates: for a read table (index into reads), its column, the
  // column's class and the values compared (parameters are SQLite's parameter numbers).
  struct pred_candidate {
    std::size_t read = 0;
    std::string column;  // lower-case
    char cls = class_none;
    std::vector<pg::eq_value> values;
  };
  std::vector<pred_candidate> preds;
  std::vector<std::string> param_names;  // SQLite's name of each parameter number
  // The schema epochs (sqlite_engine::schema_epoch) when this analysis was made. A read
  // executed under other epochs drops what only the bytecode proved (the rowid predicate);
  // a write is analysed again.
  std::uint64_t epoch = 0;
  // A write: the authorizer events it was analysed from. SQLite re-preparing it with other
  // events while it runs means the schema changed under it.
  std::vector<auth_event> events;
  // A read of a database whose file cannot be identified (resolve()): never cached.
  bool unidentified = false;
};

// One instruction of a statement's bytecode (EXPLAIN).
struct vdbe_op {
  int addr;
  std::string name;
  int p1, p2, p3, p5;
};

class sqlite_engine final : public engine {
 public:
  sqlite_engine(std::shared_ptr<cache> c, ::soci::details::session_backend& real,
                std::shared_ptr<const factory_options> opts, std::string_view connect,
                statement_analyzer analyze)
      : cache_(std::move(c)), opts_(std::move(opts)), analyze_(analyze),
        main_private_(private_memory(connect)) {
    conn_ = static_cast<::soci::sqlite3_session_backend&>(real).conn_;
    uid_ = ++g_connection_ids;
    for (const auto& f : opts_->deterministic_functions) user_deterministic_.insert(lower(f));
    sq::sqlite3_set_authorizer(conn_, &sqlite_engine::authorizer, this);
    sq::sqlite3_update_hook(conn_, &sqlite_engine::update_hook, this);
    sq::sqlite3_preupdate_hook(conn_, &sqlite_engine::preupdate_hook, this);
    sq::sqlite3_commit_hook(conn_, &sqlite_engine::commit_hook, this);
    sq::sqlite3_rollback_hook(conn_, &sqlite_engine::rollback_hook, this);
    refresh_schemas();
  }

  ~sqlite_engine() override {
    for (auto& [name, s] : schemas_)
      if (s.dv) sq::sqlite3_finalize(s.dv);
    sq::sqlite3_set_authorizer(conn_, nullptr, nullptr);
    sq::sqlite3_update_hook(conn_, nullptr, nullptr);
    sq::sqlite3_preupdate_hook(conn_, nullptr, nullptr);
    for (auto& [name, s] : schemas_) {
      if (!s.file) drop_registry(s.identity);
      if (s.fs) detach_file(*s.fs);
    }
    sq::sqlite3_commit_hook(conn_, nullptr, nullptr);
    sq::sqlite3_rollback_hook(conn_, nullptr, nullptr);
  }

  std::shared_ptr<void> prepare(const std::string& sql, const std::function<void()>& real_prepare,
                                ::soci::details::statement_backend& real) override {
    std::vector<auth_event> events;
    collecting_ = &events;
    try {
      real_prepare();
    } catch (...) {
      collecting_ = nullptr;
      throw;
    }
    collecting_ = nullptr;
    sq::sqlite3_stmt* stmt = static_cast<::soci::sqlite3_statement_backend&>(real).stmt_;
    // The analysis is a function of the authorizer events, the statement's read-only flag,
    // the memoized table facts (reset with gen_) and the bytecode (fixed by the schema:
    // schema_epoch). Statements prepared again and again (rowsets, once-statements) reuse it.
    bool readonly = stmt && sq::sqlite3_stmt_readonly(stmt);
    std::uint64_t epoch = schema_epoch();
    auto it = plan_memo_.find(sql);
    if (it != plan_memo_.end() && it->second.gen == gen_ && it->second.epoch == epoch &&
        it->second.readonly == readonly && stmt && it->second.events == events) {
      return std::make_shared<plan>(*it->second.p);
    }
    auto p = std::make_shared<plan>();
    p->sql = sql;
    p->epoch = epoch;
    if (!readonly) p->events = events;
    classify(*p, events, stmt);
    if (stmt) {
      if (plan_memo_.size() >= 512) plan_memo_.clear();
      auto& m = plan_memo_[sql];
      m.gen = gen_;
      m.epoch = epoch;
      m.readonly = readonly;
      m.events = std::move(events);
      m.p = std::make_shared<const plan>(*p);
    }
    return p;
  }

  bool may_cache(const std::shared_ptr<void>& pl) const noexcept override {
    return pl && static_cast<const plan*>(pl.get())->k == kind::read;
  }

  execution begin(const std::shared_ptr<void>& pl, bool cacheable, std::string_view shape,
                  const std::vector<const use_value*>& uses,
                  ::soci::details::statement_backend& real) override;
  void end(execution& e, bool ok, std::shared_ptr<const result_table> value) noexcept override;

  void tx_begun() override { note_tx_start(); }
  void tx_committed(bool) override { settle(); }
  void tx_rolled_back(bool) override { settle(); }

  void invalidate_all() override { invalidate_databases(invalidation_cause::manual); }
  void invalidate_all_noexcept() noexcept {
    try {
      invalidate_databases(invalidation_cause::flush);
    } catch (...) {
    }
  }
  void invalidate_table(const std::string& table) override;
  void invalidate_row(const std::string& table, const std::string& column,
                      const std::string& value) override;
  explanation explain_sql(const std::string& sql) override;
  bool steps_in_fetch() const noexcept override { return true; }
  void statement_released() noexcept override {
    try {
      settle();
    } catch (...) {
      invalidate_all_noexcept();
    }
  }

 private:
  struct schema_info {
    std::string identity;
    std::string path;
    bool file = false;
    std::shared_ptr<file_state> fs;  // attached by this connection
    std::shared_ptr<file_pin> pin;   // fs's, while attached
    sq::sqlite3_stmt* dv = nullptr;  // PRAGMA data_version, when the counter is unreadable
    std::int64_t dv_last = -1;
    predicate_registry* reg = nullptr;
    // A memory database other connections may share (a URI with cache=shared): no file to
    // watch, so its data_version is compared before every hit and around every miss.
    bool watch = false;
    // False when the file SQLite has open is not provably the one at `path` (it was
    // renamed or replaced): reads of it are not cached.
    bool identified = true;
    std::shared_ptr<qcache::memo_check> memo_checker;  // for memoized values that read this file
  };
  struct table_info {
    bool ok = false;           // an ordinary or shadow table, or a view
    bool view = false;
    bool silent = false;       // WITHOUT ROWID or virtual: the update hook is silent
    bool replace = false;      // its schema mentions REPLACE (ON CONFLICT REPLACE)
    std::string rowid_alias;   // INTEGER PRIMARY KEY column, lower-case
    bool exists = false;       // some object of that name exists in that schema
    // Predicates: every column (lower-case name, in table order) and its class; pred_ok
    // when the preupdate hook's column indexes are these (no hidden/generated columns).
    bool pred_ok = false;
    std::vector<std::string> cols;
    std::vector<char> classes;
  };
  struct memo {
    std::uint64_t gen = 0, epoch = 0;
    bool readonly = false;
    std::vector<auth_event> events;
    std::shared_ptr<const plan> p;
  };
  struct exec_state {
    std::shared_ptr<plan> p;
    key k;
    snapshot snap;
    cache::ticket flight;
    std::vector<std::pair<std::string, std::uint64_t>> counters;  // identity, value before
    std::vector<auth_event> reprepared;
  };

  static int authorizer(void* self, int action, const char* a3, const char* a4, const char* db,
                        const char* trig) {
    auto* e = static_cast<sqlite_engine*>(self);
    if (e->collecting_) {
      e->collecting_->push_back({action, a3 ? a3 : "", a4 ? a4 : "", db ? db : "",
                                 trig ? trig : ""});
    }
    return SQLITE_OK;
  }
  static void update_hook(void* self, int, const char* db, const char* table,
                          sq::sqlite3_int64 rowid) {
    auto* e = static_cast<sqlite_engine*>(self);
    try {
      e->hook_rows_.push_back({db ? db : "", table ? table : "", rowid});
      e->note_table(db ? db : "", table ? table : "");
    } catch (...) {
      e->pred_failed_ = true;
    }
  }
  // Every table a hook saw changed (nested statements of application functions and virtual
  // table modules included), so that writes the statement did not declare are seen.
  void note_table(std::string_view db, std::string_view table) {
    for (const auto& [d, t] : hook_tables_)
      if (d == db && t == table) return;
    hook_tables_.emplace_back(db, table);
  }
  static void preupdate_hook(void* self, sq::sqlite3* db, int op, const char* zdb,
                             const char* ztable, sq::sqlite3_int64, sq::sqlite3_int64) {
    auto* e = static_cast<sqlite_engine*>(self);
    try {
      e->on_preupdate(db, op, zdb ? zdb : "", ztable ? ztable : "");
    } catch (...) {
      e->pred_failed_ = true;
    }
  }
  void on_preupdate(sq::sqlite3* db, int op, const char* zdb, const char* ztable);
  static int commit_hook(void* self) {
    auto* e = static_cast<sqlite_engine*>(self);
    ++e->commits_;
    // Counters before our commit lands: lets settle() recognise our own change.
    e->pre_commit_.clear();
    for (auto& [name, s] : e->schemas_) {
      if (!s.file) continue;
      e->pre_commit_.emplace_back(s.identity, change_counter(e->conn_, name.c_str(), s.pin.get()));
    }
    return 0;
  }
  static void rollback_hook(void* self) { ++static_cast<sqlite_engine*>(self)->rollbacks_; }

  // Runs an internal query without collecting authorizer events.
  template <class F>
  bool query(const std::string& sql, F&& row) {
    auto* saved = collecting_;
    collecting_ = nullptr;
    sq::sqlite3_stmt* st = nullptr;
    bool ok = sq::sqlite3_prepare_v2(conn_, sql.c_str(), -1, &st, nullptr) == SQLITE_OK && st;
    if (ok) {
      int rc;
      while ((rc = sq::sqlite3_step(st)) == SQLITE_ROW) row(st);
      ok = rc == SQLITE_DONE;
    }
    sq::sqlite3_finalize(st);
    collecting_ = saved;
    return ok;
  }
  static std::string text(sq::sqlite3_stmt* st, int i) {
    const unsigned char* t = sq::sqlite3_column_text(st, i);
    return t ? std::string(reinterpret_cast<const char*>(t),
                           static_cast<std::size_t>(sq::sqlite3_column_bytes(st, i)))
             : std::string();
  }
  static std::string quote(const std::string& s) {
    std::string r = "'";
    for (char c : s) {
      if (c == '\'') r += '\'';
      r += c;
    }
    return r + "'";
  }

  void refresh_schemas();
  bool file_identity(const std::string& schema, const std::string& path, std::string& id,
                     dev_t& dev, ino_t& ino);
  static bool private_memory(std::string_view connect);
  void classify(plan& p, const std::vector<auth_event>& ev, sq::sqlite3_stmt* stmt);
  std::optional<std::vector<vdbe_op>> explain(sq::sqlite3_stmt* stmt);
  const std::string* table_of_root(const std::string& schema, int root);
  bool add_opened_tables(plan& p, const std::vector<vdbe_op>& ops);
  bool shadow_of_virtual(const std::string& schema, const std::string& t);
  void reanalyze(plan& p, sq::sqlite3_stmt* stmt);
  void recheck_write(plan& p, sq::sqlite3_stmt* stmt);
  void schema_changed_under_write(plan& p, std::vector<auth_event>& events);
  void note_tx_start();
  bool snapshot_is_current(const std::vector<std::pair<std::string, std::uint64_t>>& counters);
  bool other_statement_busy(sq::sqlite3_stmt* own);
  bool wrote_file(const std::string& identity) const;
  // Forgets what was learnt from the schema (table facts, b-tree roots).
  void forget_table_facts() {
    table_memo_.clear();
    roots_.clear();
    facts_epoch_ = schema_epoch();
  }
  // Table facts and b-tree roots are valid for the schema epochs they were learnt under: a
  // table recreated by another connection since must not be judged by its old columns.
  // Called where no reference into the memo is held.
  void sync_table_facts() {
    if (facts_epoch_ != schema_epoch()) forget_table_facts();
  }
  bool deterministic(const std::string& fn);
  const table_info& table(const std::string& schema, const std::string& t);
  void detect_rowid_predicate(plan& p, sq::sqlite3_stmt* stmt,
                              const std::vector<vdbe_op>* ops = nullptr);
  void detect_column_predicates(plan& p, sq::sqlite3_stmt* stmt);
  int map_read(const plan& p, const pg::qualified_name& n);
  std::optional<std::string> read_value(const plan& p, const pg::eq_value& v, char cls,
                                        const std::vector<const use_value*>& uses);
  void resolve(plan& p);
  const std::string& identity(const std::string& schema) {
    auto it = schemas_.find(schema);
    if (it != schemas_.end()) return it->second.identity;
    static const std::string none;
    return none;
  }
  std::uint64_t check_external(const std::string& schema);
  void memo_checks(const plan& p);
  std::int64_t check_data_version(const std::string& schema, schema_info& s);
  // Sum of the schema epochs of every file this connection has attached, plus its own.
  std::uint64_t schema_epoch() const {
    std::uint64_t e = local_epoch_;
    for (const auto& [name, s] : schemas_)
      if (s.fs) e += s.fs->schema_epoch.load(std::memory_order_acquire);
    return e;
  }
  // The schema may have changed (DDL through this connection, or a change to a file we
  // cannot attribute): forget memoized analyses everywhere they could be reused.
  void bump_epochs() {
    ++local_epoch_;
    plan_memo_.clear();
    for (auto& [name, s] : schemas_)
      if (s.fs) s.fs->schema_epoch.fetch_add(1, std::memory_order_acq_rel);
  }
  void invalidate_databases(invalidation_cause cause) {
    std::vector<tags::tag> t;
    for (auto& [name, s] : schemas_) t.push_back(tags::database(s.identity));
    cache_->invalidate(t, cause);
  }
  void add_hold(std::span<const tags::tag> t) {
    if (tx_hold_.empty()) tx_hold_ = cache_->begin_write(t, invalidation_cause::write);
    else {
      tx_hold_.add(t);
      cache_->count_invalidation(invalidation_cause::write);
    }
    tx_active_ = true;
  }
  void process_hook_rows(const plan* p);
  std::vector<std::pair<std::string, std::string>> tables_named(const std::string& name);
  void explain_tags(const plan& p, explanation& e);
  std::string shown(const std::string& schema, const std::string& t) const {
    return schema + "." + t;
  }
  bool hook_pending() const {
    return !hook_rows_.empty() || !pred_tags_.empty() || pred_failed_ || !hook_tables_.empty();
  }
  void hold_undeclared_writes(const plan* p);
  void settle();

  std::shared_ptr<cache> cache_;
  std::shared_ptr<const factory_options> opts_;
  statement_analyzer analyze_ = nullptr;  // null: no column predicates
  sq::sqlite3* conn_ = nullptr;
  std::uint64_t uid_ = 0;
  std::set<std::string> user_deterministic_;
  std::vector<auth_event>* collecting_ = nullptr;

  std::map<std::string, schema_info> schemas_;
  std::map<int, std::string> schema_by_index_;  // PRAGMA database_list's seq -> name
  // Per schema: b-tree root page -> the table it stores (an index names its table).
  std::map<std::string, std::unordered_map<int, std::string>> roots_;
  std::uint64_t facts_epoch_ = ~std::uint64_t{0};  // schema_epoch() of table_memo_, roots_
  bool main_private_ = false;  // main is a plain :memory: database (never shared)
  std::uint64_t gen_ = 0;
  std::uint32_t context_ = 0;
  bool private_context_ = false;
  std::uint64_t private_gen_ = 0;  // moved by every PRAGMA that sets something
  std::unordered_map<std::string, bool> fn_memo_;
  std::map<std::pair<std::string, std::string>, table_info> table_memo_;
  std::unordered_map<std::string, memo> plan_memo_;  // by SQL text
  std::uint64_t local_epoch_ = 0;                     // schema changes seen by this connection

  struct hook_row {
    std::string db, table;
    std::int64_t rowid;
  };
  std::vector<hook_row> hook_rows_;
  std::vector<std::pair<std::string, std::string>> hook_tables_;  // (schema, table) changed
  std::vector<tags::tag> pred_tags_;  // predicate/column tags named by the preupdate hook
  // Rows the preupdate hook saw deleted, per (schema, table): compared with the rows SQLite
  // counted for a DELETE.
  std::vector<std::pair<std::pair<std::string, std::string>, std::int64_t>> pre_deletes_;
  bool pred_failed_ = false;          // the hook could not name a row: flush
  bool utf8_ = false;                 // database text is UTF-8 (predicates compare bytes)
  std::vector<std::string> schema_order_;  // temp, main, attached: name resolution order
  std::uint64_t commits_ = 0, rollbacks_ = 0, rollbacks_seen_ = 0, commits_seen_ = 0;
  std::vector<std::pair<std::string, std::uint64_t>> pre_commit_;

  // Counters of the files when the open explicit transaction began (its snapshot is no
  // older): a read in it may use the cache only while they have not moved.
  bool tx_snapshot_taken_ = false;
  // While an explicit transaction is open its reads see its snapshot, which a memo hit
  // (the latest state) may not equal: memo hits are refused on this thread meanwhile.
  qcache::detail::memo_snapshot_hold memo_snapshot_;
  // The memo scope the explicit transaction began in: a function that leaves it open, or
  // ends one begun outside it, is not stored (a hit would skip the BEGIN / COMMIT).
  qcache::detail::memo_txn memo_txn_;
  std::vector<std::pair<std::string, std::uint64_t>> tx_snapshot_;  // schema, counter

  // The current transaction (an autocommit write is a transaction of one statement).
  bool tx_active_ = false;
  write_hold tx_hold_;
  std::vector<tags::tag> tx_commit_tags_;  // bumped again at COMMIT, dropped on ROLLBACK
  std::set<std::string> tx_written_;        // identity + '\x1f' + table
  bool tx_flushed_ = false;

  key_builder kb_;
};

// A database file is its device and inode, not its path (P21): a file renamed over the
// path (a restore, a deploy) is another database. `id` names (path, dev, ino) of the file
// SQLite has open for `schema` (attach_state adds the generation), proven by SQLite
// (SQLITE_FCNTL_HAS_MOVED: the path still names that inode) between two stats that agree; false
// when it cannot be proven.
bool sqlite_engine::file_identity(const std::string& schema, const std::string& path,
                                  std::string& id, dev_t& dev, ino_t& ino) {
  struct stat a, b;
  int moved = 1;
  if (::stat(path.c_str(), &a) != 0) return false;
  if (sq::sqlite3_file_control(conn_, schema.c_str(), SQLITE_FCNTL_HAS_MOVED, &moved) !=
          SQLITE_OK ||
      moved)
    return false;
  if (::stat(path.c_str(), &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino) return false;
  dev = a.st_dev;
  ino = a.st_ino;
  id = "sqlite:" + path + "@" + std::to_string(a.st_dev) + ":" + std::to_string(a.st_ino);
  return true;
}

// True when SOCI's connect string opens a plain ":memory:" database, which SQLite never
// shares between connections; any other memory database (a URI, shared cache) may be.
bool sqlite_engine::private_memory(std::string_view connect) {
  std::string db;
  bool keyed = false, shared = false;
  std::size_t i = 0;
  while (i < connect.size()) {
    while (i < connect.size() && std::isspace(static_cast<unsigned char>(connect[i]))) ++i;
    std::size_t j = i;
    while (j < connect.size() && !std::isspace(static_cast<unsigned char>(connect[j]))) ++j;
    std::string_view tok = connect.substr(i, j - i);
    auto eq = tok.find('=');
    if (eq != std::string_view::npos) {
      keyed = true;
      std::string key = lower(tok.substr(0, eq));
      if (key == "db" || key == "dbname") db = std::string(tok.substr(eq + 1));
      if (key == "shared_cache") shared = true;
    }
    i = j;
  }
  if (!keyed) db = std::string(connect);
  return db == ":memory:" && !shared;
}

void sqlite_engine::refresh_schemas() {
  std::map<std::string, schema_info> next;
  std::vector<std::string> order;
  schema_by_index_.clear();
  query("PRAGMA database_list", [&](sq::sqlite3_stmt* st) {
    std::string name = text(st, 1), file = text(st, 2);
    schema_by_index_[sq::sqlite3_column_int(st, 0)] = name;
    schema_info s;
    if (file.empty()) {
      s.identity = "sqlite-mem:" + std::to_string(uid_) + ":" + name;
      s.watch = !(name == "temp" || (name == "main" && main_private_));
    } else {
      std::error_code ec;
      auto canon = std::filesystem::canonical(file, ec);
      s.path = ec ? file : canon.string();
      dev_t dev = 0;
      ino_t ino = 0;
      auto prev = schemas_.find(name);
      std::string key;
      if (file_identity(name, s.path, key, dev, ino)) {
        s.file = true;
        s.fs = attach_state(key, dev, ino);
        s.pin = s.fs->current_pin();
        s.identity = s.fs->identity;
        map_header(*s.fs, *s.pin, conn_, name.c_str());
      } else if (prev != schemas_.end() && prev->second.file && prev->second.path == s.path) {
        // Renamed since we identified it: SQLite still has that file open.
        s.identity = prev->second.identity;
        s.file = true;
        s.fs = prev->second.fs;
        s.pin = prev->second.pin;
        attach_file(*s.fs);
      } else {
        s.identity = "sqlite-moved:" + std::to_string(uid_) + ":" + name;
        s.identified = false;
      }
    }
    s.reg = &registry_for(s.identity);
    order.push_back(name);
    next.emplace(name, std::move(s));
  });
  // Resolution order of unqualified names: temp first, then main, then attached ones.
  std::stable_sort(order.begin(), order.end(), [](const std::string& a, const std::string& b) {
    return (a == "temp" ? 0 : a == "main" ? 1 : 2) < (b == "temp" ? 0 : b == "main" ? 1 : 2);
  });
  schema_order_ = std::move(order);
  utf8_ = false;
  query("PRAGMA encoding", [&](sq::sqlite3_stmt* st) { utf8_ = text(st, 0) == "UTF-8"; });
  for (auto& [name, s] : schemas_)
    if (s.dv) sq::sqlite3_finalize(s.dv);
  for (auto& [name, s] : schemas_)
    if (s.fs) detach_file(*s.fs);
  schemas_ = std::move(next);
  // Unqualified names resolve through temp first: temp objects are part of the context.
  bool temp_objects = false;
  query("SELECT 1 FROM temp.sqlite_master LIMIT 1", [&](sq::sqlite3_stmt*) { temp_objects = true; });
  std::string ctx = "soci-sqlite3";
  for (auto& [name, s] : schemas_) {
    if (name == "temp" && !temp_objects) continue;
    ctx += ";" + name + "=" + s.identity;
  }
  if (private_context_)
    ctx += ";private=" + std::to_string(uid_) + "." + std::to_string(private_gen_);
  context_ = intern_context(ctx);
  forget_table_facts();
  plan_memo_.clear();
  ++gen_;
}

// PRAGMAs whose setting changes no statement's result (journal, cache, locking, limits).
bool harmless_pragma(std::string_view name) {
  static const std::set<std::string, std::less<>> harmless = {
      "journal_mode",      "synchronous",    "busy_timeout",    "cache_size",
      "cache_spill",       "temp_store",     "mmap_size",       "wal_autocheckpoint",
      "wal_checkpoint",    "threads",        "soft_heap_limit", "hard_heap_limit",
      "optimize",          "analysis_limit", "shrink_memory",   "locking_mode",
      "journal_size_limit"};
  return harmless.count(lower(name)) > 0;
}

bool sqlite_engine::deterministic(const std::string& fn_in) {
  std::string fn = lower(fn_in);
  auto it = fn_memo_.find(fn);
  if (it != fn_memo_.end()) return it->second;
  static const std::set<std::string> time_functions = {
      "date", "time", "datetime", "julianday", "strftime", "unixepoch", "timediff",
      "current_date", "current_time", "current_timestamp"};
  static const std::set<std::string> aggregates = {
      "count", "sum", "total", "avg", "min", "max", "group_concat", "string_agg",
      "json_group_array", "json_group_object", "row_number", "rank", "dense_rank",
      "percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value", "last_value",
      "nth_value"};
  bool det = false;
  if (time_functions.count(fn)) {
    det = false;
  } else {
    bool found = false, all_det = true, builtin = true;
    query("SELECT builtin, flags FROM pragma_function_list WHERE name = " + quote(fn),
          [&](sq::sqlite3_stmt* st) {
            found = true;
            if (!sq::sqlite3_column_int(st, 0)) builtin = false;
            if (!(sq::sqlite3_column_int(st, 1) & SQLITE_DETERMINISTIC)) all_det = false;
          });
    if (!found) det = false;
    else if (!builtin) det = all_det && user_deterministic_.count(fn);
    else det = all_det || aggregates.count(fn);
  }
  fn_memo_.emplace(fn, det);
  return det;
}

const sqlite_engine::table_info& sqlite_engine::table(const std::string& schema,
                                                      const std::string& t) {
  auto key = std::make_pair(schema, t);
  auto it = table_memo_.find(key);
  if (it != table_memo_.end()) return it->second;
  table_info info;
  std::string lt = lower(t);
  if (lt == "sqlite_master" || lt == "sqlite_schema" || lt == "sqlite_temp_master" ||
      lt == "sqlite_temp_schema") {
    info.ok = true;  // changes only by DDL, which flushes the database
    info.exists = true;
  } else if (lt.rfind("sqlite_", 0) == 0) {
    info.ok = false;  // sqlite_sequence, sqlite_stat*: written behind our back
    info.exists = true;
  } else {
    std::string type;
    int wr = 0;
    query("SELECT type, wr FROM pragma_table_list(" + quote(t) + ") WHERE schema = " + quote(schema),
          [&](sq::sqlite3_stmt* st) {
            type = text(st, 0);
            wr = sq::sqlite3_column_int(st, 1);
          });
    info.exists = !type.empty();
    if (type == "shadow" || (type == "table" && shadow_of_virtual(schema, t))) {
      // A virtual table writes its shadow tables behind the statement (P23): their reads
      // are not cached, and writes to them name no rows.
      info.ok = false;
      info.silent = true;
    } else if (type == "table") {
      info.ok = true;
      info.silent = wr != 0;
    } else if (type == "view") {
      info.ok = true;
      info.view = true;
    } else if (type == "virtual") {
      info.ok = false;
      info.silent = true;
    }
    query("SELECT sql FROM " + std::string("\"") + schema + "\".sqlite_master WHERE name = " +
              quote(t) + " COLLATE NOCASE",
          [&](sq::sqlite3_stmt* st) {
            if (contains_ci(text(st, 0), "replace")) info.replace = true;
          });
    int pks = 0;
    std::string alias;
    query("SELECT name, type, pk FROM pragma_table_info(" + quote(t) + ", " + quote(schema) + ")",
          [&](sq::sqlite3_stmt* st) {
            if (sq::sqlite3_column_int(st, 2) > 0) {
              ++pks;
              if (lower(text(st, 1)) == "integer") alias = lower(text(st, 0));
            }
          });
    if (pks == 1) info.rowid_alias = alias;
    if (type == "table" && utf8_) {
      // Predicate columns: the declared type gives the affinity, the column's collation
      // must be BINARY, and the preupdate hook's column numbers must be these columns.
      bool hidden = false;
      query("SELECT name, hidden FROM pragma_table_xinfo(" + quote(t) + ", " + quote(schema) + ")",
            [&](sq::sqlite3_stmt* st) {
              info.cols.push_back(lower(text(st, 0)));
              if (sq::sqlite3_column_int(st, 1) != 0) hidden = true;
            });
      for (const auto& c : info.cols) {
        const char* decl = nullptr;
        const char* coll = nullptr;
        char cls = class_none;
        if (sq::sqlite3_table_column_metadata(conn_, schema.c_str(), t.c_str(), c.c_str(), &decl,
                                              &coll, nullptr, nullptr, nullptr) == SQLITE_OK &&
            coll && lower(coll) == "binary")
          cls = class_of_declared(decl ? decl : "");
        info.classes.push_back(cls);
      }
      info.pred_ok = !hidden && !info.cols.empty();
    }
  }
  return table_memo_.emplace(key, std::move(info)).first->second;
}

void sqlite_engine::classify(plan& p, const std::vector<auth_event>& ev, sq::sqlite3_stmt* stmt) {
  sync_table_facts();
  bool select = false, other = false, ddl = false, attach = false, tx = false, pragma = false;
  std::vector<std::string> functions;
  std::set<std::pair<std::string, std::string>> reads;
  std::map<std::pair<std::string, std::string>, write_target> writes;
  bool sql_replace = contains_ci(p.sql, "replace");
  for (const auto& e : ev) {
    switch (e.action) {
      case SQLITE_SELECT:
      case SQLITE_RECURSIVE: select = true; break;
      case SQLITE_READ:
        if (!e.db.empty()) {
          reads.emplace(e.db, e.a3);
        } else {
          // SQLite leaves the schema out for some reads (count(*) optimisation): depend on
          // every schema that has such a table, and fail closed if none does.
          bool any = false;
          for (const auto& [name, info] : schemas_) {
            if (table(name, e.a3).ok) {
              reads.emplace(name, e.a3);
              any = true;
            }
          }
          if (!any) reads.emplace("main", e.a3);
        }
        break;
      case SQLITE_FUNCTION: functions.push_back(e.a4); break;
      case SQLITE_INSERT:
      case SQLITE_UPDATE:
      case SQLITE_DELETE: {
        if (lower(e.a3).rfind("sqlite_", 0) == 0 && lower(e.a3) != "sqlite_sequence") {
          ddl = true;  // writes to sqlite_master: part of a DDL statement
          break;
        }
        auto& w = writes[{e.db, e.a3}];
        w.schema = e.db;
        w.table = e.a3;
        if (!e.trigger.empty() || sql_replace) w.maybe_silent = true;
        if (e.action == SQLITE_DELETE && e.trigger.empty()) w.top_delete = true;
        if (e.action == SQLITE_UPDATE) {
          std::string col = lower(e.a4);
          if (col == "rowid" || col == "oid" || col == "_rowid_" ||
              (!col.empty() && col == table(e.db, e.a3).rowid_alias))
            w.maybe_silent = true;
        }
        break;
      }
      case SQLITE_TRANSACTION:
      case SQLITE_SAVEPOINT: tx = true; break;
      case SQLITE_ATTACH:
      case SQLITE_DETACH: attach = true; break;
      case SQLITE_PRAGMA:
        pragma = true;
        if (!e.a4.empty() && !harmless_pragma(e.a3)) p.pragma_sets = true;
        break;
      case SQLITE_CREATE_INDEX: case SQLITE_CREATE_TABLE: case SQLITE_CREATE_TEMP_INDEX:
      case SQLITE_CREATE_TEMP_TABLE: case SQLITE_CREATE_TEMP_TRIGGER:
      case SQLITE_CREATE_TEMP_VIEW: case SQLITE_CREATE_TRIGGER: case SQLITE_CREATE_VIEW:
      case SQLITE_DROP_INDEX: case SQLITE_DROP_TABLE: case SQLITE_DROP_TEMP_INDEX:
      case SQLITE_DROP_TEMP_TABLE: case SQLITE_DROP_TEMP_TRIGGER: case SQLITE_DROP_TEMP_VIEW:
      case SQLITE_DROP_TRIGGER: case SQLITE_DROP_VIEW: case SQLITE_ALTER_TABLE:
      case SQLITE_REINDEX: case SQLITE_ANALYZE: case SQLITE_CREATE_VTABLE:
      case SQLITE_DROP_VTABLE:
        ddl = true;
        break;
      default: other = true; break;
    }
  }
  for (auto& [k, w] : writes) {
    const table_info& ti = table(w.schema, w.table);
    if (ti.silent || ti.replace || !ti.ok) w.maybe_silent = true;
    if (!ti.ok) w.rows_unknown = true;
    p.writes.push_back(w);
  }
  for (const auto& r : reads) p.reads.push_back(r);
  bool readonly = stmt && sq::sqlite3_stmt_readonly(stmt);

  if (tx) p.k = kind::tx;
  else if (ddl) p.k = kind::ddl;
  else if (attach) p.k = kind::attach;
  else if (pragma) p.k = readonly || p.writes.empty() ? kind::pragma : kind::write;
  else if (!p.writes.empty()) p.k = other ? kind::unknown : kind::write;
  else if (other || !readonly || !stmt) p.k = readonly && stmt ? kind::uncacheable_read : kind::unknown;
  else if (!select) {
    p.k = kind::uncacheable_read;
    p.reason = uncacheable_reason::not_a_read;
  } else {
    p.k = kind::read;
    for (const auto& f : functions) {
      if (!deterministic(f)) {
        p.k = kind::uncacheable_read;
        p.reason = uncacheable_reason::volatile_function;
        break;
      }
    }
    // The authorizer reports no column reads for USING/NATURAL join conditions (and then
    // no "table read with no columns" either): every table the bytecode opens is read.
    std::optional<std::vector<vdbe_op>> ops;
    if (p.k == kind::read) {
      ops = explain(stmt);
      if (!ops || !add_opened_tables(p, *ops)) {
        p.k = kind::uncacheable_read;
        p.reason = uncacheable_reason::other;
      }
    }
    if (p.k == kind::read) {
      for (const auto& [schema, t] : p.reads) {
        if (!table(schema, t).ok) {
          p.k = kind::uncacheable_read;
          p.reason = uncacheable_reason::system_relation;
          break;
        }
      }
    }
    if (p.k == kind::read) {
      detect_rowid_predicate(p, stmt, &*ops);
      detect_column_predicates(p, stmt);
    }
  }
  if (p.k == kind::pragma || p.k == kind::uncacheable_read) {
    if (p.k == kind::pragma) p.reason = uncacheable_reason::not_a_read;
  }
}

// The statement's bytecode, or nullopt when EXPLAIN fails.
std::optional<std::vector<vdbe_op>> sqlite_engine::explain(sq::sqlite3_stmt* stmt) {
  const char* sql = stmt ? sq::sqlite3_sql(stmt) : nullptr;
  if (!sql) return std::nullopt;
  std::vector<vdbe_op> ops;
  bool ok = query(std::string("EXPLAIN ") + sql, [&](sq::sqlite3_stmt* st) {
    ops.push_back({sq::sqlite3_column_int(st, 0), text(st, 1), sq::sqlite3_column_int(st, 2),
                   sq::sqlite3_column_int(st, 3), sq::sqlite3_column_int(st, 4),
                   sq::sqlite3_column_int(st, 6)});
  });
  if (!ok) return std::nullopt;
  return ops;
}

// The table stored in b-tree `root` of `schema` (an index names its table), or nullptr.
const std::string* sqlite_engine::table_of_root(const std::string& schema, int root) {
  auto it = roots_.find(schema);
  if (it == roots_.end()) {
    std::unordered_map<int, std::string> m;
    m[1] = schema == "temp" ? "sqlite_temp_master" : "sqlite_master";
    std::string q = "\"";
    for (char c : schema) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    query("SELECT rootpage, tbl_name FROM " + q + "\".sqlite_master WHERE rootpage > 0",
          [&](sq::sqlite3_stmt* st) { m[sq::sqlite3_column_int(st, 0)] = text(st, 1); });
    it = roots_.emplace(schema, std::move(m)).first;
  }
  auto r = it->second.find(root);
  return r == it->second.end() ? nullptr : &r->second;
}

// Adds every table the bytecode opens to p.reads. False when an opened b-tree cannot be
// named or the statement opens a virtual table (the read is then not cached).
bool sqlite_engine::add_opened_tables(plan& p, const std::vector<vdbe_op>& ops) {
  for (const auto& o : ops) {
    if (o.name.size() > 1 && o.name[0] == 'V' &&
        std::isupper(static_cast<unsigned char>(o.name[1])))
      return false;  // VOpen, VFilter, ...: a virtual table or table-valued function
    if (o.name != "OpenRead" && o.name != "OpenWrite" && o.name != "ReopenIdx") continue;
    if (o.p5 & 0x10) return false;  // OPFLAG_P2ISREG: the root page is in a register
    auto sit = schema_by_index_.find(o.p3);
    if (sit == schema_by_index_.end()) return false;
    const std::string* t = table_of_root(sit->second, o.p2);
    if (!t) return false;
    bool have = false;
    for (const auto& [schema, name] : p.reads)
      if (schema == sit->second && lower(name) == lower(*t)) have = true;
    if (!have) p.reads.emplace_back(sit->second, *t);
  }
  return true;
}

// True when `t` is named like a shadow table of a virtual table of `schema` (`vt_...`):
// pragma_table_list says "shadow" only when the virtual table's module is loaded.
bool sqlite_engine::shadow_of_virtual(const std::string& schema, const std::string& t) {
  bool found = false;
  const std::string name = quote(t);
  query("SELECT 1 FROM pragma_table_list WHERE schema = " + quote(schema) +
            " AND type = 'virtual' AND length(" + name + ") > length(name) + 1" +
            " AND lower(substr(" + name + ", 1, length(name) + 1)) = lower(name) || '_'",
        [&](sq::sqlite3_stmt*) { found = true; });
  return found;
}

// A read of exactly one row by rowid: one table, one cursor, one SeekRowid keyed by a
// parameter, no backward jumps (loops) and only opcodes from a known-safe list.
void sqlite_engine::detect_rowid_predicate(plan& p, sq::sqlite3_stmt* stmt,
                                           const std::vector<vdbe_op>* given) {
  if (p.reads.size() != 1 || !stmt) return;
  const table_info& ti = table(p.reads[0].first, p.reads[0].second);
  if (ti.view || ti.silent || !ti.ok) return;
  static const std::set<std::string> allowed = {
      "Init", "Transaction", "TableLock", "Goto", "OpenRead", "Variable", "SeekRowid",
      "NotExists", "MustBeInt", "Column", "Rowid", "ResultRow", "Halt", "Integer", "Int64",
      "Real", "String8", "String", "Null", "Copy", "SCopy", "IsNull", "NotNull", "Affinity",
      "Cast", "RealAffinity", "Function", "PureFunc", "Concat", "Add", "Subtract", "Multiply",
      "Divide", "Remainder", "BitAnd", "BitOr", "ShiftLeft", "ShiftRight", "Not", "BitNot",
      "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "If", "IfNot", "ZeroOrNull", "Noop", "Once",
      "Explain", "IsTrue", "Blob", "SoftNull"};
  std::optional<std::vector<vdbe_op>> own;
  if (!given) {
    own = explain(stmt);
    if (!own) return;
    given = &*own;
  }
  const std::vector<vdbe_op>& ops = *given;
  if (ops.empty()) return;
  static const std::set<std::string> jumps = {"Goto", "SeekRowid", "NotExists", "MustBeInt",
                                              "IsNull", "NotNull", "Eq", "Ne", "Lt", "Le",
                                              "Gt", "Ge", "If", "IfNot", "Once", "Init"};
  int open_reads = 0, seeks = 0, cursor = -1, key_reg = -1;
  for (const auto& o : ops) {
    if (!allowed.count(o.name)) return;
    if (o.name == "OpenRead") {
      ++open_reads;
      cursor = o.p1;
    }
    if (o.name == "SeekRowid" || o.name == "NotExists") {
      ++seeks;
      if (o.p1 != cursor) return;
      key_reg = o.p3;
    }
    if (jumps.count(o.name) && o.p2 <= o.addr && o.p2 != 0) {
      // The only backward jump allowed: Goto from the end back to the start of the program.
      if (!(o.name == "Goto" && o.p2 == 1)) return;
    }
  }
  if (open_reads != 1 || seeks != 1 || key_reg < 0) return;
  int param = 0;
  for (const auto& o : ops)
    if (o.name == "Variable" && o.p2 == key_reg) param = o.p1;
  // The key register must be set only by that Variable.
  for (const auto& o : ops) {
    bool writes_reg = (o.name == "Copy" || o.name == "SCopy") ? o.p2 == key_reg : false;
    if (o.name == "Integer" || o.name == "Int64" || o.name == "Null" || o.name == "String8" ||
        o.name == "Real" || o.name == "Rowid" || o.name == "Column")
      writes_reg = (o.name == "Null" || o.name == "Integer") ? o.p2 == key_reg : o.p3 == key_reg;
    if (writes_reg) return;
  }
  if (param <= 0) return;
  p.rowid_param = param;
  const char* name = sq::sqlite3_bind_parameter_name(stmt, param);
  p.rowid_param_name = name ? name + 1 : "";
  if (name && name[0] != ':') p.rowid_param = 0;  // $name / @name: SOCI binds :name only
}

// Column-equality predicates, from qcache's PostgreSQL analyzer run on the statement with
// its parameters written $n. Each relation the analyzer names must be a table SQLite read
// (resolved as SQLite resolves it, unambiguously); a read table gets a predicate only
// when exactly one occurrence reads it and that occurrence is restricted by `column =
// value` on a column whose affinity and collation make equality textual. Anything else
// leaves the statement on table tags.
void sqlite_engine::detect_column_predicates(plan& p, sq::sqlite3_stmt* stmt) {
  p.preds.clear();
  p.param_names.clear();
  if (p.reads.empty() || !stmt || !utf8_) return;
  const char* sql = sq::sqlite3_sql(stmt);
  if (!sql) return;
  std::vector<std::string> names;
  auto converted = to_pg_placeholders(sql, stmt, names);
  if (!converted || has_cast(*converted)) return;
  auto a = analyze_ ? analyze_(*converted) : nullptr;
  if (!a || !a->ok || a->statements.size() != 1) return;
  const pg::statement& st = a->statements[0];
  if (st.kind != pg::stmt_kind::read || st.reads.empty()) return;
  std::vector<int> uses(p.reads.size(), 0);
  std::vector<const pg::read_ref*> ref(p.reads.size(), nullptr);
  for (const auto& rr : st.reads) {
    int i = map_read(p, rr.table);
    if (i < 0) return;
    ++uses[static_cast<std::size_t>(i)];
    ref[static_cast<std::size_t>(i)] = &rr;
  }
  std::vector<plan::pred_candidate> out;
  for (std::size_t i = 0; i < p.reads.size(); ++i) {
    if (uses[i] != 1 || ref[i]->conjuncts.empty()) continue;
    const table_info& ti = table(p.reads[i].first, p.reads[i].second);
    if (!ti.ok || ti.view || !ti.pred_ok) continue;
    for (const pg::eq_conjunct& c : ref[i]->conjuncts) {
      std::string col = lower(c.column);
      auto it = std::find(ti.cols.begin(), ti.cols.end(), col);
      if (it == ti.cols.end()) continue;
      char cls = ti.classes[static_cast<std::size_t>(it - ti.cols.begin())];
      if (cls == class_none || c.values.empty()) continue;
      bool usable = true;
      for (const auto& v : c.values) {
        if (v.k == pg::eq_value::kind::param)
          usable = usable && v.param >= 1 && static_cast<std::size_t>(v.param) < names.size();
        else
          usable = usable && (v.k == pg::eq_value::kind::integer || v.k == pg::eq_value::kind::string);
      }
      if (!usable) continue;
      out.push_back({i, col, cls, c.values});
      break;
    }
  }
  if (out.empty()) return;
  p.preds = std::move(out);
  p.param_names = std::move(names);
}

// The index in p.reads of the table SQLite resolves `n` to, or -1 when it is not one of
// them, not a table, or the name could mean objects of several schemas.
int sqlite_engine::map_read(const plan& p, const pg::qualified_name& n) {
  std::string schema;
  if (!n.schema.empty()) {
    std::string ls = lower(n.schema);
    for (const auto& name : schema_order_)
      if (lower(name) == ls) schema = name;
    if (schema.empty()) return -1;
    const table_info& ti = table(schema, n.name);
    if (!ti.exists || !ti.ok || ti.view) return -1;
  } else {
    int found = 0;
    for (const auto& name : schema_order_) {
      const table_info& ti = table(name, n.name);
      if (!ti.exists) continue;
      ++found;
      if (!ti.ok || ti.view) return -1;
      schema = name;
    }
    if (found != 1) return -1;
  }
  std::string ln = lower(n.name);
  int index = -1;
  for (std::size_t i = 0; i < p.reads.size(); ++i) {
    if (p.reads[i].first == schema && lower(p.reads[i].second) == ln) {
      if (index >= 0) return -1;
      index = static_cast<int>(i);
    }
  }
  return index;
}

// The canonical text of a compared value as the column (class `cls`) sees it, or nullopt
// when equality cannot be decided textually.
std::optional<std::string> sqlite_engine::read_value(const plan& p, const pg::eq_value& v,
                                                     char cls,
                                                     const std::vector<const use_value*>& uses) {
  switch (v.k) {
    case pg::eq_value::kind::integer: return literal_int(v.text);
    case pg::eq_value::kind::string:
      if (cls == class_int) return strict_int(v.text);
      return v.text;
    case pg::eq_value::kind::param: break;
    default: return std::nullopt;
  }
  if (v.param < 1 || static_cast<std::size_t>(v.param) >= p.param_names.size()) return std::nullopt;
  const std::string& name = p.param_names[static_cast<std::size_t>(v.param)];
  const use_value* u = nullptr;
  bool named = false;
  for (const use_value* x : uses)
    if (!x->name.empty()) named = true;
  if (named) {
    // SOCI binds a named use to ":name" only.
    if (name.size() < 2 || name[0] != ':') return std::nullopt;
    for (const use_value* x : uses)
      if (x->name == std::string_view(name).substr(1)) {
        if (u) return std::nullopt;
        u = x;
      }
  } else if (static_cast<std::size_t>(v.param) <= uses.size()) {
    u = uses[static_cast<std::size_t>(v.param) - 1];
  }
  if (!u) return std::nullopt;
  if (u->type == param_type::integer) return strict_int(u->text);
  if (u->type == param_type::text) {
    if (cls == class_int) return strict_int(u->text);
    return u->text;
  }
  return std::nullopt;
}

// Before SQLite changes a row of any table (trigger and foreign-key rows included): names
// predicate(t, c, value) before and after for every registered column c of t, or moves
// column_epoch(t, c) when it cannot. Runs inside sqlite3_step: no queries here.
void sqlite_engine::on_preupdate(sq::sqlite3* db, int op, const char* zdb, const char* ztable) {
  note_table(zdb, ztable);
  if (op == SQLITE_DELETE) {
    bool found = false;
    for (auto& [k, n] : pre_deletes_)
      if (k.first == zdb && k.second == ztable) {
        ++n;
        found = true;
        break;
      }
    if (!found) pre_deletes_.push_back({{zdb, ztable}, 1});
  }
  auto sit = schemas_.find(zdb);
  if (sit == schemas_.end() || !sit->second.reg) {
    pred_failed_ = true;
    return;
  }
  const schema_info& si = sit->second;
  std::string lt = lower(ztable);
  std::vector<std::string> cols = si.reg->of(lt);
  if (cols.empty()) return;
  auto tit = table_memo_.find(std::make_pair(std::string(zdb), std::string(ztable)));
  const table_info* ti = tit == table_memo_.end() ? nullptr : &tit->second;
  int n = sq::sqlite3_preupdate_count(db);
  bool ok = ti && ti->pred_ok && n == static_cast<int>(ti->cols.size());
  for (const std::string& c : cols) {
    int idx = -1;
    char cls = class_none;
    if (ok) {
      auto it = std::find(ti->cols.begin(), ti->cols.end(), c);
      if (it != ti->cols.end()) {
        idx = static_cast<int>(it - ti->cols.begin());
        cls = ti->classes[static_cast<std::size_t>(idx)];
      }
    }
    bool known = idx >= 0 && cls != class_none;
    auto name = [&](bool old) {
      if (!known) return;
      sq::sqlite3_value* v = nullptr;
      int rc = old ? sq::sqlite3_preupdate_old(db, idx, &v) : sq::sqlite3_preupdate_new(db, idx, &v);
      if (rc != SQLITE_OK || !v) {
        known = false;
        return;
      }
      switch (sq::sqlite3_value_type(v)) {
        case SQLITE_NULL:
        case SQLITE_BLOB: return;  // equal to no integer or text value
        case SQLITE_INTEGER:
          if (cls != class_int) {
            known = false;
            return;
          }
          pred_tags_.push_back(tags::predicate(si.identity, lt, c,
                                               std::to_string(sq::sqlite3_value_int64(v))));
          return;
        case SQLITE_FLOAT: {
          double d = sq::sqlite3_value_double(v);
          if (cls != class_int) {
            known = false;
            return;
          }
          if (d == static_cast<double>(static_cast<long long>(d)) && d >= -9.2e18 && d <= 9.2e18)
            pred_tags_.push_back(tags::predicate(si.identity, lt, c,
                                                 std::to_string(static_cast<long long>(d))));
          return;  // not integral: equal to no integer
        }
        case SQLITE_TEXT: {
          if (cls != class_text) {
            known = false;
            return;
          }
          const unsigned char* t = sq::sqlite3_value_text(v);
          int len = sq::sqlite3_value_bytes(v);
          if (!t) {
            known = false;
            return;
          }
          pred_tags_.push_back(tags::predicate(
              si.identity, lt, c,
              std::string_view(reinterpret_cast<const char*>(t), static_cast<std::size_t>(len))));
          return;
        }
        default: known = false; return;
      }
    };
    if (op != SQLITE_INSERT) name(true);
    if (op != SQLITE_DELETE) name(false);
    if (!known) pred_tags_.push_back(tags::column_epoch(si.identity, lt, c));
  }
}

void sqlite_engine::resolve(plan& p) {
  if (p.gen == gen_) return;
  p.gen = gen_;
  p.read_ids.clear();
  p.read_schemas.clear();
  p.table_deps = {};
  p.write_hold_tags.clear();
  p.unidentified = false;
  std::set<std::string> schemas;
  for (const auto& [schema, t] : p.reads) {
    const std::string& id = identity(schema);
    p.read_ids.push_back(id);
    auto sit = schemas_.find(schema);
    if (sit == schemas_.end() || !sit->second.identified) p.unidentified = true;
    if (schemas.insert(schema).second) {
      p.read_schemas.push_back(schema);
      p.table_deps.tags.push_back(tags::database(id));
    }
    p.table_deps.tags.push_back(tags::table(id, t));
  }
  for (const auto& w : p.writes) {
    const std::string& id = identity(w.schema);
    p.write_hold_tags.push_back(tags::table(id, w.table));
    if (w.maybe_silent) p.write_hold_tags.push_back(rowid_epoch(id, w.table));
    if (w.rows_unknown) p.write_hold_tags.push_back(tags::table_epoch(id, w.table));
  }
}

// Compares the file's change counter with the last one seen in this process; invalidates
// the database when it moved. Returns the counter read.
// A prepared write is judged by the schema it runs under: SQLite re-prepares it silently
// after a schema change (a trigger created since, a table recreated with ON CONFLICT
// REPLACE). Notices other connections' changes to the written files, and analyses the
// statement again when the schema may have changed since its analysis (P23).
void sqlite_engine::recheck_write(plan& p, sq::sqlite3_stmt* stmt) {
  std::set<std::string> seen;
  for (const auto& w : p.writes)
    if (seen.insert(w.schema).second) check_external(w.schema);
  if (schema_epoch() != p.epoch && stmt) reanalyze(p, stmt);
}

// Replaces `p` with the analysis of the statement under the current schema: the schemas it
// writes are read first (a stale cached schema is reloaded by SQLite), then the SQL is
// prepared again to collect the authorizer's events.
void sqlite_engine::reanalyze(plan& p, sq::sqlite3_stmt* stmt) {
  for (const auto& name : schema_order_)
    query("SELECT 1 FROM \"" + name + "\".sqlite_master LIMIT 1", [](sq::sqlite3_stmt*) {});
  const char* sql = sq::sqlite3_sql(stmt);
  std::vector<auth_event> events;
  sq::sqlite3_stmt* fresh = nullptr;
  auto* saved = collecting_;
  collecting_ = &events;
  int rc = sql ? sq::sqlite3_prepare_v2(conn_, sql, -1, &fresh, nullptr) : SQLITE_ERROR;
  collecting_ = saved;
  plan np;
  np.sql = p.sql;
  forget_table_facts();
  np.epoch = schema_epoch();
  if (rc == SQLITE_OK && fresh) {
    np.events = events;
    classify(np, events, fresh);
  } else {
    np.k = kind::unknown;  // runs as a statement that may write anything
  }
  sq::sqlite3_finalize(fresh);
  p = std::move(np);
}

// SQLite re-prepared a write while it ran, with events other than its analysis: the schema
// changed between the check and the step. What it wrote is unknown: flush, now and at
// COMMIT, and analyse it from the new events for next time.
void sqlite_engine::schema_changed_under_write(plan& p, std::vector<auth_event>& events) {
  bump_epochs();
  invalidate_databases(invalidation_cause::flush);
  tx_flushed_ = true;
  tx_active_ = true;
  plan np;
  np.sql = p.sql;
  forget_table_facts();
  np.epoch = schema_epoch();
  np.events = events;
  classify(np, events, nullptr);
  p = std::move(np);
}

// Records the files' counters when an explicit transaction begins (BEGIN or SAVEPOINT
// outside one): SQLite takes the transaction's read snapshot no earlier.
void sqlite_engine::note_tx_start() {
  if (sq::sqlite3_get_autocommit(conn_) || tx_snapshot_taken_) return;
  tx_snapshot_taken_ = true;
  memo_snapshot_.set(true);
  memo_txn_ = qcache::detail::tl_memo ? qcache::detail::memo_txn_begun()
                                      : qcache::detail::memo_txn{};
  tx_snapshot_.clear();
  for (auto& [name, s] : schemas_) {
    if (!s.file) continue;
    if (!s.pin->header.load(std::memory_order_relaxed))
      map_header(*s.fs, *s.pin, conn_, name.c_str());
    tx_snapshot_.emplace_back(name, change_counter(conn_, name.c_str(), s.pin.get()));
  }
}

// True when no file read has changed since the open transaction began (its snapshot is
// the file's current state). `counters` are the counters just read, per schema.
bool sqlite_engine::snapshot_is_current(
    const std::vector<std::pair<std::string, std::uint64_t>>& counters) {
  if (!tx_snapshot_taken_) return false;
  for (const auto& [schema, now] : counters) {
    auto sit = schemas_.find(schema);
    if (sit == schemas_.end()) return false;
    if (sit->second.watch) return false;
    if (!sit->second.file) continue;  // private to this connection
    bool same = false;
    for (const auto& [name, then] : tx_snapshot_)
      if (name == schema) same = then != file_state::unknown && then == now;
    if (!same) return false;
  }
  return true;
}

bool sqlite_engine::other_statement_busy(sq::sqlite3_stmt* own) {
  for (sq::sqlite3_stmt* s = sq::sqlite3_next_stmt(conn_, nullptr); s;
       s = sq::sqlite3_next_stmt(conn_, s))
    if (s != own && sq::sqlite3_stmt_busy(s)) return true;
  return false;
}

// True when the current transaction wrote a table of the database `identity`.
bool sqlite_engine::wrote_file(const std::string& identity) const {
  auto it = tx_written_.lower_bound(identity + '\x1f');
  return it != tx_written_.end() && it->compare(0, identity.size() + 1, identity + '\x1f') == 0;
}

// Compares the schema's PRAGMA data_version (which counts other connections' commits,
// shared-cache connections included) with the last value this connection saw; invalidates
// the database when it moved. Returns the value read (negative when unreadable).
std::int64_t sqlite_engine::check_data_version(const std::string& schema, schema_info& s) {
  if (!s.dv) {
    auto* saved = collecting_;
    collecting_ = nullptr;
    sq::sqlite3_prepare_v2(conn_, ("PRAGMA \"" + schema + "\".data_version").c_str(), -1, &s.dv,
                           nullptr);
    collecting_ = saved;
  }
  std::int64_t v = -2;
  if (s.dv && sq::sqlite3_step(s.dv) == SQLITE_ROW) v = sq::sqlite3_column_int64(s.dv, 0);
  if (s.dv) sq::sqlite3_reset(s.dv);
  if (v != s.dv_last || v < 0) {
    if (s.fs)
      s.fs->schema_epoch.fetch_add(1, std::memory_order_acq_rel);
    else
      ++local_epoch_;  // another connection may have changed the schema
    cache_->invalidate(std::array{tags::database(s.identity)}, invalidation_cause::external);
  }
  s.dv_last = v;
  return v;
}

// Inside a memo scope (memoize.h): a later memo hit must look at the files read as this
// read did; a shared memory database (no file to look at) cannot be checked without a
// connection, so a memo that read one is not stored.
void sqlite_engine::memo_checks(const plan& p) {
  if (!qcache::detail::memo_current()) return;
  for (const auto& schema : p.read_schemas) {
    auto it = schemas_.find(schema);
    if (it == schemas_.end()) continue;
    schema_info& s = it->second;
    if (s.watch) {
      cache_->memo_refuse("a shared memory database");
    } else if (s.file && s.fs) {
      if (!s.memo_checker)
        s.memo_checker = std::make_shared<file_memo_check>(cache_.get(), s.path, s.fs);
      cache_->memo_add_check(s.memo_checker);
    }
  }
}

std::uint64_t sqlite_engine::check_external(const std::string& schema) {
  auto it = schemas_.find(schema);
  if (it == schemas_.end()) return 0;
  schema_info& s = it->second;
  if (!s.file) return s.watch ? static_cast<std::uint64_t>(check_data_version(schema, s)) : 0;
  if (!s.pin->header.load(std::memory_order_relaxed))
    map_header(*s.fs, *s.pin, conn_, schema.c_str());
  std::uint64_t c = change_counter(conn_, schema.c_str(), s.pin.get());
  if (c == file_state::unknown) {
    // Not readable (WAL index not mapped yet, another VFS): ask SQLite itself, which also
    // maps the WAL index for next time.
    check_data_version(schema, s);
    c = change_counter(conn_, schema.c_str(), s.pin.get());
    if (c != file_state::unknown) s.fs->last.store(c, std::memory_order_release);
    return c;
  }
  file_state& fs = *s.fs;
  std::uint64_t last = fs.last.load(std::memory_order_acquire);
  if (c != last) {
    fs.schema_epoch.fetch_add(1, std::memory_order_acq_rel);
    cache_->invalidate(std::array{tags::database(s.identity)}, invalidation_cause::external);
    fs.last.store(c, std::memory_order_release);
  }
  return c;
}

execution sqlite_engine::begin(const std::shared_ptr<void>& pl, bool cacheable,
                               std::string_view shape, const std::vector<const use_value*>& uses,
                               ::soci::details::statement_backend& real) {
  execution ex;
  auto p = std::static_pointer_cast<plan>(pl);
  if (!p) {
    bump_epochs();
    invalidate_databases(invalidation_cause::flush);
    tx_flushed_ = true;
    tx_active_ = true;
    return ex;
  }
  sq::sqlite3_stmt* stmt = static_cast<::soci::sqlite3_statement_backend&>(real).stmt_;
  if (p->k == kind::write) recheck_write(*p, stmt);
  resolve(*p);
  // Rows changed since the last statement ended (a statement stepped later, through
  // fetch()): written as far as readers know, never dropped.
  if (hook_pending()) process_hook_rows(nullptr);
  hook_rows_.clear();
  hook_tables_.clear();
  pred_tags_.clear();
  pred_failed_ = false;
  pre_deletes_.clear();
  switch (p->k) {
    case kind::read: break;
    case kind::uncacheable_read:
    case kind::pragma:
      cache_->count_uncacheable(p->reason);
      if (p->k == kind::pragma && p->pragma_sets) {
        auto st = std::make_shared<exec_state>();  // end() makes the context private
        st->p = p;
        ex.state = st;
      }
      return ex;
    case kind::write:
      add_hold(p->write_hold_tags);
      // The preupdate hook may not query: load the written tables' columns now.
      sync_table_facts();
      for (const auto& w : p->writes) table(w.schema, w.table);
      for (const auto& w : p->writes) tx_written_.insert(identity(w.schema) + '\x1f' + w.table);
      {
        auto st = std::make_shared<exec_state>();
        st->p = p;
        ex.state = st;
        collecting_ = &st->reprepared;  // a re-prepare while stepping: the schema changed
      }
      return ex;
    case kind::ddl:
    case kind::attach:
    case kind::unknown:
      bump_epochs();
      invalidate_databases(p->k == kind::unknown ? invalidation_cause::flush
                                                 : invalidation_cause::ddl);
      tx_flushed_ = true;
      tx_active_ = true;
      {
        auto st = std::make_shared<exec_state>();
        st->p = p;
        ex.state = st;
      }
      return ex;
    case kind::tx: {
      auto st = std::make_shared<exec_state>();
      st->p = p;
      ex.state = st;
      return ex;
    }
  }
  // A cacheable read.
  if (!cacheable || p->unidentified) {
    cache_->count_uncacheable(uncacheable_reason::other);
    return ex;
  }
  if (tx_active_ && !sq::sqlite3_get_autocommit(conn_)) {
    bool local = tx_flushed_;
    for (std::size_t i = 0; i < p->reads.size() && !local; ++i)
      local = tx_written_.count(p->read_ids[i] + '\x1f' + p->reads[i].second) > 0;
    if (local) {
      cache_->count_uncacheable(uncacheable_reason::transaction_local);
      return ex;
    }
  }
  // The key: context, SQL, the into shape, then every parameter with its name.
  kb_.start(context_, 's', p->sql);
  kb_.add(param_type::other, shape);
  const use_value* rowid_use = nullptr;
  std::string named;
  for (std::size_t i = 0; i < uses.size(); ++i) {
    const use_value* u = uses[i];
    if (!u->cacheable) {
      cache_->count_uncacheable(uncacheable_reason::other);
      return ex;
    }
    named.clear();
    named.push_back(static_cast<char>(u->name.size()));
    named += u->name;
    named.push_back(static_cast<char>(u->type));
    named += u->text;
    kb_.add(u->type, named);
    if (p->rowid_param > 0) {
      if (!u->name.empty() ? u->name == p->rowid_param_name
                           : static_cast<int>(i) + 1 == p->rowid_param)
        rowid_use = u;
    }
  }
  auto st = std::make_shared<exec_state>();
  st->p = p;
  kb_.finish_into(st->k);
  // Writes by others to the files read: detect before looking anything up.
  for (const auto& schema : p->read_schemas) {
    st->counters.emplace_back(schema, check_external(schema));
  }
  memo_checks(*p);
  // Inside a transaction the read sees the snapshot SQLite took at its first read (WAL):
  // neither served nor stored once another connection has committed since it began.
  if (!sq::sqlite3_get_autocommit(conn_) && !snapshot_is_current(st->counters)) {
    cache_->count_uncacheable(uncacheable_reason::transaction_local);
    return ex;
  }
  if (std::uint64_t e = schema_epoch(); e != p->epoch) {
    // The schema may have changed since the analysis: prove the rowid predicate again from
    // the statement's current bytecode.
    p->epoch = e;
    p->rowid_param = 0;
    p->rowid_param_name.clear();
    detect_rowid_predicate(*p, static_cast<::soci::sqlite3_statement_backend&>(real).stmt_);
    forget_table_facts();
    detect_column_predicates(*p, static_cast<::soci::sqlite3_statement_backend&>(real).stmt_);
  }
  if (auto v = cache_->lookup(st->k)) {
    ex.hit = std::static_pointer_cast<const result_table>(v);
    return ex;
  }
  // Another statement of this connection still stepping holds a read snapshot this one
  // shares, possibly older than the file in WAL mode (a rollback journal's shared lock
  // keeps other writers out meanwhile): run it, store nothing.
  bool snapshots = false;
  for (const auto& [schema, c] : st->counters) {
    auto sit = schemas_.find(schema);
    snapshots = snapshots || c == file_state::unknown || (c >> 32) == 2 ||
                sit == schemas_.end() || sit->second.watch;
  }
  if (snapshots && other_statement_busy(stmt)) {
    cache_->count_uncacheable(uncacheable_reason::transaction_local);
    return ex;
  }
  cache_->count_miss();
  // Dependencies: a rowid predicate when the parameter is a plain integer.
  dependencies pred;
  const dependencies* deps = &p->table_deps;
  if (rowid_use && rowid_use->type == param_type::integer && rowid_use->text.size() < 20 &&
      !(rowid_use->text.size() == 19 && rowid_use->text[0] != '-' &&
        rowid_use->text > "9223372036854775807")) {
    const std::string& id = p->read_ids[0];
    const std::string& t = p->reads[0].second;
    pred.tags = {tags::database(id), tags::predicate(id, t, "rowid", rowid_use->text),
                 tags::table_epoch(id, t), rowid_epoch(id, t)};
    pred.guards = {tags::table(id, t)};
    deps = &pred;
  } else if (!p->preds.empty()) {
    // Column predicates: each restricted table depends on its rows with those values.
    std::vector<std::optional<std::vector<std::string>>> values(p->reads.size());
    bool any = false;
    for (const auto& c : p->preds) {
      std::vector<std::string> v;
      for (const auto& x : c.values) {
        auto cv = read_value(*p, x, c.cls, uses);
        if (!cv) break;
        v.push_back(std::move(*cv));
      }
      if (v.size() != c.values.size()) continue;
      values[c.read] = std::move(v);
      any = true;
    }
    if (any) {
      std::set<std::string> schemas;
      for (std::size_t i = 0; i < p->reads.size(); ++i) {
        const std::string& id = p->read_ids[i];
        const std::string& t = p->reads[i].second;
        if (schemas.insert(id).second) pred.tags.push_back(tags::database(id));
        if (!values[i]) {
          pred.tags.push_back(tags::table(id, t));
          continue;
        }
        const plan::pred_candidate* c = nullptr;
        for (const auto& x : p->preds)
          if (x.read == i) c = &x;
        std::string lt = lower(t);
        // Registered before the versions are captured: a write that starts later names
        // these rows; one already in flight holds table(t), the guard.
        auto sit = schemas_.find(p->reads[i].first);
        if (sit == schemas_.end() || !sit->second.reg) {
          pred.tags.push_back(tags::table(id, t));
          continue;
        }
        sit->second.reg->add(lt, c->column);
        pred.tags.push_back(tags::table_epoch(id, t));
        pred.tags.push_back(tags::column_epoch(id, lt, c->column));
        for (const auto& v : *values[i]) pred.tags.push_back(tags::predicate(id, lt, c->column, v));
        pred.guards.push_back(tags::table(id, t));
      }
      deps = &pred;
    }
  }
  st->flight = cache_->join_flight(st->k, *deps);
  if (st->flight.value()) {
    ex.hit = std::static_pointer_cast<const result_table>(st->flight.value());
    return ex;
  }
  st->snap = cache_->capture(*deps);
  ex.read = true;
  ex.store = st->snap.storable();
  ex.state = st;
  collecting_ = &st->reprepared;  // a re-prepare while stepping means the schema changed
  return ex;
}

// Tables the hooks saw changed that the statement did not declare (an application function
// or a virtual table module writing through nested statements): the whole table is written
// as far as readers know, held like any write until the transaction that wrote it ends.
void sqlite_engine::hold_undeclared_writes(const plan* p) {
  std::vector<tags::tag> t;
  for (const auto& [db, table] : hook_tables_) {
    bool declared = false;
    if (p)
      for (const auto& w : p->writes)
        if (w.schema == db && lower(w.table) == lower(table)) declared = true;
    if (declared) continue;
    const std::string& id = identity(db);
    t.push_back(tags::table(id, table));
    t.push_back(tags::table_epoch(id, table));
    t.push_back(rowid_epoch(id, table));
    tx_written_.insert(id + '\x1f' + table);
  }
  hook_tables_.clear();
  if (!t.empty()) add_hold(t);
}

void sqlite_engine::process_hook_rows(const plan* p) {
  hold_undeclared_writes(p);
  std::vector<tags::tag> t;
  std::map<std::pair<std::string, std::string>, std::int64_t> counts;
  for (const auto& r : hook_rows_) {
    const std::string& id = identity(r.db);
    t.push_back(tags::predicate(id, r.table, "rowid", std::to_string(r.rowid)));
    ++counts[{r.db, r.table}];
  }
  hook_rows_.clear();
  std::vector<std::pair<std::pair<std::string, std::string>, std::int64_t>> pre_deletes;
  pre_deletes.swap(pre_deletes_);
  t.insert(t.end(), pred_tags_.begin(), pred_tags_.end());
  pred_tags_.clear();
  if (pred_failed_) {
    // The preupdate hook could not name some row: fail closed on every database.
    pred_failed_ = false;
    for (auto& [name, s] : schemas_) t.push_back(tags::database(s.identity));
  }
  if (p) {
    // The hook is silent for DELETE without WHERE (truncate optimisation): compare the rows
    // SQLite counted with the rows the hook named.
    std::int64_t changes = sq::sqlite3_changes(conn_);
    for (const auto& w : p->writes) {
      const std::string& id = identity(w.schema);
      // The update hook may have missed rows: rowid reads of the table. The preupdate hook
      // names every row of a real table (triggers, cascades, REPLACE, WITHOUT ROWID,
      // truncation included: verified on 3.40), so column predicates stay exact.
      std::int64_t pre = 0;
      for (const auto& [k, n] : pre_deletes)
        if (k.first == w.schema && k.second == w.table) pre = n;
      if (w.maybe_silent || (w.top_delete && counts[{w.schema, w.table}] < changes))
        t.push_back(rowid_epoch(id, w.table));
      if (w.rows_unknown || (w.top_delete && pre < changes))
        t.push_back(tags::table_epoch(id, w.table));
    }
  }
  if (t.empty()) return;
  cache_->invalidate(t, invalidation_cause::write);
  tx_commit_tags_.insert(tx_commit_tags_.end(), t.begin(), t.end());
}

void sqlite_engine::end(execution& ex, bool ok, std::shared_ptr<const result_table> value) noexcept {
  auto st = std::static_pointer_cast<exec_state>(ex.state);
  ex.state.reset();
  try {
    if (!st) {
      if (hook_pending()) process_hook_rows(nullptr);
      settle();
      return;
    }
    const plan& p = *st->p;
    if (ex.read) {
      collecting_ = nullptr;
      bool reprepared = !st->reprepared.empty();
      if (reprepared) {
        // The schema changed under the prepared statement: analyse it again from the
        // events of the re-prepare, and store nothing computed with the old analysis.
        plan fresh;
        fresh.sql = st->p->sql;
        forget_table_facts();
        bump_epochs();
        classify(fresh, st->reprepared, nullptr);
        fresh.rowid_param = 0;
        fresh.epoch = schema_epoch();
        if (fresh.k == kind::unknown) fresh.k = kind::uncacheable_read;
        *st->p = std::move(fresh);
      }
      // Writes by others while we read: invalidate (the store below then drops it).
      for (const auto& [schema, before] : st->counters) check_external(schema);
      if (ok && value && ex.store && !reprepared) cache_->store(st->k, st->snap, std::move(value));
      st->flight.done();
      return;
    }
    switch (p.k) {
      case kind::write:
        collecting_ = nullptr;
        process_hook_rows(&p);
        if (!st->reprepared.empty() && st->reprepared != p.events)
          schema_changed_under_write(*st->p, st->reprepared);
        break;
      case kind::tx:
        note_tx_start();
        break;
      case kind::ddl:
      case kind::attach:
        if (hook_pending()) process_hook_rows(nullptr);
        bump_epochs();
        refresh_schemas();
        invalidate_databases(invalidation_cause::ddl);
        break;
      case kind::pragma:
        if (p.pragma_sets) {
          // Settings may change results (case_sensitive_like, foreign_keys, ...): stop
          // sharing entries, and never reuse those cached under an earlier setting.
          private_context_ = true;
          ++private_gen_;
          bump_epochs();
          refresh_schemas();
        }
        break;
      case kind::unknown:
        if (hook_pending()) process_hook_rows(nullptr);
        bump_epochs();
        refresh_schemas();
        invalidate_databases(invalidation_cause::flush);
        break;
      default: break;
    }
    settle();
  } catch (...) {
    // Never throws to the caller: fall back to flushing what this connection can reach.
    try {
      invalidate_databases(invalidation_cause::flush);
    } catch (...) {
    }
  }
  (void)ok;
}

// Ends the current transaction's bookkeeping once SQLite is back in autocommit mode.
void sqlite_engine::settle() {
  // A write transaction may outlive the statement that opened it (a statement not yet
  // reset, nested writes of an application function): its writes are not committed yet.
  if (!sq::sqlite3_get_autocommit(conn_) ||
      sq::sqlite3_txn_state(conn_, nullptr) == SQLITE_TXN_WRITE)
    return;
  if (hook_pending()) process_hook_rows(nullptr);
  bool rolled_back = rollbacks_ != rollbacks_seen_;
  rollbacks_seen_ = rollbacks_;
  bool committed = commits_ != commits_seen_;
  commits_seen_ = commits_;
  if (tx_active_) {
    if (!rolled_back && !tx_commit_tags_.empty())
      cache_->invalidate(tx_commit_tags_, invalidation_cause::commit);
    if (tx_flushed_) invalidate_databases(invalidation_cause::flush);
  }
  if (committed) {
    // Our own commit moved the files' counters: recognise it, so other sessions' hits
    // survive. Proven only when nothing else moved it since we last looked (the counter
    // before our commit equals the last one seen) and it moved by exactly one.
    for (const auto& [id, before] : pre_commit_) {
      for (auto& [name, s] : schemas_) {
        if (s.identity != id) continue;
        file_state& fs = *s.fs;
        std::uint64_t now = change_counter(conn_, name.c_str(), s.pin.get());
        std::uint64_t expected = before;
        // Only a file this transaction wrote can have been moved by its commit: a file it
        // did not write moved by one is another connection's commit (P23).
        if (wrote_file(id) && before != file_state::unknown && now == before + 1 &&
            fs.last.compare_exchange_strong(expected, now)) {
          continue;
        }
        // A commit that changed no page (an UPDATE to identical values) leaves the counter
        // alone: nothing to attribute when nobody else moved it either.
        if (before != file_state::unknown && now == before &&
            fs.last.load(std::memory_order_acquire) == before) {
          continue;
        }
        fs.schema_epoch.fetch_add(1, std::memory_order_acq_rel);
        cache_->invalidate(std::array{tags::database(id)}, invalidation_cause::external);
        if (now != file_state::unknown) fs.last.store(now);
      }
    }
    pre_commit_.clear();
  }
  tx_hold_.release(!rolled_back && tx_active_);
  tx_active_ = false;
  tx_commit_tags_.clear();
  tx_written_.clear();
  tx_flushed_ = false;
  if (tx_snapshot_taken_ && (qcache::detail::tl_memo || memo_txn_.frame)) [[unlikely]]
    qcache::detail::memo_txn_ended(std::exchange(memo_txn_, {}));
  tx_snapshot_taken_ = false;
  memo_snapshot_.set(false);
  tx_snapshot_.clear();
}

// ---- Manual invalidation by name and explain ------------------------------------------

// `name` ("t", "schema.t", parts optionally quoted "..", `..` or [..]) as (schema, table);
// the schema is empty when not given.
std::pair<std::string, std::string> split_sqlite_name(std::string_view name) {
  std::vector<std::string> parts(1);
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    char close = c == '"' ? '"' : c == '`' ? '`' : c == '[' ? ']' : 0;
    if (close && parts.back().empty()) {
      std::size_t j = i + 1;
      for (; j < name.size(); ++j) {
        if (name[j] != close) parts.back() += name[j];
        else if (close != ']' && j + 1 < name.size() && name[j + 1] == close)
          parts.back() += name[++j];
        else break;
      }
      i = j;
    } else if (c == '.' && parts.size() == 1) {
      parts.emplace_back();
    } else {
      parts.back() += c;
    }
  }
  if (parts.size() == 1) return {std::string(), parts[0]};
  return {parts[0], parts[1]};
}

// The tables (schema, name as declared) `name` may mean on this connection: with a schema,
// that schema's table; without, the table of every database that has one (SQLite picks the
// first of temp, main, attached; invalidating them all is never less safe). Views included.
std::vector<std::pair<std::string, std::string>> sqlite_engine::tables_named(
    const std::string& name) {
  auto [schema, table] = split_sqlite_name(name);
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& s : schema_order_) {
    if (!schema.empty() && lower(s) != lower(schema)) continue;
    query("SELECT name FROM pragma_table_list(" + quote(table) + ") WHERE schema = " + quote(s),
          [&](sq::sqlite3_stmt* st) { out.emplace_back(s, text(st, 0)); });
  }
  return out;
}

// Every read of the table: the table tag (reads of the whole table) and its epoch (the
// rowid and column predicate reads). A view's reads depend on its base tables, which a view
// name does not give: the database is invalidated.
void sqlite_engine::invalidate_table(const std::string& name) {
  sync_table_facts();
  std::vector<tags::tag> t;
  for (const auto& [schema, table] : tables_named(name)) {
    const std::string& id = identity(schema);
    if (this->table(schema, table).view) t.push_back(tags::database(id));
    t.push_back(tags::table(id, table));
    t.push_back(tags::table_epoch(id, table));
  }
  if (!t.empty()) cache_->invalidate(t, invalidation_cause::manual);
}

// The tags a write of that row moves (on_preupdate, process_hook_rows): the table tag, the
// column predicate of `value` canonicalised for the column's class (its column epoch when
// no predicate can name it) and, for the rowid or its alias, the rowid predicate (the rowid
// epoch when `value` is not an integer's canonical text).
void sqlite_engine::invalidate_row(const std::string& name, const std::string& column,
                                   const std::string& value) {
  sync_table_facts();
  const std::string c = lower(column);
  std::vector<tags::tag> t;
  for (const auto& [schema, table] : tables_named(name)) {
    const std::string& id = identity(schema);
    const table_info& ti = this->table(schema, table);
    const std::string lt = lower(table);
    if (ti.view) t.push_back(tags::database(id));
    t.push_back(tags::table(id, table));
    auto col = std::find(ti.cols.begin(), ti.cols.end(), c);
    char cls = col == ti.cols.end()
                   ? class_none
                   : ti.classes[static_cast<std::size_t>(col - ti.cols.begin())];
    std::optional<std::string> v;
    if (cls == class_int) v = strict_int(value);
    else if (cls == class_text) v = value;
    if (v) t.push_back(tags::predicate(id, lt, c, *v));
    else t.push_back(tags::column_epoch(id, lt, c));
    if (c == "rowid" || c == "oid" || c == "_rowid_" || (!c.empty() && c == ti.rowid_alias)) {
      if (auto r = strict_int(value)) t.push_back(tags::predicate(id, table, "rowid", *r));
      else t.push_back(rowid_epoch(id, table));
    }
  }
  if (!t.empty()) cache_->invalidate(t, invalidation_cause::manual);
}

// Prepares `sql` (the authorizer collecting, as prepare() does), never steps it, and
// describes the analysis begin() would act on.
explanation sqlite_engine::explain_sql(const std::string& sql) {
  explanation e;
  std::vector<auth_event> events;
  auto* saved = collecting_;
  collecting_ = &events;
  sq::sqlite3_stmt* stmt = nullptr;
  int rc = sq::sqlite3_prepare_v2(conn_, sql.c_str(), -1, &stmt, nullptr);
  collecting_ = saved;
  if (rc != SQLITE_OK) {
    e.kind = "error";
    e.error = sq::sqlite3_errmsg(conn_);
    e.reason = "parse_error: SQLite cannot prepare it (running it raises this error)";
    return e;
  }
  if (!stmt) {
    e.kind = "empty";
    e.reason = "not_a_read";
    return e;
  }
  plan p;
  p.sql = sql;
  p.epoch = schema_epoch();
  try {
    classify(p, events, stmt);
    resolve(p);
  } catch (...) {
    sq::sqlite3_finalize(stmt);
    throw;
  }
  sq::sqlite3_finalize(stmt);
  explain_tags(p, e);
  return e;
}

void sqlite_engine::explain_tags(const plan& p, explanation& e) {
  static const char* const kinds[] = {"read", "read", "write", "ddl", "attach",
                                      "transaction", "pragma", "unknown"};
  e.kind = kinds[static_cast<int>(p.k)];
  e.cacheable = p.k == kind::read && !p.unidentified;
  if (p.k == kind::read && p.unidentified)
    e.reason = "other: a database file read cannot be identified";
  else if (p.k == kind::uncacheable_read || p.k == kind::pragma)
    e.reason = to_string(p.reason);
  else if (p.k == kind::ddl || p.k == kind::attach)
    e.reason = "not_a_read; flushes: the databases' schema changes";
  else if (p.k == kind::unknown)
    e.reason = "not_a_read; flushes: SQLite does not name what it may write";
  else if (p.k != kind::read)
    e.reason = "not_a_read";
  for (const auto& [schema, t] : p.reads) e.reads.push_back(shown(schema, t));
  for (const auto& w : p.writes) e.writes.push_back(shown(w.schema, w.table));
  if (p.k == kind::read && p.rowid_param > 0) {
    std::string param = p.rowid_param_name.empty() ? "?" + std::to_string(p.rowid_param)
                                                   : ":" + p.rowid_param_name;
    e.tags.push_back("predicate " + shown(p.reads[0].first, p.reads[0].second) +
                     ".rowid = " + param);
  } else if (p.k == kind::read) {
    for (const auto& c : p.preds) {
      std::string vals;
      for (const auto& v : c.values) {
        if (!vals.empty()) vals += ",";
        const std::string* name =
            v.k == pg::eq_value::kind::param ? &p.param_names[static_cast<std::size_t>(v.param)]
                                             : nullptr;
        if (!name) vals += v.text;
        else if (name->empty()) vals += "?" + std::to_string(v.param);  // a bare ?
        else vals += *name;
      }
      const auto& [schema, t] = p.reads[c.read];
      e.tags.push_back("predicate " + shown(schema, t) + "." + c.column + " = " + vals);
    }
  }
  for (const auto& r : e.reads) e.tags.push_back("reads " + r);
  if (p.k == kind::ddl || p.k == kind::attach || p.k == kind::unknown)
    e.tags.push_back("flush (every database of the connection)");
  for (const auto& w : e.writes) e.tags.push_back("invalidates " + w);
}

}  // namespace

std::unique_ptr<engine> make_sqlite_engine(std::shared_ptr<cache> c,
                                           ::soci::details::session_backend& real,
                                           std::shared_ptr<const factory_options> opts,
                                           std::string_view connect, statement_analyzer analyze) {
  return std::make_unique<sqlite_engine>(std::move(c), real, std::move(opts), connect, analyze);
}

}  // namespace qcache::soci::detail
