"""The SDK examples (examples/cpp, examples/python) run against the fake router, and
README.md shows the ones it quotes verbatim."""
import os
import pathlib
import subprocess
import sys
import unittest

import readme_blocks

REPO = readme_blocks.REPO
sys.path.insert(0, str(REPO / "sdk" / "python" / "tests"))
from fake_router import FakeRouter  # noqa: E402

# Files README.md must quote whole.
QUOTED = ["examples/cpp/hello.cc", "examples/python/hello.py", "examples/python/async_stream.py"]


def examples_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("GKA_SDK_EXAMPLES_DIR", REPO / "build" / "examples" / "cpp"))


def run(argv, **kwargs) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO, **kwargs)
    if done.returncode != 0:
        raise AssertionError(f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


class ReadmeTest(unittest.TestCase):
    def test_readme_quotes_the_examples_verbatim(self):
        blocks = readme_blocks.fenced_blocks(readme_blocks.readme())
        for path in QUOTED:
            with self.subTest(path=path):
                self.assertIn((REPO / path).read_text(), blocks,
                              f"README.md must show {path} verbatim in a code block")

    def test_readme_has_the_install_block(self):
        block = readme_blocks.marked_blocks(readme_blocks.readme())["sdk-python-install"]
        self.assertIn("--system-site-packages", block)
        self.assertIn("--no-build-isolation sdk/python", block)


class ExamplesAgainstFakeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fake = FakeRouter()

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()

    def test_cpp_hello(self):
        out = run([str(examples_dir() / "hello"), self.fake.address])
        self.assertEqual(out, "you said: What is linear attention?\n")

    def test_cpp_stream(self):
        out = run([str(examples_dir() / "stream"), self.fake.address])
        self.assertIn("echo: The capital of France is\n[stop, 6 tokens, decode num_iter 10", out)
        self.assertIn("cancelled call ended:", out)
        self.assertIn("error: INVALID_ARGUMENT retryable=0", out)

    def test_python_hello(self):
        out = run([sys.executable, "examples/python/hello.py", self.fake.address])
        self.assertEqual(out, "you said: What is linear attention?\n")

    def test_python_stream(self):
        out = run([sys.executable, "examples/python/stream.py", self.fake.address])
        self.assertIn("echo: The capital of France is\n[stop, 6 tokens, decode num_iter 10", out)
        self.assertIn("cancelled call ended: CANCELLED", out)
        self.assertIn("error: INVALID_ARGUMENT retryable=False", out)

    def test_python_async_stream(self):
        out = run([sys.executable, "examples/python/async_stream.py", self.fake.address])
        self.assertEqual(out, "echo: Once upon a time\nyou said: What is GKA?\n"
                              "you said: What is a KV cache?\n")


if __name__ == "__main__":
    unittest.main()
