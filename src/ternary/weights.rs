//! Ternary weights: absmean ternarization into packed 2-bit words, and packing both ways.

use serde::{Deserialize, Serialize};

use super::{dim, elements, one, oracle, padded_k, words_per_row};
use crate::backend::{Status, StatusBits};
use crate::dtype::{float_dtype, same_dtype, to_f64, DType, Float};
use crate::error::{invalid, Error, Result};
use crate::plan::{Plan, TensorSpec};

// ---------------------------------------------------------------------------------------------
// Weights

/// Absmean ternarization of `w [n, k]` into packed words and `partitions` gammas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizeWeightsParams {
    /// Output rows of `w` (dense `[n, k]`, row-major).
    pub n: usize,
    /// Input columns of `w`; a packed row holds `words_per_row(k)` words.
    pub k: usize,
    /// Gammas (default 1: one per tensor), each over `n / partitions` consecutive rows; must
    /// divide `n`.
    #[serde(default = "one")]
    pub partitions: usize,
    /// Storage dtype of `w`: f32, f16 or bf16.
    pub dtype: DType,
}

/// A validated [`QuantizeWeightsParams`]. Tensors: `w` (`[n, k]`), scratch `ws` (f32 `[n]`),
/// outputs `packed` (u32 `[n, words_per_row(k)]`) and `gamma` (f32 `[partitions]`).
#[derive(Debug, Clone)]
pub struct QuantizeWeights {
    /// The params it was built from.
    pub params: QuantizeWeightsParams,
}

impl QuantizeWeights {
    /// Validates `p`: a float dtype (else `Error::DType`); sizes >= 1, `partitions` dividing `n`
    /// and sizes within 32-bit indexing (else `Error::InvalidParams`).
    pub fn new(p: QuantizeWeightsParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        dim("quantize_weights n", p.n)?;
        dim("quantize_weights k", p.k)?;
        dim("quantize_weights partitions", p.partitions)?;
        if !p.n.is_multiple_of(p.partitions) {
            return Err(invalid(format!("{} partitions do not divide n = {}", p.partitions, p.n)));
        }
        elements("quantize_weights n * padded k", &[p.n, padded_k(p.k)])?;
        Ok(Self { params: p })
    }

    /// u32 words of `packed`: `n * words_per_row(k)`.
    pub fn packed_len(&self) -> usize {
        self.params.n * words_per_row(self.params.k)
    }

    /// f32 scratch the GPU paths need (one partial sum per row).
    pub(crate) fn workspace_len(&self) -> usize {
        self.params.n
    }

    /// Rejects non-finite weights (the GPU kernels flag them in the status word instead).
    pub fn validate_weights<T: Float>(&self, w: &[T]) -> Result<()> {
        self.check_len("w", w.len())?;
        match w.iter().position(|v| !v.to_f32().is_finite()) {
            Some(i) => {
                Err(Error::InvalidInput(format!("weight {i} is {:?}: ternarization needs finite weights", w[i])))
            }
            None => Ok(()),
        }
    }

    /// As the GPU paths: non-finite weights raise `StatusBits::VALUE_OUT_OF_RANGE` and leave
    /// the outputs unwritten. `ws` is unused here (the GPU paths' per-row sums); it is checked
    /// so one call shape serves every backend.
    pub fn run_cpu<T: Float>(
        &self,
        w: &[T],
        ws: &mut [f32],
        packed: &mut [u32],
        gamma: &mut [f32],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let p = &self.params;
        self.check_lens(&[("w", w.len()), ("ws", ws.len()), ("packed", packed.len()), ("gamma", gamma.len())])?;
        if self.validate_weights(&w[..p.n * p.k]).is_err() {
            return status.raise(StatusBits::VALUE_OUT_OF_RANGE);
        }
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

/// Packs i8 rows `[n, padded_k]` of {-1, 0, 1} into 2-bit words (or back, with
/// [`Unpack`](crate::ternary::Unpack)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackParams {
    /// Rows.
    pub n: usize,
    /// Ternary values per row; i8 rows are padded with zeros to `padded_k(k)`.
    pub k: usize,
}

/// A validated [`PackParams`]: i8 `t` `[n, padded_k(k)]` into u32 `packed`
/// `[n, words_per_row(k)]`.
#[derive(Debug, Clone)]
pub struct Pack {
    /// The params it was built from.
    pub params: PackParams,
}

impl Pack {
    /// Validates `p`: `n` and `k` >= 1 and sizes within 32-bit indexing (else
    /// `Error::InvalidParams`).
    pub fn new(p: PackParams) -> Result<Self> {
        dim("pack n", p.n)?;
        dim("pack k", p.k)?;
        elements("pack n * padded k", &[p.n, padded_k(p.k)])?;
        Ok(Self { params: p })
    }

    /// i8 elements of `t`: `n * padded_k(k)`.
    pub fn values_len(&self) -> usize {
        self.params.n * padded_k(self.params.k)
    }

