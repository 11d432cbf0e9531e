//! `merge`: dropped tokens folded into their most similar kept token.

use serde::{Deserialize, Serialize};

use crate::backend::{Status, StatusBits};
use crate::dtype::{float_dtype, same_dtype, to_f64, DType, Float};
use crate::error::Result;
use crate::layout::{dim, elements};
use crate::plan::{Plan, TensorSpec};

use super::{offsets, segment, Compact, CompactParams};

/// Token merging (AIM, SparseVLM's recycling, LOOK-M): each dropped candidate of sequence b's
/// segment goes to the kept candidate of highest cosine similarity of hidden states `x [T, D]`
/// (ties to the lower kept slot; a zero vector has similarity 0), and a kept token becomes the
/// mean of itself and the tokens merged into it. `assign [B, n] i32`: each candidate's kept slot
/// (`-1` past the segment, or when nothing is kept); `merged [B, n, D]`: slot e's mean for
/// `e < count[b]`, then zeros. Two passes, each output with one owner (the mean sums in index
/// order), so it is exact whatever the order of work. A bad segment or selection merges nothing
/// in its sequence (assign -1, merged 0) and raises `INDEX_OUT_OF_RANGE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeParams {
    /// B: sequences (`cu_seqlens [B + 1]`, `seg [B, 2]`, `count [B]`).
    pub seqs: usize,
    /// T: rows of `x` over all sequences, where `cu_seqlens` ends.
    pub tokens: usize,
    /// Candidates per sequence (the selection's `n`): rows of `idx` and `assign`, slots of
    /// `merged`; no segment may be longer.
    pub n: usize,
    /// D: hidden size, the row length of `x` and `merged`.
    pub dim: usize,
    /// Storage dtype of `x` and `merged`: f32, f16 or bf16.
    pub dtype: DType,
}

/// A validated `merge` plan, built once by [`Merge::new`]; `run_cpu`, `run_cuda`
/// or `run_wgpu` runs it on buffers of the sizes [`Plan::tensors`] lists.
#[derive(Debug, Clone)]
pub struct Merge {
    /// The parameters the plan was built from.
    pub params: MergeParams,
}

impl Merge {
    /// Validates the params: a float `dtype` (else `Error::DType`); sizes >= 1; `x` and `merged`
    /// within 32-bit indexing (else `Error::InvalidParams`).
    pub fn new(p: MergeParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        for (w, v) in [("seqs", p.seqs), ("tokens", p.tokens), ("n", p.n), ("dim", p.dim)] {
            dim(&format!("merge {w}"), v)?;
        }
        elements("merge x", &[p.tokens, p.dim])?;
        elements("merge merged", &[p.seqs, p.n, p.dim])?;
        Ok(Self { params: p })
    }

    /// Checks on the host what the kernel would flag, as [`Compact::validate`] does for the same
    /// `cu_seqlens`, `seg`, `idx` and `count`.
    pub fn validate(&self, cu: &[i32], seg: &[i32], idx: &[i32], count: &[i32]) -> Result<()> {
        self.check_len("cu_seqlens", cu.len())?;
        self.check_len("seg", seg.len())?;
        self.check_len("idx", idx.len())?;
        self.check_len("count", count.len())?;
        let p = &self.params;
        Compact::new(CompactParams { seqs: p.seqs, tokens: p.tokens, n: p.n })?.validate(cu, seg, idx, count)
    }

