"""gkaserve.AsyncClient against the fake router: the same behaviour as Client."""
import asyncio
import time
import unittest

import grpc

import gkaserve
from gkaserve import GkaError, RetryPolicy, SamplingParams
from fake_router import TESTDATA, FakeRouter

UNAVAILABLE, RESOURCE_EXHAUSTED = 14, 8


def fast_retry(max_attempts=4):
    return RetryPolicy(max_attempts=max_attempts, initial_backoff=0.01, max_backoff=0.05,
                       jitter=0.0)


class AsyncClientTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.fake = FakeRouter()
        self.client = gkaserve.AsyncClient(self.fake.address, timeout=20, retry=fast_retry())

    async def asyncTearDown(self):
        await self.client.close()
        self.fake.close()

    async def fake_cancelled(self, request_id):
        # The fake's answer may take a while: keep the event loop free meanwhile.
        return await asyncio.get_running_loop().run_in_executor(
            None, self.fake.cancelled, request_id)

    async def test_generate_and_chat(self):
        r = await self.client.generate("hello there", sampling=SamplingParams(max_tokens=8))
        self.assertEqual(r.text, "echo: hello there")
        self.assertEqual(r.finish_reason, "stop")
        self.assertEqual(r.num_iter.decode, 10)
        self.assertTrue(r.request_id.startswith("sdk-"))
        chat = await self.client.chat([{"role": "user", "content": "hi"}])
        self.assertEqual(chat.text, "you said: hi")

    async def test_stream(self):
        stream = self.client.generate_stream("one two")
        texts = [chunk.text async for chunk in stream]
        self.assertEqual(texts, ["echo:", " one", " two"])
        self.assertEqual((await stream.result()).token_ids, [1000, 1001, 1002])

    async def test_concurrent_streams(self):
        results = await asyncio.gather(*(self.client.generate(f"n{i}") for i in range(16)))
        self.assertEqual([r.text for r in results], [f"echo: n{i}" for i in range(16)])

    async def test_retry_before_first_token_only(self):
        self.fake.push(end="status", code=UNAVAILABLE)
        self.fake.push(end="error", code=UNAVAILABLE, retryable=True)
        r = await self.client.generate("again")
        self.assertEqual(r.attempts, 3)

        self.fake.push(tokens=["a"], end="error", code=UNAVAILABLE, message="decode died",
                       retryable=True)
        seen = []
        with self.assertRaises(GkaError) as e:
            async for chunk in self.client.generate_stream("x"):
                seen.append(chunk.text)
        self.assertEqual(seen, ["a"])
        self.assertEqual(e.exception.attempts, 1)
        self.assertIn("decode died", e.exception.message)

    async def test_retry_after_hint(self):
        self.fake.push(end="status", code=RESOURCE_EXHAUSTED,
                       trailing_metadata={"retry-after-ms": "300"})
        start = time.monotonic()
        r = await self.client.generate("x")
        self.assertGreaterEqual(time.monotonic() - start, 0.3)
        self.assertEqual(r.attempts, 2)

    async def test_errors_are_structured(self):
        with self.assertRaises(GkaError) as e:
            await self.client.generate("x", tier="gold")
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertTrue(e.exception.from_server)
        self.assertFalse(e.exception.retryable)

    async def test_deadline(self):
        self.fake.push(end="hang")
        with self.assertRaises(GkaError) as e:
            await self.client.generate("x", request_id="slow-1", timeout=0.3)
        self.assertEqual(e.exception.code, grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertTrue(await self.fake_cancelled("slow-1"))

    async def test_cancel_mid_stream(self):
        self.fake.push(tokens=[" t"] * 200, token_interval_ms=20)
        stream = self.client.generate_stream("x", request_id="cancel-me")
        got = 0
        async for _ in stream:
            got += 1
            if got == 2:
                stream.cancel()
        self.assertLess(got, 200)
        with self.assertRaises(GkaError) as e:
            await stream.result()
        self.assertEqual(e.exception.code, grpc.StatusCode.CANCELLED)
        self.assertTrue(await self.fake_cancelled("cancel-me"))

    async def test_cancel_during_backoff(self):
        self.fake.push(end="status", code=UNAVAILABLE,
                       trailing_metadata={"retry-after-ms": "5000"})
        stream = self.client.generate_stream("x")
        asyncio.get_running_loop().call_later(0.3, stream.cancel)
        start = time.monotonic()
        with self.assertRaises(GkaError) as e:
            await stream.result()
        self.assertLess(time.monotonic() - start, 2)
        self.assertEqual(e.exception.code, grpc.StatusCode.CANCELLED)

    async def test_task_cancellation_cancels_the_call(self):
        self.fake.push(tokens=[" t"] * 200, token_interval_ms=20)
        task = asyncio.ensure_future(self.client.generate("x", request_id="task-1"))
        await asyncio.sleep(0.2)
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        self.assertTrue(await self.fake_cancelled("task-1"))

    async def test_abort_and_unary(self):
        self.fake.push(tokens=[" t"] * 200, token_interval_ms=20)
        stream = self.client.generate_stream("x")
        await stream.__anext__()
        self.assertTrue(await self.client.abort(stream.request_id))
        self.assertEqual((await stream.result()).finish_reason, "abort")
        self.fake.fail_unary(1, UNAVAILABLE)
        self.assertEqual((await self.client.model_info()).default_tier, "standard")
        self.assertEqual((await self.client.tokenize("AB")).token_ids, [65, 66])


class AsyncAuthTlsTest(unittest.IsolatedAsyncioTestCase):
    async def test_api_key(self):
        with FakeRouter("--api-key", "s3cret") as fake:
            async with gkaserve.AsyncClient(fake.address, retry=fast_retry()) as anonymous:
                with self.assertRaises(GkaError) as e:
                    await anonymous.generate("x")
                self.assertEqual(e.exception.code, grpc.StatusCode.UNAUTHENTICATED)
            async with gkaserve.AsyncClient(fake.address, api_key="s3cret") as keyed:
                self.assertEqual((await keyed.generate("x")).text, "echo: x")

    async def test_tls(self):
        cert = TESTDATA / "server.crt"
        with FakeRouter("--tls-cert", str(cert), "--tls-key", str(TESTDATA / "server.key")) as fake:
            async with gkaserve.AsyncClient(fake.address, tls=True,
                                            root_certificates=cert.read_bytes()) as client:
                self.assertEqual((await client.generate("secure")).text, "echo: secure")


if __name__ == "__main__":
    unittest.main()
