//! The activation side (fused RMSNorm + int8 quantization), the exact ternary product, and
//! the BitLinear layer that joins them.

use serde::{Deserialize, Serialize};

use super::{dim, elements, model_eps, one, oracle, padded_k, words_per_row, GEMV_MAX_M};
use crate::dtype::{float_dtype, same_dtype, to_f64, DType, Float};
use crate::error::{invalid, Result};
use crate::layout::Rows;
use crate::plan::{Plan, TensorSpec};

// ---------------------------------------------------------------------------------------------
// Activations

/// Fused RMSNorm + per-row absmax int8 quantization, for `projections` norm weights at once.
/// With `glu`, each row of x is `[g, u]` (2k wide) and the normalized input is `silu(g) * u`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmsNormQuantParams {
    /// Rows of `x` (tokens).
    pub m: usize,
    /// Features per row after the norm (the BitLinear's input size); `x` rows are `2 * k` wide
    /// with `glu`.
    pub k: usize,
    /// RMSNorm epsilon, finite and >= 0; default [`MODEL_EPS`](super::MODEL_EPS) (1e-6).
    #[serde(default = "model_eps")]
    pub eps: f32,
    /// Storage dtype of `x` and `norm_w`: f32, f16 or bf16.
    pub dtype: DType,
    /// Norm weights applied to the same rows (default 1); `q` and `s` hold one block per
    /// projection.
    #[serde(default = "one")]
    pub projections: usize,
    /// Rows of `x` are `[g, u]` (`2 * k` wide) and the normalized input is `silu(g) * u` (the GLU
    /// mixer's down projection); default false.
    #[serde(default)]
    pub glu: bool,
    /// Elements between rows of `x` (default the row length, `k` or `2 * k`; never less).
    #[serde(default)]
    pub x_stride: Option<usize>,
}

/// A validated [`RmsNormQuantParams`]: writes `q` (i8 `[projections, m, padded_k(k)]`, zero
/// padding) and `s` (f32 `[projections, m]`) from `x` and `norm_w` (`[projections, k]`).
#[derive(Debug, Clone)]
pub struct RmsNormQuant {
    /// The params it was built from.
    pub params: RmsNormQuantParams,
    /// The input view: `m` rows of `k` (`2 * k` with `glu`), `x_stride` apart.
    pub x: Rows,
}

impl RmsNormQuant {
    /// Validates `p`: a float dtype (else `Error::DType`); `m`, `k`, `projections` >= 1, a finite
    /// `eps >= 0`, a stride no shorter than a row and sizes within 32-bit indexing (else
    /// `Error::InvalidParams`).
    pub fn new(p: RmsNormQuantParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        dim("rmsnorm_quant m", p.m)?;
        dim("rmsnorm_quant k", p.k)?;
        dim("rmsnorm_quant projections", p.projections)?;
        if !(p.eps.is_finite() && p.eps >= 0.0) {
            return Err(invalid(format!("eps must be finite and >= 0, got {}", p.eps)));
        }
        let cols = if p.glu { 2 * p.k } else { p.k };
        let x = Rows::new("rmsnorm_quant x", p.m, cols, p.x_stride)?;
        elements("rmsnorm_quant q", &[p.projections, p.m, padded_k(p.k)])?;
        Ok(Self { params: p, x })
    }

    /// Elements of `q`: `projections * m * padded_k(k)` (i8).
    pub fn q_len(&self) -> usize {
        self.params.projections * self.params.m * padded_k(self.params.k)
    }

    /// Elements of `s`: `projections * m` (f32, one scale per row and projection).
    pub fn s_len(&self) -> usize {
        self.params.projections * self.params.m
    }

    /// The normalized input rows (x, or silu(g) * u), dense `[m, k]`.
    pub(super) fn input_f64<T: Float>(&self, x: &[T]) -> Vec<f64> {
        let xs = to_f64(&self.x.gather(x));
        if self.params.glu {
            oracle::glu(&xs, self.params.m, self.params.k)
        } else {
            xs
        }
    }

