//! Mixture-of-Memories linear attention (MoM, arXiv 2502.13685; fla's `MomAttention`).
//!
//! A router sends each token to its top-k of `M` memories; each memory runs the gated delta rule
//! over its own tokens (its *stream*: a sequence's tokens routed to it, in time order), and the
//! outputs are mixed back with the router's weights, plus an optional shared memory that sees
//! every token. The kernels:
//! - [`Route`]: softmax, top-k, renormalized weights;
//! - [`Permute`] / [`Unpermute`]: the stable grouping of (token, choice) pairs into streams, and
//!   the weighted sum back to token order;
//! - [`ShortConv`]: gathers each stream's q, k, v through the causal short convolution (a conv
//!   state per (memory, slot)) and its gates, for prefill;
//! - [`GatedDeltaChunk`]: the chunked gated delta rule over variable-length streams, states in a
//!   slot-indexed pool;
//! - [`GatedDeltaStep`]: the decode step, fused: conv, gates, the k routed memories and the
//!   shared one, and their weighted sum, in one launch;
//! - [`GatedNorm`]: the output norm `rmsnorm(o) * w * silu(gate)` per head;
//! - [`Transport`] / [`ApplyState`]: a piece's transition and the application of the state that
//!   reaches it, so a long sequence runs in pieces (or on several GPUs) and matches one pass;
//! - [`MomLayer`] / [`MomLayerStep`]: a whole layer between its projections, prefill and decode,
//!   on every backend.
//!
//! Memories are numbered `0..M`, the shared memory `M`; `M' = M + shared`. A state pool holds
//! `M' * slots` entries, memory `m` of slot `s` at entry `m * slots + s` (fla's `(e b)` order).
//! The fused projection row `x [P]` of a token is `[q: H K | k: M' x H K | v: M' x H V |
//! a: M' x H | b: M' x H]` (the raw `a` and `b` of `g = -exp(A_log) softplus(a + dt_bias)`
//! and `beta = sigmoid(b)`); conv channels are `[q: H K | k: H K | v: H V]`.

mod chunk;
#[cfg(feature = "cuda")]
mod cuda;
mod layer;
pub mod oracle;
pub(crate) mod registry;
mod route;
mod split;
mod step;
#[cfg(feature = "wgpu")]
pub(crate) mod uniforms;
#[cfg(feature = "wgpu")]
mod wgpu;

pub use chunk::{GatedDeltaChunk, GatedDeltaChunkParams, ShortConv, ShortConvParams};
pub use layer::{MomLayer, MomLayerParams, MomLayerStep, MomLayerStepParams};
pub use route::{GatedNorm, GatedNormParams, Permute, PermuteParams, Route, RouteParams, Unpermute, UnpermuteParams};
pub use split::{ApplyState, PieceParams, Transport};
pub use step::{GatedDeltaStep, GatedDeltaStepParams};

use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};
pub(crate) use crate::layout::{check_offsets, offsets};
use crate::layout::{dim, elements};

/// Largest head size: a column of the state lives in one thread's loop, q and k of a head in
/// workgroup memory.
pub const MAX_HEAD: usize = 256;
/// Largest convolution width.
pub const MAX_CONV: usize = 8;

/// The recurrence each memory runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The gated delta rule (MoM's default).
    #[default]
    Delta,
    /// Scalar-gated linear attention, `S <- e^g S + k v^T` (beta unused).
    Linear,
}

