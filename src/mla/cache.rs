//! Appending new tokens to the paged latent cache.

use serde::{Deserialize, Serialize};

use crate::backend::Status;
use crate::dtype::{float_dtype, same_dtype, DType, Float};
use crate::error::{invalid, Error, Result};
use crate::layout::{dim, elements, slot_of};
use crate::plan::{Plan, TensorSpec};

/// Writes `tokens` new cache rows: `kv_new [T, L]` (the compressed `c_kv` after its norm) and
/// `pe_new [T, R]` (the rotated decoupled key) at flat slots `slots [T]` (`page * P + offset`) of
/// the cache, unified `cache [pages, P, L + R]` or split `cache [pages, P, L]` + `pe_cache
/// [pages, P, R]`. A slot outside `[0, pages * P)` or named by two tokens is skipped (every
/// token on a shared slot, so no two blocks ever write one row) and raises `SLOT_OUT_OF_RANGE`
/// or `SLOT_REPEATED`.
///
/// With `cache_dtype: e4m3` the cache (both parts) is fp8 and each written token also sets its
/// `cache_scale [pages, P]` entry: `s` = [`crate::dtype::e4m3_scale`] of the largest magnitude of
/// its latent and rope values together, and each value is stored as `x / s` rounded to E4M3
/// (nearest, ties to even; exact division, `s` being a power of two). A token holding a
/// non-finite value gets `s = NaN` and zero bytes, so every query that sees it is NaN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendCacheParams {
    /// T: new tokens (rows of `kv_new` and `pe_new`, entries of `slots`).
    pub tokens: usize,
    /// A multiple of 64 up to 2048 (as `decode`), so 16-bit rows start on whole words.
    pub latent: usize,
    /// 0 or a multiple of 16 up to 128.
    pub rope: usize,
    /// P: tokens per cache page.
    pub page_size: usize,
    /// Pages in the cache: `pages * page_size` slots, a count that must fit in i32.
    pub pages: usize,
    /// Storage dtype of the new rows and the cache: f32, f16 or bf16.
    pub dtype: DType,
    /// The split layout (`pe_cache` separate, as DeepSeek-V3's); default unified.
    #[serde(default)]
    pub split_cache: bool,
    /// The cache's storage: absent (or `dtype`) or `e4m3` (see above).
    #[serde(default)]
    pub cache_dtype: Option<DType>,
}

/// A validated append plan, built once by [`AppendCache::new`].
#[derive(Debug, Clone)]
pub struct AppendCache {
    /// The parameters the plan was built from.
    pub params: AppendCacheParams,
}

impl AppendCache {
    /// Validates the params: a float `dtype` (else `Error::DType`); `tokens`, `page_size` and
    /// `pages` >= 1; `latent` and `rope` as their fields say; sizes within 32-bit indexing and
    /// slot ids within i32 (else `Error::InvalidParams`).
    pub fn new(p: AppendCacheParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        super::cache_storage("append", p.dtype, p.cache_dtype)?;
        for (what, v) in [("append tokens", p.tokens), ("append page_size", p.page_size), ("append pages", p.pages)] {
            dim(what, v)?;
        }
        if p.latent == 0 || !p.latent.is_multiple_of(64) || p.latent > super::MAX_LATENT {
            return Err(invalid(format!("append latent = {} must be a multiple of 64 up to 2048", p.latent)));
        }
        if !p.rope.is_multiple_of(16) || p.rope > super::MAX_ROPE {
            return Err(invalid(format!("append rope = {} must be 0 or a multiple of 16 up to 128", p.rope)));
        }
        elements("append cache", &[p.pages, p.page_size, p.latent + p.rope])?;
        elements("append kv_new", &[p.tokens, p.latent + p.rope])?;
        if p.pages * p.page_size > i32::MAX as usize {
            return Err(invalid("append: pages * page_size exceeds i32 slot ids"));
        }
        // Each token writes its own cache row (two tokens on one row would race).
        if p.tokens > p.pages * p.page_size {
            return Err(invalid(format!(
                "append tokens = {} exceeds the cache's pages * page_size = {} rows",
                p.tokens,
                p.pages * p.page_size
            )));
        }
        Ok(Self { params: p })
    }

    /// The cache's storage dtype.
    pub fn cache_dtype(&self) -> DType {
        self.params.cache_dtype.unwrap_or(self.params.dtype)
    }

    /// Slots in the cache.
    pub fn slots(&self) -> usize {
        self.params.pages * self.params.page_size
    }

