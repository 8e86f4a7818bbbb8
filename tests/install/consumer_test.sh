#!/usr/bin/env bash
# Installs qcache from BUILD_DIR into a temporary prefix and builds a user's project against
# it with find_package(qcache), linking every exported target: qcache::core (a program that
# uses only the cache), qcache::pg_engine (the same program), qcache::pqxx (the libpqxx
# example) and, when they were built, qcache::soci and qcache::soci_sqlite (the SOCI example,
# run on a fresh SQLite file). The libpqxx example runs when QCACHE_PG is set (under CI=true
# it must be). Programs that use no PostgreSQL (qcache::core, qcache::soci_sqlite) must not
# link libpg_query nor libpq: checked on CMake's link line and in the executables' symbols.
#   consumer_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src="$1"; build="$2"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" > "$tmp/install.log"
with_soci=OFF
if [[ -f "$tmp/prefix/include/qcache/soci.h" ]]; then
  with_soci=ON
fi
mkdir -p "$tmp/app"
cp "$src/examples/pqxx_example.cc" "$tmp/app/pqxx_main.cc"
cp "$src/examples/soci_example.cc" "$tmp/app/soci_main.cc"
cat > "$tmp/app/core_main.cc" <<'CC'
#include <qcache/cache.h>
#include <iostream>
int main() {
  qcache::cache c{qcache::options{}};
  std::cout << "core: hits " << c.stats().hits << '\n';
}
CC
cat > "$tmp/app/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.25)
project(consumer CXX)
set(CMAKE_CXX_STANDARD 20)
find_package(qcache 0.1 REQUIRED)
add_executable(core_app core_main.cc)
target_link_libraries(core_app PRIVATE qcache::core)
add_executable(pg_engine_app core_main.cc)
target_link_libraries(pg_engine_app PRIVATE qcache::pg_engine)
add_executable(pqxx_app pqxx_main.cc)
target_link_libraries(pqxx_app PRIVATE qcache::pqxx)
if(WITH_SOCI)
  add_executable(soci_app soci_main.cc)
  target_link_libraries(soci_app PRIVATE qcache::soci)
  add_executable(soci_sqlite_app soci_main.cc)
  target_link_libraries(soci_sqlite_app PRIVATE qcache::soci_sqlite)
endif()
CMAKE
cmake -S "$tmp/app" -B "$tmp/app/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
  -DWITH_SOCI="$with_soci" > "$tmp/configure.log" 2>&1 || { cat "$tmp/configure.log" >&2; exit 1; }
cmake --build "$tmp/app/build" > "$tmp/build.log" 2>&1 || { cat "$tmp/build.log" >&2; exit 1; }
# Whether `app` links libpg_query or libpq: its link line, its symbols, its shared libraries.
links_postgresql() {
  local app="$1"
  grep -Eq 'libpg_query|libpq\.|-lpq\b' "$tmp/app/build/CMakeFiles/$app.dir/link.txt" ||
    nm "$tmp/app/build/$app" | grep -q ' pg_query_parse' ||
    ldd "$tmp/app/build/$app" | grep -q 'libpq\.'
}
no_postgresql() {
  if links_postgresql "$1"; then
    echo "$1 links libpg_query or libpq, but uses no PostgreSQL:" >&2
    cat "$tmp/app/build/CMakeFiles/$1.dir/link.txt" >&2
    exit 1
  fi
}
# The check can fail: the libpqxx program does link them.
links_postgresql pqxx_app || { echo "the libpg_query/libpq check sees nothing in pqxx_app" >&2; exit 1; }
"$tmp/app/build/core_app" | grep -q "core: hits 0"
no_postgresql core_app
echo "qcache::core: built with find_package(qcache) and ran; links no libpg_query nor libpq"
"$tmp/app/build/pg_engine_app" | grep -q "core: hits 0"
echo "qcache::pg_engine: built with find_package(qcache) and ran"
if [[ "$with_soci" == ON ]]; then
  "$tmp/app/build/soci_app" "$tmp/app.db" | grep -q "round 2: id 5 -> FIVE"
  echo "qcache::soci: built with find_package(qcache) and ran on SQLite"
  "$tmp/app/build/soci_sqlite_app" "$tmp/app_sqlite.db" | grep -q "round 2: id 5 -> FIVE"
  no_postgresql soci_sqlite_app
  echo "qcache::soci_sqlite: built with find_package(qcache) and ran on SQLite; links no libpg_query nor libpq"
fi
if [[ -n "${QCACHE_PG:-}" ]]; then
  "$tmp/app/build/pqxx_app" "$QCACHE_PG" | grep -q "round 2: id 5 -> FIVE"
  echo "qcache::pqxx: built with find_package(qcache) and ran against PostgreSQL"
elif [[ "${CI:-}" == true ]]; then
  echo "QCACHE_PG is not set under CI" >&2
  exit 1
else
  echo "qcache::pqxx: built with find_package(qcache); not run (QCACHE_PG not set)"
fi
