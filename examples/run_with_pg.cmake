# Runs ${EXE} with $QCACHE_PG; fails when it is not set (the example needs PostgreSQL).
if(NOT DEFINED ENV{QCACHE_PG} OR "$ENV{QCACHE_PG}" STREQUAL "")
  message(FATAL_ERROR "QCACHE_PG is not set: run through scripts/test")
endif()
execute_process(COMMAND ${EXE} "$ENV{QCACHE_PG}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "example exited with ${rc}")
endif()
