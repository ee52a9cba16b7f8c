# Admission control and the degrade ladder on a live `gka local` cluster (Python, with the
# Python SDK's scratch venv and the C++ SDK through `gka generate`). Included from
# sdk/CMakeLists.txt, where that venv (GKA_SDK_VENV_PYTHON, fixture sdk_python) is defined,
# when the router and workers are built.
include_guard(GLOBAL)

add_test(NAME admission_cluster
  COMMAND ${GKA_SDK_VENV_PYTHON} -m unittest discover -v -s tests/integration/router
          -p test_admission_cluster.py)
set_tests_properties(admission_cluster PROPERTIES
  LABELS integration TIMEOUT 300 RUN_SERIAL TRUE FIXTURES_REQUIRED sdk_python
  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
  ENVIRONMENT "GKA_SDK_BIN_DIR=$<TARGET_FILE_DIR:gka>")
