// pgoutput v1 decoding, database-free: messages built byte by byte as PostgreSQL 15
// sends them (layouts in ../shared/STREAM.md §2.2-2.3), plus the tags a change maps to.
#include "pg/pgoutput.h"

#include <gtest/gtest.h>

#include <map>

#include "pg/stream.h"

namespace qcache::pg {
namespace {

using namespace pgoutput;

struct bytes {
  std::string b;
  bytes& c(char x) {
    b += x;
    return *this;
  }
  bytes& u(std::uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) b += static_cast<char>((v >> (8 * i)) & 0xff);
    return *this;
  }
  bytes& s(std::string_view x) {
    b += x;
    b += '\0';
    return *this;
  }
  bytes& t(std::string_view x) {
    c('t');
    u(x.size(), 4);
    b += x;
    return *this;
  }
};

TEST(Pgoutput, BeginCommit) {
  auto m = parse(bytes().c('B').u(0x19A0A78, 8).u(123, 8).u(756, 4).b);
  ASSERT_EQ(m.k, kind::begin);
  EXPECT_EQ(m.final_lsn, 0x19A0A78u);
  EXPECT_EQ(m.xid, 756u);
  auto c = parse(bytes().c('C').c(0).u(0x19A0A78, 8).u(0x19A0AA8, 8).u(5, 8).b);
  ASSERT_EQ(c.k, kind::commit);
  EXPECT_EQ(c.commit_lsn, 0x19A0A78u);
  EXPECT_EQ(c.end_lsn, 0x19A0AA8u);
}

TEST(Pgoutput, RelationAndChanges) {
  auto r = parse(bytes()
                     .c('R')
                     .u(16418, 4)
                     .s("public")
                     .s("kv")
                     .c('d')
                     .u(3, 2)
                     .c(1)
                     .s("id")
                     .u(23, 4)
                     .u(0xffffffff, 4)
                     .c(0)
                     .s("v")
                     .u(23, 4)
                     .u(0xffffffff, 4)
                     .c(0)
                     .s("cat")
                     .u(25, 4)
                     .u(0xffffffff, 4)
                     .b);
  ASSERT_EQ(r.k, kind::relation);
  EXPECT_EQ(r.relname, "kv");
  ASSERT_EQ(r.columns.size(), 3u);
  EXPECT_TRUE(r.columns[0].key);
  EXPECT_FALSE(r.columns[2].key);
  EXPECT_EQ(r.columns[2].type, 25u);
  // UPDATE with the old key (PK changed): K then N.
  auto u = parse(bytes()
                     .c('U')
                     .u(16418, 4)
                     .c('K')
                     .u(3, 2)
                     .t("2")
                     .c('n')
                     .c('n')
                     .c('N')
                     .u(3, 2)
                     .t("100")
                     .t("20")
                     .c('u')
                     .b);
  ASSERT_EQ(u.k, kind::update);
  EXPECT_EQ(u.old_kind, 'K');
  EXPECT_EQ(u.old_row[0].value, "2");
  EXPECT_EQ(u.new_row[2].kind, 'u');
  // UPDATE without an old tuple.
  auto u2 = parse(bytes().c('U').u(16418, 4).c('N').u(1, 2).t("1").b);
  ASSERT_EQ(u2.k, kind::update);
  EXPECT_EQ(u2.old_kind, 0);
  auto d = parse(bytes().c('D').u(16418, 4).c('O').u(1, 2).t("3").b);
  ASSERT_EQ(d.k, kind::del);
  EXPECT_EQ(d.old_kind, 'O');
  auto t = parse(bytes().c('T').u(2, 4).c(1).u(10, 4).u(11, 4).b);
  ASSERT_EQ(t.k, kind::truncate);
  EXPECT_EQ(t.relids, (std::vector<std::uint32_t>{10, 11}));
  EXPECT_EQ(t.truncate_options, 1);
}

TEST(Pgoutput, MalformedIsBadAndUnknownIsUnknown) {
  EXPECT_EQ(parse(bytes().c('B').u(1, 8).b).k, kind::bad);  // truncated
  EXPECT_EQ(parse(bytes().c('I').u(1, 4).c('N').u(1, 2).t("1").c('x').b).k, kind::bad);  // trailing
  EXPECT_EQ(parse(bytes().c('I').u(1, 4).c('N').u(1, 2).c('z').b).k, kind::bad);  // column kind
  EXPECT_EQ(parse(bytes().c('D').u(1, 4).c('N').u(1, 2).t("1").b).k, kind::bad);  // no old key
  EXPECT_EQ(parse(bytes().c('I').u(1, 4).c('N').u(1, 2).c('t').u(100, 4).b).k, kind::bad);
  EXPECT_EQ(parse(bytes().c('S').u(1, 4).b).k, kind::unknown);  // a v2 stream message
  EXPECT_EQ(parse("").k, kind::bad);
}

TEST(Pgoutput, FramesAndStatus) {
  // parse_frame returns views into its argument: the frame must outlive them.
  const std::string frame = bytes().c('w').u(10, 8).u(20, 8).u(30, 8).c('B').b;
  auto w = parse_frame(frame);
  ASSERT_EQ(w.k, 'w');
  EXPECT_EQ(w.wal_end, 20u);
  EXPECT_EQ(w.payload, "B");
  auto k = parse_frame(bytes().c('k').u(0x1234, 8).u(5, 8).c(1).b);
  ASSERT_EQ(k.k, 'k');
  EXPECT_EQ(k.wal_end, 0x1234u);
  EXPECT_TRUE(k.reply_requested);
  EXPECT_EQ(parse_frame(bytes().c('k').u(1, 8).b).k, 0);
  std::string st = status_update(0x0102030405060708ull, 99, true);
  ASSERT_EQ(st.size(), 34u);
  EXPECT_EQ(st[0], 'r');
  EXPECT_EQ(st[1], 1);
  EXPECT_EQ(st[8], 8);
  EXPECT_EQ(st[33], 1);
  EXPECT_EQ(lsn_text(0x19A0AA8), "0/19A0AA8");
  EXPECT_EQ(parse_lsn("1/19A0AA8"), (std::uint64_t{1} << 32) | 0x19A0AA8);
  EXPECT_FALSE(parse_lsn("19A0AA8"));
  EXPECT_FALSE(parse_lsn("0/zz"));
}

// A schema with one table (oid 16418: id int key, v int, cat text) whose v and cat are
// read through predicates.
class fake_schema final : public stream_schema {
 public:
  const std::string& tag_space() const override { return ts_; }
  std::vector<std::string> predicate_columns(std::uint32_t) const override { return {"v", "cat"}; }
  char column_class(std::uint32_t, const std::string& c) const override {
    return c == "cat" ? 't' : 'i';
  }
  bool knows(std::uint32_t oid) const override { return oid == 16418; }
  std::vector<std::uint32_t> family(std::uint32_t) const override { return {}; }
  std::optional<std::string> canonical(char cls, std::string_view t) const override {
    if (cls == 'i') return std::to_string(std::stoll(std::string(t)));
    return std::string(t);
  }
  void mark_catalog_stale() override { stale = true; }
  void refresh(const query_fn&) override {}
  bool stale = false;
  std::string ts_ = "db";
};

message rel(char replident) {
  auto b = bytes().c('R').u(16418, 4).s("public").s("kv").c(replident).u(3, 2);
  for (auto [n, t] : {std::pair{"id", 23}, {"v", 23}, {"cat", 25}})
    b.c(replident == 'f' || std::string(n) == "id" ? 1 : 0).s(n).u(t, 4).u(0xffffffff, 4);
  return parse(b.b);
}

TEST(PgoutputTags, UpdateWithoutOldTupleFallsBackToColumnEpochs) {
  fake_schema s;
  message r = rel('d');
  auto u = parse(bytes().c('U').u(16418, 4).c('N').u(3, 2).t("1").t("11").t("odd").b);
  std::vector<tags::tag> out;
  change_tags(u, &r, s, out);
  std::vector<tags::tag> want{tags::table("db", "16418"), tags::column_epoch("db", "16418", "v"),
                              tags::column_epoch("db", "16418", "cat")};
  EXPECT_EQ(out, want);
}

TEST(PgoutputTags, FullIdentityNamesOldAndNewValues) {
  fake_schema s;
  message r = rel('f');
  auto u = parse(bytes()
                     .c('U')
                     .u(16418, 4)
                     .c('O')
                     .u(3, 2)
                     .t("1")
                     .t("10")
                     .t("odd")
                     .c('N')
                     .u(3, 2)
                     .t("1")
                     .t("10")
                     .t("changed")
                     .b);
  std::vector<tags::tag> out;
  change_tags(u, &r, s, out);
  std::vector<tags::tag> want{tags::table("db", "16418"), tags::predicate("db", "16418", "v", "10"),
                              tags::predicate("db", "16418", "v", "10"),
                              tags::predicate("db", "16418", "cat", "odd"),
                              tags::predicate("db", "16418", "cat", "changed")};
  EXPECT_EQ(out, want);
}

TEST(PgoutputTags, InsertDeleteUnknownRelationAndToast) {
  fake_schema s;
  message r = rel('d');
  std::vector<tags::tag> out;
  change_tags(parse(bytes().c('I').u(16418, 4).c('N').u(3, 2).t("6").t("+60").c('n').b), &r, s,
              out);
  EXPECT_EQ(out, (std::vector<tags::tag>{tags::table("db", "16418"),
                                         tags::predicate("db", "16418", "v", "60")}));
  out.clear();  // DELETE with only the key: non-key columns unknown
  change_tags(parse(bytes().c('D').u(16418, 4).c('K').u(3, 2).t("3").c('n').c('n').b), &r, s, out);
  EXPECT_EQ(out, (std::vector<tags::tag>{tags::table("db", "16418"),
                                         tags::column_epoch("db", "16418", "v"),
                                         tags::column_epoch("db", "16418", "cat")}));
  out.clear();  // unchanged TOAST in FULL: the old value names it
  message rf = rel('f');
  change_tags(parse(bytes()
                        .c('U')
                        .u(16418, 4)
                        .c('O')
                        .u(3, 2)
                        .t("1")
                        .t("1")
                        .t("big")
                        .c('N')
                        .u(3, 2)
                        .t("1")
                        .t("2")
                        .c('u')
                        .b),
              &rf, s, out);
  EXPECT_EQ(out, (std::vector<tags::tag>{tags::table("db", "16418"),
                                         tags::predicate("db", "16418", "v", "1"),
                                         tags::predicate("db", "16418", "v", "2"),
                                         tags::predicate("db", "16418", "cat", "big")}));
  out.clear();  // unknown relation: the database
  auto i = parse(bytes().c('I').u(99999, 4).c('N').u(1, 2).t("1").b);
  change_tags(i, nullptr, s, out);
  EXPECT_EQ(out, (std::vector<tags::tag>{tags::database("db")}));
  EXPECT_TRUE(s.stale);
}

}  // namespace
}  // namespace qcache::pg
