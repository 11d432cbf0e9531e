//! Sparse visual-token attention: score visual tokens by the attention they receive, keep a
//! subset, and attend over fewer keys (FastV, SparseVLM, ZipVL, VTC-CLS, AIM).
//!
//! Each sequence of a packed batch (`cu_seqlens [B + 1]`) holds one visual segment
//! `seg[b] = (start, len)` (positions within the sequence). The FastV-style pipeline at layer K:
//! [`AttnMass`] (the attention mass each visual key receives from chosen query rows) ->
//! [`Select`] (top-k, cumulative mass, above mean) -> [`Compact`] (the kept tokens' source rows
//! and original positions, varlen) -> `core.gather_rows` (hidden states, K, V by those rows) ->
//! [`SparseAttention`] (causal by original positions, GQA). [`NeighborAttention`] is YOPO's
//! alternative: visual queries attend to a 2D window of the image instead of all of it.
//! [`Merge`] folds dropped tokens into their most similar kept token instead of dropping them.

mod attention;
mod compact;
#[cfg(feature = "cuda")]
mod cuda;
mod mass;
mod merge;
pub mod oracle;
pub(crate) mod registry;
mod select;
#[cfg(feature = "wgpu")]
pub(crate) mod uniforms;
#[cfg(feature = "wgpu")]
mod wgpu;

pub use attention::{NeighborAttention, NeighborAttentionParams, SparseAttention, SparseAttentionParams};
pub use compact::{Compact, CompactParams};
pub use mass::{AttnMass, AttnMassParams};
pub use merge::{Merge, MergeParams};
pub use select::{Select, SelectMode, SelectParams};

use crate::error::{invalid, Result};
use crate::layout::dim;

/// Largest head size (a query row lives in workgroup memory).
pub const MAX_DIM: usize = 256;

/// `cu_seqlens` from 0 to `end` without decreasing, or `None` (the kernels raise the status).
fn offsets(cu: &[i32], n: usize, end: usize) -> Option<Vec<usize>> {
    crate::layout::offsets(cu, n, end, true)
}

fn check_offsets(cu: &[i32], n: usize, end: usize) -> Result<Vec<usize>> {
    crate::layout::check_offsets("cu_seqlens", cu, n, end, true)
}

/// Sequence b's visual segment as absolute rows, or `None` when it does not fit the sequence
/// or exceeds `nmax` candidates.
fn segment(cu: &[usize], seg: &[i32], b: usize, nmax: usize) -> Option<(usize, usize)> {
    let (s, n) = (seg[2 * b], seg[2 * b + 1]);
    let len = cu[b + 1] - cu[b];
    let ok = s >= 0 && n >= 0 && (s as usize) + (n as usize) <= len && (n as usize) <= nmax;
    ok.then(|| (cu[b] + s as usize, n as usize))
}

fn heads_ok(heads: usize, kv_heads: usize, d: usize) -> Result<()> {
    dim("visual heads", heads)?;
    dim("visual kv_heads", kv_heads)?;
    if !heads.is_multiple_of(kv_heads) {
        return Err(invalid(format!("heads = {heads} must be a multiple of kv_heads = {kv_heads} (GQA)")));
    }
    if d == 0 || d > MAX_DIM {
        return Err(invalid(format!("head dim = {d} must be in [1, {MAX_DIM}]")));
    }
    Ok(())
}
