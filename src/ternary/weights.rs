//! Ternary weights: absmean ternarization into packed 2-bit words, and packing both ways.

use serde::{Deserialize, Serialize};

use super::{fits_u32, nonzero, one, oracle, padded_k, words_per_row};
use crate::backend::{Status, StatusBits};
use crate::dtype::{float_dtype, same_dtype, to_f64, DType, Float};
use crate::error::{ensure_len, invalid, Error, Result};

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
