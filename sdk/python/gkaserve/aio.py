"""The asyncio client: gkaserve.AsyncClient and its AsyncStream (grpc.aio)."""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Iterable, Optional

import grpc
import grpc.aio

from . import _wire
from ._base import ClientBase, StreamBase
from ._proto import serving_pb2 as pb
from .types import Chunk, ModelInfo, Result, TokenizeResult


class AsyncStream(StreamBase):
    """A streaming Generate call: `async for` the Chunks, then `await result()`.

    Iteration raises GkaError where the call fails; cancel() ends the call (the router aborts
    the request on its workers): iteration then ends and result() raises GkaError CANCELLED.
    Leaving an `async with` block cancels an unfinished call. The call is sent when
    iteration (or result()) begins.
    """

    def __init__(self, *args):
        super().__init__(*args)
        self._cancel = asyncio.Event()
        self._chunks = self._run()

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self

    async def __anext__(self) -> Chunk:
        return await self._chunks.__anext__()

    async def result(self) -> Result:
        async for _ in self._chunks:
            pass
        return self._result()

    def cancel(self) -> None:
        self._cancel.set()
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> "AsyncStream":
        return self

    async def __aexit__(self, *exc) -> None:
        if not self.done:
            self.cancel()

    async def _run(self) -> AsyncIterator[Chunk]:
        state = self._state
        while True:
            call = self._stub.Generate(state.request, timeout=state.begin_attempt(),
                                       metadata=self._metadata)
            self._call = call
            if self._cancel.is_set():
                call.cancel()
            rpc_error = None
            try:
                async for response in call:
                    chunk = state.on_response(response)
                    if chunk is not None:
                        yield chunk
            except grpc.aio.AioRpcError as e:
                rpc_error = e
            except asyncio.CancelledError:
                # grpc.aio raises this when the call is cancelled: ours (cancel()) is an
                # outcome; anyone else's (the task's) propagates.
                if not self._cancel.is_set():
                    call.cancel()
                    raise
            finally:
                if self._outcome is None and rpc_error is None and not call.done():
                    call.cancel()  # the consumer closed the generator mid-stream
            state.cancelled = state.cancelled or self._cancel.is_set()
            result, error, wait = state.on_end(rpc_error)
            if wait is not None:
                try:
                    await asyncio.wait_for(self._cancel.wait(), wait)
                    state.cancelled = True
                    error = state.cancelled_error()
                except asyncio.TimeoutError:
                    pass
            if self._settle(result, error):
                return


class AsyncClient(ClientBase):
    """The asyncio twin of Client (same arguments, same semantics); create it inside a
    running event loop.

        async with gkaserve.AsyncClient("127.0.0.1:50051") as client:
            async for chunk in client.generate_stream("Hello"):
                print(chunk.text, end="")
    """
    _stream_class = AsyncStream

    def _make_channel(self, c: _wire.Config):
        if c.credentials:
            return grpc.aio.secure_channel(c.address, c.credentials, c.channel_options)
        return grpc.aio.insecure_channel(c.address, c.channel_options)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def generate(self, prompt: _wire.Prompt, **kwargs) -> Result:
        return await self.generate_stream(prompt, **kwargs).result()

    async def chat(self, messages: Iterable[_wire.MessageLike], **kwargs) -> Result:
        return await self.chat_stream(messages, **kwargs).result()

    async def abort(self, request_id: str, *, timeout: Optional[float] = None) -> bool:
        response = await self._unary(self._stub.Abort, pb.AbortRequest(request_id=request_id),
                                     timeout)
        return response.found

    async def tokenize(self, text: Optional[str] = None, *,
                       messages: Optional[Iterable[_wire.MessageLike]] = None,
                       tools: Any = None, enable_thinking: Optional[bool] = None,
                       timeout: Optional[float] = None) -> TokenizeResult:
        request = _wire.tokenize_request(text, messages, tools, enable_thinking)
        return _wire.tokenize_from_pb(await self._unary(self._stub.Tokenize, request, timeout))

    async def model_info(self, *, timeout: Optional[float] = None) -> ModelInfo:
        return _wire.model_info_from_pb(
            await self._unary(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout))

    async def wait_for_ready(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except asyncio.TimeoutError:
            raise self._not_ready(timeout) from None

    async def _unary(self, method, request, timeout: Optional[float]):
        retrier = _wire.Retrier(self._config.retry, self._config.deadline(timeout))
        while True:
            try:
                return await method(request, timeout=retrier.begin_attempt(),
                                    metadata=self._config.metadata)
            except grpc.aio.AioRpcError as e:
                error, wait = _wire.unary_error(e, retrier)
                if wait is None:
                    raise error from None
                await asyncio.sleep(wait)
