// The workloads of qcache-bench: blog, point and wiki.
//
// Invariants:
//  * data is a pure function of (workload, scale, seed): every target loads the same rows;
//  * reads take at most one integer parameter, so a read is identified by
//    (statement, parameter) for the freshness check;
//  * ids of new rows come from process-wide counters, never from the database, so the
//    same code runs on SQLite and PostgreSQL and concurrent writers never collide.
#include <chrono>
#include <cmath>
#include <stdexcept>

#include "bench.h"

namespace qcache::bench {

const char* to_string(mode m) { return m == mode::cached ? "cached" : "uncached"; }

zipf::zipf(std::size_t n, double s) : n_(n == 0 ? 1 : n) {
  if (s <= 0) return;
  cdf_.resize(n_);
  double sum = 0;
  for (std::size_t k = 0; k < n_; ++k) sum += 1.0 / std::pow(double(k + 1), s);
  double acc = 0;
  for (std::size_t k = 0; k < n_; ++k) {
    acc += 1.0 / std::pow(double(k + 1), s) / sum;
    cdf_[k] = acc;
  }
  cdf_.back() = 1.0;
}

// ---- session ------------------------------------------------------------------------

session::session(connection& c, connection* direct, write_tracker& wt,
                 const std::vector<statement>& stmts, bool record_reads, double verify_rate,
                 std::uint64_t seed)
    : c_(c), direct_(direct), wt_(wt), stmts_(stmts), record_(record_reads),
      verify_rate_(direct ? verify_rate : 0.0), rng_(seed) {}

void change_oracle::saw(std::uint64_t key, const std::string& result) {
  std::size_t h = std::hash<std::string>{}(result);
  std::lock_guard<std::mutex> l(mu);
  auto [it, fresh] = last.try_emplace(key, h);
  bool changed = fresh || it->second != h;
  it->second = h;
  if (!counting) return;
  ++reads;
  if (changed) ++necessary_misses;
}

std::uint64_t session::read(int stmt, const params& p) {
  ++statements;
  // (statement << 48 | first parameter): what the freshness check and the oracle key on.
  const std::uint64_t key = std::uint64_t(stmt) << 48 |
                            (p.n ? static_cast<std::uint64_t>(p.i[0]) & 0xffffffffffffULL : 0);
  if (record_) reads.push_back(key);
  if (oracle) {
    std::string text;
    std::uint64_t sum = c_.read(stmt, p, &text);
    oracle->saw(key, text);
    return sum;
  }
  if (verify_rate_ <= 0 ||
      std::uniform_real_distribution<double>(0, 1)(rng_) >= verify_rate_) {
    return c_.read(stmt, p, nullptr);
  }
  // --verify: the cached answer must equal the database's when no write to the
  // statement's tables started or ended between the two.
  const auto& tabs = stmts_[stmt].tables;
  auto t0 = std::chrono::steady_clock::now();
  std::array<std::uint64_t, 8> seq{};
  bool quiet = true;
  for (int t : tabs) {
    seq[t] = wt_.seq[t].load();
    quiet = quiet && wt_.in_flight[t].load() == 0;
  }
  // Writes by other processes reach this cache through the change stream: the sampled
  // read must reflect every commit visible before it (sync), not merely one within lag.
  c_.sync();
  auto synced = std::chrono::steady_clock::now();
  std::string cached, fresh;
  std::uint64_t sum = c_.read(stmt, p, &cached);
  auto t1 = std::chrono::steady_clock::now();
  if (quiet) {
    direct_->read(stmt, p, &fresh);
    for (int t : tabs) quiet = quiet && wt_.seq[t].load() == seq[t] && wt_.in_flight[t].load() == 0;
  }
  if (!quiet) {
    ++verify_skipped;
  } else {
    ++verified;
    if (cached != fresh) {
      if (verify_mismatches++ == 0)
        first_mismatch = stmts_[stmt].name + "(" + (p.n ? p.as_text(0) : "") + ")";
    }
  }
  excluded_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(
                     std::chrono::steady_clock::now() - t1 + (synced - t0))
                     .count();
  return sum;
}

void session::write(int stmt, const params& p) {
  ++statements;
  const auto& tabs = stmts_[stmt].tables;
  for (int t : tabs) {
    wt_.in_flight[t].fetch_add(1);
    wt_.seq[t].fetch_add(1);
    held_.push_back(t);
  }
  try {
    c_.write(stmt, p);
  } catch (...) {
    if (!in_tx_) end_writes();
    throw;
  }
  if (!in_tx_) end_writes();
}

void session::begin() {
  ++statements;
  c_.begin();
  in_tx_ = true;
}

void session::commit() {
  ++statements;
  in_tx_ = false;
  try {
    c_.commit();
  } catch (...) {
    end_writes();
    throw;
  }
  end_writes();
}

void session::recover() noexcept {
  if (in_tx_) {
    in_tx_ = false;
    try {
      c_.commit();
    } catch (...) {
    }
  }
  end_writes();
}

void session::end_writes() {
  for (int t : held_) {
    wt_.seq[t].fetch_add(1);
    wt_.in_flight[t].fetch_sub(1);
  }
  held_.clear();
}

namespace {

// Deterministic filler text: lower-case words, no quotes (safe in literal SQL).
std::string words(std::mt19937_64& rng, int n) {
  static const char* const w[] = {"cache", "query", "never", "stale", "post", "page",
                                  "table", "row", "write", "read", "fast", "exact",
                                  "index", "join", "commit", "user"};
  std::string s;
  for (int k = 0; k < n; ++k) {
    if (k) s += ' ';
    s += w[rng() % 16];
  }
  return s;
}

// Accumulates multi-row INSERTs of literal values and sends them in batches.
class bulk_insert {
 public:
  bulk_insert(connection& c, std::string head) : c_(c), head_(std::move(head)) {}
  ~bulk_insert() noexcept(false) { flush(); }
  void row(const std::string& values) {
    buf_ += n_ ? ",(" : "(";
    buf_ += values;
    buf_ += ')';
    if (++n_ == 500) flush();
  }
  void flush() {
    if (n_ == 0) return;
    c_.exec_raw(head_ + " VALUES " + buf_);
    buf_.clear();
    n_ = 0;
  }

