//! Rotary position embedding of the decoupled keys and queries, in place.

use serde::{Deserialize, Serialize};

use crate::dtype::{float_dtype, from_f64, same_dtype, to_f64, DType, Float};
use crate::error::{invalid, Result};
use crate::layout::{dim, elements};
use crate::plan::{Plan, TensorSpec};

/// Rotates `x [tokens, heads, dim]` in place by the caller's tables `cos`, `sin [tokens, dim/2]`
/// (f32; YaRN or subsampled frequencies are the caller's choice): pair `i` of a head is
/// `(x[2i], x[2i+1])` when `interleaved` (DeepSeek-V3's complex view) or `(x[i], x[i + dim/2])`
/// (the half-split of NeoX and Llama), and becomes `(a cos - b sin, a sin + b cos)`. Heads sit
/// `head_stride` elements apart and tokens `token_stride`, so `x` can be the rope part of a
/// query (`[T, H, L + R]` at offset L) or of a key row; views may not overlap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RopeParams {
    /// T: tokens (rows of `cos` and `sin`).
    pub tokens: usize,
    /// Heads per token, each rotated by its token's angles.
    pub heads: usize,
    /// Rotated width per head: even.
    pub dim: usize,
    /// Pairs `(x[2i], x[2i+1])` (DeepSeek-V3) when set, else `(x[i], x[i + dim/2])`.
    pub interleaved: bool,
    /// Storage dtype of `x`: f32, f16 or bf16 (`cos` and `sin` are f32).
    pub dtype: DType,
    /// Elements between heads (default `dim`).
    #[serde(default)]
    pub head_stride: Option<usize>,
    /// Elements between tokens (default `heads * head_stride`).
    #[serde(default)]
    pub token_stride: Option<usize>,
}

/// A validated rope plan with its strides resolved, built once by [`Rope::new`].
#[derive(Debug, Clone)]
pub struct Rope {
    /// The parameters the plan was built from.
    pub params: RopeParams,
    /// Elements between heads: `params.head_stride`, or `dim`.
    pub head_stride: usize,
    /// Elements between tokens: `params.token_stride`, or `heads * head_stride`.
    pub token_stride: usize,
}

impl Rope {
    /// Validates the params: a float `dtype` (else `Error::DType`); sizes >= 1; an even `dim`;
    /// `head_stride >= dim`; a `token_stride` that does not overlap a token's heads; sizes within
    /// 32-bit indexing (else `Error::InvalidParams`).
    pub fn new(p: RopeParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        for (what, v) in [("rope tokens", p.tokens), ("rope heads", p.heads), ("rope dim", p.dim)] {
            dim(what, v)?;
        }
        if !p.dim.is_multiple_of(2) {
            return Err(invalid(format!("rope dim = {} must be even", p.dim)));
        }
        let hs = p.head_stride.unwrap_or(p.dim);
        if hs < p.dim {
            return Err(invalid(format!("rope head_stride = {hs} is below dim = {}", p.dim)));
        }
        let head_span = elements("rope heads * head_stride", &[p.heads, hs])? - hs + p.dim;
        let ts = p.token_stride.unwrap_or(p.heads * hs);
        if ts < head_span {
            return Err(invalid(format!("rope token_stride = {ts} overlaps a token's {head_span} elements")));
        }
        elements("rope x", &[p.tokens, ts])?;
        elements("rope tables", &[p.tokens, p.dim / 2])?;
        Ok(Self { params: p, head_stride: hs, token_stride: ts })
    }

    fn span(&self) -> usize {
        let p = &self.params;
        (p.tokens - 1) * self.token_stride + (p.heads - 1) * self.head_stride + p.dim
    }

    /// The element indices of pair `i` of a head starting at `base`.
    pub fn pair(&self, base: usize, i: usize) -> (usize, usize) {
        if self.params.interleaved {
            (base + 2 * i, base + 2 * i + 1)
        } else {
            (base + i, base + i + self.params.dim / 2)
        }
    }

    /// The reference on host slices (f64 inside, rounded to `T` on the way out).
    pub fn run_cpu<T: Float>(&self, x: &mut [T], cos: &[f32], sin: &[f32]) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&[("x", x.len()), ("cos", cos.len()), ("sin", sin.len())])?;
        let p = &self.params;
        let half = p.dim / 2;
        for t in 0..p.tokens {
            for h in 0..p.heads {
                let base = t * self.token_stride + h * self.head_stride;
                for i in 0..half {
                    let (ia, ib) = self.pair(base, i);
                    let v = to_f64(&[x[ia], x[ib]]);
                    let (c, s) = (f64::from(cos[t * half + i]), f64::from(sin[t * half + i]));
                    let out = from_f64::<T>(&[v[0] * c - v[1] * s, v[0] * s + v[1] * c]);
                    (x[ia], x[ib]) = (out[0], out[1]);
                }
            }
        }
        Ok(())
    }
}

impl Plan for Rope {
    type Params = RopeParams;
    const NAME: &'static str = "rope";
    fn build(p: RopeParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &RopeParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        vec![
            TensorSpec::in_out("x", p.dtype, self.span()),
            TensorSpec::input("cos", DType::F32, p.tokens * p.dim / 2),
            TensorSpec::input("sin", DType::F32, p.tokens * p.dim / 2),
        ]
    }
}
