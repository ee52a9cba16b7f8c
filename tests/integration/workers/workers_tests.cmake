# Included from decode_worker/CMakeLists.txt when the workers are built (UCX present), so the
# tests exist exactly when gka::prefill_worker and gka::decode_worker do.
include_guard(GLOBAL)

set(dir ${PROJECT_SOURCE_DIR}/tests/integration/workers)

# In-process workers with real gRPC servers and real UCX (tcp and shared memory).
gka_cc_test(NAME workers_test SRCS ${dir}/workers_test.cc
  DEPS gka::prefill_worker gka::decode_worker gka::cli_lib gka::rpc gka::proto
  LABELS integration TIMEOUT 300)

# The gka-prefill-worker and gka-decode-worker binaries as processes.
gka_cc_test(NAME worker_binaries_test SRCS ${dir}/worker_binaries_test.cc
  DEPS gka::worker_common gka::cli_lib gka::rpc gka::proto nlohmann_json::nlohmann_json
  LABELS integration TIMEOUT 300)
target_compile_definitions(worker_binaries_test PRIVATE
  GKA_PREFILL_WORKER_PATH="$<TARGET_FILE:gka-prefill-worker>"
  GKA_DECODE_WORKER_PATH="$<TARGET_FILE:gka-decode-worker>")
add_dependencies(worker_binaries_test gka-prefill-worker gka-decode-worker)

# DecodeCore against a scripted transfer engine: quarantine and fence retries.
gka_cc_test(NAME decode_core_test SRCS ${dir}/decode_core_test.cc
  DEPS gka::decode_worker LABELS unit)

# Tensor-parallel workers: prefill TP=p -> decode TP=d (p = d and p != d) against the TP=1
# engine, and tickets of layouts that cannot be mapped.
gka_cc_test(NAME tp_workers_test SRCS ${dir}/tp_workers_test.cc
  DEPS gka::prefill_worker gka::decode_worker gka::cli_lib gka::rpc gka::proto gka::model
  LABELS integration TIMEOUT 300)

# HandoffStream over real UCX from a real engine's memory: streamed pieces land exactly and
# verify; StopNow stops for good before it returns.
gka_cc_test(NAME handoff_stream_test SRCS ${dir}/handoff_stream_test.cc
  DEPS gka::worker_common gka::transfer_ucx gka::engine LABELS integration TIMEOUT 120)

# A colocated decode worker (--colocated, TP 1 and 2): prompts prefilled in its own engine,
# chunked into the running decode batch, against the offline engine; cancel/Abort
# mid-prefill, malformed and unplaceable requests.
gka_cc_test(NAME colocated_test SRCS ${dir}/colocated_test.cc
  DEPS gka::decode_worker gka::cli_lib gka::rpc gka::proto gka::model
  LABELS integration TIMEOUT 300)
