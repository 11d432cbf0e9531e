//! Uniform blocks of the MoM shaders. `build.rs` reads this file too: it emits each entry as
//! the WGSL `struct Params` of the shaders listed after `for` (keep one entry to a `uniforms!`
//! item; field types are u32, i32 or f32). Offsets are in elements of the bound buffers.

uniforms! {
    /// `mom_route`: `logits [tokens, memories]`, `idx`/`weights [tokens, topk]`.
    RouteUniform for ["mom_route"] {
        tokens: u32, memories: u32, topk: u32, logits_off: u32, idx_off: u32, w_off: u32,
    }
    /// `mom_permute_count` / `mom_permute_place`: `groups = (M + shared) * seqs` streams.
    PermuteUniform for ["mom_permute_count", "mom_permute_place"] {
        tokens: u32, seqs: u32, memories: u32, topk: u32, has_shared: u32, groups: u32, idx_off: u32, cu_off: u32,
        order_off: u32, inv_off: u32, cu_mem_off: u32, counts_off: u32,
    }
    /// `mom_unpermute`: `n = topk + shared` pairs per token.
    UnpermuteUniform for ["mom_unpermute"] {
        tokens: u32, topk: u32, n: u32, width: u32, rows: u32, y_off: u32, inv_off: u32, w_off: u32, out_off: u32,
    }
    /// `mom_short_conv`: `mems = M + shared`, `pw` the projection row width, `chan = 2HK + HV`.
    ShortConvUniform for ["mom_short_conv"] {
        tokens: u32, seqs: u32, mems: u32, heads: u32, head_k: u32, head_v: u32, conv: u32, slots: u32, rows: u32,
        streams: u32, pw: u32, chan: u32, x_off: u32, order_off: u32, cu_off: u32, slot_off: u32, cw_off: u32,
        gp_off: u32, cs_off: u32, qkv_off: u32, gb_off: u32, w0: u32, w1: u32,
    }
    /// `mom_step`: one workgroup per (head, sequence).
    StepUniform for ["mom_step"] {
        batch: u32, memories: u32, topk: u32, has_shared: u32, heads: u32, head_k: u32, head_v: u32, conv: u32,
        slots: u32, rule: u32, v_first: u32, scale: f32, pw: u32, x_off: u32, cw_off: u32, gp_off: u32,
        idx_off: u32, w_off: u32, slot_off: u32, st_off: u32, cs_off: u32, o_off: u32,
    }
    /// `mom_chunk`: one workgroup per (64 state columns, head, stream); `chunk` rows per tile
    /// (at most 32 here).
    /// A dispatch walks tiles `t0..t1` of each stream.
    ChunkUniform for ["mom_chunk"] {
        streams: u32, seqs: u32, rows: u32, heads: u32, head_k: u32, head_v: u32, slots: u32, chunk: u32, rule: u32,
        v_first: u32, scale: f32, vtiles: u32, qkv_off: u32, gb_off: u32, cu_off: u32, slot_off: u32, st_off: u32,
        o_off: u32, t0: u32, t1: u32,
    }
    /// `mom_gated_norm`: one workgroup per (token, head) row of `head_v`.
    GatedNormUniform for ["mom_gated_norm"] {
        rows: u32, head_v: u32, eps: f32, o_off: u32, gate_off: u32, w_off: u32, y_off: u32,
    }
    /// `mom_transport` / `mom_apply_state`: one workgroup per (64 columns, head, stream).
    PieceUniform for ["mom_transport", "mom_apply_state"] {
        streams: u32, seqs: u32, rows: u32, heads: u32, head_k: u32, head_v: u32, slots: u32, rule: u32,
        v_first: u32, scale: f32, qkv_off: u32, gb_off: u32, cu_off: u32, slot_off: u32, tr_off: u32, qt_off: u32,
        sin_off: u32, st_off: u32, o_off: u32, w0: u32, w1: u32,
    }
}
