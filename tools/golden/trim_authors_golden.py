#!/usr/bin/env python3
"""Copy the slice of ../shared/golden/authors-tiny that our tests use into tests/data.

    python3 tools/golden/trim_authors_golden.py [--src ../shared/golden/authors-tiny]

Writes tests/data/authors_tiny/{hybrid_fp32,plain_fp32}/ (config.json, model.safetensors)
and golden.safetensors holding the strict fp32 keys `hyb.fp32ieee.*` (without the
hidden.* captures; states at num_iter 30 and at L200) and the exact attention-only keys `plain.fp32.*` plus `prompt.*`.
Pure Python (no torch): safetensors is an 8-byte header length, a JSON header, raw bytes.
"""
import argparse
import json
import os
import shutil
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_safetensors(path):
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
        data = fh.read()
    header.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items()}


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(hj)))
        fh.write(hj)
        for b in blobs:
            fh.write(b)


def write_eval_golden(strict, path, length, num_iter):
    """The authors' keys mapped to `gka eval`'s (make_golden.py's) keys and layouts.

    input_ids = prompt.L<len>; decode_ids = gen_tokens (t_0 = argmax of the last prefill logit,
    decode step i feeds t_i); conv caches [B, C, 4] newest last -> [B, C, 3] = columns 1..3.
    """
    p = f"hyb.fp32ieee.it{num_iter}.L{length}."
    out = {"input_ids": strict[f"prompt.L{length}"], "decode_ids": strict[p + "gen_tokens"],
           "prefill_logits": strict[p + "prefill_logits"],
           "decode_logits": strict[p + "decode_logits"]}
    for k, (dtype, shape, raw) in strict.items():
        if not k.startswith(p + "prefill_state."):
            continue
        name = "state." + k[len(p + "prefill_state."):]
        if ".conv_" in name:
            b, c, w = shape
            vals = struct.unpack(f"<{b * c * w}f", raw)
            kept = [vals[i * w + j] for i in range(b * c) for j in range(1, w)]
            raw, shape = struct.pack(f"<{len(kept)}f", *kept), [b, c, w - 1]
        out[name] = (dtype, shape, raw)
    write_safetensors(path, out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=os.path.join(ROOT, "..", "shared", "golden", "authors-tiny"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "authors_tiny"))
    a = ap.parse_args()
    for model in ("hybrid_fp32", "plain_fp32"):
        os.makedirs(os.path.join(a.out, model), exist_ok=True)
        for f in ("config.json", "generation_config.json", "model.safetensors"):
            shutil.copyfile(os.path.join(a.src, model, f), os.path.join(a.out, model, f))
    keep = {}
    strict = read_safetensors(os.path.join(a.src, "golden", "golden_fp32_ieee.safetensors"))
    for k, v in strict.items():
        if k.startswith("prompt."):
            keep[k] = v
        elif k.startswith("hyb.fp32ieee.") and ".hidden." not in k:
            # States: every length at num_iter 30, and L200 (several chunks) at every
            # num_iter. Logits and tokens: everything. Keeps the data near 8 MiB.
            is_state = "_state." in k
            if not is_state or ".it30." in k or ".L200." in k:
                keep[k] = v
    tf32 = read_safetensors(os.path.join(a.src, "golden", "golden_fp32.safetensors"))
    for k, v in tf32.items():
        if k.startswith("plain.fp32."):
            keep[k] = v
    write_safetensors(os.path.join(a.out, "golden.safetensors"), keep)
    write_eval_golden(strict, os.path.join(a.out, "eval_L64_it30.safetensors"), 64, 30)
    # The authors' own bf16 path on the bf16-cast weights, as an eval result: the number our
    # bf16 engine must beat against the strict fp32 golden (gka compare).
    bf16 = read_safetensors(os.path.join(a.src, "golden", "golden_bf16.safetensors"))
    write_safetensors(os.path.join(a.out, "authors_bf16_L64_it30.safetensors"),
                      {"prefill_logits": bf16["hyb.bf16.it30.L64.prefill_logits"],
                       "decode_logits": bf16["hyb.bf16.it30.L64.decode_logits"]})
    total = sum(len(v[2]) for v in keep.values())
    print(f"wrote {len(keep)} tensors ({total / 2**20:.1f} MiB) to {a.out}/golden.safetensors")


if __name__ == "__main__":
    main()
