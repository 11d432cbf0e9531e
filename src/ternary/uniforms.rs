//! Uniform blocks of the ternary shaders. `build.rs` reads this file too: it emits each entry
//! as the WGSL `struct Params` of the shaders listed after `for` (keep one entry to a
//! `uniforms!` item; field types are u32, i32 or f32).

uniforms! {
    /// `ternary_row_abs_sum`: sum |W| over each of `n` rows of `k`.
    RowAbsSumUniform for ["ternary_row_abs_sum"] { n: u32, k: u32 }
    /// `ternary_gamma`: one gamma per partition of `rows_per_part` rows.
    GammaUniform for ["ternary_gamma"] { parts: u32, rows_per_part: u32, k: u32 }
    /// `ternary_quant_pack`: quantize with the partition's gamma and pack `kw` words a row.
    QuantPackUniform for ["ternary_quant_pack"] { n: u32, k: u32, kw: u32, rows_per_part: u32 }
    /// `ternary_pack` / `ternary_unpack`: i8 values <-> 2-bit codes, `kw` words a row.
    PackUniform for ["ternary_pack", "ternary_unpack"] { n: u32, k: u32, kw: u32 }
    /// `ternary_rmsnorm_quant`: `kp` is `k` padded to 16; `glu` is 0 or 1.
    QuantUniform for ["ternary_rmsnorm_quant"] {
        m: u32, k: u32, kp: u32, projections: u32, x_off: u32, x_stride: u32, eps: f32, glu: u32,
    }
    /// `ternary_gemv` / `ternary_gemm`: booleans are 0 or 1; the tile counts are the GEMM's.
    MatmulUniform for ["ternary_gemv", "ternary_gemm"] {
        m: u32, n: u32, kw: u32, projections: u32, parts: u32, out_off: u32, out_stride: u32, accumulate: u32,
        write_acc: u32, n_tiles: u32, m_tiles: u32,
    }
    /// `ternary_bitlinear_gemv`: norm, quantize and GEMV fused; `row_groups` is `n / 16` rounded up.
    FusedUniform for ["ternary_bitlinear_gemv"] {
        m: u32, n: u32, k: u32, kw: u32, projections: u32, parts: u32, x_off: u32, x_stride: u32, out_off: u32,
        out_stride: u32, accumulate: u32, eps: f32, row_groups: u32,
    }
    /// `ternary_mlgru_step`: one token per sequence; `has_lb` is 0 or 1.
    StepUniform for ["ternary_mlgru_step"] {
        batch: u32, d: u32, slots: u32, fcg_off: u32, fcg_stride: u32, has_lb: u32, eps: f32,
    }
    /// The chunked scan's local and apply passes (`shaders/include/ternary_scan.wgsli`); `a_off`
    /// and `h_off` index the f32 workspace.
    ScanUniform for ["ternary_scan_local", "ternary_scan_apply"] {
        d: u32, tokens: u32, max_len: u32, chunk: u32, chunks: u32, seqs: u32, fcg_off: u32, fcg_stride: u32,
        has_lb: u32, a_off: u32, h_off: u32,
    }
    /// The chunked scan's carry pass, which also updates the state pool.
    CarryUniform for ["ternary_scan_carry"] {
        d: u32, tokens: u32, max_len: u32, chunks: u32, seqs: u32, slots: u32, a_off: u32, h_off: u32,
    }
    /// `ternary_gate_norm`: the scan's output gate and RMSNorm.
    GateNormUniform for ["ternary_gate_norm"] { tokens: u32, d: u32, fcg_off: u32, fcg_stride: u32, eps: f32 }
}
