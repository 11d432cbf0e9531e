//! Uniform blocks of the MLA shaders. `build.rs` reads this file too: it emits each entry as
//! the WGSL `struct Params` of the shaders listed after `for` (keep one entry to a `uniforms!`
//! item; field types are u32, i32 or f32).

uniforms! {
    /// `mla_decode` (and prefill, `prefill = 1`: one grid sequence of `sq` = all new tokens,
    /// `nseq` real sequences in `cu`): offsets and row strides in elements of the bound buffers;
    /// `ws` holds the partial outputs `[splits, B * Sq * H, L]` then their log-sum-exps.
    DecodeUniform for ["mla_decode"] {
        batch: u32, sq: u32, heads: u32, latent: u32, rope: u32, page_size: u32, pages: u32, max_pages: u32,
        splits: u32, q_off: u32, kv_off: u32, kv_stride: u32, pe_off: u32, pe_stride: u32, table_off: u32,
        lens_off: u32, ws_off: u32, scale: f32, prefill: u32, nseq: u32, cu_off: u32, cs_off: u32,
    }
    /// `mla_combine`: `total = B * Sq * H` rows of `latent`; `lse` is written `[B, H, Sq]`.
    CombineUniform for ["mla_combine"] {
        total: u32, sq: u32, heads: u32, latent: u32, splits: u32, ws_off: u32, o_off: u32, lse_off: u32,
    }
    /// `mla_append` and (fp8 cache) `mla_append_e4m3`: `unified` puts the rope key at the end
    /// of each `cache` row (the `pe_cache` binding is a placeholder then); `cs_off` is the
    /// scales' offset (fp8 only).
    AppendUniform for ["mla_append", "mla_append_e4m3"] {
        tokens: u32, latent: u32, rope: u32, n_slots: u32, unified: u32, kv_off: u32, pe_off: u32, slots_off: u32,
        cache_off: u32, pe_cache_off: u32, cs_off: u32,
    }
    /// `mla_rope`: `x_off`, strides in elements of x; the tables are `[tokens, dim/2]` f32.
    RopeUniform for ["mla_rope"] {
        tokens: u32, heads: u32, dim: u32, interleaved: u32, x_off: u32, head_stride: u32, token_stride: u32,
        cos_off: u32, sin_off: u32,
    }
    /// `mla_head_product` (absorb_q, project_out): strides in elements; `w` is read at
    /// `h * w_hs + k * w_ks + j * w_js`.
    HeadProductUniform for ["mla_head_product"] {
        tokens: u32, heads: u32, k: u32, n: u32, a_off: u32, a_ts: u32, a_hs: u32, o_off: u32, o_ts: u32, o_hs: u32,
        w_off: u32, w_hs: u32, w_ks: u32, w_js: u32,
    }
}
