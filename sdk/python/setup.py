"""Build hook: generates the gRPC stubs of gka.serving.v1 into gkaserve/_proto.

The proto file comes from the repository ($GKA_PROTO_DIR, else ../../proto from here).
Debian's grpcio-tools bundles protoc 3.5, which predates proto3 `optional`, so the stubs are
made with the system protoc and grpc_python_plugin ($PROTOC and $GRPC_PYTHON_PLUGIN override
them). All metadata is in pyproject.toml.
"""
import os
import pathlib
import shutil
import subprocess
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent
PROTO = "gka/serving/v1/serving.proto"


def proto_dir() -> pathlib.Path:
    candidates = [os.environ.get("GKA_PROTO_DIR"), HERE.parent.parent / "proto"]
    for c in candidates:
        if c and (pathlib.Path(c) / PROTO).is_file():
            return pathlib.Path(c)
    raise SystemExit(f"gkaserve: cannot find {PROTO}; set GKA_PROTO_DIR to the repository's "
                     "proto/ directory")


def tool(env: str, name: str, package: str) -> str:
    path = os.environ.get(env) or shutil.which(name)
    if not path:
        raise SystemExit(f"gkaserve: {name} not found (apt-get install {package})")
    return path


def generate_stubs(out: pathlib.Path) -> None:
    protoc = tool("PROTOC", "protoc", "protobuf-compiler")
    plugin = tool("GRPC_PYTHON_PLUGIN", "grpc_python_plugin", "protobuf-compiler-grpc")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([protoc, f"-I{proto_dir()}", f"--python_out={tmp}", f"--grpc_out={tmp}",
                        f"--plugin=protoc-gen-grpc={plugin}", PROTO], check=True)
        generated = pathlib.Path(tmp) / "gka/serving/v1"
        out.mkdir(parents=True, exist_ok=True)
        (out / "__init__.py").write_text('"""Generated from proto/gka/serving/v1/serving.proto."""\n')
        shutil.copy(generated / "serving_pb2.py", out / "serving_pb2.py")
        # The stub imports its messages by their proto package; they live beside it here.
        grpc_py = (generated / "serving_pb2_grpc.py").read_text()
        grpc_py = grpc_py.replace("from gka.serving.v1 import serving_pb2",
                                  "from . import serving_pb2")
        (out / "serving_pb2_grpc.py").write_text(grpc_py)


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        generate_stubs(pathlib.Path(self.build_lib) / "gkaserve" / "_proto")


setup(cmdclass={"build_py": BuildPyWithStubs})
