# The asyncio client: several requests at once, one of them streamed.
#   python async_stream.py [HOST:PORT]
import asyncio
import sys

import gkaserve


async def main(address: str) -> None:
    async with gkaserve.AsyncClient(address) as client:
        params = gkaserve.SamplingParams(max_tokens=16)
        async for chunk in client.generate_stream("Once upon a time", sampling=params):
            print(chunk.text, end="", flush=True)
        print()
        answers = await asyncio.gather(*(
            client.chat([{"role": "user", "content": q}], sampling=params)
            for q in ("What is GKA?", "What is a KV cache?")))
        for answer in answers:
            print(answer.text)


asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"))
