# The OpenAI-compatible HTTP API against live local clusters (`gka local --http-port`, the tiny
# model), included from router/CMakeLists.txt so that the tests exist exactly when the router
# does. The binaries are referenced by generator expression: the workers and the gka CLI are
# defined after the router. RUN_SERIAL like the other cluster tests (fixed port 8000 for the
# card's command; timing on 2 cores).
#   openai_card_curl       the model card's curl command, verbatim, and the README's examples
#   openai_node_client     the official `openai` npm client (node's test runner)
#   openai_malformed       malformed bodies get 4xx OpenAI errors; the router keeps serving
#   openai_disconnect      clients that hang up free their KV pages and state slots
include_guard(GLOBAL)

set(dir ${PROJECT_SOURCE_DIR}/tests/integration/openai)
set(bin $<TARGET_FILE_DIR:gka>)
foreach(script card_curl malformed disconnect)
  add_test(NAME openai_${script}
    COMMAND ${dir}/${script}_test.sh ${bin}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(openai_${script} PROPERTIES
    LABELS integration TIMEOUT 300 RUN_SERIAL TRUE SKIP_RETURN_CODE 77)
endforeach()
add_test(NAME openai_node_client
  COMMAND node --test --test-reporter=spec ${dir}/openai_client.test.mjs
  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(openai_node_client PROPERTIES
  LABELS integration TIMEOUT 300 RUN_SERIAL TRUE ENVIRONMENT "GKA_BIN_DIR=${bin}")
