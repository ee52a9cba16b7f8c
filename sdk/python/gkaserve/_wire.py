"""Wire conversions, configuration and the call state machine shared by Client and
AsyncClient (no I/O here: the two clients only differ in how they wait)."""
from __future__ import annotations

import importlib.metadata
import json
import math
import os
import random
import secrets
import threading
import time
from typing import Any, Iterable, Mapping, Optional, Sequence, Tuple, Union

import grpc

from ._proto import serving_pb2 as pb
from .types import (ChatMessage, Chunk, GkaError, ModelInfo, NumIter, Result, RetryPolicy,
                    SamplingParams, ServedBy, TierInfo, Timings, TokenizeResult, TokenLogprob,
                    ToolCall, TopLogprob, Usage)

try:  # pyproject.toml is the one place the version is written
    VERSION = importlib.metadata.version("gkaserve")
except importlib.metadata.PackageNotFoundError:  # imported from a source tree
    VERSION = "0+unknown"

Prompt = Union[str, Sequence[int]]
MessageLike = Union[ChatMessage, Mapping[str, Any]]

_CODES = {c.value[0]: c for c in grpc.StatusCode}
_FINISH = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_LENGTH: "length",
           pb.FINISH_REASON_ABORT: "abort", pb.FINISH_REASON_ERROR: "error"}
# Trailing metadata a server may set on RESOURCE_EXHAUSTED / UNAVAILABLE.
_RETRY_AFTER_MS = "retry-after-ms"  # integer milliseconds
_RETRY_AFTER = "retry-after"        # seconds, may be fractional


# ------------------------------------------------------------------------------------------
# Configuration shared by both clients


def _bytes(pem: Optional[Union[bytes, str]]) -> Optional[bytes]:
    return pem.encode() if isinstance(pem, str) else pem


def _read_pem(variable: str) -> Optional[bytes]:
    """The PEM file named by environment variable `variable`; None when it is unset."""
    path = os.environ.get(variable)
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise ValueError(f"{variable}: cannot read {path}: {e.strerror}") from None
    if b"-----BEGIN " not in pem:
        raise ValueError(f"{variable}: {path} holds no PEM block")
    return pem


class Config:
    """What a client was built with: address, credentials, defaults, request-id source."""

    def __init__(self, address: str, api_key: Optional[str], tls: bool,
                 root_certificates: Optional[Union[bytes, str]], timeout: Optional[float],
                 retry: Optional[RetryPolicy], assign_request_ids: bool,
                 max_message_bytes: int,
                 certificate_chain: Optional[Union[bytes, str]] = None,
                 private_key: Optional[Union[bytes, str]] = None):
        if not address:
            raise ValueError("address: empty")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout: must be positive (None or math.inf for no deadline)")
        self.address = address
        self.retry = retry or RetryPolicy()
        self.retry.validate()
        self.timeout = timeout
        self.assign_request_ids = assign_request_ids
        if api_key is None:  # the variable the router reads too
            api_key = os.environ.get("GKA_API_KEY", "")
        self.metadata: Tuple[Tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ())
        self.channel_options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.primary_user_agent", f"gkaserve-python-sdk/{VERSION}"),
        ]
        self.credentials = None
        if not tls and os.environ.get("GKA_TLS_CA"):
            # The variables the gka tool's --tls-* flags read: file paths.
            tls = True
            root_certificates = _read_pem("GKA_TLS_CA")
            certificate_chain = _read_pem("GKA_TLS_CERT")
            private_key = _read_pem("GKA_TLS_KEY")
        if (certificate_chain is None) != (private_key is None):
            raise ValueError("certificate_chain and private_key: give both (mutual TLS) or neither")
        if tls:
            self.credentials = grpc.ssl_channel_credentials(
                root_certificates=_bytes(root_certificates),
                private_key=_bytes(private_key), certificate_chain=_bytes(certificate_chain))
        self._id_prefix = f"sdk-{secrets.token_hex(8)}-"
        self._next_id = 0
        self._id_lock = threading.Lock()

    def new_request_id(self) -> str:
        with self._id_lock:
            n = self._next_id
            self._next_id += 1
        return f"{self._id_prefix}{n}"

    def deadline(self, timeout: Optional[float]) -> Optional[float]:
        """time.monotonic() deadline of a call, or None for none."""
        t = self.timeout if timeout is None else timeout
        if t is None or math.isinf(t):
            return None
        return time.monotonic() + t

    def policy(self, retry: Optional[RetryPolicy]) -> RetryPolicy:
        if retry is None:
            return self.retry
        retry.validate()
        return retry


