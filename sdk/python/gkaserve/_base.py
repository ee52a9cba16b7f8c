"""What Client and AsyncClient (and their streams) share: construction, building requests,
starting streams and settling a stream's outcome. Only waiting differs between them."""
from __future__ import annotations

from typing import Any, Iterable, Optional, Union

import grpc

from . import _wire
from ._proto import serving_pb2 as pb
from ._proto import serving_pb2_grpc as pb_grpc
from .types import GkaError, Result, RetryPolicy, SamplingParams


class StreamBase:
    def __init__(self, stub: pb_grpc.GenerateServiceStub, state: _wire.CallState, metadata):
        self._stub = stub
        self._state = state
        self._metadata = metadata
        self._call = None
        self._outcome: Union[Result, GkaError, None] = None

    @property
    def request_id(self) -> str:
        """The client-assigned id, or the router's once its first response came."""
        return self._state.result.request_id

    @property
    def done(self) -> bool:
        return self._outcome is not None

    def _settle(self, result: Optional[Result], error: Optional[GkaError]) -> bool:
        """Records the outcome of state.on_end(); True when the call is over. Raises the
        error, except after cancel(): iteration then just ends and result() reports it."""
        if result is None and error is None:
            return False
        self._outcome = result if result is not None else error
        if error is not None and not self._state.cancelled:
            raise error
        return True

    def _result(self) -> Result:
        if isinstance(self._outcome, GkaError):
            raise self._outcome
        return self._outcome


class ClientBase:
    _stream_class = StreamBase

    def __init__(self, address: str = "127.0.0.1:50051", *, api_key: Optional[str] = None,
                 tls: bool = False, root_certificates: Optional[Union[bytes, str]] = None,
                 timeout: Optional[float] = 300.0, retry: Optional[RetryPolicy] = None,
                 assign_request_ids: bool = True, max_message_bytes: int = 64 << 20,
                 certificate_chain: Optional[Union[bytes, str]] = None,
                 private_key: Optional[Union[bytes, str]] = None):
        self._config = _wire.Config(address, api_key, tls, root_certificates, timeout, retry,
                                    assign_request_ids, max_message_bytes, certificate_chain,
                                    private_key)
        self._channel = self._make_channel(self._config)
        self._stub = pb_grpc.GenerateServiceStub(self._channel)

    def _make_channel(self, config: _wire.Config):
        raise NotImplementedError

    def generate_stream(self, prompt: _wire.Prompt, *, sampling: Optional[SamplingParams] = None,
                        tier: str = "", request_id: str = "",
                        prefill_num_iter: Optional[int] = None,
                        decode_num_iter: Optional[int] = None, model: str = "",
                        timeout: Optional[float] = None, retry: Optional[RetryPolicy] = None):
        """Streams the completion of `prompt` (text, or a list of token ids)."""
        request = _wire.build_request(
            self._config, prompt=prompt, sampling=sampling, tier=tier, request_id=request_id,
            prefill_num_iter=prefill_num_iter, decode_num_iter=decode_num_iter, model=model)
        return self._stream(request, timeout, retry)

    def chat_stream(self, messages: Iterable[_wire.MessageLike], *, tools: Any = None,
                    enable_thinking: Optional[bool] = None,
                    sampling: Optional[SamplingParams] = None, tier: str = "",
                    request_id: str = "", prefill_num_iter: Optional[int] = None,
                    decode_num_iter: Optional[int] = None, model: str = "",
                    timeout: Optional[float] = None, retry: Optional[RetryPolicy] = None):
        """Streams the answer to chat `messages` (ChatMessage or {"role", "content", ...}),
        rendered by the router with the model's chat template; `tools` is a list of
        OpenAI-style tool definitions (or their JSON)."""
        request = _wire.build_request(
            self._config, messages=messages, tools=tools, enable_thinking=enable_thinking,
            sampling=sampling, tier=tier, request_id=request_id,
            prefill_num_iter=prefill_num_iter, decode_num_iter=decode_num_iter, model=model)
        return self._stream(request, timeout, retry)

    def _stream(self, request: pb.GenerateRequest, timeout, retry):
        state = _wire.CallState(request, self._config.policy(retry),
                                self._config.deadline(timeout))
        return self._stream_class(self._stub, state, self._config.metadata)

    def _not_ready(self, timeout: float) -> GkaError:
        return GkaError(grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"{self._config.address}: not connected within {timeout}s")
