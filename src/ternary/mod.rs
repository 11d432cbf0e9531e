//! MatMul-free ternary layers ("Scalable MatMul-free Language Modeling"; BitNet b1.58).
//!
//! Weights are ternary `{-1, 0, 1}` times one `gamma` per output partition, packed 16 to a u32
//! (code `t + 1`, weight k at bits `2 * (k % 16)` of word `k / 16`, padding code 1, code 3
//! invalid). Activations are RMS-normalized and quantized to i8 per row with scale `s`, so a
//! BitLinear is an exact i32 accumulation `sum_k q t` scaled by `gamma / s`. i8 tensors (q,
//! unpacked t) have rows padded with zeros to a multiple of 16 (`padded_k`).
//!
//! Kernels: `quantize_weights`, `pack`, `unpack`, `rmsnorm_quant` (optionally of
//! `silu(g) * u`, the GLU mixer), `ternary_matmul` (GEMV for M <= 8, tiled GEMM otherwise,
//! several stacked projections with their own norm and gamma), `bitlinear` (fused
//! norm + quant + GEMV for decode), `mlgru_step` and `mlgru_scan` (chunked, log-space decay).
//! [`BitLinear`] and [`MatmulFreeBlock`] compose them.

#[cfg(feature = "cuda")]
mod cuda;
pub mod oracle;
pub(crate) mod registry;
#[cfg(feature = "wgpu")]
pub(crate) mod uniforms;
#[cfg(feature = "wgpu")]
mod wgpu;

use serde::{Deserialize, Serialize};

use crate::backend::{Status, StatusBits};
use crate::dtype::{float_dtype, same_dtype, to_f64, DType, Float};
use crate::error::{ensure_len, invalid, Error, Result};
use crate::layout::Rows;

pub use oracle::{padded_k, words_per_row};

fn nonzero(what: &str, v: usize) -> Result<()> {
    if v == 0 {
        Err(invalid(format!("{what} must be >= 1")))
    } else {
        Ok(())
    }
}

fn fits_u32(what: &str, v: usize) -> Result<usize> {
    if v > u32::MAX as usize / 2 {
        Err(invalid(format!("{what} = {v} exceeds 32-bit indexing")))
    } else {
        Ok(v)
    }
}

fn one() -> usize {
    1
}
/// The MatMul-free LM's epsilons, all 1e-6: `FusedBitLinear`'s norm takes the default of
/// `layer_norm_linear_quant_fn` (its module's own `eps=1e-8` is used only by the unfused class),
/// and the gate norm and the block's pre-norms take the config's `rms_norm_eps`.
pub const MODEL_EPS: f32 = 1e-6;

fn model_eps() -> f32 {
    MODEL_EPS
}
fn default_chunk() -> usize {
    64
}

/// The largest M the GEMV path takes; larger M uses the tiled GEMM.
pub const GEMV_MAX_M: usize = 8;

// ---------------------------------------------------------------------------------------------
// Weights

/// Absmean ternarization of `w [n, k]` into packed words and `partitions` gammas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizeWeightsParams {
    pub n: usize,
    pub k: usize,
    #[serde(default = "one")]
    pub partitions: usize,
    pub dtype: DType,
}

#[derive(Debug, Clone)]
pub struct QuantizeWeights {
    pub params: QuantizeWeightsParams,
}

impl QuantizeWeights {
    pub fn new(p: QuantizeWeightsParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        nonzero("quantize_weights n", p.n)?;
        nonzero("quantize_weights k", p.k)?;
        nonzero("quantize_weights partitions", p.partitions)?;
        if !p.n.is_multiple_of(p.partitions) {
            return Err(invalid(format!("{} partitions do not divide n = {}", p.partitions, p.n)));
        }
        fits_u32("n * k", p.n * padded_k(p.k))?;
        Ok(Self { params: p })
    }

    pub fn packed_len(&self) -> usize {
        self.params.n * words_per_row(self.params.k)
    }

    /// f32 scratch the GPU paths need (one partial sum per row).
    pub fn workspace_len(&self) -> usize {
        self.params.n
    }

    /// Rejects non-finite weights (the GPU kernels flag them in the status word instead).
    pub fn validate_weights<T: Float>(&self, w: &[T]) -> Result<()> {
        match w.iter().position(|v| !v.to_f32().is_finite()) {
            Some(i) => {
                Err(Error::InvalidInput(format!("weight {i} is {:?}: ternarization needs finite weights", w[i])))
            }
            None => Ok(()),
        }
    }