# ------------------------------------------------------------------------------------------
# Requests


def _sampling_to_pb(s: Optional[SamplingParams], out: pb.SamplingParams) -> None:
    if s is None:
        return
    for name in ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                 "presence_penalty", "frequency_penalty", "seed", "ignore_eos", "logprobs",
                 "top_logprobs"):
        value = getattr(s, name)
        if value is not None:
            setattr(out, name, value)
    out.stop.extend(s.stop)
    out.stop_token_ids.extend(s.stop_token_ids)


def _tool_call(call: Union[ToolCall, Mapping[str, Any]]) -> ToolCall:
    if isinstance(call, ToolCall):
        return call
    function = call.get("function", call)  # OpenAI's nesting, or flat
    arguments = function.get("arguments", "{}")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return ToolCall(id=call.get("id", ""), name=function.get("name", ""), arguments=arguments,
                    type=call.get("type", "function"))


def _message(m: MessageLike) -> ChatMessage:
    if isinstance(m, ChatMessage):
        return m
    if not isinstance(m, Mapping) or "role" not in m:
        raise TypeError(f"chat message must be a ChatMessage or a dict with 'role': {m!r}")
    return ChatMessage(role=m["role"], content=m.get("content") or "",
                       tool_calls=[_tool_call(c) for c in m.get("tool_calls") or []],
                       tool_call_id=m.get("tool_call_id", ""), name=m.get("name", ""))


def chat_to_pb(messages: Iterable[MessageLike], tools: Any = None,
               enable_thinking: Optional[bool] = None) -> pb.ChatMessages:
    out = pb.ChatMessages()
    for m in map(_message, messages):
        msg = out.messages.add(role=m.role, content=m.content, tool_call_id=m.tool_call_id,
                               name=m.name)
        for c in m.tool_calls:
            msg.tool_calls.add(id=c.id, type=c.type,
                               function=pb.FunctionCall(name=c.name, arguments=c.arguments))
    if tools:
        out.tools_json = tools if isinstance(tools, str) else json.dumps(tools)
    if enable_thinking is not None:
        out.enable_thinking = enable_thinking
    return out


def build_request(config: Config, *, prompt: Optional[Prompt] = None,
                  messages: Optional[Iterable[MessageLike]] = None, tools: Any = None,
                  enable_thinking: Optional[bool] = None,
                  sampling: Optional[SamplingParams] = None, tier: str = "",
                  request_id: str = "", prefill_num_iter: Optional[int] = None,
                  decode_num_iter: Optional[int] = None, model: str = "") -> pb.GenerateRequest:
    if (prompt is None) == (messages is None):
        raise ValueError("give exactly one of a prompt (text or token ids) and chat messages")
    req = pb.GenerateRequest(request_id=request_id or (
        config.new_request_id() if config.assign_request_ids else ""), tier=tier, model=model)
    if messages is not None:
        req.chat.CopyFrom(chat_to_pb(messages, tools, enable_thinking))
    elif isinstance(prompt, str):
        req.text = prompt
    else:
        ids = list(prompt)
        if not all(isinstance(i, int) for i in ids):
            raise TypeError("prompt must be a str or a sequence of int token ids")
        req.token_ids.ids.extend(ids)
    _sampling_to_pb(sampling, req.sampling)
    if prefill_num_iter is not None:
        req.prefill_num_iter = prefill_num_iter
    if decode_num_iter is not None:
        req.decode_num_iter = decode_num_iter
    return req


def tokenize_request(text: Optional[str], messages: Optional[Iterable[MessageLike]],
                     tools: Any, enable_thinking: Optional[bool]) -> pb.TokenizeRequest:
    if (text is None) == (messages is None):
        raise ValueError("give exactly one of text and chat messages")
    if text is not None:
        return pb.TokenizeRequest(text=text)
    return pb.TokenizeRequest(chat=chat_to_pb(messages, tools, enable_thinking))