    /// Every slot in range and distinct, checked on the host (an error names the token).
    pub fn validate_slots(&self, slots: &[i32]) -> Result<()> {
        self.check_len("slots", slots.len())?;
        for t in 0..self.params.tokens {
            if let Err(bit) = slot_of(&slots[..self.params.tokens], t, self.slots()) {
                let why = if bit == crate::backend::StatusBits::SLOT_REPEATED {
                    "is named by another token too".to_string()
                } else {
                    format!("is outside [0, {})", self.slots())
                };
                return Err(Error::InvalidInput(format!("slots[{t}] = {} {why}", slots[t])));
            }
        }
        Ok(())
    }

    /// The reference on host slices; `C` is the cache's storage (`T`, or [`crate::E4M3`] with
    /// `cache_scale`).
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float, C: Float>(
        &self,
        kv_new: &[T],
        pe_new: Option<&[T]>,
        slots: &[i32],
        cache: &mut [C],
        mut pe_cache: Option<&mut [C]>,
        mut cache_scale: Option<&mut [f32]>,
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        same_dtype::<C>(self.cache_dtype())?;
        let mut lens = vec![("kv_new", kv_new.len()), ("slots", slots.len()), ("cache", cache.len())];
        lens.extend(pe_new.map(|v| ("pe_new", v.len())));
        lens.extend(pe_cache.as_ref().map(|v| ("pe_cache", v.len())));
        lens.extend(cache_scale.as_ref().map(|v| ("cache_scale", v.len())));
        self.check_lens(&lens)?;
        let p = &self.params;
        let (l, r) = (p.latent, p.rope);
        let mut bits = 0;
        for t in 0..p.tokens {
            let slot = match slot_of(&slots[..p.tokens], t, self.slots()) {
                Ok(s) => s,
                Err(bit) => {
                    bits |= bit;
                    continue;
                }
            };
            // The token's values as stored: the float cache copies them; the fp8 one divides
            // by the row's power-of-two scale (exact) and rounds to E4M3.
            let mut vals: Vec<f32> = kv_new[t * l..(t + 1) * l].iter().map(|x| x.to_f32()).collect();
            vals.extend(pe_new.iter().flat_map(|pe| pe[t * r..(t + 1) * r].iter().map(|x| x.to_f32())));
            let row: Vec<C> = match cache_scale.as_deref_mut() {
                Some(cs) => {
                    let amax =
                        vals.iter().fold(0f32, |m, x| if x.is_finite() { m.max(x.abs()) } else { f32::INFINITY });
                    let s = crate::dtype::e4m3_scale(amax);
                    cs[slot] = s;
                    vals.iter().map(|&x| if s.is_nan() { C::from_f32(0.0) } else { C::from_f32(x / s) }).collect()
                }
                None => vals.iter().map(|&x| C::from_f32(x)).collect(),
            };
            match (p.split_cache, pe_cache.as_deref_mut()) {
                (false, _) => cache[slot * (l + r)..][..row.len()].copy_from_slice(&row),
                (true, pc) => {
                    cache[slot * l..(slot + 1) * l].copy_from_slice(&row[..l]);
                    if let Some(pc) = pc {
                        pc[slot * r..(slot + 1) * r].copy_from_slice(&row[l..]);
                    }
                }
            }
        }
        if bits != 0 {
            status.raise(bits)?;
        }
        Ok(())
    }
}

impl Plan for AppendCache {
    type Params = AppendCacheParams;
    const NAME: &'static str = "append_cache";
    fn build(p: AppendCacheParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &AppendCacheParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        let (dt, cdt, n) = (p.dtype, self.cache_dtype(), self.slots());
        let mut v = vec![TensorSpec::input("kv_new", dt, p.tokens * p.latent)];
        if p.rope > 0 {
            v.push(TensorSpec::input("pe_new", dt, p.tokens * p.rope));
        }
        v.push(TensorSpec::input("slots", DType::I32, p.tokens));
        if p.split_cache {
            v.push(TensorSpec::in_out("cache", cdt, n * p.latent));
            if p.rope > 0 {
                v.push(TensorSpec::in_out("pe_cache", cdt, n * p.rope));
            }
        } else {
            v.push(TensorSpec::in_out("cache", cdt, n * (p.latent + p.rope)));
        }
        if cdt == DType::F8E4M3 {
            v.push(TensorSpec::in_out("cache_scale", DType::F32, n));
        }
        v
    }
}
