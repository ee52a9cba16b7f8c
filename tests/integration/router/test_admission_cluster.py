"""Admission control and the degrade ladder on a live cluster (`gka local`: router + 1 prefill
+ 1 decode worker with 2 state slots, the tiny model, real processes on 127.0.0.1):

  - admission by KV pages (PagesAdmissionClusterTest: a decode worker with 8 slots but 12 KV
    pages): a burst of long prompts is held back to what the worker's pages take — no
    Reserve refused on the worker (its /metrics), no retry, no swap —, the excess waits and
    is served or refused with a hint, memory stays flat, and a request larger than the
    worker is refused at once;
  - a full cluster queues per tier (priority order) and refuses beyond queue_limit at once
    with RESOURCE_EXHAUSTED + trailing metadata retry-after-ms (= Error.retry_after_ms);
  - a queued request past its tier's max_queue_ms is shed the same way;
  - a burst far beyond the queues is refused quickly and the router's memory stays flat;
  - both SDKs honour the hint: refused, they wait and succeed within their deadline
    (Python SDK in-process; the C++ SDK through `gka generate`);
  - the interactive tier's degrade ladder engages under queue pressure (rung 2: decode
    num_iter 1, max_tokens 8), requests report the rung and num_iter they got, and the
    ladder releases rung by rung once the queue is empty;
  - every one of these shows in a real scrape of the router's /metrics (and the decode
    worker's num_iter histogram), and Final reports the router's own overhead.

Needs GKA_SDK_BIN_DIR (gka, gka-router and the workers; ctest sets it); skips without it.
"""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import grpc

import gkaserve
from gkaserve import GkaError, RetryPolicy, SamplingParams
from gkaserve._proto import serving_pb2 as pb
from gkaserve._proto import serving_pb2_grpc as pb_grpc

# tests/integration: the `gka local` cluster the Python cluster tests share.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from local_cluster import LocalCluster  # noqa: E402

BIN = os.environ.get("GKA_SDK_BIN_DIR")
TIERS = {
    "default": "standard",
    "tiers": [
        {"name": "interactive", "prefill_num_iter": 30, "decode_num_iter": 30, "priority": 10,
         "queue_limit": 16,
         "degrade_ladder": [{"decode_num_iter": 10}, {"decode_num_iter": 1, "max_tokens": 8}],
         "degrade_queue_ms": 150},
        {"name": "standard", "prefill_num_iter": 10, "decode_num_iter": 10, "priority": 5,
         "queue_limit": 2},
        {"name": "batch", "prefill_num_iter": 5, "decode_num_iter": 5, "priority": 1,
         "queue_limit": 4, "max_queue_ms": 300},
    ],
}
LONG = 3000  # tokens: a blocker that holds its decode slot until the test aborts it


def scrape(url: str) -> dict:
    """Prometheus text -> {'name{labels}': value} (labels as exposed)."""
    text = urllib.request.urlopen(f"http://{url}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


def metric(samples: dict, name: str, **labels) -> float:
    """Sum of the series of `name` whose labels include `labels`."""
    total, found = 0.0, False
    for key, value in samples.items():
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})?", key)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        def same(k, v):
            if k == "le":  # bucket bounds: compare as numbers ("1" vs "1.0")
                return k in have and float(have[k]) == float(v)
            return have.get(k) == v
        if all(same(k, v) for k, v in labels.items()):
            total += value
            found = True
    if not found:
        raise KeyError(f"{name}{labels} not in the scrape")
    return total