# ------------------------------------------------------------------------------------------
# Responses


def _usage(u: pb.Usage) -> Usage:
    return Usage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens)


def _logprob(lp: pb.TokenLogprob) -> TokenLogprob:
    return TokenLogprob(token_id=lp.token_id, logprob=lp.logprob,
                        top=[TopLogprob(t.token_id, t.logprob, t.text) for t in lp.top])


def chunk_from_pb(c: pb.Chunk) -> Chunk:
    return Chunk(token_ids=list(c.token_ids), text=c.text, usage=_usage(c.usage),
                 logprobs=[_logprob(lp) for lp in c.logprobs])


def _apply_final(f: pb.Final, r: Result) -> None:
    r.finish_reason = _FINISH.get(f.finish_reason, "unspecified")
    r.usage = _usage(f.usage)
    t = f.timings
    r.timings = Timings(t.queue_ms, t.ttft_ms, t.prefill_ms, t.transfer_ms, t.decode_ms,
                        t.total_ms, t.admission_ms, t.router_ms)
    r.served_by = ServedBy(f.served_by.router_id, f.served_by.prefill_worker_id,
                           f.served_by.decode_worker_id)
    r.tier = f.tier
    r.num_iter = NumIter(prefill=f.prefill_num_iter, decode=f.decode_num_iter)
    r.degrade_rung = f.degrade_rung
    r.matched_stop = f.matched_stop
    r.matched_stop_token_id = (f.matched_stop_token_id
                               if f.HasField("matched_stop_token_id") else None)


def tokenize_from_pb(r: pb.TokenizeResponse) -> TokenizeResult:
    return TokenizeResult(token_ids=list(r.token_ids), prompt_text=r.prompt_text)


def model_info_from_pb(r: pb.GetModelInfoResponse) -> ModelInfo:
    return ModelInfo(
        model=r.model, max_context_tokens=r.max_context_tokens, vocab_size=r.vocab_size,
        has_tokenizer=r.has_tokenizer, eos_token_ids=list(r.eos_token_ids),
        default_tier=r.default_tier,
        tiers=[TierInfo(name=t.name, num_iter=NumIter(t.prefill_num_iter, t.decode_num_iter),
                        num_iter_min=t.num_iter_min, num_iter_max=t.num_iter_max,
                        priority=t.priority, max_tokens=t.max_tokens) for t in r.tiers])


# ------------------------------------------------------------------------------------------
# Errors and retries


def _retry_after(rpc_error: Optional[grpc.RpcError]) -> Optional[float]:
    if rpc_error is None:
        return None
    try:
        trailers = rpc_error.trailing_metadata() or ()
    except Exception:  # a locally made error may carry none
        return None
    for key, value in trailers:
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if number < 0:
            continue
        if key == _RETRY_AFTER_MS:
            return number / 1000.0
        if key == _RETRY_AFTER:
            return number
    return None


def error_from_rpc(rpc_error: Optional[grpc.RpcError],
                   server_error: Optional[pb.Error] = None) -> GkaError:
    """The server's structured Error when it sent one, else the gRPC status."""
    retry_after = _retry_after(rpc_error)
    if server_error is not None and server_error.code != 0:
        if retry_after is None and server_error.retry_after_ms > 0:
            # The same hint in the Error message, for paths that drop trailers.
            retry_after = server_error.retry_after_ms / 1000.0
        code = _CODES.get(server_error.code, grpc.StatusCode.UNKNOWN)
        return GkaError(code, server_error.message, from_server=True,
                        retryable=server_error.retryable, retry_after=retry_after)
    if rpc_error is None:
        return GkaError(grpc.StatusCode.INTERNAL,
                        "the stream ended without a Final or Error message")
    code = rpc_error.code()
    return GkaError(code, rpc_error.details() or "", retryable=code == grpc.StatusCode.UNAVAILABLE,
                    retry_after=retry_after)


def may_retry(e: GkaError) -> bool:
    """UNAVAILABLE unless the server said retryable=False; RESOURCE_EXHAUSTED when the server
    said retryable or gave a retry-after hint. Nothing else."""
    if e.code == grpc.StatusCode.UNAVAILABLE:
        return not e.from_server or e.retryable
    if e.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return (e.from_server and e.retryable) or e.retry_after is not None
    return False