    pub fn run_cpu<T: Float>(&self, w: &[T], packed: &mut [u32], gamma: &mut [f32]) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let p = &self.params;
        ensure_len("quantize_weights w", p.n * p.k, w.len())?;
        ensure_len("quantize_weights packed", self.packed_len(), packed.len())?;
        ensure_len("quantize_weights gamma", p.partitions, gamma.len())?;
        self.validate_weights(&w[..p.n * p.k])?;
        let wf = to_f64(&w[..p.n * p.k]);
        let g = oracle::absmean_gammas(&wf, p.n, p.k, p.partitions);
        let t = oracle::ternarize(&wf, p.n, p.k, &g);
        packed[..self.packed_len()].copy_from_slice(&oracle::pack(&t, p.n, p.k));
        for (d, s) in gamma.iter_mut().zip(&g) {
            *d = *s as f32;
        }
        Ok(())
    }
}

/// Packs i8 rows `[n, padded_k]` of {-1, 0, 1} into 2-bit words (or back, with [`Unpack`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackParams {
    pub n: usize,
    pub k: usize,
}

#[derive(Debug, Clone)]
pub struct Pack {
    pub params: PackParams,
}

impl Pack {
    pub fn new(p: PackParams) -> Result<Self> {
        nonzero("pack n", p.n)?;
        nonzero("pack k", p.k)?;
        fits_u32("n * k", p.n * padded_k(p.k))?;
        Ok(Self { params: p })
    }

    pub fn values_len(&self) -> usize {
        self.params.n * padded_k(self.params.k)
    }

    pub fn packed_len(&self) -> usize {
        self.params.n * words_per_row(self.params.k)
    }

    /// Values outside {-1, 0, 1} are clamped and raise `StatusBits::VALUE_OUT_OF_RANGE`.
    pub fn run_cpu(&self, t: &[i8], packed: &mut [u32], status: &Status) -> Result<()> {
        ensure_len("pack t", self.values_len(), t.len())?;
        ensure_len("pack packed", self.packed_len(), packed.len())?;
        let (n, k, kp) = (self.params.n, self.params.k, padded_k(self.params.k));
        if (0..n).any(|r| t[r * kp..r * kp + k].iter().any(|v| !(-1..=1).contains(v))) {
            status.raise(StatusBits::VALUE_OUT_OF_RANGE)?;
        }
        packed[..self.packed_len()].copy_from_slice(&oracle::pack(t, n, k));
        Ok(())
    }

    /// Unpacks to padded i8 rows; code 3 reads as 0 and raises `StatusBits::BAD_TERNARY_CODE`.
    pub fn unpack_cpu(&self, packed: &[u32], t: &mut [i8], status: &Status) -> Result<()> {
        ensure_len("unpack packed", self.packed_len(), packed.len())?;
        ensure_len("unpack t", self.values_len(), t.len())?;
        let (v, bad) = oracle::unpack(packed, self.params.n, self.params.k);
        t[..v.len()].copy_from_slice(&v);
        if bad {
            status.raise(StatusBits::BAD_TERNARY_CODE)?;
        }
        Ok(())
    }

