# gka bench serve's tests, included from cli/CMakeLists.txt (gRPC builds): the statistics and
# load loops against a synthetic in-test server (unit), and a short run against a live
# `gka local` cluster (integration, RUN_SERIAL like the other cluster tests).
include_guard(GLOBAL)

set(dir ${PROJECT_SOURCE_DIR}/tests/load)
gka_cc_test(NAME bench_serve_test SRCS ${dir}/bench_serve_test.cc
  DEPS gka::cli_lib gka::sdk gka::rpc gka::proto LABELS unit TIMEOUT 120)

if(GKA_BUILD_TESTS AND TARGET gka-router AND TARGET gka-prefill-worker AND
   TARGET gka-decode-worker)
  add_test(NAME bench_serve_cluster_smoke
    COMMAND ${dir}/bench_cluster_smoke_test.sh $<TARGET_FILE_DIR:gka>
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(bench_serve_cluster_smoke PROPERTIES
    LABELS integration TIMEOUT 90 RUN_SERIAL TRUE)
endif()
