# The five lines a user writes: connect to a gkaserve router and ask one question.
#   python hello.py [HOST:PORT]        (default 127.0.0.1:50051)
import sys

import gkaserve

client = gkaserve.Client(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051")
reply = client.chat([{"role": "user", "content": "What is linear attention?"}],
                    sampling=gkaserve.SamplingParams(max_tokens=32))
print(reply.text)
