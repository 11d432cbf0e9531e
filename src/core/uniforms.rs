//! Uniform blocks of the core shaders. `build.rs` reads this file too: it emits each entry as
//! the WGSL `struct Params` of the shaders listed after `for` (keep one entry to a `uniforms!`
//! item; field types are u32, i32 or f32).

uniforms! {
    /// `core_rmsnorm`: offsets and strides in elements of the bound buffers.
    RmsNormUniform for ["core_rmsnorm"] {
        rows: u32, cols: u32, x_off: u32, x_stride: u32, w_off: u32, y_off: u32, y_stride: u32, eps: f32,
    }
    /// `core_merge_states`: `l*_off` index the f32 log-sum-exp buffers.
    MergeUniform for ["core_merge_states"] {
        states: u32, dim: u32, o1_off: u32, o1_stride: u32, o2_off: u32, o2_stride: u32, o_off: u32, o_stride: u32,
        l1_off: u32, l2_off: u32, l_off: u32,
    }
    /// `core_gather_rows`: `src_rows` bounds the indices; `idx_off` indexes the i32 buffer.
    GatherUniform for ["core_gather_rows"] {
        rows: u32, cols: u32, src_rows: u32, src_off: u32, src_stride: u32, idx_off: u32, out_off: u32,
        out_stride: u32,
    }
    /// `core_noop` (the bench's launch floor): `n` only keeps the binding alive.
    NoopUniform for ["core_noop"] { n: u32 }
}
