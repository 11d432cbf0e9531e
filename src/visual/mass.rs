//! `attn_mass`: the attention mass each visual key receives.

use serde::{Deserialize, Serialize};

use crate::backend::{Status, StatusBits};
use crate::dtype::{float_dtype, same_dtype, to_f64, DType, Float};
use crate::error::{invalid, Error, Result};
use crate::layout::{dim, elements};
use crate::plan::{Plan, TensorSpec};

use super::{check_offsets, heads_ok, offsets, segment};

/// The attention mass each visual key receives: for sequence b and candidate j of its segment,
/// `mass[b][h][j] = sum_r w_r softmax_r(scale q_r . K)[seg_start + j]` over the chosen query
/// rows r of that sequence (`q [R, H, D]` at token rows `qpos [R]`, weights `qw [R]`), each
/// row's softmax over every key it sees (causal: keys up to its own row), GQA (`k [T, Hkv, D]`).
/// `reduce_heads` sums over heads (`mass [B, 1, n]`), `reduce_groups` over the heads of each KV
/// group (`mass [B, Hkv, n]`, ZipCache's per-group scores), neither gives `[B, H, n]`; entries
/// past the segment are 0. With `has_lse` the caller's natural-log LSE per (row, head) (`lse [R, H]`,
/// from its own attention) saves the first pass. A row outside the tokens is ignored and a
/// segment that does not fit its sequence scores 0; both raise `INDEX_OUT_OF_RANGE`. Each
/// output is owned by one thread that loops over rows and heads: no atomics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttnMassParams {
    /// B: sequences (`cu_seqlens [B + 1]`, `seg [B, 2]`).
    pub seqs: usize,
    /// T: key rows of `k` over all sequences, where `cu_seqlens` ends.
    pub tokens: usize,
    /// R: chosen query rows (of `q`, `qpos`, `qw` and `lse`).
    pub rows: usize,
    /// H: query heads, a multiple of `kv_heads`.
    pub heads: usize,
    /// Hkv: key heads (GQA groups).
    pub kv_heads: usize,
    /// D: head size, 1 to [`MAX_DIM`](super::MAX_DIM).
    pub dim: usize,
    /// Columns of `mass` per sequence and head: no segment may be longer.
    pub n: usize,
    /// Softmax scale of `q . k`; finite.
    pub scale: f32,
    /// Storage dtype of `q` and `k`: f32, f16 or bf16 (`qw`, `lse`, `mass` and `ws` are f32).
    pub dtype: DType,
    /// Sum over heads into `mass [B, 1, n]` (absent: true unless `reduce_groups`); false:
    /// `mass [B, H, n]`.
    #[serde(default)]
    pub reduce_heads: Option<bool>,
    /// Sum over the heads of each KV group into `mass [B, Hkv, n]` (default false); not with
    /// `reduce_heads: true`.
    #[serde(default)]
    pub reduce_groups: bool,
    /// Take the caller's `lse [R, H]` instead of computing it (default `false`).
    #[serde(default)]
    pub has_lse: bool,
}

/// A validated `attn_mass` plan, built once by [`AttnMass::new`]; `run_cpu`, `run_cuda`
/// or `run_wgpu` runs it on buffers of the sizes [`Plan::tensors`] lists.
#[derive(Debug, Clone)]
pub struct AttnMass {
    /// The parameters the plan was built from.
    pub params: AttnMassParams,
}

impl AttnMass {
    /// Validates the params: a float `dtype` (else `Error::DType`); sizes >= 1; `heads` a multiple
    /// of `kv_heads`; `dim` in `[1, MAX_DIM]`; a finite `scale`; sizes within 32-bit
    /// indexing (else `Error::InvalidParams`).
    pub fn new(p: AttnMassParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        for (w, v) in [("seqs", p.seqs), ("tokens", p.tokens), ("rows", p.rows), ("n", p.n)] {
            dim(&format!("attn_mass {w}"), v)?;
        }
        heads_ok(p.heads, p.kv_heads, p.dim)?;
        if !p.scale.is_finite() {
            return Err(invalid(format!("attn_mass scale must be finite, got {}", p.scale)));
        }
        elements("attn_mass k", &[p.tokens, p.kv_heads, p.dim])?;
        elements("attn_mass q", &[p.rows, p.heads, p.dim])?;
        elements("attn_mass mass", &[p.seqs, p.heads, p.n])?;
        if p.reduce_groups && p.reduce_heads == Some(true) {
            return Err(invalid("attn_mass: reduce_heads and reduce_groups cannot both be true"));
        }
        Ok(Self { params: p })
    }

    /// Query heads summed into each output head: 1 (none), `heads / kv_heads` (per KV group) or
    /// `heads` (all).
    pub fn heads_per_output(&self) -> usize {
        let p = &self.params;
        if p.reduce_groups {
            p.heads / p.kv_heads
        } else if p.reduce_heads.unwrap_or(true) {
            p.heads
        } else {
            1
        }
    }

    /// Output heads of `mass`: 1, `kv_heads` or `heads`.
    pub fn out_heads(&self) -> usize {
        self.params.heads / self.heads_per_output()
    }

