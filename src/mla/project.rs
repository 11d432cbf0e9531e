//! The absorbed projections around the latent attention: `absorb_q` folds `W_UK` into the query,
//! `project_out` applies `W_UV` to the latent output. Both are a small matrix per head.

use serde::{Deserialize, Serialize};

use crate::dtype::{float_dtype, from_f64, same_dtype, to_f64, DType, Float};
use crate::error::{invalid, Result};
use crate::layout::{dim, elements};
use crate::plan::{Plan, TensorSpec};

/// `out[t, h, j] = sum_k a[t, h, k] * w[h, k, j]` with every stride explicit: the shared shape
/// of `absorb_q` and `project_out` (which reads `w` transposed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadProduct {
    /// T: token rows.
    pub tokens: usize,
    /// H: heads, each with its own matrix `w[h]`.
    pub heads: usize,
    /// Contracted width (at most 4096).
    pub k: usize,
    /// Output width per head.
    pub n: usize,
    /// `(token, head)` strides of `a` and `out`; `(head, k, j)` strides of `w`.
    pub a: (usize, usize),
    /// `(token, head)` strides of `out`: rows of different heads and tokens may not overlap.
    pub out: (usize, usize),
    /// `(head, k, j)` strides of `w` (`project_out` uses k stride 1 and j stride L: transposed).
    pub w: (usize, usize, usize),
}

impl HeadProduct {
    fn span(&self, (ts, hs): (usize, usize), n: usize) -> usize {
        (self.tokens - 1) * ts + (self.heads - 1) * hs + n
    }
    /// Elements the `a` view spans, from its first element to the end of its last row.
    pub fn a_span(&self) -> usize {
        self.span(self.a, self.k)
    }
    /// Elements the `out` view spans, from its first element to the end of its last row.
    pub fn out_span(&self) -> usize {
        self.span(self.out, self.n)
    }
    /// Elements the `w` view spans, from its first element to one past its last.
    pub fn w_span(&self) -> usize {
        let (hs, ks, js) = self.w;
        (self.heads - 1) * hs + (self.k - 1) * ks + (self.n - 1) * js + 1
    }

    fn validate(&self, what: &str) -> Result<()> {
        for (name, v) in [("tokens", self.tokens), ("heads", self.heads), ("k", self.k), ("n", self.n)] {
            dim(&format!("{what} {name}"), v)?;
        }
        if self.k > MAX_K {
            return Err(invalid(format!("{what}: the contracted width {} exceeds {MAX_K}", self.k)));
        }
        for (name, (a, b)) in [("a", self.a), ("out", self.out)] {
            elements(&format!("{what} {name}"), &[self.tokens, a.max(1)])?;
            elements(&format!("{what} {name}"), &[self.heads, b.max(1)])?;
        }
        let (h, k, j) = self.w;
        for (f, s) in [(self.heads, h), (self.k, k), (self.n, j)] {
            elements(&format!("{what} w"), &[f, s.max(1)])?;
        }
        let (ts, hs) = self.out;
        // Output rows of different heads or tokens may not overlap (they are written in parallel).
        if hs < self.n || ts < (self.heads - 1) * hs + self.n {
            return Err(invalid(format!("{what}: output strides ({ts}, {hs}) overlap rows of {}", self.n)));
        }
        elements(&format!("{what} a"), &[self.a_span()])?;
        elements(&format!("{what} out"), &[self.out_span()])?;
        elements(&format!("{what} w"), &[self.w_span()])?;
        Ok(())
    }

    /// Whether the tensor-core kernel can run this product on buffers at `bases` (a, w, device
    /// addresses): `Some(transposed)` for f16/bf16 when `w`'s rows are contiguous along j (or,
    /// transposed, along k), K and N are multiples of 8, every other stride is a multiple of 8
    /// elements and both bases are 16-byte aligned, so cp.async copies 16 bytes at a time.
    pub fn tensor_core_layout(&self, dtype: DType, bases: [u64; 2]) -> Option<bool> {
        let (hs, ks, js) = self.w;
        let transposed = match (ks, js) {
            (_, 1) => false,
            (1, _) => true,
            _ => return None,
        };
        let other = if transposed { js } else { ks };
        let eights = [self.k, self.n, self.a.0, self.a.1, hs, other];
        let ok = matches!(dtype, DType::F16 | DType::BF16)
            && eights.iter().all(|v| v % 8 == 0)
            && bases.iter().all(|b| b % 16 == 0);
        ok.then_some(transposed)
    }

