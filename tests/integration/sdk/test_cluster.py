"""The Python SDK against a live local cluster (`gka local`: router + prefill + decode worker
as real processes on 127.0.0.1, the tiny model, an API key): generate, stream, chat, cancel,
deadline, abort, auth failure, retry after a killed prefill worker, the async client and the
examples — the behaviours sdk_cluster_test.cc checks for the C++ SDK.

Needs GKA_SDK_BIN_DIR (gka, gka-router and the workers; ctest sets it); skips without it.
"""
import asyncio
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

import grpc

import gkaserve
from gkaserve import ChatMessage, GkaError, RetryPolicy, SamplingParams

# tests/integration: the `gka local` cluster the Python cluster tests share.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from local_cluster import LocalCluster  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[3]
BIN = os.environ.get("GKA_SDK_BIN_DIR")
API_KEY = "sdk-cluster-test-key"
LONG = dict(sampling=SamplingParams(max_tokens=3000, temperature=0.0, ignore_eos=True))


class Cluster(LocalCluster):
    """A `gka local` cluster on the tiny model; extra prefill workers started beside it."""

    def __init__(self, bin_dir: str):
        super().__init__(bin_dir, "gka-sdk-cluster-")
        self.extra = []
        os.environ["GKA_API_KEY"] = API_KEY  # the router's key, and every client's default
        self.start()
        self.address = self.field("router", "grpc")
        with gkaserve.Client(self.address) as c:
            c.wait_for_ready(30)

    def start_extra_prefill(self, worker_id: str) -> subprocess.Popen:
        """A prefill worker outside gka local (which stops everything when a child dies);
        returns once it has registered."""
        # timeout(1) bounds its life should this test die without killing it; both share a
        # new session, killed as a group. It registers on the router's internal port with the
        # certificate gka local made for tools beside the cluster (mutual TLS).
        tls = pathlib.Path(self.field("router", "tls_dir"))
        with open(self.dir / f"{worker_id}.log", "w") as log:
            p = subprocess.Popen(
                ["/usr/bin/timeout", "300", self.bin / "gka-prefill-worker", "--model",
                 self.model, "--router", self.field("router", "internal"), "--port", "0",
                 "--metrics-port", "0", "--worker-id", worker_id, "--tls-ca", tls / "ca.pem",
                 "--tls-cert", tls / "client.pem", "--tls-key", tls / "client.key"],
                stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
        self.extra.append(p)
        p.stdout.readline()  # its ready line
        return p

    @staticmethod
    def kill(p: subprocess.Popen) -> None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        p.stdout.close()

    def slots_used(self) -> float:
        body = urllib.request.urlopen(f"http://{self.field('decode', 'metrics')}/metrics",
                                      timeout=5).read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                   if line.startswith(("gka_state_slots_used{", "gka_state_slots_used ")))

    def close(self, keep_logs: bool):
        for p in self.extra:
            self.kill(p)
        os.kill(self.field("prefill", "pid"), signal.SIGCONT)
        self.stop()
        if not keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)


cluster = None


def setUpModule():
    global cluster
    if BIN:
        cluster = Cluster(BIN)


def tearDownModule():
    if cluster is not None:
        cluster.close(keep_logs=False)


