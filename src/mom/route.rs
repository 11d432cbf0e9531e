//! Routing: the router, the stable permutation into streams, the weighted recombination, and
//! the gated output norm.

use serde::{Deserialize, Serialize};

use super::{check_offsets, default_eps, default_true, heads_ok, offsets, oracle, routing};
use crate::backend::{Status, StatusBits};
use crate::dtype::{float_dtype, same_dtype, to_f64, DType, Float};
use crate::error::{invalid, Result};
use crate::layout::{dim, elements};
use crate::plan::{Plan, TensorSpec};

/// The router over `tokens` rows of `logits [T, M]`: `idx [T, k]` (i32, by descending
/// probability, ties to the lower memory) and `weights [T, k]` (f32, summing to 1). A row with
/// a non-finite logit routes to memories `0..k` with equal weights and raises
/// `VALUE_OUT_OF_RANGE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteParams {
    pub tokens: usize,
    pub memories: usize,
    pub topk: usize,
    pub dtype: DType,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub params: RouteParams,
}

impl Route {
    pub fn new(p: RouteParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        dim("route tokens", p.tokens)?;
        routing(p.memories, p.topk)?;
        elements("route logits", &[p.tokens, p.memories])?;
        Ok(Self { params: p })
    }

    pub fn run_cpu<T: Float>(&self, logits: &[T], idx: &mut [i32], weights: &mut [f32], status: &Status) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&[("logits", logits.len()), ("idx", idx.len()), ("weights", weights.len())])?;
        let (m, k) = (self.params.memories, self.params.topk);
        let mut bits = 0;
        for t in 0..self.params.tokens {
            let row = to_f64(&logits[t * m..(t + 1) * m]);
            let (sel, w) = if row.iter().all(|v| v.is_finite()) {
                oracle::route(&row, k)
            } else {
                bits |= StatusBits::VALUE_OUT_OF_RANGE;
                ((0..k).collect(), vec![1.0 / k as f64; k])
            };
            for j in 0..k {
                idx[t * k + j] = sel[j] as i32;
                weights[t * k + j] = w[j] as f32;
            }
        }
        if bits != 0 {
            status.raise(bits)?;
        }
        Ok(())
    }
}

impl Plan for Route {
    type Params = RouteParams;
    const NAME: &'static str = "route";
    fn build(p: RouteParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &RouteParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        vec![
            TensorSpec::input("logits", p.dtype, p.tokens * p.memories),
            TensorSpec::output("idx", DType::I32, p.tokens * p.topk),
            TensorSpec::output("weights", DType::F32, p.tokens * p.topk),
        ]
    }
}

/// Groups the `T x k` (token, choice) pairs of `idx [T, k]` into streams by (memory, sequence),
/// a stable counting sort (counts, offsets, then placement in token order; no atomics):
/// stream `g = m * seqs + b` holds rows `cu_mem[g]..cu_mem[g + 1]` of the permuted layout, its
/// tokens in time order; `order [R]` names each row's token. With `shared`, streams
/// `M * seqs + b` list every token of sequence `b` (the shared memory). `inverse [T, k + shared]`
/// names each pair's row (`-1`: dropped). A choice outside `[0, M)`, or one the token already
/// made, is dropped and raises `INDEX_OUT_OF_RANGE`; bad `cu_seqlens` raise it too, leave every
/// stream empty and every pair dropped. Rows past the last stream hold `-1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermuteParams {
    pub tokens: usize,
    pub seqs: usize,
    pub memories: usize,
    pub topk: usize,
    #[serde(default = "default_true")]
    pub shared: bool,
}

#[derive(Debug, Clone)]
pub struct Permute {
    pub params: PermuteParams,
}

impl Permute {
    pub fn new(p: PermuteParams) -> Result<Self> {
        dim("permute tokens", p.tokens)?;
        dim("permute seqs", p.seqs)?;
        routing(p.memories, p.topk)?;
        elements("permute rows", &[p.tokens, p.topk + 1])?;
        elements("permute streams", &[p.seqs, p.memories + 1])?;
        Ok(Self { params: p })
    }
    /// Rows of the permuted layout: `T * (k + shared)`.
    pub fn rows(&self) -> usize {
        self.params.tokens * self.choices()
    }
    /// Pairs per token: `k + shared`.
    pub fn choices(&self) -> usize {
        self.params.topk + usize::from(self.params.shared)
    }
    /// Streams: `(M + shared) * seqs`.
    pub fn streams(&self) -> usize {
        (self.params.memories + usize::from(self.params.shared)) * self.params.seqs
    }

