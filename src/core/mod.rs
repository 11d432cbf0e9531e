//! Core kernels that every family reuses: `rmsnorm`, `merge_states` (split-KV combine) and
//! `gather_rows` (index gather with the status word for bad indices).
//!
//! The pattern every family copies: a params struct, `Plan::new` validates it once, then
//! `run_cpu` (the f64 oracle), `run_cuda` (caller's stream and cudarc buffers) and `run_wgpu`
//! (recorded into the caller's encoder) check buffer sizes and launch; none allocates device
//! memory beyond wgpu's per-dispatch uniform and bind group, and none synchronizes.

#[cfg(feature = "cuda")]
mod cuda;
pub mod oracle;
pub(crate) mod registry;
#[cfg(feature = "wgpu")]
pub(crate) mod uniforms;
#[cfg(feature = "wgpu")]
mod wgpu;

use serde::{Deserialize, Serialize};

use crate::dtype::{float_dtype, from_f64, same_dtype, to_f64, DType, Float};
use crate::error::{invalid, Error, Result};
use crate::layout::Rows;
use crate::plan::{Plan, TensorSpec};

fn default_eps() -> f32 {
    1e-6
}

// ---------------------------------------------------------------------------------------------

/// `y = x / sqrt(mean(x^2) + eps) * w` over rows of `cols`; x, w and y share the dtype.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmsNormParams {
    /// Rows to normalize (tokens); at least 1.
    pub rows: usize,
    /// Elements per row, the normalized dimension (and the length of `w`); at least 1.
    pub cols: usize,
    /// Added to the mean square before the square root; finite and >= 0 (default 1e-6).
    #[serde(default = "default_eps")]
    pub eps: f32,
    /// Storage dtype of x, w and y: f32, f16 or bf16.
    pub dtype: DType,
    /// Elements between rows of x (default `cols`).
    #[serde(default)]
    pub x_stride: Option<usize>,
    /// Elements between rows of y (default `cols`).
    #[serde(default)]
    pub y_stride: Option<usize>,
}

/// A validated RMSNorm.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    /// The params it was built from.
    pub params: RmsNormParams,
    /// The input view: `rows` x `cols`, `x_stride` apart.
    pub x: Rows,
    /// The output view: `rows` x `cols`, `y_stride` apart.
    pub y: Rows,
}

impl RmsNorm {
    /// Validates `p`: a float dtype (else `Error::DType`), rows and cols >= 1, a finite
    /// `eps >= 0`, strides >= cols whose span fits 32-bit indexing (else `Error::InvalidParams`).
    /// Tensors: `x` `[rows, cols]` (strided), `w` `[cols]`, `y` `[rows, cols]` (strided).
    pub fn new(p: RmsNormParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        if p.rows == 0 || p.cols == 0 {
            return Err(invalid(format!("rmsnorm needs rows >= 1 and cols >= 1, got {} x {}", p.rows, p.cols)));
        }
        if !(p.eps.is_finite() && p.eps >= 0.0) {
            return Err(invalid(format!("rmsnorm eps must be finite and >= 0, got {}", p.eps)));
        }
        let x = Rows::new("rmsnorm x", p.rows, p.cols, p.x_stride)?;
        let y = Rows::new("rmsnorm y", p.rows, p.cols, p.y_stride)?;
        Ok(Self { params: p, x, y })
    }

    /// The oracle on host slices (f64 inside, rounded to `T` on the way out).
    pub fn run_cpu<T: Float>(&self, x: &[T], w: &[T], y: &mut [T]) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&[("x", x.len()), ("w", w.len()), ("y", y.len())])?;
        let p = &self.params;
        let out = oracle::rmsnorm(&to_f64(&self.x.gather(x)), &to_f64(&w[..p.cols]), p.rows, p.cols, f64::from(p.eps));
        self.y.scatter(&from_f64::<T>(&out), y);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

