// The catalog against a real PostgreSQL: every object is created in schemas with a
// unique prefix by SetUpTestSuite and dropped by TearDownTestSuite.
#include "pg/catalog.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <map>
#include <pqxx/pqxx>
#include <stdexcept>
#include <thread>

#include "support/db_env.h"

namespace qcache::pg {
namespace {

using oids = std::vector<std::uint32_t>;

query_fn query_on(pqxx::connection& c) {
  return [&c](const std::string& sql) {
    pqxx::nontransaction tx(c);
    pqxx::result r = tx.exec(sql);
    std::vector<row> out;
    out.reserve(r.size());
    for (const auto& rr : r) {
      row x;
      x.reserve(rr.size());
      for (const auto& f : rr)
        x.push_back(f.is_null() ? std::nullopt : std::optional<std::string>(f.c_str()));
      out.push_back(std::move(x));
    }
    return out;
  };
}

std::string snapshot_identity(pqxx::connection& c) {
  return load_snapshot(query_on(c), 1)->identity();
}

// Every object the catalog tests look at. @a, @b: the two test schemas; @p: the unique
// prefix; @role: a role without privileges.
constexpr const char* setup_sql = R"sql(
CREATE SCHEMA @a; CREATE SCHEMA @b;

-- name resolution
CREATE TABLE @a.t (id int PRIMARY KEY);
CREATE TABLE @b.t (id int PRIMARY KEY);
CREATE TABLE @b.only_b (id int);
CREATE TEMP TABLE @p_tmp (id int);
CREATE TABLE @a.@p_tmp (id int);

-- views
CREATE TABLE @a.t1 (id int, x int);
CREATE TABLE @b.t2 (id int, y text);
CREATE TABLE @a.t3 (id int);
CREATE VIEW @a.v1 AS SELECT t1.id, t2.y FROM @a.t1 JOIN @b.t2 ON t1.id = t2.id;
CREATE VIEW @a.v2 AS SELECT v1.* FROM @a.v1 WHERE v1.id IN (SELECT id FROM @a.t3);
CREATE VIEW @a.v_lower AS SELECT lower(y) AS l, id + 1 AS n FROM @b.t2;
CREATE VIEW @a.v_now AS SELECT now() AS n, id FROM @a.t1;
CREATE VIEW @a.v_ts AS SELECT id FROM @a.t1 WHERE CURRENT_TIMESTAMP > '2000-01-01';
CREATE VIEW @a.v_user AS SELECT id, current_user AS u FROM @a.t1;
CREATE VIEW @a.v_random AS SELECT id FROM @a.t1 ORDER BY random();
CREATE VIEW @a.v_on_now AS SELECT * FROM @a.v_now;
CREATE FUNCTION @a.f_default(int) RETURNS int LANGUAGE sql AS 'SELECT $1';
CREATE FUNCTION @a.f_imm(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1';
CREATE FUNCTION @a.f_over(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1';
CREATE FUNCTION @a.f_over(text) RETURNS text LANGUAGE sql STABLE AS 'SELECT $1';
CREATE FUNCTION @a.f_two(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1';
CREATE FUNCTION @b.f_two(int) RETURNS int LANGUAGE sql STABLE AS 'SELECT $1';
CREATE VIEW @a.v_fn AS SELECT @a.f_default(id) FROM @a.t1;
CREATE VIEW @a.v_fn_imm AS SELECT @a.f_imm(id) FROM @a.t1;
CREATE VIEW @a.v_pg_class AS SELECT relname FROM pg_catalog.pg_class;
CREATE VIEW @a.v_activity AS SELECT pid FROM pg_catalog.pg_stat_activity;
CREATE VIEW @a.v_sample AS SELECT id FROM @a.t1 TABLESAMPLE BERNOULLI (50);
CREATE VIEW @a.v_stable_fn AS SELECT @b.f_two(id) FROM @a.t1;
CREATE VIEW @a.v_cte AS WITH x AS (SELECT id FROM @a.t3)
  SELECT nullif(x.id, 0) AS id, t2.y FROM x JOIN @b.t2 USING (id);
CREATE MATERIALIZED VIEW @a.mv AS SELECT now() AS n, id FROM @a.t1;
CREATE VIEW @a.v_mv AS SELECT id FROM @a.mv;

-- FK cascades
CREATE TABLE @a.p (id int PRIMARY KEY);
CREATE TABLE @a.c_cascade (id int PRIMARY KEY, p int REFERENCES @a.p ON DELETE CASCADE);
CREATE TABLE @a.c_setnull (id int PRIMARY KEY, p int REFERENCES @a.p ON DELETE SET NULL);
CREATE TABLE @a.c_updcascade (p int REFERENCES @a.p ON UPDATE CASCADE);
CREATE TABLE @a.c_noaction (id int PRIMARY KEY, p int REFERENCES @a.p);
CREATE TABLE @a.c_restrict (p int REFERENCES @a.p ON DELETE RESTRICT ON UPDATE RESTRICT);
CREATE TABLE @a.g_cascade (c int REFERENCES @a.c_cascade ON DELETE CASCADE);
CREATE TABLE @a.g_default (c int DEFAULT 0 REFERENCES @a.c_setnull ON DELETE SET DEFAULT);
CREATE TABLE @a.g_noaction (c int REFERENCES @a.c_noaction ON DELETE CASCADE);
CREATE TABLE @a.tree (id int PRIMARY KEY, parent int REFERENCES @a.tree ON DELETE CASCADE);
CREATE TABLE @a.tree_tag (node int REFERENCES @a.tree ON DELETE SET NULL);

-- partitions and inheritance
CREATE TABLE @a.pt (k int PRIMARY KEY) PARTITION BY RANGE (k);
CREATE TABLE @a.pt_1 PARTITION OF @a.pt FOR VALUES FROM (0) TO (10);
CREATE TABLE @a.pt_2 PARTITION OF @a.pt FOR VALUES FROM (10) TO (20) PARTITION BY RANGE (k);
CREATE TABLE @a.pt_2a PARTITION OF @a.pt_2 FOR VALUES FROM (10) TO (15);
CREATE TABLE @a.pt_ref (k int REFERENCES @a.pt ON DELETE CASCADE);
CREATE TABLE @a.pc (p int REFERENCES @a.p ON DELETE CASCADE) PARTITION BY LIST (p);
CREATE TABLE @a.pc_1 PARTITION OF @a.pc FOR VALUES IN (1);
CREATE TABLE @a.ih_parent (id int);
CREATE TABLE @a.ih_child (extra int) INHERITS (@a.ih_parent);
CREATE TABLE @a.ih_grandchild () INHERITS (@a.ih_child);

-- triggers, rules, RLS
CREATE TABLE @a.log (msg text);
CREATE FUNCTION @a.trg() RETURNS trigger LANGUAGE plpgsql AS
  'BEGIN INSERT INTO @a.log VALUES (TG_OP); RETURN NULL; END';
CREATE TABLE @a.trg_t (id int);
CREATE TRIGGER tr AFTER INSERT ON @a.trg_t FOR EACH ROW EXECUTE FUNCTION @a.trg();
CREATE TABLE @a.trg_trunc (id int);
CREATE TRIGGER tr AFTER TRUNCATE ON @a.trg_trunc EXECUTE FUNCTION @a.trg();
CREATE TABLE @a.trg_off (id int);
CREATE TRIGGER tr AFTER DELETE ON @a.trg_off FOR EACH ROW EXECUTE FUNCTION @a.trg();
ALTER TABLE @a.trg_off DISABLE TRIGGER tr;
CREATE FUNCTION @a.instead() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
CREATE VIEW @a.v_trg AS SELECT id FROM @a.t1;
CREATE TRIGGER tr INSTEAD OF INSERT ON @a.v_trg FOR EACH ROW EXECUTE FUNCTION @a.instead();
CREATE TABLE @a.deferred_unique (id int UNIQUE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE @a.ruled (id int);
CREATE RULE r AS ON INSERT TO @a.ruled DO ALSO INSERT INTO @a.log VALUES ('x');
CREATE TABLE @a.rule_off (id int);
CREATE RULE r AS ON INSERT TO @a.rule_off DO ALSO INSERT INTO @a.log VALUES ('x');
ALTER TABLE @a.rule_off DISABLE RULE r;
CREATE VIEW @a.v_ruled AS SELECT id FROM @a.t3;
CREATE RULE r AS ON INSERT TO @a.v_ruled DO INSTEAD INSERT INTO @a.t3 VALUES (NEW.id);
CREATE TABLE @a.secure (id int, owner text);
ALTER TABLE @a.secure ENABLE ROW LEVEL SECURITY;

-- column type classes
CREATE DOMAIN @a.posint AS int CHECK (VALUE > 0);
CREATE COLLATION @a.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE @a.cols (s smallint, i int, l bigint, bs bigserial, tx text, vc varchar(10),
  ch char(3), num numeric, f float8, c_coll text COLLATE "C", ci text COLLATE @a.ci,
  d @a.posint, nm name, "Mixed Case" int, dropped int);
ALTER TABLE @a.cols DROP COLUMN dropped;

CREATE ROLE @role NOLOGIN;
)sql";

class CatalogTest : public ::testing::Test {
 protected:
  static inline std::unique_ptr<pqxx::connection> conn_;
  static inline std::string prefix_, a_, b_, role_;
  static inline std::shared_ptr<catalog> cat_;
  static inline std::vector<std::string> schemas_;  // current_schemas(true) of conn_

  // `sql` with @a, @b, @p and @role replaced by this run's names.
  static std::string with_names(std::string sql) {
    for (auto [from, to] : {std::pair<std::string, std::string>{"@role", role_},
                            {"@a", a_},
                            {"@b", b_},
                            {"@p", prefix_}})
      for (std::size_t i = 0; (i = sql.find(from, i)) != std::string::npos; i += to.size())
        sql.replace(i, from.size(), to);
    return sql;
  }
  static void exec(const std::string& sql) {
    pqxx::nontransaction tx(*conn_);
    tx.exec(sql);
  }
  static std::string one(const std::string& sql) {
    pqxx::nontransaction tx(*conn_);
    return tx.exec1(sql)[0].c_str();
  }

  static void SetUpTestSuite() {
    std::string conninfo = ::qcache::testing::env_or_empty("QCACHE_PG");
    if (conninfo.empty()) return;
    conn_ = std::make_unique<pqxx::connection>(conninfo);
    prefix_ = "qc_cat_" + std::to_string(getpid()) + "_" +
              std::to_string(std::chrono::steady_clock::now().time_since_epoch().count() % 100000);
    a_ = prefix_ + "_a";
    b_ = prefix_ + "_b";
    role_ = prefix_ + "_role";
    exec(with_names(setup_sql));
    exec(with_names("SET search_path = @a, @b, public"));
    schemas_ = parse_text_array(one("SELECT current_schemas(true)::text"));
    cat_ = catalog::load(query_on(*conn_));
  }

  static void TearDownTestSuite() {
    if (!conn_) return;
    exec(
        with_names("DROP SCHEMA IF EXISTS @a CASCADE; DROP SCHEMA IF EXISTS @b CASCADE;"
                   "DROP TABLE IF EXISTS pg_temp.@p_tmp; DROP ROLE IF EXISTS @role"));
    conn_.reset();
    cat_.reset();
  }

  void SetUp() override {
    QCACHE_REQUIRE_PG(conninfo);
    ASSERT_TRUE(cat_) << "suite setup did not run";
    snap_ = cat_->current();
  }

  // The relation `schema.name` (schema "" = unqualified, resolved with the session's path).
  const relation& rel(const std::string& schema, const std::string& name) {
    const relation* r = snap_->resolve({schema, name}, schemas_);
    if (!r) throw std::runtime_error("not found: " + schema + "." + name);
    return *r;
  }
  std::uint32_t oid(const std::string& schema, const std::string& name) {
    return rel(schema, name).oid;
  }
  oids sorted(oids v) {
    std::sort(v.begin(), v.end());
    return v;
  }
  char vol(const std::string& schema, const std::string& name,
           const std::vector<std::string>& path) {
    return snap_->function_volatility({schema, name}, path);
  }

  std::shared_ptr<const snapshot> snap_;
};

// --- name resolution ------------------------------------------------------------------

TEST_F(CatalogTest, UnqualifiedNamesResolveInSearchPathOrder) {
  EXPECT_EQ(rel("", "t").schema, a_);
  std::vector<std::string> b_first = {"pg_catalog", b_, a_};
  EXPECT_EQ(snap_->resolve({"", "t"}, b_first)->schema, b_);
  EXPECT_EQ(snap_->resolve({"", "only_b"}, {"pg_catalog", a_}), nullptr);
  EXPECT_EQ(rel("", "only_b").schema, b_);
}

TEST_F(CatalogTest, QualifiedNamesResolveInTheirSchemaOnly) {
  EXPECT_EQ(rel(b_, "t").schema, b_);
  EXPECT_EQ(snap_->resolve({a_, "only_b"}, schemas_), nullptr);
  EXPECT_EQ(snap_->resolve({"no_such_schema", "t"}, schemas_), nullptr);
  EXPECT_EQ(snap_->resolve({"", "no_such_table"}, schemas_), nullptr);
}

TEST_F(CatalogTest, SystemCatalogsResolveAndAreMarkedSystem) {
  const relation& pc = rel("", "pg_class");
  EXPECT_EQ(pc.schema, "pg_catalog");
  EXPECT_TRUE(pc.system);
  EXPECT_TRUE(pc.columns.empty());
  EXPECT_EQ(rel("information_schema", "tables").kind, 'v');
  EXPECT_TRUE(rel("information_schema", "tables").volatile_view);
  EXPECT_FALSE(rel(a_, "t").system);
}

TEST_F(CatalogTest, TempTablesComeFirstAndOnlyForTheirSession) {
  ASSERT_FALSE(schemas_.empty());
  ASSERT_TRUE(schemas_[0].starts_with("pg_temp_")) << schemas_[0];
  const relation& tmp = rel("", prefix_ + "_tmp");
  EXPECT_EQ(tmp.persistence, 't');
  EXPECT_EQ(tmp.schema, schemas_[0]);
  EXPECT_EQ(rel("pg_temp", prefix_ + "_tmp").oid, tmp.oid);
  // Another session (no temp schema in its path) sees the permanent table of that name.
  std::vector<std::string> other = {"pg_catalog", a_};
  EXPECT_EQ(snap_->resolve({"", prefix_ + "_tmp"}, other)->schema, a_);
  EXPECT_EQ(snap_->resolve({"pg_temp", prefix_ + "_tmp"}, other), nullptr);
  EXPECT_EQ(rel(a_, "t").persistence, 'p');
}

TEST_F(CatalogTest, ByOidFindsTheSameRelation) {
  const relation& t = rel(a_, "t");
  EXPECT_EQ(snap_->by_oid(t.oid), &t);
  EXPECT_EQ(snap_->by_oid(0), nullptr);
  EXPECT_EQ(t.base_tables, oids{t.oid});
  EXPECT_EQ(t.kind, 'r');
}

// --- views ----------------------------------------------------------------------------

TEST_F(CatalogTest, ViewsExpandToBaseTables) {
  EXPECT_EQ(rel(a_, "v1").base_tables, sorted({oid(a_, "t1"), oid(b_, "t2")}));
  EXPECT_FALSE(rel(a_, "v1").volatile_view);
  EXPECT_EQ(rel(a_, "v1").kind, 'v');
}

TEST_F(CatalogTest, NestedViewsExpandRecursively) {
  EXPECT_EQ(rel(a_, "v2").base_tables, sorted({oid(a_, "t1"), oid(b_, "t2"), oid(a_, "t3")}));
  EXPECT_FALSE(rel(a_, "v2").volatile_view);
}

TEST_F(CatalogTest, ViewsOfImmutableFunctionsAndOperatorsAreNotVolatile) {
  EXPECT_FALSE(rel(a_, "v_lower").volatile_view);
  EXPECT_FALSE(rel(a_, "v_fn_imm").volatile_view);
  EXPECT_FALSE(rel(a_, "v_user").volatile_view) << "current_user is part of the session key";
}

TEST_F(CatalogTest, ViewsReadingTheClockOrRandomAreVolatile) {
  EXPECT_TRUE(rel(a_, "v_now").volatile_view);
  EXPECT_TRUE(rel(a_, "v_ts").volatile_view);
  EXPECT_TRUE(rel(a_, "v_random").volatile_view);
  EXPECT_TRUE(rel(a_, "v_on_now").volatile_view);
  EXPECT_TRUE(rel(a_, "v_sample").volatile_view) << "TABLESAMPLE";
  EXPECT_TRUE(rel(a_, "v_stable_fn").volatile_view) << "STABLE is not IMMUTABLE";
  EXPECT_EQ(rel(a_, "v_on_now").base_tables, oids{oid(a_, "t1")});
}

TEST_F(CatalogTest, ViewsWithCtesExpandTheirCtes) {
  EXPECT_EQ(rel(a_, "v_cte").base_tables, sorted({oid(a_, "t3"), oid(b_, "t2")}));
  EXPECT_FALSE(rel(a_, "v_cte").volatile_view);
}

TEST_F(CatalogTest, ViewOnUserFunctionWithoutVolatilityIsVolatile) {
  EXPECT_TRUE(rel(a_, "v_fn").volatile_view);
}

TEST_F(CatalogTest, ViewsOnSystemRelations) {
  EXPECT_EQ(rel(a_, "v_pg_class").base_tables, oids{oid("pg_catalog", "pg_class")});
  EXPECT_FALSE(rel(a_, "v_pg_class").volatile_view);
  EXPECT_TRUE(rel(a_, "v_activity").volatile_view);
}

TEST_F(CatalogTest, MaterializedViewsAreBaseRelations) {
  const relation& mv = rel(a_, "mv");
  EXPECT_EQ(mv.kind, 'm');
  EXPECT_EQ(mv.base_tables, oids{mv.oid});
  EXPECT_FALSE(mv.volatile_view);
  EXPECT_EQ(rel(a_, "v_mv").base_tables, oids{mv.oid});
  EXPECT_FALSE(rel(a_, "v_mv").volatile_view);
}

// --- foreign keys ---------------------------------------------------------------------

TEST_F(CatalogTest, CascadeTargetsFollowChangingActionsTransitively) {
  EXPECT_EQ(rel(a_, "p").cascade_targets,
            sorted({oid(a_, "c_cascade"), oid(a_, "c_setnull"), oid(a_, "c_updcascade"),
                    oid(a_, "g_cascade"), oid(a_, "g_default"), oid(a_, "pc"), oid(a_, "pc_1")}));
  EXPECT_EQ(rel(a_, "c_cascade").cascade_targets, oids{oid(a_, "g_cascade")});
  EXPECT_EQ(rel(a_, "c_setnull").cascade_targets, oids{oid(a_, "g_default")});
  EXPECT_TRUE(rel(a_, "g_cascade").cascade_targets.empty());
}

TEST_F(CatalogTest, RestrictAndNoActionAreNotCascadeTargets) {
  const oids& targets = rel(a_, "p").cascade_targets;
  for (const char* t : {"c_noaction", "c_restrict", "g_noaction"})
    EXPECT_EQ(std::count(targets.begin(), targets.end(), oid(a_, t)), 0) << t;
  EXPECT_EQ(rel(a_, "c_noaction").cascade_targets, oids{oid(a_, "g_noaction")});
}

TEST_F(CatalogTest, ReferencingListsEveryFkTransitively) {
  EXPECT_EQ(rel(a_, "p").referencing,
            sorted({oid(a_, "c_cascade"), oid(a_, "c_setnull"), oid(a_, "c_updcascade"),
                    oid(a_, "c_noaction"), oid(a_, "c_restrict"), oid(a_, "g_cascade"),
                    oid(a_, "g_default"), oid(a_, "g_noaction"), oid(a_, "pc"), oid(a_, "pc_1")}));
  EXPECT_TRUE(rel(a_, "g_noaction").referencing.empty());
}

TEST_F(CatalogTest, SelfReferencesAreNotListed) {
  EXPECT_EQ(rel(a_, "tree").cascade_targets, oids{oid(a_, "tree_tag")});
  EXPECT_EQ(rel(a_, "tree").referencing, oids{oid(a_, "tree_tag")});
}

// --- partitions and inheritance -------------------------------------------------------

TEST_F(CatalogTest, PartitionFamilyGoesBothWays) {
  EXPECT_EQ(rel(a_, "pt").kind, 'p');
  EXPECT_EQ(rel(a_, "pt").family, sorted({oid(a_, "pt_1"), oid(a_, "pt_2"), oid(a_, "pt_2a")}));
  EXPECT_EQ(rel(a_, "pt_2a").family, sorted({oid(a_, "pt"), oid(a_, "pt_2")}));
  EXPECT_EQ(rel(a_, "pt_1").family, oids{oid(a_, "pt")}) << "siblings are not family";
  EXPECT_EQ(rel(a_, "pt_2").family, sorted({oid(a_, "pt"), oid(a_, "pt_2a")}));
}

TEST_F(CatalogTest, FkToPartitionedTableCascadesFromEveryPartition) {
  for (const char* t : {"pt", "pt_1", "pt_2a"})
    EXPECT_EQ(rel(a_, t).cascade_targets, oids{oid(a_, "pt_ref")}) << t;
}

TEST_F(CatalogTest, PartitionedReferencingTableCascadesToItsPartitions) {
  const oids& t = rel(a_, "p").cascade_targets;
  EXPECT_EQ(std::count(t.begin(), t.end(), oid(a_, "pc")), 1);
  EXPECT_EQ(std::count(t.begin(), t.end(), oid(a_, "pc_1")), 1);
}

TEST_F(CatalogTest, InheritanceFamilyGoesBothWays) {
  EXPECT_EQ(rel(a_, "ih_parent").family, sorted({oid(a_, "ih_child"), oid(a_, "ih_grandchild")}));
  EXPECT_EQ(rel(a_, "ih_grandchild").family, sorted({oid(a_, "ih_parent"), oid(a_, "ih_child")}));
  EXPECT_TRUE(rel(a_, "t").family.empty());
}

// --- triggers, rules, RLS -------------------------------------------------------------

TEST_F(CatalogTest, UserTriggersCountButForeignKeyTriggersDoNot) {
  EXPECT_TRUE(rel(a_, "trg_t").user_triggers);
  EXPECT_TRUE(rel(a_, "trg_trunc").user_triggers);
  EXPECT_TRUE(rel(a_, "v_trg").user_triggers);  // INSTEAD OF on a view
  EXPECT_FALSE(rel(a_, "trg_off").user_triggers) << "disabled";
  for (const char* t :
       {"p", "c_cascade", "g_cascade", "pt", "pt_1", "pt_ref", "t", "deferred_unique"})
    EXPECT_FALSE(rel(a_, t).user_triggers) << t;
}

TEST_F(CatalogTest, TriggersAreLoadedWithTheirEventsAndWhatTheirFunctionsWrite) {
  using namespace qcache::pg;
  const relation& t = rel(a_, "trg_t");
  ASSERT_EQ(t.triggers.size(), 1u);
  EXPECT_EQ(t.triggers[0].name, "tr");
  EXPECT_TRUE(t.triggers[0].fires_on(trigger_insert));
  EXPECT_FALSE(t.triggers[0].fires_on(trigger_update | trigger_delete | trigger_truncate));
  ASSERT_TRUE(t.triggers[0].body);
  EXPECT_EQ(t.triggers[0].body->unknown, "");
  ASSERT_EQ(t.triggers[0].body->writes.size(), 1u);
  EXPECT_EQ(t.triggers[0].body->writes[0].table.name, "log");
  const relation& tr = rel(a_, "trg_trunc");
  ASSERT_EQ(tr.triggers.size(), 1u);
  EXPECT_TRUE(tr.triggers[0].fires_on(trigger_truncate));
  EXPECT_FALSE(tr.triggers[0].fires_on(trigger_dml));
  const relation& v = rel(a_, "v_trg");
  ASSERT_EQ(v.triggers.size(), 1u);
  EXPECT_TRUE(v.triggers[0].type & trigger_instead);
  EXPECT_TRUE(rel(a_, "trg_off").triggers.empty()) << "disabled";
  for (const char* x :  // FK actions and checks, deferrable unique checks: internal
       {"p", "c_cascade", "g_cascade", "pt", "pt_1", "pt_ref", "t", "deferred_unique"})
    EXPECT_TRUE(rel(a_, x).triggers.empty()) << x;
}

TEST_F(CatalogTest, RulesOtherThanViewDefinitionsCount) {
  EXPECT_TRUE(rel(a_, "ruled").rules);
  EXPECT_TRUE(rel(a_, "v_ruled").rules);
  EXPECT_FALSE(rel(a_, "rule_off").rules) << "disabled";
  EXPECT_EQ(rel(a_, "v_ruled").base_tables, oids{oid(a_, "t3")});
  EXPECT_FALSE(rel(a_, "v1").rules);
  EXPECT_FALSE(rel(a_, "log").rules);
}

TEST_F(CatalogTest, RowLevelSecurityFlag) {
  EXPECT_TRUE(rel(a_, "secure").rls);
  EXPECT_FALSE(rel(a_, "t").rls);
}

// --- functions ------------------------------------------------------------------------

TEST_F(CatalogTest, BuiltinFunctionVolatility) {
  EXPECT_EQ(vol("", "now", schemas_), 's');
  EXPECT_EQ(vol("pg_catalog", "now", {}), 's');
  EXPECT_EQ(vol("", "random", schemas_), 'v');
  EXPECT_EQ(vol("", "nextval", schemas_), 'v');
  EXPECT_EQ(vol("", "lower", schemas_), 'i');
  EXPECT_EQ(vol("", "no_such_function", schemas_), 'v');
  EXPECT_EQ(vol("no_such_schema", "lower", schemas_), 'v');
}

TEST_F(CatalogTest, UserFunctionVolatility) {
  EXPECT_EQ(vol("", "f_default", schemas_), 'v') << "volatile by default";
  EXPECT_EQ(vol("", "f_imm", schemas_), 'i');
  EXPECT_EQ(vol(a_, "f_imm", {}), 'i');
  EXPECT_EQ(vol("", "f_over", schemas_), 's') << "most volatile overload";
  EXPECT_EQ(cat_->function_volatility({"", "f_imm"}, schemas_), 'i');
}

TEST_F(CatalogTest, UnqualifiedFunctionTakesMostVolatileAcrossSchemas) {
  EXPECT_EQ(vol("", "f_two", {"pg_catalog", a_, b_}), 's');
  EXPECT_EQ(vol("", "f_two", {"pg_catalog", a_}), 'i');
  EXPECT_EQ(vol(a_, "f_two", schemas_), 'i');
  EXPECT_EQ(vol(b_, "f_two", {}), 's');
  EXPECT_EQ(vol("", "f_two", {"pg_catalog"}), 'v') << "not on the path: unknown";
}

// --- columns --------------------------------------------------------------------------

TEST_F(CatalogTest, ColumnTypeClasses) {
  const relation& c = rel(a_, "cols");
  for (const char* col : {"s", "i", "l", "bs"}) EXPECT_EQ(c.column_class(col), 'i') << col;
  for (const char* col : {"tx", "vc", "c_coll"}) EXPECT_EQ(c.column_class(col), 't') << col;
  for (const char* col : {"ch", "num", "f", "ci", "d", "nm"})
    EXPECT_EQ(c.column_class(col), 'o') << col;
  EXPECT_EQ(c.column_class("Mixed Case"), 'i');
  EXPECT_EQ(c.column_class("dropped"), '\0');
  EXPECT_EQ(c.column_class("nope"), '\0');
  EXPECT_EQ(c.columns.size(), 14u);
  EXPECT_EQ(rel(a_, "v1").column_class("y"), 't');
}

// --- refresh, errors, identity ----------------------------------------------------------

TEST_F(CatalogTest, RefreshSeesNewTablesAndBumpsGeneration) {
  auto before = cat_->current();
  std::uint64_t gen = cat_->generation();
  const relation* held = before->resolve({a_, "t"}, schemas_);
  exec("CREATE TABLE " + a_ + ".late (id int)");
  EXPECT_EQ(before->resolve({a_, "late"}, schemas_), nullptr);
  cat_->refresh(query_on(*conn_));
  EXPECT_EQ(cat_->generation(), gen + 1);
  EXPECT_NE(cat_->current()->resolve({a_, "late"}, schemas_), nullptr);
  EXPECT_EQ(before->resolve({a_, "late"}, schemas_), nullptr) << "old snapshot unchanged";
  EXPECT_EQ(held->name, "t") << "pointers into a held snapshot stay valid";
  EXPECT_EQ(before->generation(), gen);
}

TEST_F(CatalogTest, ReadersRunConcurrentlyWithRefresh) {
  std::atomic<bool> stop{false};
  std::atomic<long> lookups{0};
  std::vector<std::thread> readers;
  for (int i = 0; i < 3; ++i)
    readers.emplace_back([&] {
      std::uint64_t last = 0;
      while (!stop.load()) {
        auto s = cat_->current();
        ASSERT_GE(s->generation(), last);
        last = s->generation();
        const relation* v2 = s->resolve({a_, "v2"}, schemas_);
        ASSERT_NE(v2, nullptr);
        ASSERT_EQ(v2->base_tables.size(), 3u);
        ASSERT_EQ(cat_->function_volatility({"", "now"}, schemas_), 's');
        ++lookups;
      }
    });
  std::uint64_t gen = cat_->generation();
  for (int i = 0; i < 5; ++i) cat_->refresh(query_on(*conn_));
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(cat_->generation(), gen + 5);
  EXPECT_GT(lookups.load(), 0);
}

TEST_F(CatalogTest, QueryErrorsPropagateAndKeepTheCurrentSnapshot) {
  struct boom : std::runtime_error {
    using std::runtime_error::runtime_error;
  };
  int calls = 0;
  query_fn failing = [&](const std::string& sql) -> std::vector<row> {
    if (++calls == 3) throw boom("connection lost");
    return query_on(*conn_)(sql);
  };
  auto before = cat_->current();
  EXPECT_THROW(cat_->refresh(failing), boom);
  EXPECT_EQ(cat_->current(), before);
  calls = 0;
  EXPECT_THROW(catalog::load(failing), boom);
}

TEST_F(CatalogTest, MalformedResultsAreRejected) {
  query_fn empty_rows = [](const std::string&) { return std::vector<row>{row{}}; };
  EXPECT_THROW(catalog::load(empty_rows), std::runtime_error);
}

TEST_F(CatalogTest, IdentityIsTheSameOverUnixSocketAndTcp) {
  std::string tcp = ::qcache::testing::env_or_empty("QCACHE_PG_TCP");
  if (tcp.empty())
    tcp = "host=127.0.0.1 port=" + std::string(conn_->port()) + " dbname=" + conn_->dbname() +
          " user=" + conn_->username();
  std::unique_ptr<pqxx::connection> tcp_conn;
  try {
    tcp_conn = std::make_unique<pqxx::connection>(tcp);
  } catch (const std::exception& e) {
    GTEST_SKIP() << "no TCP connection (" << e.what() << ")";
  }
  {
    pqxx::nontransaction tx(*tcp_conn);
    ASSERT_TRUE(tx.exec1("SELECT inet_server_addr() IS NOT NULL")[0].as<bool>()) << "not TCP";
    // Settings must not leak into the identity.
    tx.exec(
        "SET TimeZone = 'Asia/Kolkata'; SET extra_float_digits = -10; SET DateStyle = 'SQL, DMY'");
  }
  std::string id = snapshot_identity(*tcp_conn);
  EXPECT_EQ(id, cat_->identity());
  EXPECT_NE(id.find("sysid="), std::string::npos);
  std::cout << "identity: " << id << "\n";

  std::string other_db = "host=127.0.0.1 port=" + std::string(tcp_conn->port()) +
                         " dbname=template1 user=" + tcp_conn->username();
  pqxx::connection t1(other_db);
  EXPECT_NE(snapshot_identity(t1), cat_->identity()) << "another database";
}

// --- load time --------------------------------------------------------------------------

TEST_F(CatalogTest, LoadIsFast) {
  // Time each catalog query separately too (keyed by its first 40 characters).
  std::map<std::string, std::vector<double>> per_query;
  query_fn inner = query_on(*conn_);
  query_fn q = [&](const std::string& sql) {
    auto t0 = std::chrono::steady_clock::now();
    auto rows = inner(sql);
    per_query[sql.substr(0, 40) + " (" + std::to_string(rows.size()) + " rows)"].push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    return rows;
  };
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::vector<double> ms;
  std::size_t n = 0;
  for (int i = 0; i < 7; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    n = load_snapshot(q, 1)->relation_count();
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::cout << "catalog load: median " << median(ms) << " ms, min "
            << *std::min_element(ms.begin(), ms.end()) << " ms (" << n << " relations)\n";
  for (const auto& [sql, t] : per_query) std::cout << "  " << median(t) << " ms  " << sql << "\n";
  RecordProperty("load_ms_median", std::to_string(median(ms)));
  EXPECT_LT(*std::min_element(ms.begin(), ms.end()), 250.0);
}

TEST_F(CatalogTest, LoadsWithoutPrivilegesAndIdentityDoesNotDependOnRole) {
  exec("SET ROLE " + role_);
  std::shared_ptr<const snapshot> s;
  try {
    s = load_snapshot(query_on(*conn_), 1);
  } catch (...) {
    exec("RESET ROLE");
    throw;
  }
  exec("RESET ROLE");
  EXPECT_EQ(s->identity(), cat_->identity());
  const relation* v2 = s->resolve({a_, "v2"}, schemas_);
  ASSERT_NE(v2, nullptr);
  EXPECT_EQ(v2->base_tables, rel(a_, "v2").base_tables);
  EXPECT_EQ(s->function_volatility({"", "f_imm"}, schemas_), 'i');
}

// --- session context --------------------------------------------------------------------

class SessionContextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    QCACHE_REQUIRE_PG(conninfo);
    conn_ = std::make_unique<pqxx::connection>(conninfo);
    role_ = "qc_ctx_" + std::to_string(getpid());
    exec("DROP ROLE IF EXISTS " + role_ + "; CREATE ROLE " + role_ + " NOLOGIN");
  }
  void TearDown() override {
    if (!conn_) return;
    exec("RESET ROLE; DROP ROLE IF EXISTS " + role_);
  }
  void exec(const std::string& sql) {
    pqxx::nontransaction tx(*conn_);
    tx.exec(sql);
  }
  session_context context(const std::vector<std::string>& extra = {}) {
    std::vector<row> rows = query_on(*conn_)(session_context::context_query(extra));
    EXPECT_EQ(rows.size(), 1u);
    return session_context::parse(rows.at(0), extra);
  }
  std::unique_ptr<pqxx::connection> conn_;
  std::string role_;
};

TEST_F(SessionContextTest, ParsesTheSessionsIdentityAndPath) {
  exec("SET search_path = public");
  session_context c = context();
  EXPECT_EQ(c.database, conn_->dbname());
  EXPECT_EQ(c.current_user, conn_->username());
  EXPECT_EQ(c.session_user, conn_->username());
  EXPECT_EQ(c.schemas, (std::vector<std::string>{"pg_catalog", "public"}));
  EXPECT_EQ(c.search_path, "public");
  EXPECT_EQ(c.isolation, "read committed");
  EXPECT_FALSE(c.default_read_only);
  EXPECT_TRUE(c.row_security);
  EXPECT_NE(c.key_text.find("TimeZone="), std::string::npos);
  EXPECT_EQ(context().key_text, c.key_text) << "stable";
}

TEST_F(SessionContextTest, SettingsThatChangeResultsChangeTheKey) {
  std::string base = context().key_text;
  exec("SET TimeZone = 'America/Sao_Paulo'");
  std::string tz = context().key_text;
  EXPECT_NE(tz, base);
  exec("RESET TimeZone");
  EXPECT_EQ(context().key_text, base);

  exec("SET DateStyle = 'German'; SET extra_float_digits = 0; SET bytea_output = 'escape'");
  EXPECT_NE(context().key_text, base);
  exec("RESET DateStyle; RESET extra_float_digits; RESET bytea_output");
  EXPECT_EQ(context().key_text, base);

  exec("SET default_transaction_isolation = 'serializable'");
  session_context s = context();
  EXPECT_EQ(s.isolation, "serializable");
  EXPECT_NE(s.key_text, base);
  exec("RESET default_transaction_isolation");
}

TEST_F(SessionContextTest, SearchPathChangesKeyAndSchemas) {
  exec("SET search_path = public");
  session_context p = context();
  exec("SET search_path = pg_catalog, public");
  session_context q = context();
  EXPECT_EQ(q.schemas, p.schemas) << "same effective order";
  EXPECT_NE(q.key_text, p.key_text) << "but the setting text differs";
  exec("SET search_path = no_such_schema");
  session_context r = context();
  EXPECT_EQ(r.schemas, std::vector<std::string>{"pg_catalog"});
  EXPECT_NE(r.key_text, p.key_text);
  exec("CREATE TEMP TABLE qc_ctx_tmp (id int)");
  session_context t = context();
  ASSERT_EQ(t.schemas.size(), 2u);
  EXPECT_TRUE(t.schemas[0].starts_with("pg_temp_"));
  EXPECT_NE(t.key_text, r.key_text);
}

TEST_F(SessionContextTest, SetRoleChangesKeyAndUser) {
  session_context before = context();
  exec("SET ROLE " + role_);
  session_context as_role = context();
  EXPECT_EQ(as_role.current_user, role_);
  EXPECT_EQ(as_role.session_user, before.session_user);
  EXPECT_NE(as_role.key_text, before.key_text);
  exec("RESET ROLE");
  EXPECT_EQ(context().key_text, before.key_text);
}

TEST_F(SessionContextTest, ExtraSettingsJoinTheKey) {
  std::vector<std::string> extra = {"qcache_test.tenant", "it's.odd"};
  session_context unset = context(extra);
  exec("SET qcache_test.tenant = '1'");
  session_context one = context(extra);
  exec("SET qcache_test.tenant = '2'");
  session_context two = context(extra);
  EXPECT_NE(unset.key_text, one.key_text);
  EXPECT_NE(one.key_text, two.key_text);
  EXPECT_EQ(context().key_text.find("qcache_test"), std::string::npos);
  EXPECT_THROW(session_context::parse(row(3, std::string("x"))), std::invalid_argument);
}

TEST(ParseTextArray, HandlesQuotingAndEmptyArrays) {
  EXPECT_EQ(parse_text_array("{}"), std::vector<std::string>{});
  EXPECT_EQ(parse_text_array("{pg_catalog,public}"),
            (std::vector<std::string>{"pg_catalog", "public"}));
  EXPECT_EQ(parse_text_array(R"({"a b","x,y","q\"u\\o",plain})"),
            (std::vector<std::string>{"a b", "x,y", "q\"u\\o", "plain"}));
  EXPECT_THROW(parse_text_array("pg_catalog"), std::invalid_argument);
  EXPECT_THROW(parse_text_array(R"({"open})"), std::invalid_argument);
}

}  // namespace
}  // namespace qcache::pg