class Retrier:
    """One call's attempts and backoff (the same rule as the C++ SDK's)."""

    def __init__(self, policy: RetryPolicy, deadline: Optional[float]):
        self.policy = policy
        self.deadline = deadline
        self.attempts = 0
        self._backoff = policy.initial_backoff

    def begin_attempt(self) -> Optional[float]:
        """Counts an attempt; returns its gRPC timeout in seconds (None: no deadline)."""
        self.attempts += 1
        if self.deadline is None:
            return None
        return max(self.deadline - time.monotonic(), 0.001)

    def next_wait(self, e: GkaError, delivered: bool) -> Optional[float]:
        """Seconds to wait before the next attempt, or None to give up (then `e` says why)."""
        e.attempts = self.attempts
        if not may_retry(e):
            return None

        def give_up(why: str) -> None:
            e.message = f"{e.message} (not retried: {why})"
            e.args = (str(e),)

        if delivered:
            return give_up("tokens were already delivered")
        if self.attempts >= self.policy.max_attempts:
            return give_up(f"gave up after {self.attempts} attempts")
        if e.retry_after is not None and e.retry_after > self.policy.max_retry_after:
            return give_up(f"retry-after {e.retry_after}s exceeds the policy's max_retry_after")
        jitter = self.policy.jitter
        wait = self._backoff * (random.uniform(1 - jitter, 1 + jitter) if jitter else 1.0)
        self._backoff = min(self._backoff * self.policy.backoff_multiplier,
                            self.policy.max_backoff)
        if e.retry_after is not None:
            wait = max(wait, e.retry_after)
        if self.deadline is not None and time.monotonic() + wait >= self.deadline:
            return give_up("the deadline would pass during the backoff")
        return wait


class CallState:
    """One Generate call across its attempts, fed by a client's I/O loop:

        timeout = state.begin_attempt()
        ... for each response: chunk = state.on_response(response); yield it if not None
        result, error, wait = state.on_end(rpc_error_or_None)
    """

    def __init__(self, request: pb.GenerateRequest, policy: RetryPolicy,
                 deadline: Optional[float]):
        self.request = request
        self.result = Result(request_id=request.request_id)
        self.retrier = Retrier(policy, deadline)
        self.delivered = False
        self.cancelled = False
        self._final = False
        self._server_error: Optional[pb.Error] = None

    def begin_attempt(self) -> Optional[float]:
        self._server_error = None
        return self.retrier.begin_attempt()

    def on_response(self, response: pb.GenerateResponse) -> Optional[Chunk]:
        if response.request_id:
            self.result.request_id = response.request_id
        kind = response.WhichOneof("kind")
        if kind == "chunk":
            chunk = chunk_from_pb(response.chunk)
            r = self.result
            r.token_ids.extend(chunk.token_ids)
            r.text += chunk.text
            r.logprobs.extend(chunk.logprobs)
            r.usage = chunk.usage
            self.delivered = True
            return None if self.cancelled else chunk
        if kind == "final":
            _apply_final(response.final, self.result)
            self._final = True
        elif kind == "error":
            self._server_error = response.error
        return None

    def cancelled_error(self) -> GkaError:
        return GkaError(grpc.StatusCode.CANCELLED, "the call was cancelled by the client",
                        attempts=self.retrier.attempts)

    def on_end(self, rpc_error: Optional[grpc.RpcError]
               ) -> Tuple[Optional[Result], Optional[GkaError], Optional[float]]:
        """(result, None, None): done; (None, error, None): failed; (None, None, wait):
        send again after `wait` seconds."""
        if self._final:  # complete, whatever the transport said after the Final
            self.result.attempts = self.retrier.attempts
            return self.result, None, None
        if self.cancelled:
            return None, self.cancelled_error(), None
        error = error_from_rpc(rpc_error, self._server_error)
        wait = self.retrier.next_wait(error, self.delivered)
        if wait is None:
            return None, error, None
        return None, None, wait


def unary_error(rpc_error: grpc.RpcError, retrier: Retrier) -> Tuple[GkaError, Optional[float]]:
    """A failed unary attempt: the error and the wait before the next (None: give up)."""
    error = error_from_rpc(rpc_error)
    return error, retrier.next_wait(error, False)
