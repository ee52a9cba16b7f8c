"""The blocking client: gkaserve.Client and its Stream."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

import grpc

from . import _wire
from ._base import ClientBase, StreamBase
from ._proto import serving_pb2 as pb
from .types import Chunk, ModelInfo, Result, TokenizeResult

T = TypeVar("T")


class Stream(StreamBase):
    """A streaming Generate call: iterate for Chunks, then result() for the whole Result.

    Iteration raises GkaError where the call fails. cancel() may be called from any thread
    (the router then aborts the request on its workers): iteration then ends and result()
    raises GkaError CANCELLED. Leaving a `with` block cancels an unfinished call. Iterate
    from one thread. The call is sent when iteration (or result()) begins.
    """

    def __init__(self, *args):
        super().__init__(*args)
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._chunks = self._run()

    def __iter__(self) -> Iterator[Chunk]:
        return self

    def __next__(self) -> Chunk:
        return next(self._chunks)

    def result(self) -> Result:
        """Consumes what is left of the stream; returns the Result or raises GkaError."""
        for _ in self._chunks:
            pass
        return self._result()

    def cancel(self) -> None:
        self._cancel.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        if not self.done:
            self.cancel()

    def _run(self) -> Iterator[Chunk]:
        state = self._state
        while True:
            call = self._stub.Generate(state.request, timeout=state.begin_attempt(),
                                       metadata=self._metadata)
            with self._lock:
                self._call = call
            if self._cancel.is_set():
                call.cancel()
            rpc_error = None
            try:
                for response in call:
                    chunk = state.on_response(response)
                    if chunk is not None:
                        yield chunk
            except grpc.RpcError as e:
                rpc_error = e
            finally:
                if self._outcome is None and rpc_error is None and not call.done():
                    call.cancel()  # the consumer closed the generator mid-stream
            state.cancelled = state.cancelled or self._cancel.is_set()
            result, error, wait = state.on_end(rpc_error)
            if wait is not None and self._cancel.wait(wait):
                state.cancelled = True
                error = state.cancelled_error()
            if self._settle(result, error):
                return


class Client(ClientBase):
    """A client of a gkaserve router (gRPC API gka.serving.v1). Thread-safe.

        client = gkaserve.Client("127.0.0.1:50051")
        print(client.chat([{"role": "user", "content": "Hi"}]).text)

    api_key: sent as "authorization: Bearer <key>"; None takes $GKA_API_KEY (the variable
    the router reads too), "" sends none. tls + root_certificates (PEM; None: the system's),
    and certificate_chain + private_key (PEM) for a router that wants client certificates
    (--public-tls). tls=False with $GKA_TLS_CA set: TLS with the PEM files $GKA_TLS_CA,
    $GKA_TLS_CERT and $GKA_TLS_KEY (what `gka local` prints; the gka tool reads them too).

    Every call: `timeout` (seconds; default the client's, None/inf for none) bounds the whole
    call, retries and backoff included. Retries with exponential backoff happen on
    UNAVAILABLE (unless the server said retryable=False) and on RESOURCE_EXHAUSTED that the
    server marked retryable or gave a retry-after hint for (waiting at least the hint) — only
    before the first token was delivered. Errors raise GkaError.
    """
    _stream_class = Stream

    def _make_channel(self, c: _wire.Config):
        if c.credentials:
            return grpc.secure_channel(c.address, c.credentials, c.channel_options)
        return grpc.insecure_channel(c.address, c.channel_options)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def generate(self, prompt: _wire.Prompt, **kwargs) -> Result:
        """generate_stream(prompt, **kwargs).result()."""
        return self.generate_stream(prompt, **kwargs).result()

    def chat(self, messages: Iterable[_wire.MessageLike], **kwargs) -> Result:
        """chat_stream(messages, **kwargs).result()."""
        return self.chat_stream(messages, **kwargs).result()

    def abort(self, request_id: str, *, timeout: Optional[float] = None) -> bool:
        """Asks the router to end a running request; False when none has this id."""
        return self._unary(self._stub.Abort, pb.AbortRequest(request_id=request_id),
                           timeout).found

    def tokenize(self, text: Optional[str] = None, *,
                 messages: Optional[Iterable[_wire.MessageLike]] = None, tools: Any = None,
                 enable_thinking: Optional[bool] = None,
                 timeout: Optional[float] = None) -> TokenizeResult:
        """Token ids of `text`, or of chat `messages` rendered with the chat template."""
        request = _wire.tokenize_request(text, messages, tools, enable_thinking)
        return _wire.tokenize_from_pb(self._unary(self._stub.Tokenize, request, timeout))

    def model_info(self, *, timeout: Optional[float] = None) -> ModelInfo:
        return _wire.model_info_from_pb(
            self._unary(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout))

    def wait_for_ready(self, timeout: float) -> None:
        """Connects now; GkaError DEADLINE_EXCEEDED when not connected within `timeout`."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise self._not_ready(timeout) from None

    def _unary(self, method: Callable[..., T], request, timeout: Optional[float]) -> T:
        retrier = _wire.Retrier(self._config.retry, self._config.deadline(timeout))
        while True:
            try:
                return method(request, timeout=retrier.begin_attempt(),
                              metadata=self._config.metadata)
            except grpc.RpcError as e:
                error, wait = _wire.unary_error(e, retrier)
                if wait is None:
                    raise error from None
                time.sleep(wait)
