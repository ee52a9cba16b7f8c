"""A `gka local` cluster for the Python cluster tests (tests/integration/*/test_*.py): the
tiny model, router + 1 prefill + 1 decode worker as real processes on 127.0.0.1 in a new
session, the state file's lines (one JSON object per process) read once all three are up.

    class Cluster(LocalCluster):
        def __init__(self, bin_dir):
            super().__init__(bin_dir, "gka-mytest-")  # self.dir, self.model made
            ...                                         # files the flags below name
            self.start(["--tiers", self.dir / "tiers.json"])
    cluster.field("router", "grpc"); cluster.stop(); shutil.rmtree(cluster.dir)
"""
import json
import os
import pathlib
import signal
import subprocess
import tempfile
import time


class LocalCluster:
    def __init__(self, bin_dir: str, prefix: str):
        self.bin = pathlib.Path(bin_dir)
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
        self.model = self.dir / "model"
        self.local = None
        self.lines = []
        subprocess.run([self.bin / "gka", "make-tiny-model", "--out", self.model], check=True,
                       capture_output=True)

    def start(self, local_args=(), timeout: float = 120):
        """Starts gka local with `local_args` added; returns once its state file lists the
        router and both workers (RuntimeError with gka local's log if it dies or times out)."""
        state = self.dir / "state"
        with open(self.dir / "local.log", "w") as log:
            self.local = subprocess.Popen(
                [self.bin / "gka", "local", "--model", self.model, "--port", "0",
                 "--metrics-port", "0", "--prefill-workers", "1", "--decode-workers", "1",
                 "--state-file", state, "--log-dir", self.dir, *local_args],
                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while len(self.lines) < 3:
            if self.local.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cluster did not start; logs in {self.dir}:\n"
                                   + (self.dir / "local.log").read_text())
            time.sleep(0.1)
            if state.exists():
                self.lines = [json.loads(l) for l in state.read_text().splitlines() if l]

    def field(self, role, key):
        """`key` of the first process of `role` (router, prefill, decode) in the state file."""
        return next(l[key] for l in self.lines if l["role"] == role)

    def stop(self):
        """SIGTERM to the whole session (gka local and its children), SIGKILL after 30 s."""
        if self.local is None or self.local.poll() is not None:
            return
        os.killpg(self.local.pid, signal.SIGTERM)
        try:
            self.local.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.local.pid, signal.SIGKILL)
            self.local.wait()
