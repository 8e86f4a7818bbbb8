#!/bin/sh
# Runs a PostgreSQL test command when QCACHE_PG is set (scripts/test exports it).
# Without it: exit 77 (ctest: skipped) on a developer's machine, a failure under CI=true.
if [ -z "${QCACHE_PG:-}" ]; then
  if [ "${CI:-}" = true ]; then
    echo "QCACHE_PG is not set under CI=true: a PostgreSQL test cannot pass without PostgreSQL" >&2
    exit 1
  fi
  echo "QCACHE_PG not set: skipped (run through scripts/test)" >&2
  exit 77
fi
exec "$@"
