# Live-cluster tests of both SDKs (ctest label integration), included from sdk/CMakeLists.txt
# when the router and workers are built. Each starts `gka local` on the tiny model with an API
# key. RUN_SERIAL like the other cluster tests: they time deadlines and heartbeats on 2 cores.
# (gtest_discover_tests is called here rather than through gka_cc_test, which has no way to
# add RUN_SERIAL.)
include_guard(GLOBAL)

set(dir ${PROJECT_SOURCE_DIR}/tests/integration/sdk)
set(env "GKA_SDK_BIN_DIR=$<TARGET_FILE_DIR:gka>;GKA_SDK_EXAMPLES_DIR=${CMAKE_BINARY_DIR}/examples/cpp")

add_executable(sdk_cluster_test ${dir}/sdk_cluster_test.cc)
target_link_libraries(sdk_cluster_test PRIVATE gka::sdk nlohmann_json::nlohmann_json absl::strings
                      GTest::gtest_main)
set_target_properties(sdk_cluster_test PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
# Where the binaries are, compiled in (gtest_discover_tests' PROPERTIES cannot carry a list
# of environment variables); $GKA_SDK_BIN_DIR / $GKA_SDK_EXAMPLES_DIR override.
target_compile_definitions(sdk_cluster_test PRIVATE
  GKA_SDK_BIN_DIR_DEFAULT="$<TARGET_FILE_DIR:gka>"
  GKA_SDK_EXAMPLES_DIR_DEFAULT="${CMAKE_BINARY_DIR}/examples/cpp")
gtest_discover_tests(sdk_cluster_test
  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
  PROPERTIES LABELS integration TIMEOUT 300 RUN_SERIAL TRUE
  DISCOVERY_TIMEOUT 60)

add_test(NAME sdk_cluster_python
  COMMAND ${GKA_SDK_VENV_PYTHON} -m unittest discover -v -s tests/integration/sdk
          -p test_cluster.py)
set_tests_properties(sdk_cluster_python PROPERTIES
  LABELS integration TIMEOUT 600 RUN_SERIAL TRUE FIXTURES_REQUIRED sdk_python
  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR} ENVIRONMENT "${env}")