    /// The oracle: every output row of the view in f64 (gaps untouched).
    pub fn run_f64(&self, a: &[f64], w: &[f64], out: &mut [f64]) {
        let (hs, ks, js) = self.w;
        for t in 0..self.tokens {
            for h in 0..self.heads {
                let ab = t * self.a.0 + h * self.a.1;
                for j in 0..self.n {
                    let s: f64 = (0..self.k).map(|k| a[ab + k] * w[h * hs + k * ks + j * js]).sum();
                    out[t * self.out.0 + h * self.out.1 + j] = s;
                }
            }
        }
    }

    pub(super) fn run_host<T: Float>(&self, a: &[T], w: &[T], out: &mut [T]) {
        let mut o = to_f64(&out[..self.out_span()]);
        self.run_f64(&to_f64(&a[..self.a_span()]), &to_f64(&w[..self.w_span()]), &mut o);
        // Only the view's elements change: round those, keep the gaps bit for bit.
        for t in 0..self.tokens {
            for h in 0..self.heads {
                let b = t * self.out.0 + h * self.out.1;
                out[b..b + self.n].copy_from_slice(&from_f64::<T>(&o[b..b + self.n]));
            }
        }
    }
}

/// The widest contraction the kernels stage on chip.
pub const MAX_K: usize = 4096;

fn default_strides(s: Option<(usize, usize)>, heads: usize, n: usize) -> (usize, usize) {
    s.unwrap_or((heads.saturating_mul(n), n))
}

/// `absorb_q`: `q_lat[t, h] = q_nope[t, h] W_UK[h]` with `W_UK [H, Dn, L]`, the key half of each
/// head's block of DeepSeek's `wkv_b` (pass `w_head_stride = (Dn + Dv) * L` to use it in place).
/// The output is a strided view, usually the latent part of `q [T, H, L + R]`
/// (`q_strides = (H * (L + R), L + R)`), so `rope` fills the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbsorbQParams {
    /// T: tokens.
    pub tokens: usize,
    /// H: query heads.
    pub heads: usize,
    /// Dn: the no-rope query width per head.
    pub nope: usize,
    /// L: latent width, the output row per head.
    pub latent: usize,
    /// Storage dtype of `q_nope`, `w_uk` and `q`: f32, f16 or bf16.
    pub dtype: DType,
    /// Elements between heads of `w_uk` (default `nope * latent`).
    #[serde(default)]
    pub w_head_stride: Option<usize>,
    /// `(token, head)` strides of `q_nope` (default dense).
    #[serde(default)]
    pub q_nope_strides: Option<(usize, usize)>,
    /// `(token, head)` strides of the output `q` (default dense `[T, H, L]`).
    #[serde(default)]
    pub q_strides: Option<(usize, usize)>,
}

/// A validated `absorb_q` plan, built once by [`AbsorbQ::new`].
#[derive(Debug, Clone)]
pub struct AbsorbQ {
    /// The parameters the plan was built from.
    pub params: AbsorbQParams,
    /// The per-head product the params describe, default strides filled in.
    pub product: HeadProduct,
}

impl AbsorbQ {
    /// Validates the params: a float `dtype` (else `Error::DType`); sizes >= 1, `nope` at most
    /// 4096, strides whose output rows do not overlap and every span within 32-bit indexing
    /// (else `Error::InvalidParams`).
    pub fn new(p: AbsorbQParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        dim("absorb_q nope", p.nope)?;
        dim("absorb_q latent", p.latent)?;
        let product = HeadProduct {
            tokens: p.tokens,
            heads: p.heads,
            k: p.nope,
            n: p.latent,
            a: default_strides(p.q_nope_strides, p.heads, p.nope),
            out: default_strides(p.q_strides, p.heads, p.latent),
            w: (p.w_head_stride.unwrap_or(p.nope.saturating_mul(p.latent)), p.latent, 1),
        };
        product.validate("absorb_q")?;
        Ok(Self { params: p, product })
    }

