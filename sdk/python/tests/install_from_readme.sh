#!/usr/bin/env bash
# Installs the Python SDK exactly as README.md's "Python SDK" section says (the block marked
# sdk-python-install), into SCRATCH: copies sdk/python and proto/ there in the repository's
# layout (so nothing is written into the source tree), runs the block, and checks that
# gkaserve imports from the new venv with its generated stubs.
#   install_from_readme.sh SCRATCH          (from the repository root)
set -euo pipefail
scratch=$1
rm -rf "$scratch" && mkdir -p "$scratch/src/sdk"
cp -r sdk/python "$scratch/src/sdk/python"
rm -rf "$scratch/src/sdk/python/build" "$scratch/src/sdk/python/"*.egg-info
cp -r proto "$scratch/src/proto"
block=$(/usr/bin/python3 sdk/tests/readme_blocks.py sdk-python-install)
cd "$scratch/src"
echo "+ $block"
# PyPI is not needed (and may be unreachable): Debian provides grpcio and protobuf.
PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 bash -euo pipefail -c "$block"
.venv/bin/python - <<'PY'
import gkaserve
from gkaserve._proto import serving_pb2, serving_pb2_grpc
assert "/.venv/" in gkaserve.__file__, gkaserve.__file__
assert serving_pb2.DESCRIPTOR.package == "gka.serving.v1"
assert gkaserve.__version__ != "0+unknown", "package metadata missing"
print("gkaserve", gkaserve.__version__, "installed at", gkaserve.__file__)
PY