    /// u32 words of `packed`: `n * words_per_row(k)`.
    pub fn packed_len(&self) -> usize {
        self.params.n * words_per_row(self.params.k)
    }

    /// Values outside {-1, 0, 1} are clamped and raise `StatusBits::VALUE_OUT_OF_RANGE`.
    pub fn run_cpu(&self, t: &[i8], packed: &mut [u32], status: &Status) -> Result<()> {
        self.check_lens(&[("t", t.len()), ("packed", packed.len())])?;
        let (n, k, kp) = (self.params.n, self.params.k, padded_k(self.params.k));
        if (0..n).any(|r| t[r * kp..r * kp + k].iter().any(|v| !(-1..=1).contains(v))) {
            status.raise(StatusBits::VALUE_OUT_OF_RANGE)?;
        }
        packed[..self.packed_len()].copy_from_slice(&oracle::pack(t, n, k));
        Ok(())
    }

    /// Unpacks to padded i8 rows; code 3 reads as 0 and raises `StatusBits::BAD_TERNARY_CODE`.
    pub(super) fn unpack_cpu(&self, packed: &[u32], t: &mut [i8], status: &Status) -> Result<()> {
        self.check_lens(&[("packed", packed.len()), ("t", t.len())])?;
        let (v, bad) = oracle::unpack(packed, self.params.n, self.params.k);
        t[..v.len()].copy_from_slice(&v);
        if bad {
            status.raise(StatusBits::BAD_TERNARY_CODE)?;
        }
        Ok(())
    }

    /// Host-side check that every value is -1, 0 or 1 (the kernels clamp and raise the status).
    pub fn validate_values(&self, t: &[i8]) -> Result<()> {
        self.check_len("t", t.len())?;
        let (k, kp) = (self.params.k, padded_k(self.params.k));
        for r in 0..self.params.n {
            if let Some(c) = t[r * kp..r * kp + k].iter().position(|v| !(-1..=1).contains(v)) {
                return Err(Error::InvalidInput(format!(
                    "t[{}] = {} (row {r}) is not -1, 0 or 1",
                    r * kp + c,
                    t[r * kp + c]
                )));
            }
        }
        Ok(())
    }

    /// Host-side check that packed weights hold no code 3 and padding is code 1.
    pub fn validate_packed(&self, packed: &[u32]) -> Result<()> {
        self.check_len("packed", packed.len())?;
        let (k, kw) = (self.params.k, words_per_row(self.params.k));
        for (i, &w) in packed[..self.packed_len()].iter().enumerate() {
            for c in 0..16 {
                let code = (w >> (2 * c)) & 3;
                let pad = (i % kw) * 16 + c >= k;
                if code == 3 || (pad && code != 1) {
                    return Err(Error::InvalidInput(format!(
                        "packed[{i}] holds code {code} at lane {c}{}",
                        if pad { " (padding, which must be code 1)" } else { "" }
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Unpacking, the inverse of [`Pack`]: packed words to padded i8 rows.
#[derive(Debug, Clone)]
pub struct Unpack {
    /// The params it was built from (the same shape as [`Pack`]'s).
    pub params: PackParams,
    pub(super) pack: Pack,
}

impl Unpack {
    /// Validates `p` as [`Pack::new`] does.
    pub fn new(p: PackParams) -> Result<Self> {
        Ok(Self { pack: Pack::new(p.clone())?, params: p })
    }

    /// Code 3 reads as 0 and raises `StatusBits::BAD_TERNARY_CODE`.
    pub fn run_cpu(&self, packed: &[u32], t: &mut [i8], status: &Status) -> Result<()> {
        self.pack.unpack_cpu(packed, t, status)
    }
}

// ---------------------------------------------------------------------------------------------
// The tensors of each plan, declared once.

impl Plan for QuantizeWeights {
    type Params = QuantizeWeightsParams;
    const NAME: &'static str = "quantize_weights";
    fn build(p: QuantizeWeightsParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &QuantizeWeightsParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        vec![
            TensorSpec::input("w", p.dtype, p.n * p.k),
            TensorSpec::scratch("ws", DType::F32, self.workspace_len()),
            TensorSpec::output("packed", DType::U32, self.packed_len()),
            TensorSpec::output("gamma", DType::F32, p.partitions),
        ]
    }
}

impl Plan for Pack {
    type Params = PackParams;
    const NAME: &'static str = "pack";
    fn build(p: PackParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &PackParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        vec![
            TensorSpec::input("t", DType::I8, self.values_len()),
            TensorSpec::output("packed", DType::U32, self.packed_len()),
        ]
    }
}

impl Plan for Unpack {
    type Params = PackParams;
    const NAME: &'static str = "unpack";
    fn build(p: PackParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &PackParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        vec![
            TensorSpec::input("packed", DType::U32, self.pack.packed_len()),
            TensorSpec::output("t", DType::I8, self.pack.values_len()),
        ]
    }
}
