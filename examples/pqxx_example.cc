// A page built from cached queries with libpqxx: the only lines that differ from a
// plain libpqxx program are the three declarations marked "qcache".
//
//   pqxx_example "host=/tmp/pg port=5432 dbname=app"
#include <qcache/pqxx.h>

#include <iostream>
#include <memory>

int main(int argc, char** argv) {
  const std::string conninfo = argc > 1 ? argv[1] : "";
  auto cache = std::make_shared<qcache::cache>(qcache::options{});  // qcache
  qcache::pqxx::connection conn{conninfo, cache};                   // qcache

  {
    qcache::pqxx::nontransaction setup{conn};                       // qcache
    setup.exec("CREATE TEMP TABLE IF NOT EXISTS scratch (n int)");   // DDL: flushes
    setup.exec("CREATE TABLE IF NOT EXISTS example_t (id int PRIMARY KEY, v text)");
    setup.exec("INSERT INTO example_t VALUES (4, 'four'), (5, 'five') ON CONFLICT DO NOTHING");
  }

  conn.prepare("by_id", "SELECT v FROM example_t WHERE id = $1");
  for (int round = 0; round < 3; ++round) {
    qcache::pqxx::work tx{conn};
    pqxx::result r = tx.exec_params("SELECT v FROM example_t WHERE id = $1", 4);
    r = tx.exec("SELECT count(*) FROM example_t");
    r = tx.exec_prepared("by_id", 5);
    std::cout << "round " << round << ": id 5 -> " << r[0][0].c_str() << '\n';
    if (round == 1) tx.exec_params("UPDATE example_t SET v = $1 WHERE id = $2", "FIVE", 5);
    tx.commit();
  }

  qcache::stats s = cache->stats();
  std::cout << "hits " << s.hits << ", misses " << s.misses << ", invalidations "
            << s.invalidations << '\n';
  std::cout << conn.explain("SELECT v FROM example_t WHERE id = $1").to_string();

  qcache::pqxx::nontransaction cleanup{conn};
  cleanup.exec("DROP TABLE example_t");
  return 0;
}
