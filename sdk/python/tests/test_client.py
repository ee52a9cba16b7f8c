"""gkaserve.Client against the fake router: results, streams, chat, retries only before the
first token, deadlines, cancellation, abort, API key, TLS and the unary calls."""
import os
import threading
import time
import unittest
import unittest.mock

import grpc

import gkaserve
from gkaserve import ChatMessage, GkaError, RetryPolicy, SamplingParams
from fake_router import TESTDATA, FakeRouter

UNAVAILABLE, RESOURCE_EXHAUSTED, INVALID_ARGUMENT = 14, 8, 3


def fast_retry(max_attempts=4):
    return RetryPolicy(max_attempts=max_attempts, initial_backoff=0.01, max_backoff=0.05,
                       jitter=0.0)


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.fake = FakeRouter()
        self.client = gkaserve.Client(self.fake.address, timeout=20, retry=fast_retry())

    def tearDown(self):
        self.client.close()
        self.fake.close()

    def test_generate_returns_the_whole_result(self):
        r = self.client.generate("hello there")
        self.assertEqual(r.text, "echo: hello there")
        self.assertEqual(r.token_ids, [1000, 1001, 1002])
        self.assertEqual(r.finish_reason, "stop")
        self.assertEqual(r.usage.prompt_tokens, 2)
        self.assertEqual(r.usage.completion_tokens, 3)
        self.assertEqual(r.served_by.decode_worker_id, "fake-decode-0")
        self.assertEqual(r.tier, "standard")
        self.assertEqual(r.num_iter, gkaserve.NumIter(prefill=10, decode=10))
        self.assertAlmostEqual(r.timings.ttft_ms, 1.5)
        self.assertEqual(r.attempts, 1)
        self.assertTrue(r.request_id.startswith("sdk-"), r.request_id)
        self.assertEqual(self.fake.requests()[0]["requestId"], r.request_id)

    def test_request_fields_reach_the_server(self):
        r = self.client.generate([5, 6, 7], request_id="mine-1", tier="interactive",
                                 decode_num_iter=30,
                                 sampling=SamplingParams(max_tokens=2, temperature=0.0, seed=42))
        self.assertEqual(r.request_id, "mine-1")
        self.assertEqual(r.text, "tokens: 3")
        self.assertEqual(r.num_iter.decode, 30)
        wire = self.fake.requests()[0]
        self.assertEqual(wire["tokenIds"]["ids"], [5, 6, 7])
        self.assertEqual(wire["sampling"]["seed"], "42")
        self.assertIn("temperature", wire["sampling"])  # 0.0 is sent, not dropped
        self.assertNotIn("topP", wire["sampling"])
        self.assertNotIn("prefillNumIter", wire)
        capped = self.client.generate("a b c d e", sampling=SamplingParams(max_tokens=2))
        self.assertEqual(capped.finish_reason, "length")
        self.assertEqual(len(capped.token_ids), 2)

    def test_top_logprobs_carry_the_alternatives(self):
        r = self.client.generate("a", sampling=SamplingParams(top_logprobs=2))
        self.assertEqual(self.fake.requests()[0]["sampling"]["topLogprobs"], 2)
        self.assertEqual(len(r.logprobs), len(r.token_ids))
        first = r.logprobs[0]
        self.assertEqual(first.token_id, r.token_ids[0])
        self.assertEqual([t.token_id for t in first.top], [r.token_ids[0], r.token_ids[0] + 1])
        self.assertEqual([t.logprob for t in first.top], [-0.5, -1.0])
        self.assertEqual([t.text for t in first.top], ["alt0", "alt1"])
        chunks = list(self.client.generate_stream("a b", sampling=SamplingParams(top_logprobs=1)))
        self.assertEqual([len(lp.top) for c in chunks for lp in c.logprobs], [1, 1, 1])

    def test_chat_with_dicts_messages_and_tools(self):
        r = self.client.chat([{"role": "system", "content": "be brief"},
                              ChatMessage("user", "What is GKA?")],
                             tools=[{"type": "function", "function": {"name": "f"}}],
                             enable_thinking=False)
        self.assertEqual(r.text, "you said: What is GKA?")
        chat = self.fake.requests()[0]["chat"]
        self.assertEqual([m["role"] for m in chat["messages"]], ["system", "user"])
        self.assertIn('"name": "f"', chat["toolsJson"])
        self.assertFalse(chat["enableThinking"])

    def test_bad_input_is_refused_locally(self):
        with self.assertRaises(TypeError):
            self.client.generate(["not", "ids"])
        with self.assertRaises(TypeError):
            self.client.chat(["not a message"])
        with self.assertRaises(ValueError):
            gkaserve.Client("x:1", retry=RetryPolicy(max_attempts=0))

    def test_stream_yields_chunks_in_order(self):
        stream = self.client.generate_stream("one two three four")
        texts = []
        for chunk in stream:
            texts.append(chunk.text)
            self.assertEqual(chunk.usage.completion_tokens, len(texts))
        self.assertEqual(texts, ["echo:", " one", " two", " three", " four"])
        self.assertEqual(stream.result().text, "echo: one two three four")
        self.assertTrue(stream.done)

    def test_retries_unavailable_before_the_first_token(self):
        self.fake.push(end="status", code=UNAVAILABLE)
        self.fake.push(end="error", code=UNAVAILABLE, message="prefill worker died",
                       retryable=True)
        r = self.client.generate("again")
        self.assertEqual(r.text, "echo: again")
        self.assertEqual(r.attempts, 3)
        self.assertEqual(self.fake.calls()[0], 3)
        self.assertEqual({w["requestId"] for w in self.fake.requests()}, {r.request_id})

    def test_gives_up_after_max_attempts(self):
        for _ in range(6):
            self.fake.push(end="status", code=UNAVAILABLE)
        with self.assertRaises(GkaError) as e:
            self.client.generate("x")
        self.assertEqual(e.exception.code, grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(e.exception.attempts, 4)
        self.assertTrue(e.exception.retryable)
        self.assertFalse(e.exception.from_server)
        self.assertEqual(self.fake.calls()[0], 4)

    def test_never_retries_after_the_first_token(self):
        self.fake.push(tokens=["a", " b"], end="error", code=UNAVAILABLE,
                       message="decode worker died", retryable=True)
        seen = []
        with self.assertRaises(GkaError) as e:
            for chunk in self.client.generate_stream("x"):
                seen.append(chunk.text)
        self.assertEqual(seen, ["a", " b"])
        err = e.exception
        self.assertEqual(err.code, grpc.StatusCode.UNAVAILABLE)
        self.assertIn("decode worker died", err.message)
        self.assertTrue(err.from_server)
        self.assertTrue(err.retryable)
        self.assertEqual(err.attempts, 1)
        self.assertEqual(self.fake.calls()[0], 1)

    def test_server_says_not_retryable(self):
        self.fake.push(end="error", code=UNAVAILABLE, message="draining", retryable=False)
        with self.assertRaises(GkaError):
            self.client.generate("x")
        self.assertEqual(self.fake.calls()[0], 1)

    def test_invalid_argument_keeps_the_servers_message(self):
        with self.assertRaises(GkaError) as e:
            self.client.generate("x", tier="gold")
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(e.exception.message, "tier: unknown tier 'gold'")
        self.assertTrue(e.exception.from_server)
        self.assertFalse(e.exception.retryable)
        self.assertEqual(str(e.exception), "INVALID_ARGUMENT: tier: unknown tier 'gold'")

    def test_resource_exhausted_waits_for_the_hint(self):
        self.fake.push(end="status", code=RESOURCE_EXHAUSTED,
                       trailing_metadata={"retry-after-ms": "300"})
        start = time.monotonic()
        r = self.client.generate("x")
        self.assertGreaterEqual(time.monotonic() - start, 0.3)
        self.assertEqual(r.attempts, 2)

    def test_resource_exhausted_without_hint_fails_at_once(self):
        self.fake.push(end="status", code=RESOURCE_EXHAUSTED)
        with self.assertRaises(GkaError) as e:
            self.client.generate("x")
        self.assertEqual(e.exception.code, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertEqual(self.fake.calls()[0], 1)

    def test_deadline_bounds_the_backoff(self):
        self.fake.push(end="status", code=RESOURCE_EXHAUSTED,
                       trailing_metadata={"retry-after": "10"})
        start = time.monotonic()
        with self.assertRaises(GkaError) as e:
            self.client.generate("x", timeout=0.5)
        self.assertLess(time.monotonic() - start, 2)
        self.assertIn("deadline", e.exception.message)
        self.assertEqual(e.exception.retry_after, 10.0)

    def test_deadline_ends_a_hanging_call_and_the_server_sees_it(self):
        self.fake.push(end="hang")
        start = time.monotonic()
        with self.assertRaises(GkaError) as e:
            self.client.generate("x", request_id="slow-1", timeout=0.3)
        self.assertEqual(e.exception.code, grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertLess(time.monotonic() - start, 3)
        self.assertTrue(self.fake.cancelled("slow-1"))
        self.assertEqual(self.fake.calls()[0], 1)

    def test_cancel_from_another_thread(self):
        self.fake.push(tokens=[" t"] * 200, token_interval_ms=20)
        stream = self.client.generate_stream("x", request_id="cancel-me")
        got = []
        for chunk in stream:
            got.append(chunk)
            if len(got) == 2:
                threading.Thread(target=stream.cancel).start()
        self.assertLess(len(got), 200)
        with self.assertRaises(GkaError) as e:
            stream.result()
        self.assertEqual(e.exception.code, grpc.StatusCode.CANCELLED)
        self.assertTrue(self.fake.cancelled("cancel-me"))

    def test_leaving_a_with_block_cancels(self):
        self.fake.push(tokens=[" t"] * 200, token_interval_ms=20)
        with self.client.generate_stream("x", request_id="left") as stream:
            next(stream)
        self.assertTrue(self.fake.cancelled("left"))

    def test_cancel_during_backoff_ends_promptly(self):
        self.fake.push(end="status", code=UNAVAILABLE, trailing_metadata={"retry-after-ms": "5000"})
        stream = self.client.generate_stream("x")
        threading.Timer(0.3, stream.cancel).start()
        start = time.monotonic()
        with self.assertRaises(GkaError) as e:
            stream.result()
        self.assertLess(time.monotonic() - start, 2)
        self.assertEqual(e.exception.code, grpc.StatusCode.CANCELLED)
        self.assertEqual(self.fake.calls()[0], 1)

    def test_abort_by_request_id(self):
        self.fake.push(tokens=[" t"] * 200, token_interval_ms=20)
        stream = self.client.generate_stream("x")
        next(stream)
        self.assertTrue(self.client.abort(stream.request_id))
        r = stream.result()
        self.assertEqual(r.finish_reason, "abort")
        self.assertLess(len(r.token_ids), 200)
        self.assertFalse(self.client.abort("no-such-request"))

    def test_unary_calls_convert_and_retry(self):
        self.fake.fail_unary(2, UNAVAILABLE)
        info = self.client.model_info()
        self.assertEqual(info.model, "fake-model")
        self.assertEqual(info.tiers[0].num_iter_max, 30)
        self.assertEqual(self.fake.calls()[1], 3)
        self.assertEqual(self.client.tokenize("AB").token_ids, [65, 66])
        chat = self.client.tokenize(messages=[{"role": "user", "content": "hi"}])
        self.assertEqual(chat.prompt_text,
                         "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
        self.fake.fail_unary(1, INVALID_ARGUMENT)
        with self.assertRaises(GkaError) as e:
            self.client.tokenize("x")
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)

    def test_many_threads_share_one_client(self):
        results = {}

        def one(i):
            results[i] = self.client.generate(f"n{i}").text

        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, {i: f"echo: n{i}" for i in range(16)})


class ServerDownTest(unittest.TestCase):
    def test_unavailable_after_the_retries(self):
        fake = FakeRouter()
        address = fake.address
        fake.close()
        with gkaserve.Client(address, timeout=10, retry=fast_retry(3)) as client:
            with self.assertRaises(GkaError) as e:
                client.generate("x")
            self.assertEqual(e.exception.code, grpc.StatusCode.UNAVAILABLE)
            self.assertEqual(e.exception.attempts, 3)
            with self.assertRaises(GkaError) as e:
                client.wait_for_ready(0.1)
            self.assertEqual(e.exception.code, grpc.StatusCode.DEADLINE_EXCEEDED)


class AuthAndTlsTest(unittest.TestCase):
    def test_api_key(self):
        with FakeRouter("--api-key", "s3cret") as fake:
            with gkaserve.Client(fake.address, retry=fast_retry()) as anonymous:
                with self.assertRaises(GkaError) as e:
                    anonymous.generate("x")
                self.assertEqual(e.exception.code, grpc.StatusCode.UNAUTHENTICATED)
                self.assertEqual(e.exception.attempts, 1)
            with gkaserve.Client(fake.address, api_key="s3cret", retry=fast_retry()) as keyed:
                self.assertEqual(keyed.generate("x").text, "echo: x")
                self.assertEqual(keyed.model_info().model, "fake-model")
            # api_key=None takes $GKA_API_KEY; "" sends none even then.
            with unittest.mock.patch.dict(os.environ, {"GKA_API_KEY": "s3cret"}):
                from_env = gkaserve.Client(fake.address, retry=fast_retry())
                explicit_none = gkaserve.Client(fake.address, api_key="", retry=fast_retry())
            self.assertEqual(from_env.generate("x").text, "echo: x")
            with self.assertRaises(GkaError) as e:
                explicit_none.generate("x")
            self.assertEqual(e.exception.code, grpc.StatusCode.UNAUTHENTICATED)
            from_env.close()
            explicit_none.close()

    def test_tls(self):
        cert = TESTDATA / "server.crt"
        with FakeRouter("--tls-cert", str(cert), "--tls-key", str(TESTDATA / "server.key")) as fake:
            with gkaserve.Client(fake.address, tls=True, root_certificates=cert.read_bytes(),
                                 retry=fast_retry()) as client:
                self.assertEqual(client.generate("secure").text, "echo: secure")
            with gkaserve.Client(fake.address, timeout=5, retry=fast_retry(2)) as plain:
                with self.assertRaises(GkaError) as e:
                    plain.generate("x")
                self.assertEqual(e.exception.code, grpc.StatusCode.UNAVAILABLE)
            # tls unset with $GKA_TLS_CA: TLS with that file's roots (what `gka local` prints).
            os.environ["GKA_TLS_CA"] = str(cert)
            try:
                with gkaserve.Client(fake.address, retry=fast_retry()) as from_env:
                    self.assertEqual(from_env.generate("env").text, "echo: env")
            finally:
                del os.environ["GKA_TLS_CA"]

    def test_bad_tls_settings_are_clear_errors(self):
        os.environ["GKA_TLS_CA"] = "/nonexistent/ca.pem"
        try:
            with self.assertRaisesRegex(ValueError, "GKA_TLS_CA"):
                gkaserve.Client("127.0.0.1:1")
        finally:
            del os.environ["GKA_TLS_CA"]
        with self.assertRaisesRegex(ValueError, "certificate_chain and private_key"):
            gkaserve.Client("127.0.0.1:1", tls=True, certificate_chain=b"x")


if __name__ == "__main__":
    unittest.main()