 private:
  connection& c_;
  std::string head_, buf_;
  int n_ = 0;
};

std::string q(const std::string& s) { return "'" + s + "'"; }
std::string n(std::int64_t v) { return std::to_string(v); }

// Picks an operation index from cumulative weights.
int pick(std::mt19937_64& rng, const std::vector<double>& cum) {
  double u = std::uniform_real_distribution<double>(0, cum.back())(rng);
  for (std::size_t k = 0; k < cum.size(); ++k)
    if (u < cum[k]) return int(k);
  return int(cum.size() - 1);
}

std::vector<double> cumulative(std::vector<double> w) {
  for (std::size_t k = 1; k < w.size(); ++k) w[k] += w[k - 1];
  return w;
}

// A seeded permutation, so that popular ids are spread over the table.
std::vector<std::int64_t> permutation(std::size_t n, std::uint64_t seed) {
  std::vector<std::int64_t> p(n);
  for (std::size_t k = 0; k < n; ++k) p[k] = std::int64_t(k) + 1;
  std::mt19937_64 rng(seed);
  std::shuffle(p.begin(), p.end(), rng);
  return p;
}

std::int64_t clock_value() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ---- blog -----------------------------------------------------------------------------
// Schema:
//   qb_users(id PK, name, email, bio)
//   qb_posts(id PK, author_id -> qb_users, title, body, published 0/1, created_at)
//   qb_comments(id PK, post_id -> qb_posts, author_id -> qb_users, body, created_at)
// Page views: front page (10 latest published posts, author names, comment counts),
// post page (post + author, its 50 first comments with author names, comment count),
// user page (user, its 20 latest published posts). Writes: add a comment (the common
// write), edit a post, publish a post, delete a comment. Posts and users are chosen by
// Zipf popularity. Default mix: 90 % page views (front 30 %, post 50 %, user 20 %),
// 10 % writes (comment 6, edit 2, publish 1, delete 1).
class blog final : public workload {
 public:
  explicit blog(const workload_config& c)
      : c_(c),
        users_(std::max<std::int64_t>(10, std::llround(1000 * c.scale))),
        posts_(std::max<std::int64_t>(10, std::llround(10000 * c.scale))),
        comments_(std::max<std::int64_t>(10, std::llround(50000 * c.scale))),
        post_pop_(posts_, c.zipf_s),
        user_pop_(users_, c.zipf_s),
        post_perm_(permutation(posts_, c.seed + 1)),
        user_perm_(permutation(users_, c.seed + 2)) {
    double w = c.write_ratio < 0 ? 0.10 : c.write_ratio;
    double r = 1 - w;
    mix_ = cumulative({r * 0.3, r * 0.5, r * 0.2, w * 0.6, w * 0.2, w * 0.1, w * 0.1});
    next_comment_ = comments_ + 1;
  }
  std::string name() const override { return "blog"; }
  std::vector<std::string> tables() const override {
    return {"qb_users", "qb_posts", "qb_comments"};
  }
  enum { front, post, post_comments, post_count, user, user_posts,
         add_comment, edit_post, publish, delete_comment };
  std::vector<statement> statements() const override {
    return {
        {"front",
         "SELECT p.id, p.title, u.name, p.created_at, "
         "(SELECT count(*) FROM qb_comments c WHERE c.post_id = p.id) AS comments "
         "FROM qb_posts p JOIN qb_users u ON u.id = p.author_id WHERE p.published = 1 "
         "ORDER BY p.created_at DESC, p.id DESC LIMIT 10",
         false, {0, 1, 2}},
        {"post",
         "SELECT p.id, p.title, p.body, p.created_at, u.id, u.name FROM qb_posts p "
         "JOIN qb_users u ON u.id = p.author_id WHERE p.id = $1",
         false, {0, 1}},
        {"post_comments",
         "SELECT c.id, c.body, c.created_at, u.name FROM qb_comments c "
         "JOIN qb_users u ON u.id = c.author_id WHERE c.post_id = $1 ORDER BY c.id LIMIT 50",
         false, {0, 2}},
        {"post_count", "SELECT count(*) FROM qb_comments WHERE post_id = $1", false, {2}},
        {"user", "SELECT id, name, bio FROM qb_users WHERE id = $1", false, {0}},
        {"user_posts",
         "SELECT id, title, created_at FROM qb_posts WHERE author_id = $1 AND published = 1 "
         "ORDER BY created_at DESC, id DESC LIMIT 20",
         false, {1}},
        {"add_comment",
         "INSERT INTO qb_comments (id, post_id, author_id, body, created_at) "
         "VALUES ($1, $2, $3, $4, $5)",
         true, {2}},
        {"edit_post", "UPDATE qb_posts SET title = $2, body = $3 WHERE id = $1", true, {1}},
        {"publish", "UPDATE qb_posts SET published = 1, created_at = $2 WHERE id = $1", true, {1}},
        {"delete_comment", "DELETE FROM qb_comments WHERE id = $1", true, {2}},
    };
  }
  void load(connection& c, dialect d) override {
    // SQLite: INTEGER PRIMARY KEY makes the key the rowid, as SQLite schemas do; point
    // reads by it are then invalidated per row (sqlite3_update_hook) instead of per table.
    const std::string pk = d == dialect::sqlite ? "INTEGER PRIMARY KEY" : "BIGINT PRIMARY KEY";
    for (auto t : {"qb_comments", "qb_posts", "qb_users"}) c.exec_raw(std::string("DROP TABLE IF EXISTS ") + t);
    c.exec_raw("CREATE TABLE qb_users (id " + pk + ", name TEXT NOT NULL, "
               "email TEXT NOT NULL, bio TEXT NOT NULL)");
    c.exec_raw("CREATE TABLE qb_posts (id " + pk + ", author_id BIGINT NOT NULL "
               "REFERENCES qb_users(id), title TEXT NOT NULL, body TEXT NOT NULL, "
               "published INTEGER NOT NULL, created_at BIGINT NOT NULL)");
    c.exec_raw("CREATE TABLE qb_comments (id " + pk + ", post_id BIGINT NOT NULL "
               "REFERENCES qb_posts(id), author_id BIGINT NOT NULL REFERENCES qb_users(id), "
               "body TEXT NOT NULL, created_at BIGINT NOT NULL)");
    c.exec_raw("CREATE INDEX qb_posts_author ON qb_posts (author_id, published, created_at)");
    c.exec_raw("CREATE INDEX qb_posts_front ON qb_posts (published, created_at)");
    c.exec_raw("CREATE INDEX qb_comments_post ON qb_comments (post_id, id)");
    std::mt19937_64 rng(c_.seed);
    c.begin();
    {
      bulk_insert b(c, "INSERT INTO qb_users (id, name, email, bio)");
      for (std::int64_t k = 1; k <= users_; ++k)
        // append(), not "literal" + string: GCC 12 at -O3 warns falsely (-Wrestrict) on that.
        b.row(n(k) + "," + q(std::string("user ").append(n(k))) + "," +
              q(std::string("u").append(n(k)).append("@example.org")) + "," + q(words(rng, 12)));
    }
    {
      bulk_insert b(c, "INSERT INTO qb_posts (id, author_id, title, body, published, created_at)");
      for (std::int64_t k = 1; k <= posts_; ++k)
        b.row(n(k) + "," + n(user_perm_[user_pop_(rng)]) + "," + q(words(rng, 5)) + "," +
              q(words(rng, 60)) + "," + (rng() % 10 ? "1" : "0") + "," + n(1000000 + k));
    }
    {
      bulk_insert b(c, "INSERT INTO qb_comments (id, post_id, author_id, body, created_at)");
      for (std::int64_t k = 1; k <= comments_; ++k)
        b.row(n(k) + "," + n(post_perm_[post_pop_(rng)]) + "," +
              n(std::int64_t(rng() % users_) + 1) + "," + q(words(rng, 15)) + "," +
              n(2000000 + k));
    }
    c.commit();
  }
  void run_one(session& s, std::mt19937_64& rng) override {
    switch (pick(rng, mix_)) {
      case 0:
        s.read(front, {});
        break;
      case 1: {
        params p(post_perm_[post_pop_(rng)]);
        s.read(post, p);
        s.read(post_comments, p);
        s.read(post_count, p);
        break;
      }
      case 2: {
        params p(user_perm_[user_pop_(rng)]);
        s.read(user, p);
        s.read(user_posts, p);
        break;
      }
      case 3: {
        params p;
        std::int64_t id = next_comment_.fetch_add(1);
        p.add(id).add(post_perm_[post_pop_(rng)]).add(std::int64_t(rng() % users_) + 1)
            .add(words(rng, 15)).add(2000000 + id);
        s.write(add_comment, p);
        break;
      }
      case 4: {
        params p(post_perm_[post_pop_(rng)]);
        p.add(words(rng, 5)).add(words(rng, 60));
        s.write(edit_post, p);
        break;
      }
      case 5: {
        params p(std::int64_t(rng() % posts_) + 1);
        p.add(clock_value());
        s.write(publish, p);
        break;
      }
      default: {
        std::int64_t hi = next_comment_.load();
        s.write(delete_comment, params(std::int64_t(rng() % std::uint64_t(hi - 1)) + 1));
        break;
      }
    }
  }
  std::string describe() const override {
    return n(users_) + " users, " + n(posts_) + " posts, " + n(comments_) +
           " comments; Zipf s=" + fmt(c_.zipf_s) + "; writes " +
           fmt(100 * (c_.write_ratio < 0 ? 0.10 : c_.write_ratio)) + " %";
  }