@unittest.skipUnless(BIN, "GKA_SDK_BIN_DIR not set")
class ClusterTest(unittest.TestCase):
    def setUp(self):
        self.client = gkaserve.Client(cluster.address)

    def tearDown(self):
        self.client.close()

    def assert_slots_freed(self):
        deadline = time.monotonic() + 10
        while cluster.slots_used() != 0:
            self.assertLess(time.monotonic(), deadline, "the decode worker still holds a slot")
            time.sleep(0.1)

    def test_generate_is_greedy_deterministic_and_reports_the_final(self):
        params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
        a = self.client.generate("The capital of France is", sampling=params)
        self.assertEqual(len(a.token_ids), 8)
        self.assertEqual(a.finish_reason, "length")
        self.assertEqual(a.usage.completion_tokens, 8)
        self.assertGreater(a.usage.prompt_tokens, 0)
        self.assertEqual(a.served_by.prefill_worker_id, "prefill-0")
        self.assertEqual(a.served_by.decode_worker_id, "decode-0")
        self.assertGreater(a.timings.total_ms, 0)
        b = self.client.generate("The capital of France is", sampling=params)
        self.assertEqual(a.token_ids, b.token_ids)
        for tier in self.client.model_info().tiers:
            r = self.client.generate("The capital of France is", sampling=params, tier=tier.name)
            self.assertEqual((r.tier, r.num_iter), (tier.name, tier.num_iter))

    def test_top_logprobs_list_the_most_likely_tokens_first(self):
        r = self.client.generate("The capital of France is", sampling=SamplingParams(
            max_tokens=4, temperature=0.0, ignore_eos=True, top_logprobs=4))
        self.assertEqual([lp.token_id for lp in r.logprobs], r.token_ids)
        for lp in r.logprobs:
            self.assertEqual(len(lp.top), 4)
            # Greedy: the sampled token is the first alternative, with the same logprob.
            self.assertEqual((lp.top[0].token_id, lp.top[0].logprob), (lp.token_id, lp.logprob))
            lps = [t.logprob for t in lp.top]
            self.assertEqual(lps, sorted(lps, reverse=True))
            self.assertEqual(len({t.token_id for t in lp.top}), 4)
            self.assertNotEqual(lp.top[0].text, "")

    def test_stream_chunks_add_up_to_the_result(self):
        stream = self.client.generate_stream(
            "Once upon a time", sampling=SamplingParams(max_tokens=12, temperature=0.0,
                                                        ignore_eos=True))
        chunks = list(stream)
        r = stream.result()
        self.assertEqual("".join(c.text for c in chunks), r.text)
        self.assertEqual([i for c in chunks for i in c.token_ids], r.token_ids)
        self.assertEqual(len(r.token_ids), 12)

    def test_chat_tokenize_and_model_info(self):
        r = self.client.chat([ChatMessage("system", "You are terse."),
                              {"role": "user", "content": "What is linear attention?"}],
                             sampling=SamplingParams(max_tokens=16))
        self.assertGreaterEqual(r.usage.completion_tokens, 1)
        self.assertIn(r.finish_reason, ("stop", "length"))
        self.assertEqual(self.client.tokenize("Hello, world!").token_ids, [9707, 11, 1879, 0])
        chat = self.client.tokenize(messages=[{"role": "user", "content": "Hi"}])
        self.assertIn("<|im_start|>user\nHi<|im_end|>", chat.prompt_text)
        info = self.client.model_info()
        self.assertTrue(info.has_tokenizer)
        self.assertGreater(info.vocab_size, 0)

    def test_cancel_aborts_the_request_on_the_workers(self):
        stream = self.client.generate_stream("Tell me a long story.", **LONG)
        next(stream)
        stream.cancel()
        with self.assertRaises(GkaError) as e:
            stream.result()
        self.assertEqual(e.exception.code, grpc.StatusCode.CANCELLED)
        self.assert_slots_freed()
        self.assertFalse(self.client.abort(stream.request_id))

    def test_deadline_ends_the_request_everywhere(self):
        with self.assertRaises(GkaError) as e:
            self.client.generate("Tell me a long story.", timeout=0.5, **LONG)
        self.assertEqual(e.exception.code, grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assert_slots_freed()

    def test_abort_by_id(self):
        stream = self.client.generate_stream("Tell me a long story.", **LONG)
        next(stream)
        self.assertTrue(self.client.abort(stream.request_id))
        r = stream.result()
        self.assertEqual(r.finish_reason, "abort")
        self.assertLess(len(r.token_ids), 3000)
        self.assert_slots_freed()

    def test_wrong_or_missing_api_key_is_unauthenticated(self):
        for key in ("", "not-the-key"):
            with gkaserve.Client(cluster.address, api_key=key) as client:
                with self.assertRaises(GkaError) as e:
                    client.generate("Hi", sampling=SamplingParams(max_tokens=2))
                self.assertEqual(e.exception.code, grpc.StatusCode.UNAUTHENTICATED)
                self.assertEqual(e.exception.attempts, 1)

    def test_zz_retries_after_a_killed_prefill_worker(self):
        # Last (it changes the cluster): no prefill worker left — gka local's is frozen (and
        # declared lost after the router's 3 s heartbeat timeout), an extra one is killed; the
        # SDK's retries carry the request to a prefill worker that starts a moment later.
        extra = cluster.start_extra_prefill("prefill-extra-1")
        frozen = cluster.field("prefill", "pid")
        os.kill(frozen, signal.SIGSTOP)
        try:
            time.sleep(4.5)
            cluster.kill(extra)
            later = threading.Timer(1.5, cluster.start_extra_prefill, ("prefill-extra-2",))
            later.start()
            r = self.client.generate(
                "Hello", sampling=SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True),
                timeout=60, retry=RetryPolicy(max_attempts=100, initial_backoff=0.2,
                                              max_backoff=0.5))
            later.join()
        finally:
            os.kill(frozen, signal.SIGCONT)
        self.assertGreaterEqual(r.attempts, 2)
        self.assertEqual(r.served_by.prefill_worker_id, "prefill-extra-2")
        self.assertEqual(len(r.token_ids), 4)

    def test_examples(self):
        for example in ("hello.py", "stream.py", "async_stream.py"):
            done = subprocess.run([sys.executable, REPO / "examples" / "python" / example,
                                   cluster.address], capture_output=True, text=True, timeout=120)
            self.assertEqual(done.returncode, 0, f"{example}:\n{done.stdout}\n{done.stderr}")
            self.assertTrue(done.stdout.strip(), example)
            if example == "stream.py":
                self.assertIn(" tokens, decode num_iter 10, served by decode-0]", done.stdout)
                self.assertIn("error: INVALID_ARGUMENT retryable=False", done.stdout)


@unittest.skipUnless(BIN, "GKA_SDK_BIN_DIR not set")
class AsyncClusterTest(unittest.IsolatedAsyncioTestCase):
    async def test_generate_stream_and_cancel(self):
        async with gkaserve.AsyncClient(cluster.address) as client:
            params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
            r = await client.generate("The capital of France is", sampling=params)
            self.assertEqual(len(r.token_ids), 8)
            stream = client.generate_stream("The capital of France is", sampling=params)
            self.assertEqual([i async for c in stream for i in c.token_ids], r.token_ids)

            stream = client.generate_stream("Tell me a long story.", **LONG)
            await stream.__anext__()
            stream.cancel()
            with self.assertRaises(GkaError) as e:
                await stream.result()
            self.assertEqual(e.exception.code, grpc.StatusCode.CANCELLED)


if __name__ == "__main__":
    unittest.main()
