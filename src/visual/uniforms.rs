//! Uniform blocks of the visual shaders. `build.rs` reads this file too: it emits each entry as
//! the WGSL `struct Params` of the shaders listed after `for` (keep one entry to a `uniforms!`
//! item; field types are u32, i32 or f32). Offsets are in elements of the bound buffers.

uniforms! {
    /// `visual_select`: mode 0 top-k, 1 cumulative mass, 2 above mean.
    SelectUniform for ["visual_select"] {
        seqs: u32, n: u32, mode: u32, k: u32, tau: f32, has_order: u32, score_off: u32, lens_off: u32,
        order_off: u32, idx_off: u32, count_off: u32, per_seq_k: u32, keep_off: u32,
    }
    /// `visual_compact`: one workgroup per sequence.
    CompactUniform for ["visual_compact"] {
        seqs: u32, tokens: u32, n: u32, cu_off: u32, seg_off: u32, idx_off: u32, count_off: u32, rows_off: u32,
        pos_off: u32, out_cu_off: u32,
    }
    /// `visual_row_lse` / `visual_mass`: `lse_off` indexes the caller's LSE or the workspace;
    /// `visual_mass` adds rater rows `r0..r1` to the masses (writes them when `r0` is 0).
    MassUniform for ["visual_row_lse", "visual_mass"] {
        seqs: u32, tokens: u32, rows: u32, heads: u32, kv_heads: u32, dim: u32, n: u32, scale: f32, hpo: u32,
        q_off: u32, qpos_off: u32, qw_off: u32, k_off: u32, cu_off: u32, seg_off: u32, lse_off: u32, mass_off: u32,
        ws_off: u32, r0: u32, r1: u32,
    }
    /// `visual_sparse_attention`: one workgroup per (token, head).
    SparseUniform for ["visual_sparse_attention"] {
        seqs: u32, tokens: u32, heads: u32, kv_heads: u32, dim: u32, scale: f32, q_off: u32, k_off: u32, v_off: u32,
        cu_off: u32, pos_off: u32, o_off: u32, lse_off: u32, tq: u32, cuq_off: u32, posq_off: u32,
    }
    /// `visual_neighbor_attention`: one workgroup per (token, head); `has_mask` says whether
    /// `head_mask` is bound (else a placeholder).
    NeighborUniform for ["visual_neighbor_attention"] {
        seqs: u32, tokens: u32, heads: u32, kv_heads: u32, dim: u32, scale: f32, radius: u32, causal: u32,
        has_mask: u32, q_off: u32, k_off: u32, v_off: u32, cu_off: u32, img_off: u32, mask_off: u32, o_off: u32,
        lse_off: u32,
    }
    /// `visual_merge_assign` / `visual_merge_mean`: the field names `kept()` reads match
    /// `CompactUniform`'s (the shaders share `include/visual_kept.wgsli`).
    MergeUniform for ["visual_merge_assign", "visual_merge_mean"] {
        seqs: u32, tokens: u32, n: u32, dim: u32, x_off: u32, cu_off: u32, seg_off: u32, idx_off: u32, count_off: u32,
        assign_off: u32, merged_off: u32,
    }
}