 private:
  static std::string fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", v);
    return b;
  }
  workload_config c_;
  std::int64_t users_, posts_, comments_;
 public:
  void offset_new_ids(std::int64_t offset) override { next_comment_ += offset; }

 private:
  zipf post_pop_, user_pop_;
  std::vector<std::int64_t> post_perm_, user_perm_;
  std::vector<double> mix_;
  std::atomic<std::int64_t> next_comment_{0};
};

// ---- point ----------------------------------------------------------------------------
// Schema: qb_accounts(id PK, balance, filler). Reads: SELECT by primary key (Zipf over
// the ids; --zipf 0 for uniform like pgbench -S). Writes (--write-ratio, default 0):
// UPDATE qb_accounts SET balance = balance + $2 WHERE id = $1, like pgbench's TPC-B-ish
// update of one account. 100 000 rows at scale 1.
class point final : public workload {
 public:
  explicit point(const workload_config& c)
      : c_(c), rows_(std::max<std::int64_t>(10, std::llround(100000 * c.scale))),
        pop_(rows_, c.zipf_s), perm_(permutation(rows_, c.seed + 3)),
        w_(c.write_ratio < 0 ? 0.0 : c.write_ratio) {}
  std::string name() const override { return "point"; }
  std::vector<std::string> tables() const override { return {"qb_accounts"}; }
  std::vector<statement> statements() const override {
    return {{"account", "SELECT id, balance, filler FROM qb_accounts WHERE id = $1", false, {0}},
            {"deposit", "UPDATE qb_accounts SET balance = balance + $2 WHERE id = $1", true, {0}}};
  }
  void load(connection& c, dialect) override {
    c.exec_raw("DROP TABLE IF EXISTS qb_accounts");
    c.exec_raw("CREATE TABLE qb_accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL, "
               "filler TEXT NOT NULL)");
    std::mt19937_64 rng(c_.seed);
    c.begin();
    {
      bulk_insert b(c, "INSERT INTO qb_accounts (id, balance, filler)");
      for (std::int64_t k = 1; k <= rows_; ++k)
        b.row(n(k) + "," + n(std::int64_t(rng() % 10000)) + "," + q(words(rng, 10)));
    }
    c.commit();
  }
  void run_one(session& s, std::mt19937_64& rng) override {
    std::int64_t id = perm_[pop_(rng)];
    if (w_ > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < w_) {
      params p(id);
      p.add(std::int64_t(rng() % 100) - 50);
      s.write(1, p);
    } else {
      s.read(0, params(id));
    }
  }
  std::string describe() const override {
    char b[160];
    std::snprintf(b, sizeof b, "%lld rows; Zipf s=%g; writes %g %%", (long long)rows_,
                  c_.zipf_s, 100 * w_);
    return b;
  }

