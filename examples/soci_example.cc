// An embedded SQLite service with cached reads through SOCI: the only line that differs
// from a plain SOCI program is the session's factory (marked "qcache").
//
//   soci_example [path/to/app.db]        (default: ./soci_example.db)
#include <qcache/soci.h>

#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>

#include <iostream>
#include <memory>
#include <string>

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "soci_example.db";
  auto cache = std::make_shared<qcache::cache>(qcache::options{});
  qcache::soci::caching_factory factory{cache, soci::sqlite3};  // qcache (was soci::sqlite3)
  soci::session sql(factory, "db=" + path);

  sql << "CREATE TABLE IF NOT EXISTS example_t(id INTEGER PRIMARY KEY, v TEXT)";
  sql << "INSERT OR IGNORE INTO example_t VALUES(4, 'four'), (5, 'five')";

  int id = 5;
  std::string v;
  soci::indicator ind;
  soci::statement by_id = (sql.prepare << "SELECT v FROM example_t WHERE id = :id",
                           soci::use(id), soci::into(v, ind));
  for (int round = 0; round < 3; ++round) {
    by_id.execute(true);  // re-executed: served from the cache after the first round
    std::cout << "round " << round << ": id 5 -> " << (ind == soci::i_null ? "NULL" : v) << '\n';
    if (round == 1) {
      soci::transaction tr(sql);
      std::string nv = v == "FIVE" ? "five" : "FIVE";
      sql << "UPDATE example_t SET v = :v WHERE id = 5", soci::use(nv);  // invalidates id 5
      tr.commit();
    }
  }
  int n = 0;
  soci::rowset<soci::row> rs = (sql.prepare << "SELECT id, v FROM example_t ORDER BY id");
  for (const auto& r : rs) n += r.get<int>(0) > 0;
  qcache::stats s = cache->stats();
  std::cout << n << " rows; hits " << s.hits << ", misses " << s.misses << ", stores " << s.stores
            << '\n';
  return 0;
}