    /// Host-side check that packed weights hold no code 3 and padding is code 1.
    pub fn validate_packed(&self, packed: &[u32]) -> Result<()> {
        ensure_len("packed", self.packed_len(), packed.len())?;
        let (k, kw) = (self.params.k, words_per_row(self.params.k));
        for (i, &w) in packed[..self.packed_len()].iter().enumerate() {
            for c in 0..16 {
                let code = (w >> (2 * c)) & 3;
                let pad = (i % kw) * 16 + c >= k;
                if code == 3 || (pad && code != 1) {
                    return Err(Error::InvalidInput(format!(
                        "packed word {i} holds code {code} at lane {c} (padding: {pad})"
                    )));
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Activations

/// Fused RMSNorm + per-row absmax int8 quantization, for `projections` norm weights at once.
/// With `glu`, each row of x is `[g, u]` (2k wide) and the normalized input is `silu(g) * u`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RmsNormQuantParams {
    pub m: usize,
    pub k: usize,
    #[serde(default = "model_eps")]
    pub eps: f32,
    pub dtype: DType,
    #[serde(default = "one")]
    pub projections: usize,
    #[serde(default)]
    pub glu: bool,
    #[serde(default)]
    pub x_stride: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct RmsNormQuant {
    pub params: RmsNormQuantParams,
    pub x: Rows,
}

impl RmsNormQuant {
    pub fn new(p: RmsNormQuantParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        nonzero("rmsnorm_quant m", p.m)?;
        nonzero("rmsnorm_quant k", p.k)?;
        nonzero("rmsnorm_quant projections", p.projections)?;
        if !(p.eps.is_finite() && p.eps >= 0.0) {
            return Err(invalid(format!("eps must be finite and >= 0, got {}", p.eps)));
        }
        let cols = if p.glu { 2 * p.k } else { p.k };
        let x = Rows::new("rmsnorm_quant x", p.m, cols, p.x_stride)?;
        fits_u32("projections * m * k", p.projections * p.m * padded_k(p.k))?;
        Ok(Self { params: p, x })
    }

    pub fn q_len(&self) -> usize {
        self.params.projections * self.params.m * padded_k(self.params.k)
    }

    pub fn s_len(&self) -> usize {
        self.params.projections * self.params.m
    }

    /// The normalized input rows (x, or silu(g) * u), dense `[m, k]`.
    fn input_f64<T: Float>(&self, x: &[T]) -> Vec<f64> {
        let xs = to_f64(&self.x.gather(x));
        if self.params.glu {
            oracle::glu(&xs, self.params.m, self.params.k)
        } else {
            xs
        }
    }

    pub fn run_cpu<T: Float>(&self, x: &[T], w: &[T], q: &mut [i8], s: &mut [f32]) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let p = &self.params;
        ensure_len("rmsnorm_quant x", self.x.span(), x.len())?;
        ensure_len("rmsnorm_quant w", p.projections * p.k, w.len())?;
        ensure_len("rmsnorm_quant q", self.q_len(), q.len())?;
        ensure_len("rmsnorm_quant s", self.s_len(), s.len())?;
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
pub struct TernaryMatmulParams {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    #[serde(default = "one")]
    pub projections: usize,
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
}

#[derive(Debug, Clone)]
pub struct TernaryMatmul {
    pub params: TernaryMatmulParams,
    pub out: Rows,
}

impl TernaryMatmul {
    pub fn new(p: TernaryMatmulParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        for (w, v) in [("m", p.m), ("n", p.n), ("k", p.k), ("projections", p.projections), ("partitions", p.partitions)]
        {
            nonzero(&format!("ternary_matmul {w}"), v)?;
        }
        if !p.n.is_multiple_of(p.partitions) {
            return Err(invalid(format!("{} partitions do not divide n = {}", p.partitions, p.n)));
        }
        // |acc| <= 128 * k must fit i32 (and f32 exactly for the scale step: k < 2^17).
        if p.k > (1 << 17) {
            return Err(invalid(format!("k = {} exceeds 131072, where i32 sums stay exact in f32", p.k)));
        }
        let out = Rows::new("ternary_matmul out", p.m, p.projections * p.n, p.out_stride)?;
        fits_u32("projections * n * k", p.projections * p.n * padded_k(p.k))?;
        fits_u32("projections * m * k", p.projections * p.m * padded_k(p.k))?;
        Ok(Self { params: p, out })
    }

    pub fn total_n(&self) -> usize {
        self.params.projections * self.params.n
    }
    pub fn q_len(&self) -> usize {
        self.params.projections * self.params.m * padded_k(self.params.k)
    }
    pub fn s_len(&self) -> usize {
        self.params.projections * self.params.m
    }
    pub fn packed_len(&self) -> usize {
        self.total_n() * words_per_row(self.params.k)
    }
    pub fn gamma_len(&self) -> usize {
        self.params.projections * self.params.partitions
    }
    pub fn acc_len(&self) -> usize {
        self.params.m * self.total_n()
    }
    pub fn uses_gemv(&self) -> bool {
        self.params.m <= GEMV_MAX_M
    }

    /// Gamma index of stacked output row j.
    pub fn gamma_of(&self, j: usize) -> usize {
        let p = &self.params;
        (j / p.n) * p.partitions + (j % p.n) / (p.n / p.partitions)
    }

    fn check_lens(&self, q: usize, s: usize, packed: usize, gamma: usize, out: usize) -> Result<()> {
        ensure_len("ternary_matmul q", self.q_len(), q)?;
        ensure_len("ternary_matmul s", self.s_len(), s)?;
        ensure_len("ternary_matmul packed", self.packed_len(), packed)?;
        ensure_len("ternary_matmul gamma", self.gamma_len(), gamma)?;
        ensure_len("ternary_matmul out", self.out.span(), out)
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
        self.check_lens(q.len(), s.len(), packed.len(), gamma.len(), out.len())?;
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
        if self.params.write_acc {
            let a = acc_out.ok_or_else(|| invalid("write_acc is set but no accumulator buffer was given"))?;
            ensure_len("ternary_matmul acc", self.acc_len(), a.len())?;
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
pub struct BitLinearParams {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    #[serde(default = "one")]
    pub projections: usize,
    #[serde(default = "one")]
    pub partitions: usize,
    #[serde(default = "model_eps")]
    pub eps: f32,
    pub dtype: DType,
    #[serde(default)]
    pub glu: bool,
    #[serde(default)]
    pub x_stride: Option<usize>,
    #[serde(default)]
    pub out_stride: Option<usize>,
    #[serde(default)]
    pub accumulate: bool,
}

/// `out = BitLinear(x)`: norm, quantize, ternary product. For M <= 8 the CUDA and wgpu paths
/// fuse all three into one launch when the quantized rows fit on chip; otherwise two launches.
#[derive(Debug, Clone)]
pub struct BitLinear {
    pub params: BitLinearParams,
    pub quant: RmsNormQuant,
    pub matmul: TernaryMatmul,
}

impl BitLinear {
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
        })?;
        Ok(Self { params: p, quant, matmul })
    }

    /// i8 and f32 scratch the layer needs (q, s): the engine allocates them once.
    pub fn workspace_lens(&self) -> (usize, usize) {
        (self.quant.q_len(), self.quant.s_len())
    }

    /// Whether the fused single-launch path applies: M <= 8 and the quantized rows of one
    /// projection fit in `smem` bytes.
    pub fn fused(&self, smem: usize) -> bool {
        self.params.m <= GEMV_MAX_M && !self.params.glu && self.params.m * padded_k(self.params.k) <= smem
    }

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
// MLGRU

/// Row b's pool slot, or the status bit that keeps it away from the pool: the id is outside
/// `[0, slots)`, or another row names the same slot. Every row of a shared slot is skipped, so
/// the result never depends on which row a GPU would have run last.
pub(crate) fn slot_of(slot_ids: &[i32], b: usize, slots: usize) -> std::result::Result<usize, u32> {
    let id = slot_ids[b];
    let slot = usize::try_from(id).ok().filter(|&s| s < slots).ok_or(StatusBits::SLOT_OUT_OF_RANGE)?;
    if slot_ids.iter().enumerate().any(|(j, &o)| j != b && o == id) {
        return Err(StatusBits::SLOT_REPEATED);
    }
    Ok(slot)
}

/// One decode step of the MLGRU token mixer for `batch` sequences, each with a slot in the
/// f32 state pool `[slots, d]` (updated in place). `fcg` rows hold `[f_raw, c_raw, g_raw]`
/// (the stacked f, c, g BitLinear outputs); `o = rmsnorm(g_raw) * w * silu(h)`.
/// Slot ids within one step must be distinct (one sequence per slot). Rows whose slot is
/// outside the pool or repeated are skipped on every backend (output 0, slot untouched) and
/// raise `SLOT_OUT_OF_RANGE` or `SLOT_REPEATED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlgruParams {
    pub batch: usize,
    pub d: usize,
    pub slots: usize,
    pub dtype: DType,
    #[serde(default)]
    pub lower_bound: bool,
    #[serde(default = "model_eps")]
    pub eps: f32,
    #[serde(default)]
    pub fcg_stride: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct MlgruStep {
    pub params: MlgruParams,
    pub fcg: Rows,
}

fn mlgru_common(p: &MlgruParams, rows: usize) -> Result<Rows> {
    float_dtype(p.dtype)?;
    nonzero("mlgru batch", p.batch)?;
    nonzero("mlgru d", p.d)?;
    nonzero("mlgru slots", p.slots)?;
    if p.slots > i32::MAX as usize {
        return Err(invalid("mlgru slots exceed i32 ids"));
    }
    fits_u32("slots * d", p.slots * p.d)?;
    if !(p.eps.is_finite() && p.eps >= 0.0) {
        return Err(invalid(format!("eps must be finite and >= 0, got {}", p.eps)));
    }
    Rows::new("mlgru fcg", rows, 3 * p.d, p.fcg_stride)
}

impl MlgruStep {
    pub fn new(p: MlgruParams) -> Result<Self> {
        let fcg = mlgru_common(&p, p.batch)?;
        Ok(Self { params: p, fcg })
    }

    /// Slot ids out of range or repeated skip the row (output 0) and raise their status bit.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        fcg: &[T],
        state: &mut [f32],
        slot_ids: &[i32],
        lb: Option<&[f32]>,
        w: &[T],
        o: &mut [T],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let p = &self.params;
        ensure_len("mlgru fcg", self.fcg.span(), fcg.len())?;
        ensure_len("mlgru state", p.slots * p.d, state.len())?;
        ensure_len("mlgru slot_ids", p.batch, slot_ids.len())?;
        ensure_len("mlgru w", p.d, w.len())?;
        ensure_len("mlgru o", p.batch * p.d, o.len())?;
        if p.lower_bound {
            ensure_len("mlgru lower bound", p.d, lb.map_or(0, <[f32]>::len))?;
        }
        let x = to_f64(&self.fcg.gather(fcg));
        let wf = to_f64(&w[..p.d]);
        let lbf: Option<Vec<f64>> =
            lb.filter(|_| p.lower_bound).map(|l| l[..p.d].iter().map(|&v| f64::from(v)).collect());
        for b in 0..p.batch {
            let slot = match slot_of(&slot_ids[..p.batch], b, p.slots) {
                Ok(slot) => slot,
                Err(bit) => {
                    status.raise(bit)?;
                    o[b * p.d..(b + 1) * p.d].fill(T::from_f32(0.0));
                    continue;
                }
            };
            let row = &x[b * 3 * p.d..(b + 1) * 3 * p.d];
            let mut h: Vec<f64> = state[slot * p.d..(slot + 1) * p.d].iter().map(|&v| f64::from(v)).collect();
            let out = oracle::mlgru_step(
                &row[..p.d],
                &row[p.d..2 * p.d],
                &row[2 * p.d..],
                &mut h,
                lbf.as_deref(),
                &wf,
                f64::from(p.eps),
            );
            for (d, v) in state[slot * p.d..(slot + 1) * p.d].iter_mut().zip(&h) {
                *d = *v as f32;
            }
            for (d, v) in o[b * p.d..(b + 1) * p.d].iter_mut().zip(out) {
                *d = T::from_f32(v as f32);
            }
        }
        Ok(())
    }
}

/// Prefill of the MLGRU over `seqs` packed sequences (`cu_seqlens [seqs + 1]`, `tokens` rows in
/// all), each starting from and ending in its pool slot. Chunked: each chunk scans from zero and
/// records its summed log decay; a carry pass chains the chunks; a third pass applies the carry.
/// `max_len` is the caller's host-side bound on any sequence's length (no device read).
/// Bad `cu_seqlens` raise `INDEX_OUT_OF_RANGE` (outputs unspecified); a slot id outside the
/// pool, or one that another sequence also names, runs its sequence from a zero state, drops the
/// final state and raises `SLOT_OUT_OF_RANGE` or `SLOT_REPEATED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlgruScanParams {
    pub seqs: usize,
    pub tokens: usize,
    pub max_len: usize,
    pub d: usize,
    pub slots: usize,
    pub dtype: DType,
    #[serde(default = "default_chunk")]
    pub chunk: usize,
    #[serde(default)]
    pub lower_bound: bool,
    #[serde(default = "model_eps")]
    pub eps: f32,
    #[serde(default)]
    pub fcg_stride: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct MlgruScan {
    pub params: MlgruScanParams,
    pub fcg: Rows,
}

impl MlgruScan {
    pub fn new(p: MlgruScanParams) -> Result<Self> {
        let common = MlgruParams {
            batch: p.seqs,
            d: p.d,
            slots: p.slots,
            dtype: p.dtype,
            lower_bound: p.lower_bound,
            eps: p.eps,
            fcg_stride: p.fcg_stride,
        };
        nonzero("mlgru_scan tokens", p.tokens)?;
        nonzero("mlgru_scan max_len", p.max_len)?;
        nonzero("mlgru_scan chunk", p.chunk)?;
        let fcg = mlgru_common(&common, p.tokens)?;
        fits_u32("tokens * d", p.tokens * p.d)?;
        fits_u32("seqs * chunks * d", p.seqs * p.max_len.div_ceil(p.chunk) * p.d)?;
        Ok(Self { params: p, fcg })
    }

    pub fn chunks(&self) -> usize {
        self.params.max_len.div_ceil(self.params.chunk)
    }

    /// f32 workspace: per-token h `[tokens, d]`, then per-chunk decay and state `[seqs, chunks, d]` x 2.
    pub fn workspace_len(&self) -> usize {
        let p = &self.params;
        p.tokens * p.d + 2 * p.seqs * self.chunks() * p.d
    }

    /// Checks `cu_seqlens` on the host: starts at 0, never decreases, ends at `tokens`, and no
    /// sequence is longer than `max_len`. The kernels flag violations instead of reading past.
    pub fn validate_cu_seqlens(&self, cu: &[i32]) -> Result<()> {
        let p = &self.params;
        ensure_len("mlgru_scan cu_seqlens", p.seqs + 1, cu.len())?;
        if cu[0] != 0 || cu[p.seqs] as i64 != p.tokens as i64 {
            return Err(Error::InvalidInput(format!(
                "cu_seqlens must run from 0 to {}, got {} .. {}",
                p.tokens, cu[0], cu[p.seqs]
            )));
        }
        for b in 0..p.seqs {
            let len = i64::from(cu[b + 1]) - i64::from(cu[b]);
            if len < 0 || len > p.max_len as i64 {
                return Err(Error::InvalidInput(format!("sequence {b} has length {len} (max_len {})", p.max_len)));
            }
        }
        Ok(())
    }

    /// The sequential recurrence (the oracle for the chunked kernels).
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        fcg: &[T],
        cu: &[i32],
        state: &mut [f32],
        slot_ids: &[i32],
        lb: Option<&[f32]>,
        w: &[T],
        o: &mut [T],
        status: &Status,
    ) -> Result<()> {
        let p = &self.params;
        ensure_len("mlgru_scan fcg", self.fcg.span(), fcg.len())?;
        ensure_len("mlgru_scan o", p.tokens * p.d, o.len())?;
        ensure_len("mlgru_scan slot_ids", p.seqs, slot_ids.len())?;
        if self.validate_cu_seqlens(cu).is_err() {
            status.raise(StatusBits::INDEX_OUT_OF_RANGE)?;
            return Ok(());
        }
        let step = MlgruStep::new(MlgruParams {
            batch: 1,
            d: p.d,
            slots: p.slots,
            dtype: p.dtype,
            lower_bound: p.lower_bound,
            eps: p.eps,
            fcg_stride: None,
        })?;
        let step_alone = MlgruStep::new(MlgruParams { slots: 1, ..step.params.clone() })?;
        let stride = self.fcg.stride;
        let mut scratch = vec![0f32; p.d];
        for b in 0..p.seqs {
            // A slot outside the pool or shared with another sequence: the sequence runs from a
            // zero state and its final state is dropped, as on the devices, and the status says so.
            let slot = slot_of(&slot_ids[..p.seqs], b, p.slots);
            if let Err(bit) = slot {
                status.raise(bit)?;
                scratch.fill(0.0);
            }
            for t in cu[b] as usize..cu[b + 1] as usize {
                let row = &fcg[t * stride..t * stride + 3 * p.d];
                let out = &mut o[t * p.d..(t + 1) * p.d];
                match slot {
                    Ok(_) => step.run_cpu(row, state, &slot_ids[b..b + 1], lb, w, out, status)?,
                    Err(_) => step_alone.run_cpu(row, &mut scratch, &[0], lb, w, out, status)?,
                }
            }
        }
        Ok(())
    }
}

pub use block::{GluMlp, GluMlpParams, MatmulFreeBlock, MatmulFreeBlockParams};

mod block;