 private:
  workload_config c_;
  std::int64_t rows_;
  zipf pop_;
  std::vector<std::int64_t> perm_;
  double w_;
};

// ---- wiki -----------------------------------------------------------------------------
// Schema: qb_pages(id PK, title, latest_rev), qb_revisions(id PK, page_id, body,
// created_at). A page view reads the page joined to its latest revision; an edit inserts
// a revision and moves qb_pages.latest_rev to it in one transaction: it changes exactly
// the joined column, so a stale cache would show the old text. New pages (a page and its
// first revision) complete the mix: 90 % views, 7 % edits, 3 % new pages by default
// (--write-ratio w: 70 % of w edits, 30 % new pages). Pages by Zipf popularity.
class wiki final : public workload {
 public:
  explicit wiki(const workload_config& c)
      : c_(c), pages_(std::max<std::int64_t>(10, std::llround(10000 * c.scale))),
        pop_(pages_, c.zipf_s), perm_(permutation(pages_, c.seed + 4)) {
    double w = c.write_ratio < 0 ? 0.10 : c.write_ratio;
    mix_ = cumulative({1 - w, w * 0.7, w * 0.3});
    next_rev_ = pages_ + 1;
    next_page_ = pages_ + 1;
  }
  std::string name() const override { return "wiki"; }
  std::vector<std::string> tables() const override { return {"qb_pages", "qb_revisions"}; }
  enum { view, add_rev, set_latest, add_page };
  std::vector<statement> statements() const override {
    return {{"view",
             "SELECT p.id, p.title, r.id, r.body, r.created_at FROM qb_pages p "
             "JOIN qb_revisions r ON r.id = p.latest_rev WHERE p.id = $1",
             false, {0, 1}},
            {"add_rev",
             "INSERT INTO qb_revisions (id, page_id, body, created_at) VALUES ($1, $2, $3, $4)",
             true, {1}},
            {"set_latest", "UPDATE qb_pages SET latest_rev = $2 WHERE id = $1", true, {0}},
            {"add_page", "INSERT INTO qb_pages (id, title, latest_rev) VALUES ($1, $2, $3)",
             true, {0}}};
  }
  void load(connection& c, dialect) override {
    c.exec_raw("DROP TABLE IF EXISTS qb_revisions");
    c.exec_raw("DROP TABLE IF EXISTS qb_pages");
    c.exec_raw("CREATE TABLE qb_pages (id BIGINT PRIMARY KEY, title TEXT NOT NULL, "
               "latest_rev BIGINT NOT NULL)");
    c.exec_raw("CREATE TABLE qb_revisions (id BIGINT PRIMARY KEY, page_id BIGINT NOT NULL, "
               "body TEXT NOT NULL, created_at BIGINT NOT NULL)");
    c.exec_raw("CREATE INDEX qb_revisions_page ON qb_revisions (page_id, id)");
    std::mt19937_64 rng(c_.seed);
    c.begin();
    {
      bulk_insert b(c, "INSERT INTO qb_pages (id, title, latest_rev)");
      for (std::int64_t k = 1; k <= pages_; ++k)
        b.row(n(k) + "," + q("page " + n(k) + " " + words(rng, 3)) + "," + n(k));
    }
    {
      bulk_insert b(c, "INSERT INTO qb_revisions (id, page_id, body, created_at)");
      for (std::int64_t k = 1; k <= pages_; ++k)
        b.row(n(k) + "," + n(k) + "," + q(words(rng, 80)) + "," + n(1000000 + k));
    }
    c.commit();
  }
  void run_one(session& s, std::mt19937_64& rng) override {
    switch (pick(rng, mix_)) {
      case 0:
        s.read(view, params(perm_[pop_(rng)]));
        break;
      case 1: {
        std::int64_t page = perm_[pop_(rng)], rev = next_rev_.fetch_add(1);
        params r(rev);
        r.add(page).add(words(rng, 80)).add(clock_value());
        params l(page);
        l.add(rev);
        s.begin();
        s.write(add_rev, r);
        s.write(set_latest, l);
        s.commit();
        break;
      }
      default: {
        std::int64_t page = next_page_.fetch_add(1), rev = next_rev_.fetch_add(1);
        params r(rev);
        r.add(page).add(words(rng, 80)).add(clock_value());
        params pg(page);
        pg.add("page " + n(page)).add(rev);
        s.begin();
        s.write(add_rev, r);
        s.write(add_page, pg);
        s.commit();
        break;
      }
    }
  }
  std::string describe() const override {
    char b[160];
    double w = c_.write_ratio < 0 ? 0.10 : c_.write_ratio;
    std::snprintf(b, sizeof b, "%lld pages; Zipf s=%g; views %g %%, edits %g %%, new pages %g %%",
                  (long long)pages_, c_.zipf_s, 100 * (1 - w), 70 * w, 30 * w);
    return b;
  }

 private:
  workload_config c_;
  std::int64_t pages_;
 public:
  void offset_new_ids(std::int64_t offset) override {
    next_rev_ += offset;
    next_page_ += offset;
  }

 private:
  zipf pop_;
  std::vector<std::int64_t> perm_;
  std::vector<double> mix_;
  std::atomic<std::int64_t> next_rev_{0}, next_page_{0};
};

}  // namespace

std::unique_ptr<workload> make_workload(const std::string& name, const workload_config& c) {
  if (name == "blog") return std::make_unique<blog>(c);
  if (name == "point") return std::make_unique<point>(c);
  if (name == "wiki") return std::make_unique<wiki>(c);
  throw std::invalid_argument("unknown workload '" + name + "' (blog, point, wiki)");
}

}  // namespace qcache::bench
