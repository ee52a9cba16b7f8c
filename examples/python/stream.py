# Streaming with the Python SDK: chunks as they come, the final result, cancellation and
# structured errors.
#   python stream.py [HOST:PORT]   (the API key, if the router wants one, from $GKA_API_KEY)
import sys

import gkaserve

address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
# timeout bounds every call, retries included; retries happen only before the first token.
client = gkaserve.Client(address, timeout=60,
                         retry=gkaserve.RetryPolicy(max_attempts=4, initial_backoff=0.1))

stream = client.generate_stream("The capital of France is",
                                sampling=gkaserve.SamplingParams(max_tokens=16, temperature=0.0))
for chunk in stream:
    print(chunk.text, end="", flush=True)
result = stream.result()
print(f"\n[{result.finish_reason}, {result.usage.completion_tokens} tokens, decode num_iter "
      f"{result.num_iter.decode}, served by {result.served_by.decode_worker_id}]")

# Cancel after the first chunk: the router aborts the request on its workers.
with client.chat_stream([{"role": "user", "content": "Count to one hundred."}],
                        sampling=gkaserve.SamplingParams(max_tokens=64)) as stream:
    for chunk in stream:
        stream.cancel()
try:
    stream.result()
    print("cancelled call ended: finished first")
except gkaserve.GkaError as e:
    print(f"cancelled call ended: {e.code.name}")

# Errors carry the server's structured error.
try:
    client.generate("Hi", tier="no-such-tier", sampling=gkaserve.SamplingParams(max_tokens=16))
except gkaserve.GkaError as e:
    print(f"error: {e.code.name} retryable={e.retryable}")
