"""Plain value types of the gkaserve API (requests, chunks, results) and GkaError.

Nothing here touches gRPC; gkaserve._wire converts to and from the wire messages.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import grpc


@dataclass
class SamplingParams:
    """Sampling parameters; None means the tier's or the server's default.

    Ranges are checked by the server (INVALID_ARGUMENT naming the field).
    """
    max_tokens: Optional[int] = None            # >= 1
    temperature: Optional[float] = None         # >= 0; 0 is greedy
    top_k: Optional[int] = None                 # >= 0; 0 is no cut
    top_p: Optional[float] = None               # (0, 1]
    min_p: Optional[float] = None               # [0, 1]
    repetition_penalty: Optional[float] = None  # > 0; 1 is none
    presence_penalty: Optional[float] = None    # [-2, 2]
    frequency_penalty: Optional[float] = None   # [-2, 2]
    seed: Optional[int] = None
    stop: List[str] = field(default_factory=list)            # not returned in the text
    stop_token_ids: List[int] = field(default_factory=list)  # besides EOS unless ignore_eos
    ignore_eos: Optional[bool] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = None          # 0..20


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str = "{}"  # JSON text of the arguments object
    type: str = "function"


@dataclass
class ChatMessage:
    role: str  # "system", "user", "assistant" or "tool"
    content: str = ""
    tool_calls: List[ToolCall] = field(default_factory=list)
    tool_call_id: str = ""
    name: str = ""


@dataclass
class RetryPolicy:
    """Retries before the first token only; see Client for the rule."""
    max_attempts: int = 4           # calls at most, the first included; 1 disables retries
    initial_backoff: float = 0.1    # seconds
    max_backoff: float = 5.0
    backoff_multiplier: float = 2.0
    jitter: float = 0.2             # each wait scaled by a random factor in [1-j, 1+j]
    max_retry_after: float = 30.0   # a longer server hint is not waited for

    def validate(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"retry.max_attempts: {self.max_attempts} is below 1")
        if not 0 <= self.initial_backoff <= self.max_backoff:
            raise ValueError("retry: need 0 <= initial_backoff <= max_backoff")
        if self.backoff_multiplier < 1:
            raise ValueError(f"retry.backoff_multiplier: {self.backoff_multiplier} is below 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"retry.jitter: {self.jitter} is outside [0, 1]")


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Timings:
    """Milliseconds, measured by the router from its admission of the request."""
    queue_ms: float = 0.0
    ttft_ms: float = 0.0
    prefill_ms: float = 0.0
    transfer_ms: float = 0.0  # KV + GKA state, prefill -> decode
    decode_ms: float = 0.0
    total_ms: float = 0.0
    admission_ms: float = 0.0  # waiting in the router's admission queue (part of queue_ms)
    router_ms: float = 0.0     # the router's own work before the first token (part of ttft_ms)


@dataclass
class ServedBy:
    router_id: str = ""
    prefill_worker_id: str = ""
    decode_worker_id: str = ""


@dataclass
class NumIter:
    """GKA solver iterations actually used (after tier defaults and clamping)."""
    prefill: int = 0
    decode: int = 0


@dataclass
class TopLogprob:
    token_id: int
    logprob: float
    text: str = ""


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: List[TopLogprob] = field(default_factory=list)


@dataclass
class Chunk:
    """One streamed piece: new token ids and their text delta (may be empty while the router
    holds back an incomplete UTF-8 sequence or a possible stop-string prefix)."""
    token_ids: List[int] = field(default_factory=list)
    text: str = ""
    usage: Usage = field(default_factory=Usage)  # cumulative
    logprobs: List[TokenLogprob] = field(default_factory=list)


@dataclass
class Result:
    """A finished request: every token and the whole text, plus the server's Final."""
    request_id: str = ""
    token_ids: List[int] = field(default_factory=list)
    text: str = ""
    logprobs: List[TokenLogprob] = field(default_factory=list)
    finish_reason: str = "unspecified"  # "stop", "length", "abort", "error"
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    served_by: ServedBy = field(default_factory=ServedBy)
    tier: str = ""
    num_iter: NumIter = field(default_factory=NumIter)
    degrade_rung: int = 0  # the tier's degrade-ladder rung that served it (0: as configured)
    matched_stop: str = ""
    matched_stop_token_id: Optional[int] = None
    attempts: int = 0  # calls made (> 1 after retries before the first token)


@dataclass
class TokenizeResult:
    token_ids: List[int] = field(default_factory=list)
    prompt_text: str = ""  # the rendered prompt for chat input


@dataclass
class TierInfo:
    name: str
    num_iter: NumIter
    num_iter_min: int = 0
    num_iter_max: int = 0
    priority: int = 0
    max_tokens: int = 0


@dataclass
class ModelInfo:
    model: str = ""
    max_context_tokens: int = 0
    vocab_size: int = 0
    has_tokenizer: bool = False
    eos_token_ids: List[int] = field(default_factory=list)
    default_tier: str = ""
    tiers: List[TierInfo] = field(default_factory=list)


class GkaError(Exception):
    """A failed call.

    code: grpc.StatusCode (the server's code when it sent a structured error).
    from_server: the server sent a gka.serving.v1.Error (otherwise the transport, the
      deadline, a cancellation or authentication failed).
    retryable: the server's verdict when from_server, else True for UNAVAILABLE: sending the
      same request again may succeed. The client already retried when it was allowed to.
    retry_after: the server's hint in seconds ("retry-after-ms" / "retry-after" trailers).
    attempts: calls made, retries included.
    """

    def __init__(self, code: grpc.StatusCode, message: str, *, from_server: bool = False,
                 retryable: bool = False, retry_after: Optional[float] = None,
                 attempts: int = 0):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.from_server = from_server
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = attempts

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

