//! MLA latent attention (DeepSeek-V2/V3; TransMLA): decode over a paged cache of one compressed
//! latent vector (plus a small decoupled RoPE key) per token, with the up-projections absorbed
//! into the query and the output, so H query heads attend to a single `L + R`-wide latent head.
//!
//! `decode` runs on every GPU at any page size, latent width and head count (FlashMLA needs
//! Hopper, P = 64 and L = 512). Split-KV: each of `splits` parts of a sequence's keys writes an
//! f32 partial state into the workspace, and a combine launch merges them, so `seq_lens` never
//! travel to the host (CUDA-graph safe); [`MlaDecode::schedule`] picks the split count.

mod cache;
#[cfg(feature = "cuda")]
mod cuda;
mod gqa;
pub mod oracle;
mod project;
pub(crate) mod registry;
mod rope;
#[cfg(feature = "wgpu")]
pub(crate) mod uniforms;
#[cfg(feature = "wgpu")]
mod wgpu;

use serde::{Deserialize, Serialize};

pub use cache::{AppendCache, AppendCacheParams};
pub use gqa::GqaAsMla;
pub use project::{AbsorbQ, AbsorbQParams, HeadProduct, ProjectOut, ProjectOutParams};
pub use rope::{Rope, RopeParams};

use crate::tc::attention_tile;
pub use crate::tc::TcTile;

use crate::backend::{Status, StatusBits};
use crate::dtype::{float_dtype, from_f64, same_dtype, to_f64, DType, Float};
use crate::error::{invalid, Error, Result};
use crate::layout::{dim, elements};
use crate::plan::{Plan, TensorSpec};

fn one() -> usize {
    1
}

/// Paged absorbed-MLA decode. Tensors: `q [B, Sq, H, L + R]`; the cache, unified
/// `cache [pages, P, L + R]` (FlashMLA's and the default) or split `cache [pages, P, L]` +
/// `pe_cache [pages, P, R]` (DeepSeek-V3's `kv_cache` / `pe_cache`); `block_table [B, max_pages]`
/// and `seq_lens [B]` (i32); out `o [B, Sq, H, L]`, `lse [B, H, Sq]` (f32, natural log); scratch
/// `ws` (f32 partial states). A `seq_len` outside `[0, max_pages * P]` is clamped into it and a
/// page id outside `[0, pages)` hides its tokens; both raise `INDEX_OUT_OF_RANGE`. Table entries
/// past `ceil(seq_len / P)` are never read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlaDecodeParams {
    /// B: sequences (rows of `block_table`, entries of `seq_lens`).
    pub batch: usize,
    /// New tokens per sequence (causal among themselves).
    pub sq: usize,
    /// H: query heads, all sharing the one latent head: 1 to [`MAX_HEADS`].
    pub heads: usize,
    /// Latent width L: a multiple of 64, at most 2048.
    pub latent: usize,
    /// Decoupled RoPE width R: 0 or a multiple of 16, at most 128.
    pub rope: usize,
    /// P: tokens per cache page, any value from 1 up.
    pub page_size: usize,
    /// Pages in the cache (its first axis); `block_table` entries index them.
    pub pages: usize,
    /// Block-table entries per sequence.
    pub max_pages: usize,
    /// Softmax scale, required: FlashMLA defaults to `576^-1/2`, DeepSeek-V3 uses
    /// `192^-1/2 * mscale^2`; the crate never guesses it.
    pub scale: f32,
    /// Storage dtype of `q`, the cache and `o`: f32, f16 or bf16 (`lse` and `ws` are f32).
    pub dtype: DType,
    /// The split cache layout (`pe_cache` separate); default unified.
    #[serde(default)]
    pub split_cache: bool,
    /// Split-KV parts per sequence (see [`MlaDecode::schedule`]).
    #[serde(default = "one")]
    pub splits: usize,
    /// Storage of the cache: absent (or `dtype`) for the float cache, `e4m3` for fp8 with one
    /// f32 scale per token in `cache_scale [pages, P]` (what [`AppendCache`] writes): token t's
    /// latent and rope key are `cache[t] * cache_scale[t]`. Half the bytes of a 16-bit cache.
    #[serde(default)]
    pub cache_dtype: Option<DType>,
}