    /// Cosine similarity of two rows (0 when either is zero), in f64.
    pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
        let (ab, aa, bb) = a.iter().zip(b).fold((0.0, 0.0, 0.0), |(x, y, z), (u, v)| (x + u * v, y + u * u, z + v * v));
        if aa == 0.0 || bb == 0.0 {
            0.0
        } else {
            ab / (aa * bb).sqrt()
        }
    }

    /// The merge of sequence b given an assignment: slot e's mean of its members, in index order.
    pub fn means(x: &[f64], d: usize, rows: &[usize], kept: &[usize], assign: &[i32]) -> Vec<f64> {
        let mut out = vec![0.0; kept.len() * d];
        for e in 0..kept.len() {
            let members: Vec<usize> = (0..rows.len()).filter(|&j| assign[j] == e as i32).collect();
            for &j in &members {
                for c in 0..d {
                    out[e * d + c] += x[rows[j] * d + c] / members.len() as f64;
                }
            }
        }
        out
    }

    /// The oracle on host slices: `x [T, D]`, `cu_seqlens [B + 1]`, `seg [B, 2]`, `idx [B, n]`,
    /// `count [B]` (i32) in; `assign [B, n]` (i32) and `merged [B, n, D]` out.
    /// `Error::DType` for buffers of another dtype, `Error::Shape` for one too short,
    /// `Error::InvalidParams` for a status word of another backend.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        x: &[T],
        cu_seqlens: &[i32],
        seg: &[i32],
        idx: &[i32],
        count: &[i32],
        assign: &mut [i32],
        merged: &mut [T],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let given = [("x", x.len()), ("cu_seqlens", cu_seqlens.len()), ("seg", seg.len()), ("idx", idx.len())];
        let more = [("count", count.len()), ("assign", assign.len()), ("merged", merged.len())];
        self.check_lens(&[&given[..], &more[..]].concat())?;
        let p = &self.params;
        assign[..p.seqs * p.n].fill(-1);
        merged[..p.seqs * p.n * p.dim].fill(T::from_f32(0.0));
        let Some(cu) = offsets(cu_seqlens, p.seqs, p.tokens) else {
            return status.raise(StatusBits::INDEX_OUT_OF_RANGE);
        };
        let compact = Compact::new(CompactParams { seqs: p.seqs, tokens: p.tokens, n: p.n })?;
        let (xf, d) = (to_f64(x), p.dim);
        let mut bits = 0;
        for b in 0..p.seqs {
            let Some((s, n)) = segment(&cu, seg, b, p.n) else {
                bits |= StatusBits::INDEX_OUT_OF_RANGE;
                continue;
            };
            let Some(kept) = compact.kept(idx, count, b, n) else {
                bits |= StatusBits::INDEX_OUT_OF_RANGE;
                continue;
            };
            let kept: Vec<usize> = kept.iter().map(|&j| j as usize).collect();
            if kept.is_empty() {
                continue;
            }
            let rows: Vec<usize> = (s..s + n).collect();
            let row = |j: usize| &xf[rows[j] * d..(rows[j] + 1) * d];
            let a = &mut assign[b * p.n..b * p.n + n];
            for (j, slot) in a.iter_mut().enumerate() {
                *slot = match kept.binary_search(&j) {
                    Ok(e) => e as i32,
                    Err(_) => {
                        let sims: Vec<f64> = kept.iter().map(|&e| Self::cosine(row(j), row(e))).collect();
                        let best = sims.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        sims.iter().position(|&v| v == best).unwrap_or(0) as i32
                    }
                };
            }
            let m = Self::means(&xf, d, &rows, &kept, a);
            for (o, v) in merged[b * p.n * d..].iter_mut().zip(m) {
                *o = T::from_f32(v as f32);
            }
        }
        if bits != 0 {
            status.raise(bits)?;
        }
        Ok(())
    }
}

impl Plan for Merge {
    type Params = MergeParams;
    const NAME: &'static str = "merge";
    fn build(p: MergeParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &MergeParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let (p, dt) = (&self.params, self.params.dtype);
        vec![
            TensorSpec::input("x", dt, p.tokens * p.dim),
            TensorSpec::input("cu_seqlens", DType::I32, p.seqs + 1),
            TensorSpec::input("seg", DType::I32, 2 * p.seqs),
            TensorSpec::input("idx", DType::I32, p.seqs * p.n),
            TensorSpec::input("count", DType::I32, p.seqs),
            TensorSpec::output("assign", DType::I32, p.seqs * p.n),
            TensorSpec::output("merged", dt, p.seqs * p.n * p.dim),
        ]
    }
}
