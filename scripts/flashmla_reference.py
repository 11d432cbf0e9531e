#!/usr/bin/env python3
"""FlashMLA's own test reference, transcribed, written as `check` files for `mla.mla_decode`.

The reference is `ref_mla` and `scaled_dot_product_attention` of FlashMLA's
tests/test_flash_mla.py (the dense decode test): block_table = arange, the cache past each
seq_len filled with NaN (so a kernel that reads it fails), v = k[..., :dv], scale = 576^-1/2,
causal mask tril(diagonal = s_k - s_q), lse [b, h_q, s_q]. Pure Python (no torch, no numpy), so
it runs anywhere; inputs are rounded to bf16 first, as the test's bf16 tensors are.

    python3 scripts/flashmla_reference.py OUT.safetensors [--b 2 --s_q 2 --h_q 16 --seqlens 100,37]
"""
import argparse
import json
import math
import random
import struct


def bf16_bits(x):
    b = struct.unpack("<I", struct.pack("<f", x))[0]
    if (b & 0x7FFFFFFF) > 0x7F800000:
        return 0x7FC0
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF


def bf16(x):
    return struct.unpack("<f", struct.pack("<I", bf16_bits(x) << 16))[0]


def scaled_dot_product_attention(q, k, v, causal):
    """q [h_q][s_q][d], k [s_k][d], v [s_k][dv] (h_kv = 1) -> out [h_q][s_q][dv], lse [h_q][s_q]."""
    s_q, s_k, d = len(q[0]), len(k), len(q[0][0])
    out, lse = [], []
    for qh in q:
        oh, lh = [], []
        for i, qi in enumerate(qh):
            w = [sum(a * b for a, b in zip(qi, kt)) / math.sqrt(d) for kt in k]
            if causal:  # torch.ones(s_q, s_k).tril(diagonal=s_k - s_q)
                w = [x if t <= i + s_k - s_q else float("-inf") for t, x in enumerate(w)]
            m = max(w)
            z = sum(math.exp(x - m) for x in w)
            lh.append(m + math.log(z))
            p = [math.exp(x - m) / z for x in w]
            oh.append([sum(p[t] * v[t][j] for t in range(s_k)) for j in range(len(v[0]))])
        out.append(oh)
        lse.append(lh)
    return out, lse


def write_safetensors(path, tensors, metadata):
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--b", type=int, default=2)
    ap.add_argument("--s_q", type=int, default=2)
    ap.add_argument("--h_q", type=int, default=16)
    ap.add_argument("--seqlens", default="100,37")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    random.seed(a.seed)
    d, dv, block_size = 576, 512, 64
    seqlens = [int(x) for x in a.seqlens.split(",")]
    assert len(seqlens) == a.b and all(s >= a.s_q for s in seqlens)
    pad = -(-max(seqlens) // 256) * 256
    nblocks = a.b * pad // block_size
    q = [[[[bf16(random.gauss(0, 1)) for _ in range(d)] for _ in range(a.h_q)] for _ in range(a.s_q)] for _ in range(a.b)]
    blocked_k = [[bf16(random.gauss(0, 1)) for _ in range(d)] for _ in range(nblocks * block_size)]
    for i in range(a.b):
        for t in range(seqlens[i], pad):
            blocked_k[i * pad + t] = [float("nan")] * d
    out, lse = [], []
    for i in range(a.b):
        k = blocked_k[i * pad : i * pad + seqlens[i]]
        v = [row[:dv] for row in k]
        qi = [[q[i][s][h] for s in range(a.s_q)] for h in range(a.h_q)]  # q[i].transpose(0, 1)
        o, l = scaled_dot_product_attention(qi, k, v, causal=True)
        out.append([[o[h][s] for h in range(a.h_q)] for s in range(a.s_q)])  # O.transpose(0, 1)
        lse.append(l)

    def bf16_bytes(vals):
        return b"".join(struct.pack("<H", bf16_bits(x)) for x in vals)

    flat = lambda x: [v for row in x for v in (flat(row) if isinstance(row, list) else [row])]
    table = list(range(nblocks))
    tensors = {
        "in.q": ("BF16", [a.b * a.s_q * a.h_q * d], bf16_bytes(flat(q))),
        "in.cache": ("BF16", [nblocks * block_size * d], bf16_bytes(flat(blocked_k))),
        "in.block_table": ("I32", [len(table)], struct.pack(f"<{len(table)}i", *table)),
        "in.seq_lens": ("I32", [a.b], struct.pack(f"<{a.b}i", *seqlens)),
        "out.o": ("BF16", [a.b * a.s_q * a.h_q * dv], bf16_bytes(flat(out))),
        "out.lse": ("F32", [a.b * a.h_q * a.s_q], struct.pack(f"<{a.b * a.h_q * a.s_q}f", *flat(lse))),
    }
    params = {"batch": a.b, "sq": a.s_q, "heads": a.h_q, "latent": dv, "rope": d - dv, "page_size": block_size,
              "pages": nblocks, "max_pages": pad // block_size, "scale": 1 / math.sqrt(d), "dtype": "bf16"}
    meta = {"kernel": "mla.mla_decode", "params": json.dumps(params),
            "source": "FlashMLA tests/test_flash_mla.py ref_mla, transcribed (scripts/flashmla_reference.py)"}
    write_safetensors(a.out, tensors, meta)
    print(f"wrote {a.out}: b {a.b} s_q {a.s_q} h_q {a.h_q} seqlens {seqlens}")


if __name__ == "__main__":
    main()
