"""A gRPC client with or without a client certificate, for the trust test (no generated code:
requests are protoc-encoded bytes). Prints the status code name of the call, and for OK the
number of responses.

  tls_client.py ADDR METHOD REQUEST_FILE [--ca F] [--cert F --key F] [--key-header K] [--stream]
"""
import argparse
import sys

import grpc


def main():
    p = argparse.ArgumentParser()
    p.add_argument("addr")
    p.add_argument("method")
    p.add_argument("request")
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--api-key")
    p.add_argument("--stream", action="store_true")
    p.add_argument("--out")
    a = p.parse_args()
    body = open(a.request, "rb").read()
    if a.ca:
        read = lambda f: open(f, "rb").read() if f else None
        creds = grpc.ssl_channel_credentials(read(a.ca), read(a.key), read(a.cert))
        channel = grpc.secure_channel(a.addr, creds)
    else:
        channel = grpc.insecure_channel(a.addr)
    metadata = [("authorization", "Bearer " + a.api_key)] if a.api_key else None
    identity = lambda b: b
    try:
        if a.stream:
            call = channel.unary_stream(a.method, request_serializer=identity,
                                        response_deserializer=identity)
            responses = list(call(body, metadata=metadata, timeout=30))
        else:
            call = channel.unary_unary(a.method, request_serializer=identity,
                                       response_deserializer=identity)
            responses = [call(body, metadata=metadata, timeout=30)]
    except grpc.RpcError as e:
        print(e.code().name, e.details(), file=sys.stderr)
        print(e.code().name)
        return
    if a.out:
        with open(a.out, "wb") as f:
            f.write(b"".join(responses[-1:]))
    print("OK", len(responses))


main()