impl Rule {
    pub(crate) fn oracle(self) -> oracle::Rule {
        match self {
            Rule::Delta => oracle::Rule::Delta,
            Rule::Linear => oracle::Rule::Linear,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_conv() -> usize {
    4
}
fn default_chunk() -> usize {
    64
}
fn default_eps() -> f32 {
    1e-6
}

/// The layer's geometry, shared by the kernels that read fused projection rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Routed memories `M`, in `[1, 64]`.
    pub memories: usize,
    /// Memories each token is routed to, `k`, in `[1, M]`.
    pub topk: usize,
    /// Whether the shared memory (number `M`, fed every token unweighted) is present.
    pub shared: bool,
    /// Heads `H`, at least 1.
    pub heads: usize,
    /// Key (and query) head size `K`: a multiple of 8 up to [`MAX_HEAD`].
    pub head_k: usize,
    /// Value head size `V`: a multiple of 8 up to [`MAX_HEAD`].
    pub head_v: usize,
    /// Short-convolution width `W`, in `[1, MAX_CONV]`.
    pub conv: usize,
}

impl Dims {
    /// Checks the geometry (the ranges on the fields, and a projection row small enough for
    /// 32-bit indexing); `Error::InvalidParams` names the first bad value.
    pub fn new(
        memories: usize,
        topk: usize,
        shared: bool,
        heads: usize,
        head_k: usize,
        head_v: usize,
        conv: usize,
    ) -> Result<Dims> {
        routing(memories, topk)?;
        heads_ok(heads, head_k, head_v)?;
        if conv == 0 || conv > MAX_CONV {
            return Err(invalid(format!("mom conv = {conv} must be in [1, {MAX_CONV}]")));
        }
        let d = Dims { memories, topk, shared, heads, head_k, head_v, conv };
        elements("mom projection row", &[d.mems(), heads, 2 * head_k + head_v + 2])?;
        Ok(d)
    }
    /// Memories with state: `M + shared`.
    pub fn mems(&self) -> usize {
        self.memories + usize::from(self.shared)
    }
    /// Query or key width of one row over all heads, `H K`.
    pub fn hk(&self) -> usize {
        self.heads * self.head_k
    }
    /// Value width over all heads, `H V`: the width of an output row.
    pub fn hv(&self) -> usize {
        self.heads * self.head_v
    }
    /// Conv channels of one memory: `[q | k | v]`.
    pub fn channels(&self) -> usize {
        2 * self.hk() + self.hv()
    }
    /// The fused projection row's width.
    pub fn proj_width(&self) -> usize {
        self.hk() + self.mems() * (self.hk() + self.hv() + 2 * self.heads)
    }
    /// The projection column feeding conv channel `c` of memory `m` (q is shared by all).
    pub fn col(&self, m: usize, c: usize) -> usize {
        let (hk, hv, mm) = (self.hk(), self.hv(), self.mems());
        if c < hk {
            c
        } else if c < 2 * hk {
            hk + m * hk + (c - hk)
        } else {
            hk + mm * hk + m * hv + (c - 2 * hk)
        }
    }
    /// The projection column of `a` (or `b` when `beta`) for memory `m`, head `h`.
    pub fn gate_col(&self, m: usize, h: usize, beta: bool) -> usize {
        let base = self.hk() + self.mems() * (self.hk() + self.hv());
        base + usize::from(beta) * self.mems() * self.heads + m * self.heads + h
    }
}

fn routing(memories: usize, topk: usize) -> Result<()> {
    if memories == 0 || memories > 64 {
        return Err(invalid(format!("mom memories = {memories} must be in [1, 64]")));
    }
    if topk == 0 || topk > memories {
        return Err(invalid(format!("mom topk = {topk} must be in [1, memories = {memories}]")));
    }
    Ok(())
}

fn heads_ok(heads: usize, head_k: usize, head_v: usize) -> Result<()> {
    dim("mom heads", heads)?;
    for (what, v) in [("head_k", head_k), ("head_v", head_v)] {
        if v == 0 || v > MAX_HEAD || !v.is_multiple_of(8) {
            return Err(invalid(format!("mom {what} = {v} must be a multiple of 8 up to {MAX_HEAD}")));
        }
    }
    Ok(())
}

/// Host-side check of slot ids, one per sequence (an error names the sequence).
pub(crate) fn check_slot_ids(ids: &[i32], rows: usize, slots: usize) -> Result<()> {
    crate::layout::check_slot_ids(ids, rows, slots, "sequence")
}

/// Element `(i, c)` of a `[K, V]` state (or `[V, K]` with `v_first`, fla's layout).
fn sidx(i: usize, c: usize, k: usize, v: usize, v_first: bool) -> usize {
    if v_first {
        c * k + i
    } else {
        i * v + c
    }
}

/// One head's pool entry as the oracle's row-major `[K][V]` f64 state.
pub(crate) fn load_state(ent: &[f32], k: usize, v: usize, v_first: bool) -> Vec<f64> {
    (0..k * v).map(|e| f64::from(ent[sidx(e / v, e % v, k, v, v_first)])).collect()
}

/// Writes a `[K][V]` f64 state back into its pool entry.
pub(crate) fn store_state(ent: &mut [f32], st: &[f64], k: usize, v: usize, v_first: bool) {
    for (e, val) in st.iter().enumerate() {
        ent[sidx(e / v, e % v, k, v, v_first)] = *val as f32;
    }
}

/// One conv channel's step: shifts `x` into its f32 window `st` (newest last) and returns
/// `silu(taps . window)`.
pub(crate) fn conv_channel<T: crate::Float>(st: &mut [f32], taps: &[T], x: f64) -> f64 {
    let mut win: Vec<f64> = st.iter().map(|&v| f64::from(v)).collect();
    let taps: Vec<f64> = taps.iter().map(|v| f64::from(v.to_f32())).collect();
    let y = oracle::conv_step(&mut win, &taps, x);
    st.iter_mut().zip(&win).for_each(|(s, v)| *s = *v as f32);
    y
}