    /// `cu_seqlens` from 0 to `tokens`, never decreasing; every choice in range and distinct.
    pub fn validate(&self, idx: &[i32], cu: &[i32]) -> Result<()> {
        let p = &self.params;
        check_offsets("cu_seqlens", cu, p.seqs, p.tokens, true)?;
        for t in 0..p.tokens {
            for j in 0..p.topk {
                if oracle::choice(idx, t, j, p.topk, p.memories).is_none() {
                    return Err(invalid(format!(
                        "idx[{t}][{j}] = {} is outside [0, {}) or repeats an earlier choice",
                        idx[t * p.topk + j],
                        p.memories
                    )));
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu(
        &self,
        idx: &[i32],
        cu_seqlens: &[i32],
        order: &mut [i32],
        inverse: &mut [i32],
        cu_mem: &mut [i32],
        counts: &mut [i32],
        status: &Status,
    ) -> Result<()> {
        let p = &self.params;
        let lens = [("idx", idx.len()), ("cu_seqlens", cu_seqlens.len()), ("order", order.len())];
        self.check_lens(
            &[&lens[..], &[("inverse", inverse.len()), ("cu_mem", cu_mem.len()), ("counts", counts.len())]].concat(),
        )?;
        order[..self.rows()].fill(-1);
        inverse[..self.rows()].fill(-1);
        cu_mem[..=self.streams()].fill(0);
        let Some(cu) = offsets(cu_seqlens, p.seqs, p.tokens, true) else {
            return status.raise(StatusBits::INDEX_OUT_OF_RANGE);
        };
        let (groups, bad) = oracle::streams(idx, &cu, p.memories, p.topk, p.shared);
        let mut row = 0;
        for (g, toks) in groups.iter().enumerate() {
            cu_mem[g] = row as i32;
            counts[g] = toks.len() as i32;
            let m = g / p.seqs;
            for &t in toks {
                order[row] = t as i32;
                let j = if m == p.memories {
                    p.topk
                } else {
                    (0..p.topk).find(|&j| idx[t * p.topk + j] == m as i32).unwrap_or(p.topk)
                };
                inverse[t * self.choices() + j] = row as i32;
                row += 1;
            }
        }
        cu_mem[groups.len()] = row as i32;
        if bad {
            status.raise(StatusBits::INDEX_OUT_OF_RANGE)?;
        }
        Ok(())
    }
}

impl Plan for Permute {
    type Params = PermuteParams;
    const NAME: &'static str = "permute";
    fn build(p: PermuteParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &PermuteParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        vec![
            TensorSpec::input("idx", DType::I32, p.tokens * p.topk),
            TensorSpec::input("cu_seqlens", DType::I32, p.seqs + 1),
            TensorSpec::output("order", DType::I32, self.rows()),
            TensorSpec::output("inverse", DType::I32, self.rows()),
            TensorSpec::output("cu_mem", DType::I32, self.streams() + 1),
            TensorSpec::scratch("counts", DType::I32, self.streams()),
        ]
    }
}

/// Mixes stream outputs back into token order: `out[t] = sum_j weights[t, j] y[inverse[t, j]]`
/// (+ `y[inverse[t, k]]` unweighted with `shared`), `y [rows, width]`, f32 accumulation. A
/// dropped pair (`-1`) adds nothing; any other index outside `[0, rows)` adds nothing and raises
/// `INDEX_OUT_OF_RANGE`. No scatter: each token gathers its own rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnpermuteParams {
    pub tokens: usize,
    pub topk: usize,
    #[serde(default = "default_true")]
    pub shared: bool,
    /// Row width of `y` and `out` (`H * V` in the layer); even for 16-bit dtypes.
    pub width: usize,
    /// Rows of `y` (`T * (k + shared)` in the layer).
    pub rows: usize,
    pub dtype: DType,
}

#[derive(Debug, Clone)]
pub struct Unpermute {
    pub params: UnpermuteParams,
}

impl Unpermute {
    pub fn new(p: UnpermuteParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        dim("unpermute tokens", p.tokens)?;
        dim("unpermute topk", p.topk)?;
        dim("unpermute width", p.width)?;
        dim("unpermute rows", p.rows)?;
        if p.dtype.size() == 2 && !p.width.is_multiple_of(2) {
            return Err(invalid(format!("unpermute width = {} must be even for 16-bit dtypes", p.width)));
        }
        elements("unpermute y", &[p.rows, p.width])?;
        elements("unpermute out", &[p.tokens, p.width])?;
        elements("unpermute inverse", &[p.tokens, p.topk + 1])?;
        Ok(Self { params: p })
    }
    fn choices(&self) -> usize {
        self.params.topk + usize::from(self.params.shared)
    }

    /// Every row index below `rows` (`-1`, a dropped pair, is allowed).
    pub fn validate(&self, inverse: &[i32]) -> Result<()> {
        self.check_len("inverse", inverse.len())?;
        let n = self.params.tokens * self.choices();
        match inverse[..n].iter().position(|&r| r < -1 || r as i64 >= self.params.rows as i64) {
            Some(e) => Err(crate::error::Error::InvalidInput(format!(
                "inverse[{e}] = {} is outside [-1, rows = {})",
                inverse[e], self.params.rows
            ))),
            None => Ok(()),
        }
    }

    pub fn run_cpu<T: Float>(
        &self,
        y: &[T],
        inverse: &[i32],
        weights: &[f32],
        out: &mut [T],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let lens = [("y", y.len()), ("inverse", inverse.len()), ("weights", weights.len()), ("out", out.len())];
        self.check_lens(&lens)?;
        let p = &self.params;
        let (n, w) = (self.choices(), p.width);
        let mut bits = 0;
        for t in 0..p.tokens {
            let mut acc = vec![0.0f64; w];
            for j in 0..n {
                let r = inverse[t * n + j];
                if r == -1 {
                    continue;
                }
                if r < 0 || r as usize >= p.rows {
                    bits |= StatusBits::INDEX_OUT_OF_RANGE;
                    continue;
                }
                let wt = if j < p.topk { f64::from(weights[t * p.topk + j]) } else { 1.0 };
                let row = &y[r as usize * w..(r as usize + 1) * w];
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += wt * f64::from(v.to_f32());
                }
            }
            for (o, a) in out[t * w..(t + 1) * w].iter_mut().zip(acc) {
                *o = T::from_f32(a as f32);
            }
        }
        if bits != 0 {
            status.raise(bits)?;
        }
        Ok(())
    }
}

impl Plan for Unpermute {
    type Params = UnpermuteParams;
    const NAME: &'static str = "unpermute";
    fn build(p: UnpermuteParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &UnpermuteParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        vec![
            TensorSpec::input("y", p.dtype, p.rows * p.width),
            TensorSpec::input("inverse", DType::I32, p.tokens * self.choices()),
            TensorSpec::input("weights", DType::F32, p.tokens * p.topk),
            TensorSpec::output("out", p.dtype, p.tokens * p.width),
        ]
    }
}

/// The layer's output norm per head (fla's `FusedRMSNormGated`):
/// `y = o * rsqrt(mean(o^2) + eps) * w * silu(gate)` over each head's `V` values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatedNormParams {
    pub tokens: usize,
    pub heads: usize,
    pub head_v: usize,
    pub dtype: DType,
    #[serde(default = "default_eps")]
    pub eps: f32,
}

#[derive(Debug, Clone)]
pub struct GatedNorm {
    pub params: GatedNormParams,
}

impl GatedNorm {
    pub fn new(p: GatedNormParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        dim("gated_norm tokens", p.tokens)?;
        heads_ok(p.heads, 8, p.head_v)?;
        if !(p.eps.is_finite() && p.eps >= 0.0) {
            return Err(invalid(format!("gated_norm eps must be finite and >= 0, got {}", p.eps)));
        }
        elements("gated_norm o", &[p.tokens, p.heads, p.head_v])?;
        Ok(Self { params: p })
    }

    pub fn run_cpu<T: Float>(&self, o: &[T], gate: &[T], w: &[T], y: &mut [T]) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&[("o", o.len()), ("gate", gate.len()), ("w", w.len()), ("y", y.len())])?;
        let (v, wf) = (self.params.head_v, to_f64(&w[..self.params.head_v]));
        for r in 0..self.params.tokens * self.params.heads {
            let s = r * v..(r + 1) * v;
            let out =
                oracle::gated_norm(&to_f64(&o[s.clone()]), &to_f64(&gate[s.clone()]), &wf, f64::from(self.params.eps));
            for (d, x) in y[s].iter_mut().zip(out) {
                *d = T::from_f32(x as f32);
            }
        }
        Ok(())
    }
}

impl Plan for GatedNorm {
    type Params = GatedNormParams;
    const NAME: &'static str = "gated_norm";
    fn build(p: GatedNormParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &GatedNormParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        let n = p.tokens * p.heads * p.head_v;
        vec![
            TensorSpec::input("o", p.dtype, n),
            TensorSpec::input("gate", p.dtype, n),
            TensorSpec::input("w", p.dtype, p.head_v),
            TensorSpec::output("y", p.dtype, n),
        ]
    }
}