class Cluster(LocalCluster):
    def __init__(self, bin_dir: str, router_args: str = "", api_key=None, num_slots=2,
                 decode_args="", tiers=None):
        super().__init__(bin_dir, "gka-admission-")
        self.api_key = api_key
        (self.dir / "tiers.json").write_text(json.dumps(tiers or TIERS))
        extra = ["--router-args", router_args.format(dir=self.dir)] if router_args else []
        extra += ["--decode-args", decode_args] if decode_args else []
        self.start(["--http-port", "0", "--num-slots", str(num_slots),
                    "--tiers", self.dir / "tiers.json", *extra])
        self.address = self.field("router", "grpc")
        self.metrics = self.field("router", "metrics")
        self.http = self.field("router", "http")
        self.router_pid = self.field("router", "pid")
        self.decode_metrics = self.field("decode", "metrics")
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.GenerateServiceStub(self.channel)
        with gkaserve.Client(self.address, api_key=api_key or "") as c:
            c.wait_for_ready(30)
        # Slots known to the router (from the decode worker's registration).
        deadline = time.monotonic() + 30
        while metric(scrape(self.metrics), "gka_admission_capacity") != num_slots:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the router never saw the decode worker's {num_slots} slots")
            time.sleep(0.1)

    def close(self):
        self.channel.close()
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Call:
    """One raw Generate call read on its own thread: responses, status, trailers, times."""

    def __init__(self, cluster: Cluster, request_id: str, tier: str, max_tokens: int,
                 timeout: float = 120, prompt=(1, 2, 3, 4, 5, 6, 7, 8)):
        self.request_id = request_id
        self.sent = time.monotonic()
        self.first_chunk = None
        self.done = None
        self.final = None
        self.error = None  # pb.Error
        self.code = None
        self.trailers = {}
        self.tokens = 0
        req = pb.GenerateRequest(request_id=request_id, tier=tier,
                                 token_ids=pb.TokenIds(ids=list(prompt)),
                                 sampling=pb.SamplingParams(max_tokens=max_tokens, temperature=0,
                                                            ignore_eos=True))
        metadata = ([("authorization", f"Bearer {cluster.api_key}")] if cluster.api_key else None)
        self.call = cluster.stub.Generate(req, timeout=timeout, metadata=metadata)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for r in self.call:
                if r.HasField("chunk"):
                    self.tokens += len(r.chunk.token_ids)
                    if self.first_chunk is None:
                        self.first_chunk = time.monotonic()
                elif r.HasField("final"):
                    self.final = r.final
                elif r.HasField("error"):
                    self.error = r.error
            self.code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            self.code = e.code()
        finally:
            self.trailers = dict(self.call.trailing_metadata() or ())
            self.done = time.monotonic()

    def wait(self, timeout=60):
        self.thread.join(timeout)
        assert self.done is not None, f"{self.request_id} still running after {timeout} s"
        return self

    def started(self):
        return self.first_chunk is not None


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@unittest.skipUnless(BIN, "GKA_SDK_BIN_DIR is not set")
class AdmissionClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = Cluster(BIN)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()

    def abort(self, *calls):
        for call in calls:
            self.c.stub.Abort(pb.AbortRequest(request_id=call.request_id), timeout=10)
        for call in calls:
            call.wait()

    def fill(self, tag):
        """Two blockers holding both decode slots (each has streamed a token)."""
        blockers = [Call(self.c, f"{tag}-blocker-{i}", "standard", LONG) for i in range(2)]
        wait_until(lambda: all(b.started() for b in blockers), 60, "the blockers' first tokens")
        return blockers

    def assert_idle(self):
        wait_until(lambda: metric(scrape(self.c.metrics), "gka_admission_placed") == 0, 30,
                   "every slot to be free")
        s = scrape(self.c.metrics)
        self.assertEqual(metric(s, "gka_admission_queue_depth"), 0)

    def test_1_queues_by_priority_refuses_beyond_the_limit_with_a_hint(self):
        blockers = self.fill("q")
        queued = [Call(self.c, f"q-std-{i}", "standard", 4) for i in range(2)]
        wait_until(lambda: metric(scrape(self.c.metrics), "gka_admission_queue_depth",
                                  tier="standard") == 2, 10, "two queued standard requests")
        # The third is over standard's queue_limit 2: refused at once, with the hint.
        t0 = time.monotonic()
        over = Call(self.c, "q-std-over", "standard", 4).wait(10)
        # Loose for a loaded 2-core CI machine; the blockers hold their slots for minutes.
        self.assertLess(over.done - t0, 5.0, "the refusal was not quick")
        self.assertEqual(over.code, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIsNotNone(over.error)
        self.assertTrue(over.error.retryable)
        self.assertIn("queue_limit 2", over.error.message)
        self.assertGreater(over.error.retry_after_ms, 0)
        self.assertEqual(over.trailers.get("retry-after-ms"), str(over.error.retry_after_ms))
        # An interactive request outranks the queued standard ones.
        inter = Call(self.c, "q-int", "interactive", 4)
        wait_until(lambda: metric(scrape(self.c.metrics), "gka_admission_queue_depth",
                                  tier="interactive") == 1, 10, "the interactive request queued")
        self.abort(blockers[0])
        inter.wait(30)
        self.assertEqual(inter.code, grpc.StatusCode.OK)
        self.abort(blockers[1])
        for q in queued:
            q.wait(30)
            self.assertEqual(q.code, grpc.StatusCode.OK)
            self.assertGreater(q.final.timings.admission_ms, 0)
            # The interactive request came last but was placed first.
            self.assertLess(inter.first_chunk, q.first_chunk)
        s = scrape(self.c.metrics)
        self.assertGreaterEqual(
            metric(s, "gka_admission_refused_total", tier="standard", reason="queue_full"), 1)
        self.assertGreaterEqual(
            metric(s, "gka_requests_total", tier="standard", code="RESOURCE_EXHAUSTED"), 1)
        self.assert_idle()

    def test_2_sheds_after_max_queue_ms(self):
        blockers = self.fill("shed")
        t0 = time.monotonic()
        batch = Call(self.c, "shed-batch", "batch", 4).wait(10)
        waited = batch.done - t0
        self.assertEqual(batch.code, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("max_queue_ms 300", batch.error.message)
        self.assertGreaterEqual(waited, 0.3)
        self.assertLess(waited, 5.0)
        self.assertIn("retry-after-ms", batch.trailers)
        self.assertGreaterEqual(
            metric(scrape(self.c.metrics), "gka_admission_refused_total", tier="batch",
                   reason="queue_timeout"), 1)
        self.abort(*blockers)
        self.assert_idle()

    def test_3_a_burst_is_refused_quickly_and_memory_stays_flat(self):
        blockers = self.fill("burst")

        def rss_kib():
            status = pathlib.Path(f"/proc/{self.c.router_pid}/status").read_text()
            return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))

        def burst(tag, n, finished):
            calls = [Call(self.c, f"{tag}-{i}", "standard", 4, timeout=60) for i in range(n)]
            wait_until(lambda: sum(c.done is not None for c in calls) >= finished, 60,
                       f"{finished} of the {tag} burst to be answered")
            return calls

        # 2 queue, 198 are refused (and warm the allocator); then all 200 are refused.
        first = burst("burst-a", 200, 198)
        before = rss_kib()
        second = burst("burst-b", 200, 200)
        after = rss_kib()
        refused = [c for c in first + second if c.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
        # Two queued from the first burst (the second finds the queue still full).
        self.assertEqual(len(refused), 398)
        self.assertTrue(all(c.error.retry_after_ms > 0 for c in refused))
        slowest = max(c.done - c.sent for c in refused)
        self.assertLess(slowest, 10.0, "refusals should not wait")
        # 200 more refusals must not grow the router by more than 8 MiB.
        self.assertLess(after - before, 8 * 1024, f"RSS {before} -> {after} KiB")
        self.abort(*blockers)
        for c in first:
            c.wait()
        self.assert_idle()

    def test_4_sdks_honour_the_hint(self):
        # Measured drain rate first: the hint is (requests ahead) / (completions per second).
        for i in range(4):
            Call(self.c, f"sdk-warm-{i}", "standard", 2).wait(30)
        blockers = self.fill("sdk")
        queued = [Call(self.c, f"sdk-std-{i}", "standard", 2) for i in range(2)]
        wait_until(lambda: metric(scrape(self.c.metrics), "gka_admission_queue_depth",
                                  tier="standard") == 2, 10, "a full standard queue")
        refused_before = metric(scrape(self.c.metrics), "gka_admission_refused_total",
                                tier="standard")
        outcome = {}

        def python_sdk():
            with gkaserve.Client(self.c.address, retry=RetryPolicy(max_attempts=6)) as client:
                try:
                    outcome["py"] = client.generate(
                        [1, 2, 3], sampling=SamplingParams(max_tokens=3, ignore_eos=True),
                        tier="standard", timeout=60)
                except GkaError as e:
                    outcome["py"] = e

        py = threading.Thread(target=python_sdk)
        py.start()
        cpp = subprocess.Popen(
            [pathlib.Path(BIN) / "gka", "generate", "--addr", self.c.address, "--prompt-ids",
             "1,2,3", "--max-tokens", "3", "--ignore-eos", "--tier", "standard", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Both were refused (the queue is full) before the slots free up.
        wait_until(lambda: metric(scrape(self.c.metrics), "gka_admission_refused_total",
                                  tier="standard") >= refused_before + 2, 20,
                   "both SDK calls to be refused once")
        self.abort(*blockers)
        py.join(60)
        out, err = cpp.communicate(timeout=60)
        self.assertEqual(cpp.returncode, 0, err)
        cpp_result = json.loads(out)
        self.assertGreaterEqual(cpp_result["attempts"], 2)
        self.assertEqual(cpp_result["finish_reason"], "length")
        result = outcome["py"]
        self.assertNotIsInstance(result, GkaError, str(result))
        self.assertGreaterEqual(result.attempts, 2)
        self.assertEqual(len(result.token_ids), 3)
        for q in queued:
            q.wait(30)
        self.assert_idle()

    def test_5_ladder_engages_and_releases(self):
        # Earlier tests queue interactive requests too; on a loaded machine their queue delay
        # can leave the ladder down a rung. Start from calm, or the step counts below would
        # miss the steps this test causes.
        wait_until(lambda: metric(scrape(self.c.metrics), "gka_degrade_rung",
                                  tier="interactive") == 0, 15, "the ladder at rung 0 first")
        s0 = scrape(self.c.metrics)
        down0 = metric(s0, "gka_degrade_steps_total", tier="interactive", direction="down")
        up0 = metric(s0, "gka_degrade_steps_total", tier="interactive", direction="up")
        ones = lambda: metric(scrape(self.c.decode_metrics), "gka_decode_num_iter_bucket",
                              tier="interactive", le="1")
        ones_before = ones()
        # One slot: a standard blocker; the other: an interactive request placed on rung 0
        # (decode num_iter 30) that is still running when the ladder engages.
        blockers = [Call(self.c, "ladder-blocker", "standard", LONG),
                    Call(self.c, "ladder-running", "interactive", LONG)]
        wait_until(lambda: all(b.started() for b in blockers), 60, "both slots taken")
        waiting = [Call(self.c, f"ladder-int-{i}", "interactive", 32) for i in range(2)]
        # Queue delay above 150 ms for 500 ms per rung: rung 2 within ~1.2 s.
        wait_until(lambda: metric(scrape(self.c.metrics), "gka_degrade_rung",
                                  tier="interactive") == 2, 10, "rung 2")
        # The cap reaches the decode worker with the next heartbeat reply, and the running
        # interactive sequence decodes with 1 iteration from then on (the waiters are still
        # queued, so those tokens are its own).
        wait_until(lambda: ones() > ones_before, 10, "the running sequence lowered to 1")
        self.assertFalse(any(w.started() for w in waiting))
        self.abort(*blockers)
        for w in waiting:
            w.wait(30)
            self.assertEqual(w.code, grpc.StatusCode.OK)
            self.assertEqual(w.final.degrade_rung, 2)
            self.assertEqual(w.final.decode_num_iter, 1)
            self.assertEqual(w.final.usage.completion_tokens, 8)  # the rung's max_tokens
        # The decode worker ran those tokens with 1 iteration (its own histogram).
        d = scrape(self.c.decode_metrics)
        self.assertGreater(metric(d, "gka_decode_num_iter_bucket", tier="interactive", le="1"), 0)
        # Calm: one rung up per 2 s.
        wait_until(lambda: metric(scrape(self.c.metrics), "gka_degrade_rung",
                                  tier="interactive") == 0, 15, "the ladder to release")
        s = scrape(self.c.metrics)
        self.assertGreaterEqual(
            metric(s, "gka_degrade_steps_total", tier="interactive", direction="down") - down0, 2)
        self.assertGreaterEqual(
            metric(s, "gka_degrade_steps_total", tier="interactive", direction="up") - up0, 2)
        # The decode worker drops its cap with the next heartbeat reply (1 s period).
        time.sleep(2.5)
        after = Call(self.c, "ladder-after", "interactive", 16).wait(30)
        self.assertEqual(after.final.degrade_rung, 0)
        self.assertEqual(after.final.decode_num_iter, 30)
        self.assertEqual(after.final.usage.completion_tokens, 16)
        self.assert_idle()

    def test_6_router_overhead_is_reported(self):
        r = Call(self.c, "overhead", "standard", 4).wait(30)
        t = r.final.timings
        self.assertGreater(t.router_ms, 0)
        self.assertLess(t.router_ms, t.ttft_ms)
        s = scrape(self.c.metrics)
        self.assertGreater(metric(s, "gka_router_overhead_seconds_count", tier="standard"), 0)

    def test_7_http_gateway_answers_429_with_retry_after(self):
        blockers = self.fill("http")
        queued = [Call(self.c, f"http-std-{i}", "standard", 2) for i in range(2)]
        wait_until(lambda: metric(scrape(self.c.metrics), "gka_admission_queue_depth",
                                  tier="standard") == 2, 10, "a full standard queue")
        for stream in (False, True):
            req = urllib.request.Request(
                f"http://{self.c.http}/v1/completions",
                data=json.dumps({"model": "model", "prompt": "hello", "max_tokens": 2,
                                 "stream": stream}).encode(),
                headers={"Content-Type": "application/json"})
            with self.assertRaises(urllib.error.HTTPError) as ctx:
                urllib.request.urlopen(req, timeout=10)
            e = ctx.exception
            self.assertEqual(e.code, 429)
            self.assertGreaterEqual(int(e.headers["Retry-After"]), 1)
            self.assertGreater(int(e.headers["retry-after-ms"]), 0)
            self.assertEqual(json.loads(e.read())["error"]["type"], "rate_limit_error")
        self.abort(*blockers)
        for q in queued:
            q.wait(30)
        self.assert_idle()


@unittest.skipUnless(BIN, "GKA_SDK_BIN_DIR is not set")
class PagesAdmissionClusterTest(unittest.TestCase):
    """Admission by KV pages: the decode worker has 8 state slots but only 12 pages of 16
    tokens. A request of 60 prompt tokens + 20 new needs 4 pages to be reserved and 5 for its
    life, so two fit at once although 8 slots are free: counting slots alone, the router
    would place 8 and the worker would refuse most Reserves (or swap sequences out)."""
    PAGES, SLOTS = 12, 8
    PROMPT = list(range(1, 61))
    TIERS = {"default": "bulk",
             "tiers": [{"name": "bulk", "prefill_num_iter": 5, "decode_num_iter": 5,
                        "priority": 1, "queue_limit": 6, "max_queue_ms": 60000}]}

    @classmethod
    def setUpClass(cls):
        cls.c = Cluster(BIN, num_slots=cls.SLOTS, decode_args=f"--num-pages {cls.PAGES}",
                        tiers=cls.TIERS)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()

    def burst(self, tag, n):
        calls = [Call(self.c, f"{tag}-{i}", "bulk", 20, timeout=120, prompt=self.PROMPT)
                 for i in range(n)]
        for c in calls:
            c.wait(120)
        return calls

    def test_a_burst_is_held_to_the_workers_pages(self):
        peak = {"placed": 0, "held": 0}
        stop = threading.Event()

        def watch():  # the router's own view while the burst runs
            while not stop.is_set():
                s = scrape(self.c.metrics)
                peak["placed"] = max(peak["placed"], metric(s, "gka_admission_placed"))
                peak["held"] = max(peak["held"], metric(s, "gka_admission_held_kv_pages"))
                time.sleep(0.02)

        def rss_kib():
            status = pathlib.Path(f"/proc/{self.c.router_pid}/status").read_text()
            return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        # 10 at once: 2 placed, 6 queued (queue_limit 6), 2 refused at once with the hint.
        first = self.burst("pages-a", 10)
        before = rss_kib()
        second = self.burst("pages-b", 10)
        after = rss_kib()
        stop.set()
        watcher.join(5)
        calls = first + second
        ok = [c for c in calls if c.code == grpc.StatusCode.OK]
        refused = [c for c in calls if c.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
        self.assertEqual(len(ok) + len(refused), len(calls),
                         [(c.request_id, c.code, c.error) for c in calls])
        # 8 of each burst in the best case (2 placed + 6 queued); a hold the worker's last
        # heartbeat may or may not show is counted until the next one (the safe side), which
        # can keep a third request of a burst waiting long enough for the queue to fill.
        self.assertGreaterEqual(len(ok), 14, [(c.request_id, c.error.message) for c in refused])
        self.assertTrue(all(c.tokens == 20 for c in ok))
        self.assertTrue(all(c.error.retryable and c.error.retry_after_ms > 0 for c in refused))
        # Never more than the pages allow: 2 requests, 2 x 5 whole-life pages.
        self.assertEqual(peak["placed"], 2)
        self.assertLessEqual(peak["held"], 10)
        # The worker never refused a Reserve nor swapped a sequence out; the router never
        # had to place a request again.
        d = scrape(self.c.decode_metrics)
        self.assertEqual(metric(d, "gka_reserve_refused_total"), 0)
        self.assertEqual(metric(d, "gka_preemptions_total"), 0)
        r = scrape(self.c.metrics)
        self.assertEqual(metric(r, "gka_retries_total", reason="decode_full"), 0)
        self.assertEqual(metric(r, "gka_admission_wait_seconds_count", tier="bulk"), len(ok))
        # The queue drained; nothing is held any more.
        wait_until(lambda: metric(scrape(self.c.metrics), "gka_admission_held_kv_pages") == 0,
                   30, "the router to release every hold")
        self.assertEqual(metric(scrape(self.c.metrics), "gka_admission_queue_depth"), 0)
        self.assertLess(after - before, 8 * 1024, f"RSS {before} -> {after} KiB")

    def test_b_a_request_larger_than_the_worker_is_refused_at_once(self):
        # 190 + 20 tokens = 14 pages > 12: waiting would never help.
        t0 = time.monotonic()
        big = Call(self.c, "pages-big", "bulk", 20, prompt=list(range(1, 191))).wait(30)
        self.assertLess(time.monotonic() - t0, 10.0)
        self.assertEqual(big.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertFalse(big.error.retryable)
        self.assertIn("can never be placed", big.error.message)
        self.assertEqual(big.error.retry_after_ms, 0)
        self.assertGreaterEqual(metric(scrape(self.c.metrics), "gka_admission_refused_total",
                                       reason="never_fits"), 1)


@unittest.skipUnless(BIN, "GKA_SDK_BIN_DIR is not set")
class RateLimitClusterTest(unittest.TestCase):
    """Per-API-key rate limits: the key 'ci' may send 2 requests/s with a burst of 2."""
    KEY = "gka-admission-test-key"

    @classmethod
    def setUpClass(cls):
        key_file = pathlib.Path(tempfile.mkdtemp(prefix="gka-keys-")) / "keys"
        line = subprocess.run([pathlib.Path(BIN) / "gka", "hash-api-key", "--name", "ci",
                               "--key", cls.KEY], check=True, capture_output=True,
                              text=True).stdout
        key_file.write_text(line)
        cls.key_dir = key_file.parent
        cls.c = Cluster(BIN, router_args=f"--api-keys-file {key_file} --rate-limit ci=2:2 "
                                         "--key-tiers ci=standard|batch",
                        api_key=cls.KEY)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()
        shutil.rmtree(cls.key_dir, ignore_errors=True)

    def test_a_tier_the_key_may_not_use_is_refused_at_once(self):
        # Refused before the rate limit is consulted: the bucket stays full for the test below.
        denied = Call(self.c, "tier-denied", "interactive", 1).wait(30)
        self.assertEqual(denied.code, grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("tier 'interactive' is not allowed for API key 'ci'", denied.error.message)
        self.assertIn("allowed: standard, batch", denied.error.message)
        self.assertFalse(denied.error.retryable)

    def test_over_the_limit_is_refused_with_a_hint_and_the_sdk_waits_it_out(self):
        calls = [Call(self.c, f"rate-{i}", "standard", 1).wait(30) for i in range(3)]
        self.assertEqual([c.code for c in calls[:2]], [grpc.StatusCode.OK] * 2)
        over = calls[2]
        self.assertEqual(over.code, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("API key 'ci' is over its rate limit of 2", over.error.message)
        self.assertTrue(over.error.retryable)
        self.assertGreater(over.error.retry_after_ms, 0)
        self.assertLessEqual(over.error.retry_after_ms, 500)
        self.assertEqual(over.trailers.get("retry-after-ms"), str(over.error.retry_after_ms))
        self.assertGreaterEqual(
            metric(scrape(self.c.metrics), "gka_admission_refused_total", reason="rate_limit"), 1)
        # Four SDK calls at once with the same key: at most the burst (2) pass at once, the
        # others are refused, wait out the hint and succeed.
        results = [None] * 4
        with gkaserve.Client(self.c.address, api_key=self.KEY,
                             retry=RetryPolicy(max_attempts=8)) as client:
            def one(i):
                try:
                    results[i] = client.generate(
                        [1, 2, 3], sampling=SamplingParams(max_tokens=1, ignore_eos=True),
                        timeout=30)
                except GkaError as e:
                    results[i] = e
            threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        for r in results:
            self.assertNotIsInstance(r, GkaError, str(r))
            self.assertEqual(len(r.token_ids), 1)
        self.assertGreaterEqual(sum(r.attempts for r in results), 6)

        # The OpenAI gateway: the same key, the same bucket; over it, 429 with Retry-After.
        answers = [None] * 4

        def post(i):
            req = urllib.request.Request(
                f"http://{self.c.http}/v1/completions",
                data=json.dumps({"model": "model", "prompt": "hi", "max_tokens": 1}).encode(),
                headers={"Content-Type": "application/json",
                         "Authorization": f"Bearer {self.KEY}"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    answers[i] = (r.status, None, None)
            except urllib.error.HTTPError as e:
                answers[i] = (e.code, e.headers.get("Retry-After"), e.read().decode())
        threads = [threading.Thread(target=post, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        limited = [a for a in answers if a[0] == 429]
        self.assertTrue(limited, answers)
        self.assertTrue(all(a[0] in (200, 429) for a in answers), answers)
        self.assertEqual(limited[0][1], "1")  # a hint of at most 500 ms, in whole seconds
        self.assertIn("API key 'ci' is over its rate limit", limited[0][2])


if __name__ == "__main__":
    unittest.main()
