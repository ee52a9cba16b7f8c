"""The SDK's fake router process (sdk/cpp/testing, gka-sdk-fake-router) driven from Python:
the same fake the C++ SDK's tests use, so both SDKs meet the same behaviour.

    with FakeRouter() as fake:
        fake.push(end="status", code=14)          # next Generate: UNAVAILABLE
        client = gkaserve.Client(fake.address)
"""
import glob
import json
import os
import pathlib
import subprocess
from typing import List, Tuple

REPO = pathlib.Path(__file__).resolve().parents[3]
TESTDATA = REPO / "sdk" / "testdata"


def fake_router_binary() -> str:
    """$GKA_SDK_FAKE_ROUTER (ctest sets it), else the newest build*/bin/gka-sdk-fake-router."""
    path = os.environ.get("GKA_SDK_FAKE_ROUTER")
    if path:
        return path
    found = glob.glob(str(REPO / "build*" / "bin" / "gka-sdk-fake-router"))
    if not found:
        raise RuntimeError("gka-sdk-fake-router not built (ninja -C BUILD gka-sdk-fake-router) "
                           "and GKA_SDK_FAKE_ROUTER not set")
    return max(found, key=os.path.getmtime)


class FakeRouter:
    def __init__(self, *args: str):
        self._proc = subprocess.Popen([fake_router_binary(), *args], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, cwd=REPO)
        self.address = self._proc.stdout.readline().strip()
        if not self.address:
            raise RuntimeError("fake router did not start")

    def _command(self, line: str) -> str:
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline().strip()
        if answer.startswith("error"):
            raise RuntimeError(f"fake router: {answer}")
        return answer

    def push(self, **script) -> None:
        """Scripts the next Generate call: tokens, first_token_delay_ms, token_interval_ms,
        end ("final", "error", "status", "hang"), code, message, retryable,
        trailing_metadata."""
        self._command("push " + json.dumps(script))

    def fail_unary(self, count: int, code: int) -> None:
        self._command(f"fail_unary {count} {code}")

    def calls(self) -> Tuple[int, int]:
        generate, unary = self._command("calls").split()
        return int(generate), int(unary)

    def cancelled(self, request_id: str, timeout: float = 5.0) -> bool:
        return self._command(f"cancelled {request_id} {int(timeout * 1000)}") == "yes"

    def requests(self) -> List[dict]:
        return json.loads(self._command("requests"))

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc.stdout.close()

    def __enter__(self) -> "FakeRouter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
