#!/usr/bin/env bash
# Installs qcache from BUILD_DIR into a temporary prefix and builds a user's project against
# it with find_package(qcache), linking every exported target: qcache::core (a program that
# uses only the cache), qcache::pqxx (the libpqxx example) and, when it was built,
# qcache::soci (the SOCI example, run on a fresh SQLite file). The libpqxx example runs when
# QCACHE_PG is set (under CI=true it must be).
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
add_executable(pqxx_app pqxx_main.cc)
target_link_libraries(pqxx_app PRIVATE qcache::pqxx)
if(WITH_SOCI)
  add_executable(soci_app soci_main.cc)
  target_link_libraries(soci_app PRIVATE qcache::soci)
endif()
CMAKE
cmake -S "$tmp/app" -B "$tmp/app/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
  -DWITH_SOCI="$with_soci" > "$tmp/configure.log" 2>&1 || { cat "$tmp/configure.log" >&2; exit 1; }
cmake --build "$tmp/app/build" > "$tmp/build.log" 2>&1 || { cat "$tmp/build.log" >&2; exit 1; }
"$tmp/app/build/core_app" | grep -q "core: hits 0"
echo "qcache::core: built with find_package(qcache) and ran"
if [[ "$with_soci" == ON ]]; then
  "$tmp/app/build/soci_app" "$tmp/app.db" | grep -q "round 2: id 5 -> FIVE"
  echo "qcache::soci: built with find_package(qcache) and ran on SQLite"
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
