# Included from common/transfer/ucx/CMakeLists.txt (the UCX engine's directory), so the tests
# exist exactly when gka::transfer_ucx does. include_guard keeps a second inclusion (e.g. from
# tests/CMakeLists.txt) harmless.
include_guard(GLOBAL)

set(dir ${PROJECT_SOURCE_DIR}/tests/integration/transfer)
add_executable(transfer_peer ${dir}/transfer_peer.cc)
target_link_libraries(transfer_peer PRIVATE gka::transfer_ucx)
set_target_properties(transfer_peer PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)

gka_cc_test(NAME ucx_transfer_test SRCS ${dir}/ucx_transfer_test.cc
  DEPS gka::transfer_ucx LABELS integration TIMEOUT 120)
target_compile_definitions(ucx_transfer_test PRIVATE
  GKA_TRANSFER_PEER_PATH="$<TARGET_FILE:transfer_peer>")
add_dependencies(ucx_transfer_test transfer_peer)