/// The cache storage `cache_dtype` names, checked: the float `dtype` itself or fp8 E4M3.
pub(crate) fn cache_storage(what: &str, dtype: DType, cache_dtype: Option<DType>) -> Result<DType> {
    match cache_dtype {
        None => Ok(dtype),
        Some(c) if c == dtype || c == DType::F8E4M3 => Ok(c),
        Some(c) => Err(Error::DType(format!("{what} cache_dtype {c} must be the dtype {dtype} or e4m3"))),
    }
}

/// A validated decode plan: [`MlaDecode::new`] checks the params once, then `run_cpu`,
/// `run_cuda` or `run_wgpu` runs it on buffers of the sizes [`Plan::tensors`] lists.
#[derive(Debug, Clone)]
pub struct MlaDecode {
    /// The parameters the plan was built from.
    pub params: MlaDecodeParams,
}

/// The largest latent and rope widths the kernels hold in registers.
pub const MAX_LATENT: usize = 2048;
/// The largest decoupled RoPE width R.
pub const MAX_ROPE: usize = 128;
/// The most query heads one decode or prefill takes.
pub const MAX_HEADS: usize = 128;

impl MlaDecode {
    /// Validates the params: a float `dtype` and a `cache_dtype` of it or e4m3 (else
    /// `Error::DType`); every size >= 1 (`rope` may
    /// be 0); `latent`, `rope` and `heads` as their fields say; `scale` finite and > 0; `splits`
    /// at most `max_pages * page_size`; every tensor within 32-bit indexing. A violation fails
    /// with `Error::InvalidParams` naming the field.
    pub fn new(p: MlaDecodeParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        cache_storage("mla decode", p.dtype, p.cache_dtype)?;
        for (what, v) in [
            ("mla decode batch", p.batch),
            ("mla decode sq", p.sq),
            ("mla decode page_size", p.page_size),
            ("mla decode pages", p.pages),
            ("mla decode max_pages", p.max_pages),
            ("mla decode splits", p.splits),
        ] {
            dim(what, v)?;
        }
        if p.latent == 0 || !p.latent.is_multiple_of(64) || p.latent > MAX_LATENT {
            return Err(invalid(format!(
                "mla decode latent = {} must be a multiple of 64 in [64, {MAX_LATENT}]",
                p.latent
            )));
        }
        if !p.rope.is_multiple_of(16) || p.rope > MAX_ROPE {
            return Err(invalid(format!(
                "mla decode rope = {} must be 0 or a multiple of 16 up to {MAX_ROPE}",
                p.rope
            )));
        }
        if p.heads == 0 || p.heads > MAX_HEADS {
            return Err(invalid(format!("mla decode heads = {} must be in [1, {MAX_HEADS}]", p.heads)));
        }
        if !(p.scale.is_finite() && p.scale > 0.0) {
            return Err(invalid(format!("mla decode scale = {} must be finite and > 0", p.scale)));
        }
        let cap = elements("mla decode max_pages * page_size", &[p.max_pages, p.page_size])?;
        if p.splits > cap {
            return Err(invalid(format!(
                "mla decode splits = {} exceeds the table's capacity of {cap} tokens",
                p.splits
            )));
        }
        let w = p.latent + p.rope;
        elements("mla decode q", &[p.batch, p.sq, p.heads, w])?;
        elements("mla decode cache", &[p.pages, p.page_size, w])?;
        elements("mla decode block_table", &[p.batch, p.max_pages])?;
        elements("mla decode ws", &[p.splits, p.batch, p.sq, p.heads, p.latent + 1])?;
        Ok(Self { params: p })
    }

    /// Split-KV parts for `batch` sequences of `sq` new tokens and `heads` heads, keys up to
    /// `max_len`, on a device with `sm_count` multiprocessors: enough (group, part) blocks for two
    /// waves of the tensor-core kernel (a group is up to 64 of a sequence's `sq * heads` rows; see
    /// [`tc_tile`]), no part shorter than 256 keys. Decided without reading `seq_lens`.
    pub fn schedule(batch: usize, sq: usize, heads: usize, max_len: usize, sm_count: usize) -> usize {
        let rows = (sq * heads).max(1);
        let g = [16, 32, 64].into_iter().find(|&g| g >= rows).unwrap_or(64);
        let blocks = (batch * rows.div_ceil(g)).max(1);
        let want = (2 * sm_count).div_ceil(blocks);
        want.clamp(1, (max_len / 256).max(1))
    }