    /// The f64 oracle (round half to even). Tensors: `x` (the strided view), `w` the norm weights
    /// `[projections, k]`, outputs `q` and `s`. `Error::DType` if `T` is not the plan's dtype,
    /// `Error::Shape` if a buffer is too short.
    pub fn run_cpu<T: Float>(&self, x: &[T], w: &[T], q: &mut [i8], s: &mut [f32]) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let p = &self.params;
        self.check_lens(&[("x", x.len()), ("norm_w", w.len()), ("q", q.len()), ("s", s.len())])?;
        let xin = self.input_f64(x);
        let per = p.m * padded_k(p.k);
        for pr in 0..p.projections {
            let wf = to_f64(&w[pr * p.k..(pr + 1) * p.k]);
            let (qq, ss, _) = oracle::rmsnorm_quant(&xin, &wf, p.m, p.k, f64::from(p.eps));
            q[pr * per..(pr + 1) * per].copy_from_slice(&qq);
            for (d, v) in s[pr * p.m..(pr + 1) * p.m].iter_mut().zip(ss) {
                *d = v as f32;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The product

/// `out[m, j] = (sum_k q[p, m, k] t[j, k]) * gamma[p, part(j)] / s[p, m]` over `projections`
/// stacked weight blocks of `n` rows (`j = p * n + row`), exact i32 accumulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TernaryMatmulParams {
    /// Rows of `q` (tokens); up to [`GEMV_MAX_M`](super::GEMV_MAX_M) (8) run the GEMV, more the
    /// tiled GEMM.
    pub m: usize,
    /// Output rows of each projection's ternary block `[n, k]`.
    pub n: usize,
    /// Input size (columns of the weights); at most 131072, so the i32 sums stay exact in f32.
    pub k: usize,
    /// Stacked weight blocks, each with its own `q`/`s` block and gammas (default 1); output
    /// column `p * n + row`.
    #[serde(default = "one")]
    pub projections: usize,
    /// Gammas per projection (default 1), each over `n / partitions` consecutive rows; must
    /// divide `n`.
    #[serde(default = "one")]
    pub partitions: usize,
    /// Output dtype.
    pub dtype: DType,
    /// Elements between output rows (default `projections * n`).
    #[serde(default)]
    pub out_stride: Option<usize>,
    /// Add to the output instead of overwriting it (a residual connection).
    #[serde(default)]
    pub accumulate: bool,
    /// Also write the raw i32 accumulators (for tests and debugging).
    #[serde(default)]
    pub write_acc: bool,
    /// CUDA, `m` over 8: the GEMM on int8 tensor cores (`mma.sync` m16n8k32, sm_80 and later)
    /// or (false) on dp4a. Absent: tensor cores for `m >= 16` on sm_80 and later, dp4a below
    /// (proven on the emulated device; `GPU_VERIFIED.md` says whether on a GPU). The CPU and
    /// wgpu paths ignore it.
    #[serde(default)]
    pub tensor_cores: Option<bool>,
}

/// See [`TernaryMatmul::gemv_rows_per_block`].
pub(crate) fn gemv_rows_per_block(n: usize, projections: usize, sm_count: usize) -> usize {
    [8, 4, 2, 1].into_iter().find(|&r| projections * n.div_ceil(r) >= 2 * 8 * sm_count).unwrap_or(1)
}

/// A validated [`TernaryMatmulParams`]. Tensors: `q` (i8 `[projections, m, padded_k(k)]`),
/// `s` (f32 `[projections, m]`), `packed` (u32 `[projections * n, words_per_row(k)]`), `gamma`
/// (f32 `[projections, partitions]`), `out` (`m` rows of `projections * n`, strided) and, with
/// `write_acc`, `acc` (i32 `[m, projections * n]`).
#[derive(Debug, Clone)]
pub struct TernaryMatmul {
    /// The params it was built from.
    pub params: TernaryMatmulParams,
    /// The output view: `m` rows of `projections * n`, `out_stride` apart.
    pub out: Rows,
}

impl TernaryMatmul {
    /// Validates `p`: a float dtype (else `Error::DType`); every size >= 1, `partitions` dividing
    /// `n`, `k <= 131072` and sizes within 32-bit indexing (else `Error::InvalidParams`).
    pub fn new(p: TernaryMatmulParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        for (w, v) in [("m", p.m), ("n", p.n), ("k", p.k), ("projections", p.projections), ("partitions", p.partitions)]
        {
            dim(&format!("matmul {w}"), v)?;
        }
        if !p.n.is_multiple_of(p.partitions) {
            return Err(invalid(format!("{} partitions do not divide n = {}", p.partitions, p.n)));
        }
        // |acc| <= 128 * k must fit i32 (and f32 exactly for the scale step: k < 2^17).
        if p.k > (1 << 17) {
            return Err(invalid(format!("k = {} exceeds 131072, where i32 sums stay exact in f32", p.k)));
        }
        let out = Rows::new("ternary_matmul out", p.m, p.projections * p.n, p.out_stride)?;
        elements("matmul packed", &[p.projections, p.n, padded_k(p.k)])?;
        elements("matmul q", &[p.projections, p.m, padded_k(p.k)])?;
        Ok(Self { params: p, out })
    }

    /// Output columns over all projections: `projections * n`.
    pub fn total_n(&self) -> usize {
        self.params.projections * self.params.n
    }
    /// Elements of `q`: `projections * m * padded_k(k)`.
    pub fn q_len(&self) -> usize {
        self.params.projections * self.params.m * padded_k(self.params.k)
    }
    /// Elements of `s`: `projections * m`.
    pub fn s_len(&self) -> usize {
        self.params.projections * self.params.m
    }
    /// u32 words of `packed`: `projections * n * words_per_row(k)`.
    pub fn packed_len(&self) -> usize {
        self.total_n() * words_per_row(self.params.k)
    }
    /// Elements of `gamma`: `projections * partitions`.
    pub fn gamma_len(&self) -> usize {
        self.params.projections * self.params.partitions
    }
    /// Elements of the `acc` output: `m * projections * n`.
    pub fn acc_len(&self) -> usize {
        self.params.m * self.total_n()
    }
    /// Output rows per 256-thread block of the CUDA GEMV (`ternary_gemv_r<R>`): the most of 8, 4,
    /// 2 and 1 that still give two waves of blocks (8 to a multiprocessor) on `sm_count`
    /// multiprocessors, else 1; each row's K is split over the block's 8 / R warps.
    pub fn gemv_rows_per_block(&self, sm_count: usize) -> usize {
        gemv_rows_per_block(self.params.n, self.params.projections, sm_count)
    }

    /// Whether the CUDA GEMM (`m` over 8) runs on int8 tensor cores on a device of compute
    /// capability `major`: `tensor_cores` if given, else `m >= 16` on sm_80 and later.
    pub fn uses_tensor_cores(&self, major: i32) -> bool {
        self.params.tensor_cores.unwrap_or(self.params.m >= 16 && major >= 8)
    }

    /// Whether the GPU paths take the GEMV (`m <= GEMV_MAX_M`) rather than the tiled GEMM.
    pub fn uses_gemv(&self) -> bool {
        self.params.m <= GEMV_MAX_M
    }

    /// Gamma index of stacked output row j.
    pub fn gamma_of(&self, j: usize) -> usize {
        let p = &self.params;
        (j / p.n) * p.partitions + (j % p.n) / (p.n / p.partitions)
    }

    /// The buffer lengths; `acc` must be given exactly when `write_acc` is set.
    pub(super) fn check_buffers(
        &self,
        q: usize,
        s: usize,
        packed: usize,
        gamma: usize,
        out: usize,
        acc: Option<usize>,
    ) -> Result<()> {
        let mut v = vec![("q", q), ("s", s), ("packed", packed), ("gamma", gamma), ("out", out)];
        v.extend(acc.map(|a| ("acc", a)));
        self.check_lens(&v)
    }

    /// The exact accumulators `[m, projections * n]` of the oracle.
    pub fn accumulate_cpu(&self, q: &[i8], packed: &[u32]) -> Vec<i64> {
        let p = &self.params;
        let (t, _) = oracle::unpack(packed, self.total_n(), p.k);
        let per = p.m * padded_k(p.k);
        let mut acc = vec![0i64; self.acc_len()];
        for pr in 0..p.projections {
            let tb = &t[pr * p.n * padded_k(p.k)..(pr + 1) * p.n * padded_k(p.k)];
            let a = oracle::accumulate(&q[pr * per..(pr + 1) * per], tb, p.m, p.n, p.k);
            for i in 0..p.m {
                for j in 0..p.n {
                    acc[i * self.total_n() + pr * p.n + j] = a[i * p.n + j];
                }
            }
        }
        acc
    }

    /// Dequantized f64 outputs `[m, projections * n]` from exact accumulators.
    pub fn dequantize_cpu(&self, acc: &[i64], s: &[f32], gamma: &[f32]) -> Vec<f64> {
        let p = &self.params;
        let tn = self.total_n();
        let mut out = vec![0.0; p.m * tn];
        for i in 0..p.m {
            for j in 0..tn {
                let pr = j / p.n;
                out[i * tn + j] =
                    acc[i * tn + j] as f64 * f64::from(gamma[self.gamma_of(j)]) / f64::from(s[pr * p.m + i]);
            }
        }
        out
    }

    /// The oracle: exact accumulators, dequantized in f64 (added to `out` with `accumulate`),
    /// rounded to `T`. `acc_out` (the i32 sums) is given exactly when `write_acc`, else
    /// `Error::InvalidParams`; a wrong `T` is `Error::DType`, a short buffer `Error::Shape`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        q: &[i8],
        s: &[f32],
        packed: &[u32],
        gamma: &[f32],
        out: &mut [T],
        acc_out: Option<&mut [i32]>,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_buffers(q.len(), s.len(), packed.len(), gamma.len(), out.len(), acc_out.as_ref().map(|a| a.len()))?;
        let acc = self.accumulate_cpu(q, packed);
        let mut vals = self.dequantize_cpu(&acc, s, gamma);
        if self.params.accumulate {
            let old = to_f64(&self.out.gather(out));
            for (v, o) in vals.iter_mut().zip(old) {
                *v += o;
            }
        }
        let typed: Vec<T> = vals.iter().map(|&v| T::from_f32(v as f32)).collect();
        self.out.scatter(&typed, out);
        if let Some(a) = acc_out {
            for (d, v) in a.iter_mut().zip(acc) {
                *d = v as i32;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// BitLinear

/// A BitLinear layer's shape: `projections` stacked `[n, k]` ternary blocks, each with its own
/// RMSNorm weight and gammas, applied to the same input (MLGRU's f, c, g in one launch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitLinearParams {
    /// Rows of `x` (tokens); up to 8 may take the fused single-launch path.
    pub m: usize,
    /// Output features of each projection.
    pub n: usize,
    /// Input features (the norm's width; `x` rows are `2 * k` wide with `glu`); at most 131072.
    pub k: usize,
    /// Stacked `[n, k]` blocks on the same input, each with its own norm weight and gammas
    /// (default 1).
    #[serde(default = "one")]
    pub projections: usize,
    /// Gammas per projection (default 1), each over `n / partitions` consecutive rows; must
    /// divide `n`.
    #[serde(default = "one")]
    pub partitions: usize,
    /// RMSNorm epsilon, finite and >= 0; default [`MODEL_EPS`](super::MODEL_EPS) (1e-6, the
    /// model's `FusedBitLinear`).
    #[serde(default = "model_eps")]
    pub eps: f32,
    /// Storage dtype of `x`, `norm_w` and `out`: f32, f16 or bf16.
    pub dtype: DType,
    /// Rows of `x` are `[g, u]` and the layer reads `silu(g) * u` (the GLU down projection);
    /// such a layer never takes the fused path.
    #[serde(default)]
    pub glu: bool,
    /// Elements between rows of `x` (default the row length).
    #[serde(default)]
    pub x_stride: Option<usize>,
    /// Elements between output rows (default `projections * n`).
    #[serde(default)]
    pub out_stride: Option<usize>,
    /// Add to `out` instead of overwriting it (a residual connection); default false.
    #[serde(default)]
    pub accumulate: bool,
    /// Whether M <= 8 runs as one fused launch; default `auto`.
    #[serde(default)]
    pub fuse: Fuse,
}

/// When a BitLinear of M <= 8 fuses norm, quantization and GEMV into one launch (where the
/// quantized rows fit on chip and there is no GLU; otherwise it is always two launches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fuse {
    /// Fused on wgpu, two launches on CUDA: on an H100 the CUDA fused kernel took about 1.5x the
    /// time of `rmsnorm_quant` + GEMV at each bench shape (19.9 against 12.9 us at 2048x2048),
    /// while on Vulkan the fused dispatch beat the pair (BENCHMARKS.md, 2026-11-26). The bench
    /// times both, so a run shows when this stops holding.
    #[default]
    Auto,
    /// Fused on every backend.
    Always,
    /// Two launches on every backend.
    Never,
}

/// `out = BitLinear(x)`: norm, quantize, ternary product. For M <= 8 the CUDA and wgpu paths
/// fuse all three into one launch when the quantized rows fit on chip; otherwise two launches.
#[derive(Debug, Clone)]
pub struct BitLinear {
    /// The params it was built from.
    pub params: BitLinearParams,
    /// The activation side: norm and int8 quantization into `q` and `s`.
    pub quant: RmsNormQuant,
    /// The ternary product from `q` and `s` into `out` (no `acc` output).
    pub matmul: TernaryMatmul,
}

impl BitLinear {
    /// Validates `p` through both child plans: `Error::DType` for a non-float dtype,
    /// `Error::InvalidParams` for bad sizes, eps or strides.
    pub fn new(p: BitLinearParams) -> Result<Self> {
        let quant = RmsNormQuant::new(RmsNormQuantParams {
            m: p.m,
            k: p.k,
            eps: p.eps,
            dtype: p.dtype,
            projections: p.projections,
            glu: p.glu,
            x_stride: p.x_stride,
        })?;
        let matmul = TernaryMatmul::new(TernaryMatmulParams {
            m: p.m,
            n: p.n,
            k: p.k,
            projections: p.projections,
            partitions: p.partitions,
            dtype: p.dtype,
            out_stride: p.out_stride,
            accumulate: p.accumulate,
            write_acc: false,
            tensor_cores: None,
        })?;
        Ok(Self { params: p, quant, matmul })
    }

    /// Whether the single-launch path runs: M <= 8, no GLU, the quantized rows of one
    /// projection fit in `smem` bytes, and `fuse` asks for it on this backend (`cuda`).
    pub fn fused(&self, smem: usize, cuda: bool) -> bool {
        let p = &self.params;
        let fits = p.m <= GEMV_MAX_M && !p.glu && p.m * padded_k(p.k) <= smem;
        fits && match p.fuse {
            Fuse::Auto => !cuda,
            Fuse::Always => true,
            Fuse::Never => false,
        }
    }

    /// The oracle: [`RmsNormQuant::run_cpu`] then [`TernaryMatmul::run_cpu`]. Tensors: `x`
    /// (strided), `norm_w` `[projections, k]`, `packed`, `gamma`, scratch `q` and `s` (left holding
    /// the quantized rows), `out` (strided). Errors as the two children's.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        x: &[T],
        norm_w: &[T],
        packed: &[u32],
        gamma: &[f32],
        q: &mut [i8],
        s: &mut [f32],
        out: &mut [T],
    ) -> Result<()> {
        self.quant.run_cpu(x, norm_w, q, s)?;
        self.matmul.run_cpu(q, s, packed, gamma, out, None)
    }
}

// ---------------------------------------------------------------------------------------------
// The tensors of each plan, declared once.

impl Plan for RmsNormQuant {
    type Params = RmsNormQuantParams;
    const NAME: &'static str = "rmsnorm_quant";
    fn build(p: RmsNormQuantParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &RmsNormQuantParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        vec![
            TensorSpec::input("x", p.dtype, self.x.span()),
            TensorSpec::input("norm_w", p.dtype, p.projections * p.k),
            TensorSpec::output("q", DType::I8, self.q_len()),
            TensorSpec::output("s", DType::F32, self.s_len()),
        ]
    }
}

impl Plan for TernaryMatmul {
    type Params = TernaryMatmulParams;
    const NAME: &'static str = "matmul";
    fn build(p: TernaryMatmulParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &TernaryMatmulParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        let out = if p.accumulate { TensorSpec::in_out } else { TensorSpec::output };
        let mut v = vec![
            TensorSpec::input("q", DType::I8, self.q_len()),
            TensorSpec::input("s", DType::F32, self.s_len()),
            TensorSpec::input("packed", DType::U32, self.packed_len()),
            TensorSpec::input("gamma", DType::F32, self.gamma_len()),
            out("out", p.dtype, self.out.span()),
        ];
        if p.write_acc {
            v.push(TensorSpec::output("acc", DType::I32, self.acc_len()));
        }
        v
    }
}

impl Plan for BitLinear {
    type Params = BitLinearParams;
    const NAME: &'static str = "bitlinear";
    fn build(p: BitLinearParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &BitLinearParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let (q, mm) = (&self.quant, &self.matmul);
        let (dt, out) =
            (self.params.dtype, if self.params.accumulate { TensorSpec::in_out } else { TensorSpec::output });
        vec![
            TensorSpec::input("x", dt, q.x.span()),
            TensorSpec::input("norm_w", dt, q.params.projections * q.params.k),
            TensorSpec::input("packed", DType::U32, mm.packed_len()),
            TensorSpec::input("gamma", DType::F32, mm.gamma_len()),
            TensorSpec::scratch("q", DType::I8, q.q_len()),
            TensorSpec::scratch("s", DType::F32, q.s_len()),
            out("out", dt, mm.out.span()),
        ]
    }
}