    /// The oracle on host slices (f64 inside): `q_nope` and `w_uk` in, `q` out; only the output
    /// view's elements are written, gaps keep their bits. `Error::DType` for buffers of another
    /// dtype, `Error::Shape` for one too short.
    pub fn run_cpu<T: Float>(&self, q_nope: &[T], w_uk: &[T], q: &mut [T]) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&[("q_nope", q_nope.len()), ("w_uk", w_uk.len()), ("q", q.len())])?;
        self.product.run_host(q_nope, w_uk, q);
        Ok(())
    }
}

/// `project_out`: `out[t, h] = W_UV[h] o[t, h]` with `W_UV [H, Dv, L]`, contracting over the
/// latent (the value half of each head's block of `wkv_b`: `w_head_stride = (Dn + Dv) * L` and the
/// view starting `Dn * L` in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectOutParams {
    /// T: tokens.
    pub tokens: usize,
    /// H: heads.
    pub heads: usize,
    /// L: latent width, the contracted axis (at most 4096).
    pub latent: usize,
    /// Dv: the value width per head.
    pub v_dim: usize,
    /// Storage dtype of `o`, `w_uv` and `out`: f32, f16 or bf16.
    pub dtype: DType,
    /// Elements between heads of `w_uv` (default `v_dim * latent`).
    #[serde(default)]
    pub w_head_stride: Option<usize>,
    /// `(token, head)` strides of `out` (default dense `[T, H, Dv]`).
    #[serde(default)]
    pub out_strides: Option<(usize, usize)>,
}

/// A validated `project_out` plan, built once by [`ProjectOut::new`].
#[derive(Debug, Clone)]
pub struct ProjectOut {
    /// The parameters the plan was built from.
    pub params: ProjectOutParams,
    /// The per-head product the params describe, default strides filled in.
    pub product: HeadProduct,
}

impl ProjectOut {
    /// Validates the params: a float `dtype` (else `Error::DType`); sizes >= 1, `latent` at most
    /// 4096, strides whose output rows do not overlap and every span within 32-bit indexing
    /// (else `Error::InvalidParams`).
    pub fn new(p: ProjectOutParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        dim("project_out latent", p.latent)?;
        dim("project_out v_dim", p.v_dim)?;
        let product = HeadProduct {
            tokens: p.tokens,
            heads: p.heads,
            k: p.latent,
            n: p.v_dim,
            a: (p.heads.saturating_mul(p.latent), p.latent),
            out: default_strides(p.out_strides, p.heads, p.v_dim),
            w: (p.w_head_stride.unwrap_or(p.v_dim.saturating_mul(p.latent)), 1, p.latent),
        };
        product.validate("project_out")?;
        Ok(Self { params: p, product })
    }

    /// The oracle on host slices (f64 inside): `o [T, H, L]` (dense) and `w_uv` in, `out` out;
    /// only the output view's elements are written, gaps keep their bits. `Error::DType` for
    /// buffers of another dtype, `Error::Shape` for one too short.
    pub fn run_cpu<T: Float>(&self, o: &[T], w_uv: &[T], out: &mut [T]) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&[("o", o.len()), ("w_uv", w_uv.len()), ("out", out.len())])?;
        self.product.run_host(o, w_uv, out);
        Ok(())
    }
}

impl Plan for AbsorbQ {
    type Params = AbsorbQParams;
    const NAME: &'static str = "absorb_q";
    fn build(p: AbsorbQParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &AbsorbQParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let (dt, hp) = (self.params.dtype, &self.product);
        vec![
            TensorSpec::input("q_nope", dt, hp.a_span()),
            TensorSpec::input("w_uk", dt, hp.w_span()),
            TensorSpec::output("q", dt, hp.out_span()),
        ]
    }
}

impl Plan for ProjectOut {
    type Params = ProjectOutParams;
    const NAME: &'static str = "project_out";
    fn build(p: ProjectOutParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &ProjectOutParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let (dt, hp) = (self.params.dtype, &self.product);
        vec![
            TensorSpec::input("o", dt, hp.a_span()),
            TensorSpec::input("w_uv", dt, hp.w_span()),
            TensorSpec::output("out", dt, hp.out_span()),
        ]
    }
}