    /// Every `seq_len` in `[0, max_pages * page_size]` and every table entry a sequence uses in
    /// `[0, pages)`, checked on the host; the error names the first bad element (the kernels
    /// clamp or skip instead and raise `INDEX_OUT_OF_RANGE`).
    pub fn validate_table(&self, block_table: &[i32], seq_lens: &[i32]) -> Result<()> {
        self.check_len("block_table", block_table.len())?;
        self.check_len("seq_lens", seq_lens.len())?;
        let s = self.shape();
        for (b, &len) in seq_lens[..s.batch].iter().enumerate() {
            let (n, clamped) = oracle::visible_len(len, &s);
            if clamped {
                let cap = s.max_pages * s.page_size;
                return Err(Error::InvalidInput(format!("seq_lens[{b}] = {len} is outside [0, {cap}]")));
            }
            for j in 0..n.div_ceil(s.page_size) {
                let id = block_table[b * s.max_pages + j];
                if usize::try_from(id).map_or(true, |v| v >= s.pages) {
                    return Err(Error::InvalidInput(format!(
                        "block_table[{}] = {id} (sequence {b}, page {j}) is outside [0, {})",
                        b * s.max_pages + j,
                        s.pages
                    )));
                }
            }
        }
        Ok(())
    }

    fn shape(&self) -> oracle::Shape {
        let p = &self.params;
        oracle::Shape {
            batch: p.batch,
            sq: p.sq,
            heads: p.heads,
            latent: p.latent,
            rope: p.rope,
            page_size: p.page_size,
            pages: p.pages,
            max_pages: p.max_pages,
        }
    }

    /// The oracle on host slices (the split-KV workspace is unused here; it is checked so one
    /// call shape serves every backend). `C` is the cache's storage: `T`, or [`crate::E4M3`]
    /// with `cache_scale`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float, C: Float>(
        &self,
        q: &[T],
        cache: &[C],
        pe_cache: Option<&[C]>,
        cache_scale: Option<&[f32]>,
        block_table: &[i32],
        seq_lens: &[i32],
        o: &mut [T],
        lse: &mut [f32],
        ws: &mut [f32],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        same_dtype::<C>(self.geometry().cache_dtype)?;
        let mut lens = vec![("q", q.len()), ("cache", cache.len()), ("block_table", block_table.len())];
        lens.extend([("seq_lens", seq_lens.len()), ("o", o.len()), ("lse", lse.len()), ("ws", ws.len())]);
        lens.extend(pe_cache.map(|c| ("pe_cache", c.len())));
        lens.extend(cache_scale.map(|c| ("cache_scale", c.len())));
        self.check_lens(&lens)?;
        let p = &self.params;
        let (c, r) = split_cache(&self.geometry(), cache, pe_cache, cache_scale);
        let qf = to_f64(&q[..self.spec("q")?.len]);
        let (out, l, bad) = oracle::decode(&qf, &c, &r, block_table, seq_lens, &self.shape(), f64::from(p.scale));
        o[..out.len()].copy_from_slice(&from_f64::<T>(&out));
        for (d, v) in lse.iter_mut().zip(l) {
            *d = v as f32;
        }
        if bad {
            status.raise(StatusBits::INDEX_OUT_OF_RANGE)?;
        }
        Ok(())
    }
}

