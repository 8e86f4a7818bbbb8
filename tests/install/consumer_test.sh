#!/usr/bin/env bash
# Installs qcache from BUILD_DIR into a temporary prefix and builds a user's project against
# it with find_package(qcache): the libpqxx example, linked through qcache::pqxx. Runs it
# when QCACHE_PG is set (under CI=true it must be).
#   consumer_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src="$1"; build="$2"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" > "$tmp/install.log"
mkdir -p "$tmp/app"
cp "$src/examples/pqxx_example.cc" "$tmp/app/main.cc"
cat > "$tmp/app/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.25)
project(consumer CXX)
set(CMAKE_CXX_STANDARD 20)
find_package(qcache 0.1 REQUIRED)
add_executable(app main.cc)
target_link_libraries(app PRIVATE qcache::pqxx)
CMAKE
cmake -S "$tmp/app" -B "$tmp/app/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" > "$tmp/configure.log"
cmake --build "$tmp/app/build" > "$tmp/build.log"
if [[ -n "${QCACHE_PG:-}" ]]; then
  "$tmp/app/build/app" "$QCACHE_PG" | grep -q "round 2: id 5 -> FIVE"
  echo "consumer built with find_package(qcache) and ran against PostgreSQL"
elif [[ "${CI:-}" == true ]]; then
  echo "QCACHE_PG is not set under CI" >&2
  exit 1
else
  echo "consumer built with find_package(qcache); not run (QCACHE_PG not set)"
fi
