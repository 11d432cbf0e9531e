#!/usr/bin/env python3
"""PyTorch baselines on the same card, in the same run as `mllm-kernels bench`.

Ceilings: device-to-device copy bandwidth and the bf16 matrix rate. Then, per family, the
plain-PyTorch version of each benched kernel at the same shapes, with inputs rotated past twice
the L2 size like the Rust bench. Prints a table and writes JSON (--json FILE).
"""
import argparse
import json
import math
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("baselines: PyTorch is not installed", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("baselines: no CUDA device for PyTorch", file=sys.stderr)
        return 1
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    rows = []

    def timed(fn, iters):
        for _ in range(3):
            fn(0)
        torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for i in range(iters):
            fn(i)
        e.record()
        torch.cuda.synchronize()
        return s.elapsed_time(e) * 1e3 / iters  # microseconds

    def copies_for(nbytes):
        return max(1, min(64, math.ceil(2 * l2 / max(nbytes, 1))))

    def record(kernel, shape, dtype, us, nbytes, flops, note=""):
        r = {"kernel": kernel, "shape": shape, "dtype": dtype, "time_us": us,
             "gbps": nbytes / (us * 1e-6) / 1e9, "tflops": flops / (us * 1e-6) / 1e12, "note": note}
        rows.append(r)
        print(f"{kernel:34} {dtype:5} {shape:22} {us:10.2f} us {r['gbps']:9.1f} GB/s {r['tflops']:8.3f} TFLOP/s {note}")

    # Ceilings.
    n = 1 << 30
    a, b = torch.empty(n, dtype=torch.uint8, device=dev), torch.empty(n, dtype=torch.uint8, device=dev)
    us = timed(lambda i: b.copy_(a), 10)
    copy_gbps = 2 * n / (us * 1e-6) / 1e9
    record("ceiling.copy", "1 GiB", "u8", us, 2 * n, 0)
    del a, b
    m = 8192
    x = torch.randn(m, m, dtype=torch.bfloat16, device=dev)
    y = torch.randn(m, m, dtype=torch.bfloat16, device=dev)
    us = timed(lambda i: x @ y, 20)
    record("ceiling.matmul", f"{m}^3", "bf16", us, 3 * m * m * 2, 2 * m ** 3)
    del x, y

    # core.rmsnorm
    for (r, c) in [(1, 7168), (4096, 7168)]:
        nbytes = (2 * r * c + c) * 2
        k = copies_for(nbytes)
        xs = [torch.randn(r, c, dtype=torch.bfloat16, device=dev) for _ in range(k)]
        w = torch.rand(c, dtype=torch.bfloat16, device=dev) + 0.5
        def f(i):
            x = xs[i % k]
            return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16) * w
        us = timed(f, args.iters)
        record("core.rmsnorm (torch eager)", f"{r}x{c}", "bf16", us, nbytes, 4 * r * c)
        if hasattr(torch.nn.functional, "rms_norm"):
            us = timed(lambda i: torch.nn.functional.rms_norm(xs[i % k], (c,), w, 1e-6), args.iters)
            record("core.rmsnorm (F.rms_norm)", f"{r}x{c}", "bf16", us, nbytes, 4 * r * c)
        del xs

    # core.merge_states
    s, d = 4096, 512
    nbytes = 3 * s * d * 2 + 12 * s
    k = copies_for(nbytes)
    sets = [(torch.randn(s, d, dtype=torch.bfloat16, device=dev), torch.randn(s, device=dev),
             torch.randn(s, d, dtype=torch.bfloat16, device=dev), torch.randn(s, device=dev)) for _ in range(k)]
    def merge(i):
        o1, l1, o2, l2 = sets[i % k]
        mx = torch.maximum(l1, l2)
        w1, w2 = torch.exp(l1 - mx), torch.exp(l2 - mx)
        lse = mx + torch.log(w1 + w2)
        return ((o1.float() * w1[:, None] + o2.float() * w2[:, None]) / (w1 + w2)[:, None]).to(torch.bfloat16), lse
    us = timed(merge, args.iters)
    record("core.merge_states (torch eager)", f"{s}x{d}", "bf16", us, nbytes, 3 * s * d)
    del sets

    # core.gather_rows
    rows_, src_rows, cols = 2048, 8192, 4096
    src = torch.randn(src_rows, cols, dtype=torch.bfloat16, device=dev)
    idx = torch.randint(0, src_rows, (rows_,), device=dev)
    us = timed(lambda i: src.index_select(0, idx), args.iters)
    record("core.gather_rows (index_select)", f"{rows_}<-{src_rows}x{cols}", "bf16", us, 2 * rows_ * cols * 2 + 4 * rows_, 0)
    del src

    # ternary: the dense bf16 GEMV/GEMM a BitLinear replaces (weights rotated past 2x L2).
    for (nn, kk) in [(2048, 2048), (5632, 2048), (2048, 5632), (6912, 2560), (3200, 20480)]:
        for mm in [1]:
            wbytes = nn * kk * 2
            k = copies_for(wbytes)
            ws = [torch.randn(nn, kk, dtype=torch.bfloat16, device=dev) for _ in range(k)]
            xv = torch.randn(mm, kk, dtype=torch.bfloat16, device=dev)
            us = timed(lambda i: xv @ ws[i % k].t(), args.iters)
            record("ternary.dense_bf16_gemv", f"M{mm} {nn}x{kk}", "bf16", us, wbytes + 2 * mm * (kk + nn), 2 * mm * nn * kk)
            del ws
    for mm in [512, 4096]:
        nn, kk = 5632, 2048
        w = torch.randn(nn, kk, dtype=torch.bfloat16, device=dev)
        xv = torch.randn(mm, kk, dtype=torch.bfloat16, device=dev)
        us = timed(lambda i: xv @ w.t(), args.iters)
        record("ternary.dense_bf16_gemm", f"M{mm} {nn}x{kk}", "bf16", us, 2 * (nn * kk + mm * kk + mm * nn), 2 * mm * nn * kk)

    # mla.mla_decode: the same absorbed decode in PyTorch over the paged cache (gathered per
    # sequence through the block table), eager and through SDPA; P = 64, L = 512, R = 64, bf16.
    for (bb, sq, hh, n) in [(64, 1, 16, 4096), (64, 1, 128, 4096), (128, 2, 64, 8192), (128, 1, 32, 8192)]:
        lat, rp, pg = 512, 64, 64
        npages = bb * (n // pg)
        cache = torch.randn(npages, pg, lat + rp, dtype=torch.bfloat16, device=dev)
        table = torch.randperm(npages, device=dev).view(bb, n // pg)
        q = torch.randn(bb, sq, hh, lat + rp, dtype=torch.bfloat16, device=dev)
        scale = (lat + rp) ** -0.5
        nbytes = cache.numel() * 2 + q.numel() * 2 + bb * sq * hh * lat * 2
        flops = 2 * bb * sq * hh * n * (2 * lat + rp)
        mask = torch.ones(sq, n, dtype=torch.bool, device=dev).tril(n - sq)

        def eager(i):
            kv = cache[table].view(bb, n, lat + rp)
            s = torch.einsum("bqhd,bnd->bhqn", q.float(), kv.float()) * scale
            s = s.masked_fill(~mask, float("-inf"))
            return torch.einsum("bhqn,bnd->bqhd", s.softmax(-1), kv[..., :lat].float()).bfloat16()

        def sdpa(i):
            kv = cache[table].view(bb, 1, n, lat + rp)
            return torch.nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), kv, kv[..., :lat], attn_mask=mask, scale=scale)

        for name, fn in [("eager", eager), ("sdpa", sdpa)]:
            try:
                us = timed(fn, max(5, args.iters // 5))
                record(f"mla.mla_decode (torch {name}, gathered)", f"B{bb} Sq{sq} H{hh} len{n}", "bf16", us, nbytes, flops)
            except RuntimeError as err:  # out of memory at the largest shapes
                print(f"baselines: mla {name} B{bb} H{hh}: {err}", file=sys.stderr)
        del cache

    # mom: the decode step as the reference layer's recurrent form in PyTorch (B sequences x
    # (top-2 + shared) memories, H 4, K = V = 256, f32 states), and fla's Triton kernels where
    # its pure-Python package is installed (fused_recurrent for the step, chunk for prefill).
    hh, kd, vd = 4, 256, 256
    for bb in [1, 64, 256]:
        n = bb * 3
        st = torch.randn(n, hh, kd, vd, device=dev)
        q = torch.nn.functional.normalize(torch.randn(n, hh, kd, device=dev), dim=-1) * kd ** -0.5
        k = torch.nn.functional.normalize(torch.randn(n, hh, kd, device=dev), dim=-1)
        v = torch.randn(n, hh, vd, device=dev)
        g = -torch.rand(n, hh, device=dev)
        beta = torch.rand(n, hh, device=dev)
        nbytes = 2 * st.numel() * 4

        def recurrent(i):
            s = st * g.exp()[..., None, None]
            u = beta[..., None] * (v - torch.einsum("nhkv,nhk->nhv", s, k))
            s = s + k[..., :, None] * u[..., None, :]
            st.copy_(s)
            return torch.einsum("nhkv,nhk->nhv", s, q)

        us = timed(recurrent, args.iters)
        record("mom.gated_delta_step (torch recurrent)", f"B{bb} M4 top2 H4 K256 V256", "f32 state", us, nbytes, 6.0 * n * hh * kd * vd)
        try:
            from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule
            qb, kb, vb = (x.bfloat16().view(1, n, hh, -1) for x in (q, k, v))
            fn = lambda i: fused_recurrent_gated_delta_rule(qb, kb, vb, g.view(1, n, hh), beta.bfloat16().view(1, n, hh),
                                                            initial_state=st.transpose(-1, -2).contiguous(),
                                                            output_final_state=True, cu_seqlens=torch.arange(n + 1, device=dev))
            us = timed(fn, args.iters)
            record("mom.gated_delta_step (fla fused_recurrent)", f"B{bb} M4 top2 H4 K256 V256", "bf16", us, nbytes, 6.0 * n * hh * kd * vd)
        except Exception as err:  # fla not installed, or its API moved
            print(f"baselines: fla fused_recurrent B{bb}: {err}", file=sys.stderr)
        del st
    for tt in [2048, 8192, 32768]:
        try:
            from fla.ops.gated_delta_rule import chunk_gated_delta_rule
            q, k, v = (torch.randn(1, tt, hh, kd, dtype=torch.bfloat16, device=dev) for _ in range(3))
            g = -torch.rand(1, tt, hh, device=dev)
            beta = torch.rand(1, tt, hh, dtype=torch.bfloat16, device=dev)
            fn = lambda i: chunk_gated_delta_rule(q, k, v, g, beta, use_qk_l2norm_in_kernel=True)
            us = timed(fn, max(5, args.iters // 5))
            nbytes = 2 * (3 * q.numel() + 2 * g.numel())
            record("mom.gated_delta_chunk (fla chunk)", f"T{tt} H4 K256 V256", "bf16", us, nbytes, 6.0 * tt * hh * kd * vd)
        except Exception as err:
            print(f"baselines: fla chunk T{tt}: {err}", file=sys.stderr)
            break

    # ternary: the MLGRU recurrence at the bench shapes (d 2048). The step: B sequences of one
    # token, eager PyTorch (gates, state update, output gate and norm) and flash-linear-attention's
    # HGRN recurrence (the state update alone: x = (1 - f) c, log-gate log f) where its package is
    # present. The scan: 4 sequences of 1024 tokens through fla's chunk_hgrn.
    dd = 2048
    for bb in [64, 256]:
        fcg = torch.randn(bb, 3 * dd, dtype=torch.bfloat16, device=dev)
        h = torch.randn(bb, dd, device=dev)
        w = torch.rand(dd, dtype=torch.bfloat16, device=dev) + 0.5
        nbytes = fcg.numel() * 2 + 2 * h.numel() * 4 + bb * dd * 2

        def step(i):
            f, c, g = fcg.float().split(dd, dim=-1)
            f = torch.sigmoid(f)
            h.mul_(f).add_((1 - f) * torch.nn.functional.silu(c))
            o = h * torch.sigmoid(g)
            return torch.nn.functional.rms_norm(o, (dd,), w.float(), 1e-6).bfloat16()

        us = timed(step, args.iters)
        record("ternary.mlgru_step (torch eager)", f"B{bb} d{dd}", "bf16", us, nbytes, 10.0 * bb * dd)
        try:
            from fla.ops.hgrn import fused_recurrent_hgrn
            f = torch.sigmoid(fcg[:, :dd].float())
            x = ((1 - f) * torch.nn.functional.silu(fcg[:, dd:2 * dd].float())).bfloat16().view(bb, 1, dd)
            lg = f.log().bfloat16().view(bb, 1, dd)
            fn = lambda i: fused_recurrent_hgrn(x, lg, initial_state=h, output_final_state=True)
            us = timed(fn, args.iters)
            record("ternary.mlgru_step (fla fused_recurrent_hgrn)", f"B{bb} d{dd}", "bf16", us,
                   2 * x.numel() * 2 + 2 * h.numel() * 4, 3.0 * bb * dd, "state update only")
        except Exception as err:  # fla not installed, or its API moved
            print(f"baselines: fla fused_recurrent_hgrn B{bb}: {err}", file=sys.stderr)
        del fcg, h
    try:
        from fla.ops.hgrn import chunk_hgrn
        bb, tt = 4, 1024
        x = torch.randn(bb, tt, dd, dtype=torch.bfloat16, device=dev)
        lg = torch.nn.functional.logsigmoid(torch.randn(bb, tt, dd, device=dev)).bfloat16()
        h0 = torch.zeros(bb, dd, device=dev)
        fn = lambda i: chunk_hgrn(x, lg, initial_state=h0, output_final_state=True)
        us = timed(fn, max(5, args.iters // 5))
        record("ternary.mlgru_scan (fla chunk_hgrn)", f"4 seqs T{tt} d{dd}", "bf16", us, 3 * x.numel() * 2,
               3.0 * bb * tt * dd, "recurrence only")
    except Exception as err:
        print(f"baselines: fla chunk_hgrn: {err}", file=sys.stderr)

    # visual: dense causal attention through SDPA at the bench shapes (8 AnyRes-sized sequences
    # of 35 + 2880 + 60 tokens, 32 query heads / 8 KV heads of 128): sparse_attention at keep
    # ratio r is compared with this time scaled by the share of attention work kept.
    bb, hq, hkv, dd = 8, 32, 8, 128
    for keep in [1.0, 0.5, 0.25, 0.1]:
        tt = 35 + 60 + round(2880 * keep)
        try:
            q = torch.randn(bb, hq, tt, dd, dtype=torch.bfloat16, device=dev)
            k = torch.randn(bb, hkv, tt, dd, dtype=torch.bfloat16, device=dev)
            v = torch.randn(bb, hkv, tt, dd, dtype=torch.bfloat16, device=dev)
            fn = lambda i: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            us = timed(fn, max(5, args.iters // 5))
            nbytes = 2 * (q.numel() * 2 + k.numel() + v.numel())
            record("visual.sparse_attention (torch SDPA dense)", f"B{bb} {tt} tokens H32/8 D128", "bf16", us, nbytes,
                   2 * bb * hq * dd * tt * tt)
        except Exception as err:
            print(f"baselines: SDPA T{tt}: {err}", file=sys.stderr)

    out = {"device": props.name, "l2_bytes": l2, "copy_gbps": copy_gbps, "rows": rows}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