/// What one launch of the attention kernels needs. Decode runs `batch` grid sequences of `sq`
/// rows each; prefill runs one grid sequence of all `sq` = `tokens` rows, each finding its
/// sequence in `cu_seqlens`.
/// The tile the tensor-core decode and prefill use for `rows_wanted` query rows per sequence
/// (decode: `sq * heads`; prefill: all `tokens * heads`): the smallest group holding them, capped
/// where the output would not fit a warp's registers (G * latent <= 32768, so 64 at L = 512),
/// then the largest tile of keys (32 or 16) that fits `shared_optin` bytes; V is the latent part
/// of the key tile. None when even the smallest does not fit. See [`crate::tc::attention_tile`].
/// With `fp8` the cache is E4M3: its tiles are staged as bytes and decoded once into one 16-bit
/// tile, which takes a little less shared memory than two 16-bit stages.
pub fn tc_tile(latent: usize, rope: usize, rows_wanted: usize, fp8: bool, shared_optin: usize) -> Option<TcTile> {
    attention_tile(latent + rope, None, latent, rows_wanted, fp8, shared_optin, &[32, 16])
}

#[derive(Debug, Clone, Copy)]
// Read by the CUDA and wgpu launches; a build without one of them leaves some fields unused.
#[cfg_attr(not(all(feature = "cuda", feature = "wgpu")), allow(dead_code))]
pub(crate) struct Geometry {
    pub nseq: usize,
    pub grid_batch: usize,
    pub sq: usize,
    pub heads: usize,
    pub latent: usize,
    pub rope: usize,
    pub page_size: usize,
    pub pages: usize,
    pub max_pages: usize,
    pub splits: usize,
    pub scale: f32,
    pub split_cache: bool,
    pub dtype: DType,
    /// The cache's storage: `dtype`, or F8E4M3 with a per-token scale.
    pub cache_dtype: DType,
}

impl Geometry {
    pub(crate) fn fp8(&self) -> bool {
        self.cache_dtype == DType::F8E4M3
    }
}

impl MlaDecode {
    pub(crate) fn geometry(&self) -> Geometry {
        let p = &self.params;
        Geometry {
            nseq: p.batch,
            grid_batch: p.batch,
            sq: p.sq,
            heads: p.heads,
            latent: p.latent,
            rope: p.rope,
            page_size: p.page_size,
            pages: p.pages,
            max_pages: p.max_pages,
            splits: p.splits,
            scale: p.scale,
            split_cache: p.split_cache,
            dtype: p.dtype,
            cache_dtype: p.cache_dtype.unwrap_or(p.dtype),
        }
    }
}

/// Causal variable-length prefill (and chunked prefill, prefix caching): sequence b's new tokens
/// are rows `cu_seqlens[b]..cu_seqlens[b + 1]` of `q [tokens, H, L + R]`; the cache already holds
/// them (`append_cache` first), its `seq_lens[b]` counting them, and each new token sees the keys
/// up to its own position. Out `o [tokens, H, L]`, `lse [H, tokens]` (FlashAttention's varlen
/// layout). Bad `cu_seqlens` (not from 0 to tokens, decreasing anywhere, a token in no range)
/// raise `INDEX_OUT_OF_RANGE`, as bad pages and lengths do in [`MlaDecode`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlaPrefillParams {
    /// B: sequences packed in `q` (`cu_seqlens [B + 1]`, `block_table [B, max_pages]`,
    /// `seq_lens [B]`).
    pub batch: usize,
    /// New tokens over all sequences.
    pub tokens: usize,
    /// H: query heads, 1 to [`MAX_HEADS`].
    pub heads: usize,
    /// Latent width L: a multiple of 64, at most 2048.
    pub latent: usize,
    /// Decoupled RoPE width R: 0 or a multiple of 16, at most 128.
    pub rope: usize,
    /// P: tokens per cache page, any value from 1 up.
    pub page_size: usize,
    /// Pages in the cache (its first axis); `block_table` entries index them.
    pub pages: usize,
    /// Block-table entries per sequence.
    pub max_pages: usize,
    /// Softmax scale, required and never guessed, as [`MlaDecodeParams::scale`].
    pub scale: f32,
    /// Storage dtype of `q`, the cache and `o`: f32, f16 or bf16 (`lse` and `ws` are f32).
    pub dtype: DType,
    /// The split cache layout (`pe_cache` separate); default unified.
    #[serde(default)]
    pub split_cache: bool,
    /// Split-KV parts per query row (default 1; see [`MlaDecode::schedule`]).
    #[serde(default = "one")]
    pub splits: usize,
    /// The cache's storage, as [`MlaDecodeParams::cache_dtype`].
    #[serde(default)]
    pub cache_dtype: Option<DType>,
}

