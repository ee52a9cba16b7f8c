# Included from decode_worker/CMakeLists.txt when the workers are built (UCX present), so the
# tests exist exactly when gka::prefill_worker and gka::decode_worker do.
include_guard(GLOBAL)

set(dir ${PROJECT_SOURCE_DIR}/tests/integration/workers)
gka_cc_test(NAME workers_test SRCS ${dir}/workers_test.cc
  DEPS gka::prefill_worker gka::decode_worker gka::cli_lib gka::rpc gka::proto
  LABELS integration TIMEOUT 300)
