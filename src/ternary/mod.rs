//! MatMul-free ternary layers ("Scalable MatMul-free Language Modeling"; BitNet b1.58).
//!
//! Weights are ternary `{-1, 0, 1}` times one `gamma` per output partition, packed 16 to a u32
//! (code `t + 1`, weight k at bits `2 * (k % 16)` of word `k / 16`, padding code 1, code 3
//! invalid). Activations are RMS-normalized and quantized to i8 per row with scale `s`, so a
//! BitLinear is an exact i32 accumulation `sum_k q t` scaled by `gamma / s`. i8 tensors (q,
//! unpacked t) have rows padded with zeros to a multiple of 16 (`padded_k`).
//!
//! Kernels: `quantize_weights`, `pack`, `unpack`, `rmsnorm_quant` (optionally of
//! `silu(g) * u`, the GLU mixer), `ternary_matmul` (GEMV for M <= 8, tiled GEMM otherwise,
//! several stacked projections with their own norm and gamma), `bitlinear` (fused
//! norm + quant + GEMV for decode), `mlgru_step` and `mlgru_scan` (chunked, log-space decay).
//! [`BitLinear`] and [`MatmulFreeBlock`] compose them.

#[cfg(feature = "cuda")]
mod cuda;
pub mod oracle;
pub(crate) mod registry;
#[cfg(feature = "wgpu")]
pub(crate) mod uniforms;
#[cfg(feature = "wgpu")]
mod wgpu;

mod bitlinear;
mod fixtures;
mod layers;
mod mlgru;
mod weights;

pub use bitlinear::{
    BitLinear, BitLinearParams, Fuse, RmsNormQuant, RmsNormQuantParams, TernaryMatmul, TernaryMatmulParams,
};
pub use layers::{GluMlp, GluMlpParams, MatmulFreeBlock, MatmulFreeBlockParams};
pub use mlgru::{MlgruParams, MlgruScan, MlgruScanParams, MlgruStep};
pub use oracle::{padded_k, words_per_row};
pub use weights::{Pack, PackParams, QuantizeWeights, QuantizeWeightsParams, Unpack};

use crate::layout::{dim, elements};

fn one() -> usize {
    1
}
/// The MatMul-free LM's epsilons, all 1e-6: `FusedBitLinear`'s norm takes the default of
/// `layer_norm_linear_quant_fn` (its module's own `eps=1e-8` is used only by the unfused class),
/// and the gate norm and the block's pre-norms take the config's `rms_norm_eps`.
pub const MODEL_EPS: f32 = 1e-6;

fn model_eps() -> f32 {
    MODEL_EPS
}
fn default_chunk() -> usize {
    64
}

/// The largest M the GEMV path takes; larger M uses the tiled GEMM.
pub const GEMV_MAX_M: usize = 8;