/// A validated prefill plan: [`MlaPrefill::new`] checks the params once, then `run_cpu`,
/// `run_cuda` or `run_wgpu` runs it on buffers of the sizes [`Plan::tensors`] lists.
#[derive(Debug, Clone)]
pub struct MlaPrefill {
    /// The parameters the plan was built from.
    pub params: MlaPrefillParams,
    /// The decode-shaped checks: batch 1 of `tokens` rows.
    shape: MlaDecode,
}

impl MlaPrefill {
    /// Validates the params as [`MlaDecode::new`] does for one sequence of `tokens` rows (same
    /// errors), plus `batch >= 1` and a block table within 32-bit indexing.
    pub fn new(p: MlaPrefillParams) -> Result<Self> {
        dim("mla prefill batch", p.batch)?;
        dim("mla prefill tokens", p.tokens)?;
        let shape = MlaDecode::new(MlaDecodeParams {
            batch: 1,
            sq: p.tokens,
            heads: p.heads,
            latent: p.latent,
            rope: p.rope,
            page_size: p.page_size,
            pages: p.pages,
            max_pages: p.max_pages,
            scale: p.scale,
            dtype: p.dtype,
            split_cache: p.split_cache,
            splits: p.splits,
            cache_dtype: p.cache_dtype,
        })?;
        elements("mla prefill block_table", &[p.batch, p.max_pages])?;
        Ok(Self { params: p, shape })
    }

    pub(crate) fn geometry(&self) -> Geometry {
        Geometry { nseq: self.params.batch, grid_batch: 1, ..self.shape.geometry() }
    }

    /// `cu_seqlens` from 0 to `tokens`, non-decreasing, then the table as [`MlaDecode`]'s; the
    /// error names the first bad element.
    pub fn validate_inputs(&self, cu: &[i32], block_table: &[i32], seq_lens: &[i32]) -> Result<()> {
        self.check_len("cu_seqlens", cu.len())?;
        self.check_len("block_table", block_table.len())?;
        self.check_len("seq_lens", seq_lens.len())?;
        let p = &self.params;
        if cu[0] != 0 || cu[p.batch] as i64 != p.tokens as i64 {
            return Err(Error::InvalidInput(format!(
                "cu_seqlens must run from 0 to tokens = {}, got {} .. {}",
                p.tokens, cu[0], cu[p.batch]
            )));
        }
        if let Some(b) = (0..p.batch).find(|&b| cu[b + 1] < cu[b]) {
            return Err(Error::InvalidInput(format!("cu_seqlens[{}] = {} is below cu_seqlens[{b}]", b + 1, cu[b + 1])));
        }
        let table = MlaDecode { params: MlaDecodeParams { batch: p.batch, sq: 1, ..self.shape.params.clone() } };
        table.validate_table(block_table, seq_lens)
    }

    /// The oracle on host slices (`C` and `cache_scale` as [`MlaDecode::run_cpu`]'s).
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float, C: Float>(
        &self,
        q: &[T],
        cache: &[C],
        pe_cache: Option<&[C]>,
        cache_scale: Option<&[f32]>,
        cu_seqlens: &[i32],
        block_table: &[i32],
        seq_lens: &[i32],
        o: &mut [T],
        lse: &mut [f32],
        ws: &mut [f32],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        same_dtype::<C>(self.geometry().cache_dtype)?;
        let mut lens = vec![("q", q.len()), ("cache", cache.len()), ("cu_seqlens", cu_seqlens.len())];
        lens.extend([("block_table", block_table.len()), ("seq_lens", seq_lens.len()), ("o", o.len())]);
        lens.extend([("lse", lse.len()), ("ws", ws.len())].into_iter().chain(pe_cache.map(|c| ("pe_cache", c.len()))));
        lens.extend(cache_scale.map(|c| ("cache_scale", c.len())));
        self.check_lens(&lens)?;
        let g = self.geometry();
        let (c, r) = split_cache(&g, cache, pe_cache, cache_scale);
        let qf = to_f64(&q[..self.spec("q")?.len]);
        let s = oracle::Shape { batch: g.nseq, ..self.shape.shape() };
        let (out, l, bad) = oracle::prefill(&qf, &c, &r, cu_seqlens, block_table, seq_lens, &s, f64::from(g.scale));
        o[..out.len()].copy_from_slice(&from_f64::<T>(&out));
        for (d, v) in lse.iter_mut().zip(l) {
            *d = v as f32;
        }
        if bad {
            status.raise(StatusBits::INDEX_OUT_OF_RANGE)?;
        }
        Ok(())
    }
}