/// Merge `(o1, lse1)` and `(o2, lse2)`, partial attention over disjoint keys, into `(o, lse)`.
/// `states` rows of `dim` (e.g. tokens x heads); lse is f32, natural log, contiguous.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeStatesParams {
    /// Rows to merge (e.g. tokens x heads), one LSE each; at least 1.
    pub states: usize,
    /// Elements per output row (the head dim); at least 1.
    pub dim: usize,
    /// Storage dtype of o1, o2 and o (f32, f16 or bf16); the LSEs are always f32.
    pub dtype: DType,
    /// Elements between rows of o1 (default `dim`).
    #[serde(default)]
    pub o1_stride: Option<usize>,
    /// Elements between rows of o2 (default `dim`).
    #[serde(default)]
    pub o2_stride: Option<usize>,
    /// Elements between rows of o (default `dim`).
    #[serde(default)]
    pub o_stride: Option<usize>,
}

/// A validated `merge_states`.
#[derive(Debug, Clone)]
pub struct MergeStates {
    /// The params it was built from.
    pub params: MergeStatesParams,
    /// The first partial output: `states` x `dim`, `o1_stride` apart.
    pub o1: Rows,
    /// The second partial output: `states` x `dim`, `o2_stride` apart.
    pub o2: Rows,
    /// The merged output: `states` x `dim`, `o_stride` apart.
    pub o: Rows,
}

impl MergeStates {
    /// Validates `p`: a float dtype (else `Error::DType`), states and dim >= 1, strides >= dim
    /// whose spans fit 32-bit indexing (else `Error::InvalidParams`). Tensors: `o1`, `o2`, `o`
    /// `[states, dim]` (strided) and `lse1`, `lse2`, `lse` `[states]` f32 (`-inf`: empty part).
    pub fn new(p: MergeStatesParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        if p.states == 0 || p.dim == 0 {
            return Err(invalid(format!("merge_states needs states >= 1 and dim >= 1, got {} x {}", p.states, p.dim)));
        }
        let o1 = Rows::new("merge_states o1", p.states, p.dim, p.o1_stride)?;
        let o2 = Rows::new("merge_states o2", p.states, p.dim, p.o2_stride)?;
        let o = Rows::new("merge_states o", p.states, p.dim, p.o_stride)?;
        Ok(Self { params: p, o1, o2, o })
    }

    /// The oracle on host slices.
    pub fn run_cpu<T: Float>(
        &self,
        o1: &[T],
        l1: &[f32],
        o2: &[T],
        l2: &[f32],
        o: &mut [T],
        l: &mut [f32],
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&[
            ("o1", o1.len()),
            ("lse1", l1.len()),
            ("o2", o2.len()),
            ("lse2", l2.len()),
            ("o", o.len()),
            ("lse", l.len()),
        ])?;
        let n = self.params.states;
        let lf = |v: &[f32]| v[..n].iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        let (out, lse) = oracle::merge_states(
            &to_f64(&self.o1.gather(o1)),
            &lf(l1),
            &to_f64(&self.o2.gather(o2)),
            &lf(l2),
            self.params.dim,
        );
        self.o.scatter(&from_f64::<T>(&out), o);
        for (d, s) in l.iter_mut().zip(lse) {
            *d = s as f32;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

/// `out[i] = src[idx[i]]` for `rows` indices into `src_rows` rows of `cols`.
/// An index out of range writes a zero row and raises `StatusBits::INDEX_OUT_OF_RANGE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatherRowsParams {
    /// Rows to gather: the length of `idx` and the rows of `out`; at least 1.
    pub rows: usize,
    /// Rows of `src` (valid indices are `0..src_rows`); at least 1, at most `i32::MAX`.
    pub src_rows: usize,
    /// Elements per row; at least 1.
    pub cols: usize,
    /// Storage dtype of src and out (f32, f16 or bf16); `idx` is i32.
    pub dtype: DType,
    /// Elements between rows of src (default `cols`).
    #[serde(default)]
    pub src_stride: Option<usize>,
    /// Elements between rows of out (default `cols`).
    #[serde(default)]
    pub out_stride: Option<usize>,
}

/// A validated `gather_rows`.
#[derive(Debug, Clone)]
pub struct GatherRows {
    /// The params it was built from.
    pub params: GatherRowsParams,
    /// The source view: `src_rows` x `cols`, `src_stride` apart.
    pub src: Rows,
    /// The output view: `rows` x `cols`, `out_stride` apart.
    pub out: Rows,
}

impl GatherRows {
    /// Validates `p`: a float dtype (else `Error::DType`), rows, src_rows and cols >= 1,
    /// src_rows <= `i32::MAX`, strides >= cols whose spans fit 32-bit indexing (else
    /// `Error::InvalidParams`). Tensors: `src` `[src_rows, cols]` (strided), `idx` `[rows]` i32,
    /// `out` `[rows, cols]` (strided).
    pub fn new(p: GatherRowsParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        if p.rows == 0 || p.cols == 0 || p.src_rows == 0 {
            return Err(invalid(format!(
                "gather_rows needs rows, src_rows and cols >= 1, got {}, {}, {}",
                p.rows, p.src_rows, p.cols
            )));
        }
        if p.src_rows > i32::MAX as usize {
            return Err(invalid("gather_rows: src_rows exceeds i32 indices"));
        }
        let src = Rows::new("gather_rows src", p.src_rows, p.cols, p.src_stride)?;
        let out = Rows::new("gather_rows out", p.rows, p.cols, p.out_stride)?;
        Ok(Self { params: p, src, out })
    }

