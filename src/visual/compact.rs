//! `compact`: the kept tokens' rows and original positions, varlen.

use serde::{Deserialize, Serialize};

use crate::backend::{Status, StatusBits};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::layout::{dim, elements};
use crate::plan::{Plan, TensorSpec};

use super::{check_offsets, offsets, segment};

/// The kept tokens' layout after a selection: sequence b keeps its tokens before the visual
/// segment `seg[b] = (start, len)`, the segment's candidates `idx[b][..count[b]]` (ascending,
/// as [`Select`](super::Select) writes them), and its tokens after the segment. `rows [T]`: each kept token's
/// row in the original packing, `pos [T]`: its original position in its sequence (for RoPE and
/// causality), both `-1` past the last; `cu_out [B + 1]`. Gather hidden states, K and V with
/// `core.gather_rows` by `rows`. A segment that does not fit its sequence, or a selection that is
/// not ascending within the segment, keeps no visual token of that sequence and raises
/// `INDEX_OUT_OF_RANGE`; bad `cu_seqlens` keep nothing at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactParams {
    /// B: sequences in the packing (`cu_seqlens [B + 1]`, `seg [B, 2]`, `count [B]`).
    pub seqs: usize,
    /// T: tokens in the packing, where `cu_seqlens` ends; also the length of `rows` and `pos`.
    pub tokens: usize,
    /// Candidates per sequence in `idx` (the selection's `n`).
    pub n: usize,
}

/// A validated `compact` plan, built once by [`Compact::new`]; `run_cpu`, `run_cuda`
/// or `run_wgpu` runs it on buffers of the sizes [`Plan::tensors`] lists.
#[derive(Debug, Clone)]
pub struct Compact {
    /// The parameters the plan was built from.
    pub params: CompactParams,
}

impl Compact {
    /// Validates the params: `seqs`, `tokens` and `n` >= 1 and `idx` within 32-bit indexing
    /// (else `Error::InvalidParams`).
    pub fn new(p: CompactParams) -> Result<Self> {
        dim("compact seqs", p.seqs)?;
        dim("compact tokens", p.tokens)?;
        dim("compact n", p.n)?;
        elements("compact idx", &[p.seqs, p.n])?;
        Ok(Self { params: p })
    }

    /// Checks on the host what the kernel would flag: `cu_seqlens` from 0 to `tokens` without
    /// decreasing, every segment inside its sequence and at most `n` long, and every
    /// `idx[b][..count[b]]` ascending within the segment. `Error::InvalidInput` names the first
    /// bad one.
    pub fn validate(&self, cu: &[i32], seg: &[i32], idx: &[i32], count: &[i32]) -> Result<()> {
        self.check_len("cu_seqlens", cu.len())?;
        self.check_len("seg", seg.len())?;
        self.check_len("idx", idx.len())?;
        self.check_len("count", count.len())?;
        let p = &self.params;
        let cu = check_offsets(cu, p.seqs, p.tokens)?;
        for b in 0..p.seqs {
            let (_, n) = segment(&cu, seg, b, p.n).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "seg[{b}] = ({}, {}) does not fit sequence {b}",
                    seg[2 * b],
                    seg[2 * b + 1]
                ))
            })?;
            if self.kept(idx, count, b, n).is_none() {
                return Err(Error::InvalidInput(format!(
                    "count[{b}] = {} or idx[{b}] is not an ascending selection of [0, {n})",
                    count[b]
                )));
            }
        }
        Ok(())
    }

    /// Sequence b's kept candidates, or `None` when they are not an ascending selection.
    pub(super) fn kept<'a>(&self, idx: &'a [i32], count: &[i32], b: usize, n: usize) -> Option<&'a [i32]> {
        let c = usize::try_from(count[b]).ok().filter(|&c| c <= n)?;
        let s = &idx[b * self.params.n..b * self.params.n + c];
        let ok = s.iter().all(|&j| j >= 0 && (j as usize) < n) && s.windows(2).all(|w| w[0] < w[1]);
        ok.then_some(s)
    }

    /// The oracle on host slices: `cu_seqlens [B + 1]`, `seg [B, 2]`, `idx [B, n]`, `count [B]`
    /// (i32) in; `rows [T]`, `pos [T]`, `cu_out [B + 1]` (i32) out; bad contents raise
    /// `INDEX_OUT_OF_RANGE` in `status`. `Error::Shape` for a buffer too short,
    /// `Error::InvalidParams` for a status word of another backend.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu(
        &self,
        cu_seqlens: &[i32],
        seg: &[i32],
        idx: &[i32],
        count: &[i32],
        rows: &mut [i32],
        pos: &mut [i32],
        cu_out: &mut [i32],
        status: &Status,
    ) -> Result<()> {
        let given = [("cu_seqlens", cu_seqlens.len()), ("seg", seg.len()), ("idx", idx.len()), ("count", count.len())];
        self.check_lens(&[&given[..], &[("rows", rows.len()), ("pos", pos.len()), ("cu_out", cu_out.len())]].concat())?;
        let p = &self.params;
        rows[..p.tokens].fill(-1);
        pos[..p.tokens].fill(-1);
        cu_out[..=p.seqs].fill(0);
        let Some(cu) = offsets(cu_seqlens, p.seqs, p.tokens) else {
            return status.raise(StatusBits::INDEX_OUT_OF_RANGE);
        };
        let (mut out, mut bits) = (0usize, 0);
        for b in 0..p.seqs {
            cu_out[b] = out as i32;
            let (start, kept): (usize, Vec<usize>) = match segment(&cu, seg, b, p.n) {
                Some((s, n)) => match self.kept(idx, count, b, n) {
                    Some(k) => (s, k.iter().map(|&j| s + j as usize).chain(s + n..cu[b + 1]).collect()),
                    None => {
                        bits |= StatusBits::INDEX_OUT_OF_RANGE;
                        (s, (s + n..cu[b + 1]).collect())
                    }
                },
                None => {
                    bits |= StatusBits::INDEX_OUT_OF_RANGE;
                    (cu[b + 1], vec![])
                }
            };
            for r in (cu[b]..start).chain(kept) {
                rows[out] = r as i32;
                pos[out] = (r - cu[b]) as i32;
                out += 1;
            }
        }
        cu_out[p.seqs] = out as i32;
        if bits != 0 {
            status.raise(bits)?;
        }
        Ok(())
    }
}

impl Plan for Compact {
    type Params = CompactParams;
    const NAME: &'static str = "compact";
    fn build(p: CompactParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &CompactParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        vec![
            TensorSpec::input("cu_seqlens", DType::I32, p.seqs + 1),
            TensorSpec::input("seg", DType::I32, 2 * p.seqs),
            TensorSpec::input("idx", DType::I32, p.seqs * p.n),
            TensorSpec::input("count", DType::I32, p.seqs),
            TensorSpec::output("rows", DType::I32, p.tokens),
            TensorSpec::output("pos", DType::I32, p.tokens),
            TensorSpec::output("cu_out", DType::I32, p.seqs + 1),
        ]
    }
}
