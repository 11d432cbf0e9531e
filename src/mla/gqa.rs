//! Exact conversion of a GQA attention layer into MLA form: the identity embedding of TransMLA
//! v2's "rope repeat". A token's latent is its post-RoPE keys of every kv group, then its values
//! (`L = 2 * kv_heads * head_dim`, `R = 0`); `W_UK` puts query head h into its group's key block,
//! `W_UV` reads the same group's value block back out; the scale stays the GQA model's
//! `head_dim^-1/2`. Decoding the converted layer gives GQA attention exactly (up to rounding).

use crate::error::{invalid, Result};

/// The MLA weights and scale of a converted GQA layer.
#[derive(Debug, Clone, PartialEq)]
pub struct GqaAsMla {
    /// H: query heads of the GQA layer.
    pub heads: usize,
    /// Key/value heads (groups); `heads` is a multiple of it.
    pub kv_heads: usize,
    /// d: width of every query, key and value head.
    pub head_dim: usize,
    /// `L = 2 * kv_heads * head_dim`.
    pub latent: usize,
    /// `W_UK [H, head_dim, L]` for `absorb_q` (the query already rotated).
    pub w_uk: Vec<f32>,
    /// `W_UV [H, head_dim, L]` for `project_out`.
    pub w_uv: Vec<f32>,
    /// `head_dim^-1/2`.
    pub scale: f32,
}

impl GqaAsMla {
    /// The conversion for `heads` query heads sharing `kv_heads` groups of width `head_dim`.
    pub fn new(heads: usize, kv_heads: usize, head_dim: usize) -> Result<Self> {
        if heads == 0 || kv_heads == 0 || head_dim == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(invalid(format!("from_gqa: {heads} query heads do not split into {kv_heads} kv groups")));
        }
        let latent = 2 * kv_heads * head_dim;
        if !latent.is_multiple_of(64) || latent > super::MAX_LATENT {
            return Err(invalid(format!(
                "from_gqa: L = 2 * {kv_heads} * {head_dim} = {latent} must be a multiple of 64 up to {}",
                super::MAX_LATENT
            )));
        }
        let group = heads / kv_heads;
        let (mut w_uk, mut w_uv) = (vec![0f32; heads * head_dim * latent], vec![0f32; heads * head_dim * latent]);
        for h in 0..heads {
            let g = h / group;
            for k in 0..head_dim {
                w_uk[(h * head_dim + k) * latent + g * head_dim + k] = 1.0;
                w_uv[(h * head_dim + k) * latent + (kv_heads + g) * head_dim + k] = 1.0;
            }
        }
        Ok(Self { heads, kv_heads, head_dim, latent, w_uk, w_uv, scale: 1.0 / (head_dim as f32).sqrt() })
    }

    /// Cache rows `[T, L]` from post-RoPE keys and values `[T, kv_heads, head_dim]` (what
    /// `append_cache` writes as `kv_new`).
    pub fn latents(&self, k: &[f32], v: &[f32]) -> Result<Vec<f32>> {
        let row = self.kv_heads * self.head_dim;
        if k.len() != v.len() || !k.len().is_multiple_of(row) {
            return Err(invalid(format!("from_gqa: k and v must both be [T, {}, {}]", self.kv_heads, self.head_dim)));
        }
        Ok(k.chunks(row).zip(v.chunks(row)).flat_map(|(a, b)| a.iter().chain(b).copied()).collect())
    }
}