    /// Every index in range: the explicit check for callers that want an error before the launch.
    pub fn validate_indices(&self, idx: &[i32]) -> Result<()> {
        self.check_len("idx", idx.len())?;
        match idx.iter().take(self.params.rows).position(|&j| j < 0 || j as usize >= self.params.src_rows) {
            Some(i) => Err(Error::InvalidInput(format!(
                "gather_rows idx[{i}] = {} is outside [0, {})",
                idx[i], self.params.src_rows
            ))),
            None => Ok(()),
        }
    }

    /// The oracle on host slices; a bad index raises the status bit as the kernels do.
    pub fn run_cpu<T: Float>(
        &self,
        src: &[T],
        idx: &[i32],
        out: &mut [T],
        status: &crate::backend::Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&[("src", src.len()), ("idx", idx.len()), ("out", out.len())])?;
        let p = &self.params;
        let (o, bad) = oracle::gather_rows(&to_f64(&self.src.gather(src)), &idx[..p.rows], p.src_rows, p.cols);
        self.out.scatter(&from_f64::<T>(&o), out);
        if bad {
            status.raise(crate::backend::StatusBits::INDEX_OUT_OF_RANGE)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The tensors of each plan, declared once.

impl Plan for RmsNorm {
    type Params = RmsNormParams;
    const NAME: &'static str = "rmsnorm";
    fn build(p: RmsNormParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &RmsNormParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let dt = self.params.dtype;
        vec![
            TensorSpec::input("x", dt, self.x.span()),
            TensorSpec::input("w", dt, self.params.cols),
            TensorSpec::output("y", dt, self.y.span()),
        ]
    }
}

impl Plan for MergeStates {
    type Params = MergeStatesParams;
    const NAME: &'static str = "merge_states";
    fn build(p: MergeStatesParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &MergeStatesParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let (dt, n) = (self.params.dtype, self.params.states);
        vec![
            TensorSpec::input("o1", dt, self.o1.span()),
            TensorSpec::input("lse1", DType::F32, n),
            TensorSpec::input("o2", dt, self.o2.span()),
            TensorSpec::input("lse2", DType::F32, n),
            TensorSpec::output("o", dt, self.o.span()),
            TensorSpec::output("lse", DType::F32, n),
        ]
    }
}

impl Plan for GatherRows {
    type Params = GatherRowsParams;
    const NAME: &'static str = "gather_rows";
    fn build(p: GatherRowsParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &GatherRowsParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let dt = self.params.dtype;
        vec![
            TensorSpec::input("src", dt, self.src.span()),
            TensorSpec::input("idx", DType::I32, self.params.rows),
            TensorSpec::output("out", dt, self.out.span()),
        ]
    }
}