/// The cache's latents `[pages * P, L]` and rope keys `[pages * P, R]` in f64, from either layout,
/// each token's row times its `cache_scale` (an fp8 cache).
fn split_cache<C: Float>(
    g: &Geometry,
    cache: &[C],
    pe_cache: Option<&[C]>,
    cache_scale: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>) {
    let (c, r) = float_cache(g, cache, pe_cache);
    let Some(s) = cache_scale else { return (c, r) };
    let scaled = |v: Vec<f64>, w: usize| -> Vec<f64> {
        v.iter().enumerate().map(|(i, &x)| x * f64::from(s[i / w.max(1)])).collect()
    };
    (scaled(c, g.latent), scaled(r, g.rope))
}

fn float_cache<C: Float>(g: &Geometry, cache: &[C], pe_cache: Option<&[C]>) -> (Vec<f64>, Vec<f64>) {
    let tokens = g.pages * g.page_size;
    let w = g.latent + g.rope;
    match pe_cache {
        Some(pe) => (to_f64(&cache[..tokens * g.latent]), to_f64(&pe[..tokens * g.rope])),
        None if g.split_cache => (to_f64(&cache[..tokens * g.latent]), vec![]),
        None => {
            let cf = to_f64(&cache[..tokens * w]);
            let c = (0..tokens).flat_map(|t| cf[t * w..t * w + g.latent].to_vec()).collect();
            let r = (0..tokens).flat_map(|t| cf[t * w + g.latent..(t + 1) * w].to_vec()).collect();
            (c, r)
        }
    }
}

impl Plan for MlaPrefill {
    type Params = MlaPrefillParams;
    const NAME: &'static str = "mla_prefill";
    fn build(p: MlaPrefillParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &MlaPrefillParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        let mut v: Vec<TensorSpec> = self.shape.tensors();
        for s in v.iter_mut() {
            match s.name {
                "block_table" => s.len = p.batch * p.max_pages,
                "seq_lens" => s.len = p.batch,
                _ => {}
            }
        }
        let at = v.iter().position(|s| s.name == "block_table").unwrap_or(v.len());
        v.insert(at, TensorSpec::input("cu_seqlens", DType::I32, p.batch + 1));
        v
    }
}

impl Plan for MlaDecode {
    type Params = MlaDecodeParams;
    const NAME: &'static str = "mla_decode";
    fn build(p: MlaDecodeParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &MlaDecodeParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        let (dt, tokens, w) = (p.dtype, p.pages * p.page_size, p.latent + p.rope);
        let cdt = p.cache_dtype.unwrap_or(dt);
        let rows = p.batch * p.sq * p.heads;
        let mut v = vec![TensorSpec::input("q", dt, rows * w)];
        if p.split_cache {
            v.push(TensorSpec::input("cache", cdt, tokens * p.latent));
            if p.rope > 0 {
                v.push(TensorSpec::input("pe_cache", cdt, tokens * p.rope));
            }
        } else {
            v.push(TensorSpec::input("cache", cdt, tokens * w));
        }
        if cdt == DType::F8E4M3 {
            v.push(TensorSpec::input("cache_scale", DType::F32, tokens));
        }
        v.extend([
            TensorSpec::input("block_table", DType::I32, p.batch * p.max_pages),
            TensorSpec::input("seq_lens", DType::I32, p.batch),
            TensorSpec::output("o", dt, rows * p.latent),
            TensorSpec::output("lse", DType::F32, rows),
            TensorSpec::scratch("ws", DType::F32, p.splits * rows * (p.latent + 1)),
        ]);
        v
    }
}
