"""gkaserve: Python client SDK for gkaserve clusters (the router's gRPC API gka.serving.v1).

    import gkaserve
    client = gkaserve.Client("127.0.0.1:50051")
    result = client.chat([{"role": "user", "content": "What is linear attention?"}],
                         sampling=gkaserve.SamplingParams(max_tokens=64))
    print(result.text, result.finish_reason, result.num_iter)

    for chunk in client.generate_stream("Once upon a time"):
        print(chunk.text, end="", flush=True)

Client (blocking, thread-safe) and AsyncClient (asyncio) share semantics: a per-call timeout
bounding retries too, retries with backoff on UNAVAILABLE / hinted RESOURCE_EXHAUSTED only
before the first token, cancellation through Stream.cancel(), and GkaError carrying the
server's structured error (code, message, retryable).
"""
from ._wire import VERSION as __version__
from .aio import AsyncClient, AsyncStream
from .client import Client, Stream
from .types import (ChatMessage, Chunk, GkaError, ModelInfo, NumIter, Result, RetryPolicy,
                    SamplingParams, ServedBy, TierInfo, Timings, TokenizeResult, TokenLogprob,
                    ToolCall, TopLogprob, Usage)

__all__ = [
    "AsyncClient", "AsyncStream", "ChatMessage", "Chunk", "Client", "GkaError", "ModelInfo",
    "NumIter", "Result", "RetryPolicy", "SamplingParams", "ServedBy", "Stream", "TierInfo",
    "Timings", "TokenizeResult", "TokenLogprob", "ToolCall", "TopLogprob", "Usage",
    "__version__",
]
