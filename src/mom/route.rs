//! Routing: the router, the stable permutation into streams, the weighted recombination, and
//! the gated output norm.

use serde::{Deserialize, Serialize};

use super::{check_offsets, default_eps, default_true, heads_ok, offsets, oracle, routing};
use crate::backend::{Status, StatusBits};
use crate::dtype::{float_dtype, same_dtype, to_f64, DType, Float};
use crate::error::{invalid, Error, Result};
use crate::layout::{dim, elements};
use crate::plan::{Plan, TensorSpec};

/// The router over `tokens` rows of `logits [T, M]`: `idx [T, k]` (i32, by descending
/// probability, ties to the lower memory) and `weights [T, k]` (f32, summing to 1). A row with
/// a non-finite logit routes to memories `0..k` with equal weights and raises
/// `VALUE_OUT_OF_RANGE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteParams {
    /// Rows `T` of `logits` (tokens, or sequences in decode), at least 1.
    pub tokens: usize,
    /// Memories `M` (columns of `logits`), in `[1, 64]`.
    pub memories: usize,
    /// Memories kept per token, `k`, in `[1, M]`.
    pub topk: usize,
    /// Storage dtype of `logits` (f32, f16 or bf16); `idx` is i32 and `weights` f32 always.
    pub dtype: DType,
}

/// The router plan: softmax, top-k and renormalized weights (see [`RouteParams`]).
#[derive(Debug, Clone)]
pub struct Route {
    /// The parameters, as checked by [`Route::new`].
    pub params: RouteParams,
}

impl Route {
    /// Checks the parameters (ranges as on the fields, sizes within 32-bit indexing):
    /// `Error::DType` for a non-float dtype, else `Error::InvalidParams`.
    pub fn new(p: RouteParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        dim("route tokens", p.tokens)?;
        routing(p.memories, p.topk)?;
        elements("route logits", &[p.tokens, p.memories])?;
        Ok(Self { params: p })
    }

    /// The reference on host slices: `logits [T, M]` in; `idx [T, k]` (i32) and
    /// `weights [T, k]` (f32) out. `Error::DType` if the element type is not the plan's dtype,
    /// `Error::Shape` for a short buffer; a non-finite row raises its bit on the CPU `status`.
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
    /// Tokens `T` over all sequences, at least 1.
    pub tokens: usize,
    /// Sequences `B` (`cu_seqlens` has `B + 1` entries), at least 1.
    pub seqs: usize,
    /// Routed memories `M`, in `[1, 64]`.
    pub memories: usize,
    /// Choices per token `k` (columns of `idx`), in `[1, M]`.
    pub topk: usize,
    /// Adds the shared memory's streams, which list every token; default true.
    #[serde(default = "default_true")]
    pub shared: bool,
}

/// The stable permutation of (token, choice) pairs into streams (see [`PermuteParams`]).
#[derive(Debug, Clone)]
pub struct Permute {
    /// The parameters, as checked by [`Permute::new`].
    pub params: PermuteParams,
}

impl Permute {
    /// Checks the parameters (ranges as on the fields, sizes within 32-bit indexing);
    /// `Error::InvalidParams` otherwise.
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
        self.check_len("idx", idx.len())?;
        self.check_len("cu_seqlens", cu.len())?;
        let p = &self.params;
        check_offsets("cu_seqlens", cu, p.seqs, p.tokens, true)?;
        for t in 0..p.tokens {
            for j in 0..p.topk {
                if oracle::choice(idx, t, j, p.topk, p.memories).is_none() {
                    return Err(Error::InvalidInput(format!(
                        "idx[{t}][{j}] = {} is outside [0, {}) or repeats an earlier choice",
                        idx[t * p.topk + j],
                        p.memories
                    )));
                }
            }
        }
        Ok(())
    }

    /// The reference on host slices: `idx [T, k]` and `cu_seqlens [B + 1]` (i32) in; `order`
    /// and `inverse` (`[rows()]`), `cu_mem [streams() + 1]` out; `counts [streams()]` scratch.
    /// `Error::Shape` for a short buffer; bad contents raise status bits on the CPU `status`.
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
    /// Tokens `T` (rows of `out`), at least 1.
    pub tokens: usize,
    /// Routed choices per token `k` (columns of `weights`), at least 1.
    pub topk: usize,
    /// Whether `inverse` has a `k + 1`-th, unweighted column (the shared memory); default true.
    #[serde(default = "default_true")]
    pub shared: bool,
    /// Row width of `y` and `out` (`H * V` in the layer); even for 16-bit dtypes.
    pub width: usize,
    /// Rows of `y` (`T * (k + shared)` in the layer).
    pub rows: usize,
    /// Storage dtype of `y` and `out` (f32, f16 or bf16); `weights` is f32.
    pub dtype: DType,
}

/// The weighted recombination of stream outputs into token order (see [`UnpermuteParams`]).
#[derive(Debug, Clone)]
pub struct Unpermute {
    /// The parameters, as checked by [`Unpermute::new`].
    pub params: UnpermuteParams,
}

impl Unpermute {
    /// Checks the parameters (sizes at least 1 and within 32-bit indexing, `width` even for
    /// 16-bit dtypes): `Error::DType` for a non-float dtype, else `Error::InvalidParams`.
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

    /// The reference on host slices: `y [rows, width]`, `inverse [T, k + shared]` (i32) and
    /// `weights [T, k]` (f32) in; `out [T, width]` out. `Error::DType` if the element type is not
    /// the plan's dtype, `Error::Shape` for a short buffer; a bad row index raises its bit.
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
    /// Tokens `T` (rows of `o`, `gate`, `y`), at least 1.
    pub tokens: usize,
    /// Heads `H`, at least 1; each head's `V` values are normalized on their own.
    pub heads: usize,
    /// Values per head `V`: a multiple of 8 up to `MAX_HEAD`.
    pub head_v: usize,
    /// Storage dtype of every tensor (f32, f16 or bf16).
    pub dtype: DType,
    /// Added to the mean square under the root; finite and `>= 0`, default 1e-6.
    #[serde(default = "default_eps")]
    pub eps: f32,
}

/// The output norm `rmsnorm(o) * w * silu(gate)` per head (see [`GatedNormParams`]).
#[derive(Debug, Clone)]
pub struct GatedNorm {
    /// The parameters, as checked by [`GatedNorm::new`].
    pub params: GatedNormParams,
}

impl GatedNorm {
    /// Checks the parameters (ranges as on the fields, sizes within 32-bit indexing):
    /// `Error::DType` for a non-float dtype, else `Error::InvalidParams`.
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

    /// The reference on host slices: `o` and `gate` (`[T, H, V]`) and `w [V]` in, `y [T, H, V]`
    /// out. `Error::DType` if the element type is not the plan's dtype, `Error::Shape` for a
    /// short buffer; no status word (nothing here is an index).
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