    /// Checks on the host what the kernel would flag: `cu_seqlens` from 0 to `tokens` without
    /// decreasing, every `qpos` in `[0, tokens)`, every segment inside its sequence and at most
    /// `n` long. `Error::InvalidInput` names the first bad one.
    pub fn validate(&self, qpos: &[i32], cu: &[i32], seg: &[i32]) -> Result<()> {
        self.check_len("qpos", qpos.len())?;
        self.check_len("cu_seqlens", cu.len())?;
        self.check_len("seg", seg.len())?;
        let p = &self.params;
        let cu = check_offsets(cu, p.seqs, p.tokens)?;
        if let Some(r) = (0..p.rows).find(|&r| qpos[r] < 0 || qpos[r] as usize >= p.tokens) {
            return Err(Error::InvalidInput(format!("qpos[{r}] = {} is outside [0, {})", qpos[r], p.tokens)));
        }
        if let Some(b) = (0..p.seqs).find(|&b| segment(&cu, seg, b, p.n).is_none()) {
            return Err(Error::InvalidInput(format!(
                "seg[{b}] = ({}, {}) does not fit its sequence",
                seg[2 * b],
                seg[2 * b + 1]
            )));
        }
        Ok(())
    }

    /// The oracle on host slices: `q [R, H, D]`, `qpos [R]`, `qw [R]` (f32), `k [T, Hkv, D]`,
    /// `cu_seqlens [B + 1]`, `seg [B, 2]`, `lse [R, H]` (with `has_lse`) in; `mass` out; `ws`
    /// (f32 `[R, H]`, unused here) is checked so one call shape serves every backend.
    /// `Error::DType` for buffers of another dtype, `Error::Shape` for one too short,
    /// `Error::InvalidParams` for an optional one missing or not wanted, or a status word of
    /// another backend.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        q: &[T],
        qpos: &[i32],
        qw: &[f32],
        k: &[T],
        cu_seqlens: &[i32],
        seg: &[i32],
        lse: Option<&[f32]>,
        mass: &mut [f32],
        ws: &mut [f32],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let mut given = vec![("q", q.len()), ("qpos", qpos.len()), ("qw", qw.len()), ("k", k.len())];
        given.extend([("cu_seqlens", cu_seqlens.len()), ("seg", seg.len()), ("mass", mass.len()), ("ws", ws.len())]);
        given.extend(lse.map(|l| ("lse", l.len())));
        self.check_lens(&given)?;
        let p = &self.params;
        mass[..p.seqs * self.out_heads() * p.n].fill(0.0);
        let Some(cu) = offsets(cu_seqlens, p.seqs, p.tokens) else {
            return status.raise(StatusBits::INDEX_OUT_OF_RANGE);
        };
        let (qf, kf) = (to_f64(q), to_f64(k));
        let (hd, g) = (p.dim, p.heads / p.kv_heads);
        let key = |t: usize, h: usize| &kf[(t * p.kv_heads + h / g) * hd..(t * p.kv_heads + h / g + 1) * hd];
        let score = |r: usize, h: usize, t: usize| {
            f64::from(p.scale)
                * qf[(r * p.heads + h) * hd..(r * p.heads + h + 1) * hd]
                    .iter()
                    .zip(key(t, h))
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
        };
        let (mut bits, mut acc) = (0, vec![0.0f64; mass.len()]);
        if (0..p.seqs).any(|b| segment(&cu, seg, b, p.n).is_none()) {
            bits |= StatusBits::INDEX_OUT_OF_RANGE;
        }
        for r in 0..p.rows {
            let Some(t) = usize::try_from(qpos[r]).ok().filter(|&t| t < p.tokens) else {
                bits |= StatusBits::INDEX_OUT_OF_RANGE;
                continue;
            };
            let b = (0..p.seqs).find(|&b| t < cu[b + 1]).unwrap_or(0);
            let Some((s0, n)) = segment(&cu, seg, b, p.n) else {
                bits |= StatusBits::INDEX_OUT_OF_RANGE;
                continue;
            };
            for h in 0..p.heads {
                let l = match lse {
                    Some(l) => f64::from(l[r * p.heads + h]),
                    None => {
                        let s: Vec<f64> = (cu[b]..=t).map(|j| score(r, h, j)).collect();
                        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        m + s.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
                    }
                };
                let oh = h / self.heads_per_output();
                for j in 0..n.min((t + 1).saturating_sub(s0)) {
                    acc[(b * self.out_heads() + oh) * p.n + j] += f64::from(qw[r]) * (score(r, h, s0 + j) - l).exp();
                }
            }
        }
        mass.iter_mut().zip(acc).for_each(|(m, a)| *m = a as f32);
        if bits != 0 {
            status.raise(bits)?;
        }
        Ok(())
    }
}

impl Plan for AttnMass {
    type Params = AttnMassParams;
    const NAME: &'static str = "attn_mass";
    fn build(p: AttnMassParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &AttnMassParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let (p, dt) = (&self.params, self.params.dtype);
        let mut v = vec![
            TensorSpec::input("q", dt, p.rows * p.heads * p.dim),
            TensorSpec::input("qpos", DType::I32, p.rows),
            TensorSpec::input("qw", DType::F32, p.rows),
            TensorSpec::input("k", dt, p.tokens * p.kv_heads * p.dim),
            TensorSpec::input("cu_seqlens", DType::I32, p.seqs + 1),
            TensorSpec::input("seg", DType::I32, 2 * p.seqs),
        ];
        if p.has_lse {
            v.push(TensorSpec::input("lse", DType::F32, p.rows * p.heads));
        }
        v.push(TensorSpec::output("mass", DType::F32, p.seqs * self.out_heads() * p.n));
        v.push(TensorSpec::scratch("ws", DType::F32, p.rows * p.heads));
        v
    }
}
