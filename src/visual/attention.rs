//! `sparse_attention` and `neighbor_attention`: prefill attention over the kept tokens, and
//! YOPO's 2D neighbourhood.

use serde::{Deserialize, Serialize};

use crate::backend::{Status, StatusBits};
use crate::dtype::{float_dtype, same_dtype, to_f64, DType, Float};
use crate::error::{invalid, Error, Result};
use crate::layout::{dim, elements};
use crate::plan::{Plan, TensorSpec};

use super::{check_offsets, heads_ok, offsets, oracle};

/// Attention over the kept tokens (as [`Compact`](super::Compact) lays them out, with K and V
/// gathered). Prefill: query i of sequence b sees key j of b iff `pos[j] <= pos[i]` (causal by
/// original position), GQA (`q [T, H, D]`, `k`, `v [T, Hkv, D]`), `o [T, H, D]` and the
/// natural-log `lse [T, H]` (f32; a row that sees nothing gets `o = 0`, `lse = -inf`). Every
/// token kept: dense causal attention.
///
/// Decode over the pruned cache (`queries: Some(Tq)`): the queries are new tokens, `q [Tq, H,
/// D]` with their own `cu_seqlens_q [B + 1]` and original positions `pos_q [Tq]`, over the
/// compacted keys (`k`, `v`, `cu_seqlens`, `pos` as prefill left them, plus whatever the engine
/// appended); query i of b sees key j of b iff `pos[j] <= pos_q[i]`; `o [Tq, H, D]`, `lse [Tq,
/// H]`. Split-KV: run it on key subsets (their own `cu_seqlens`) and merge the parts with
/// `core.merge_states`. Bad offsets (either) write nothing and raise `INDEX_OUT_OF_RANGE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseAttentionParams {
    /// B: sequences (`cu_seqlens [B + 1]`).
    pub seqs: usize,
    /// T: kept tokens over all sequences, where `cu_seqlens` ends.
    pub tokens: usize,
    /// H: query heads, a multiple of `kv_heads`.
    pub heads: usize,
    /// Hkv: key and value heads (GQA groups).
    pub kv_heads: usize,
    /// D: head size, 1 to [`MAX_DIM`](super::MAX_DIM).
    pub dim: usize,
    /// Softmax scale of `q . k`; finite.
    pub scale: f32,
    /// Storage dtype of `q`, `k`, `v` and `o`: f32, f16 or bf16 (`lse` is f32).
    pub dtype: DType,
    /// Tq: new query rows over all sequences, for a decode over the pruned cache (with
    /// `cu_seqlens_q` and `pos_q`); absent: the queries are the kept tokens themselves (prefill).
    #[serde(default)]
    pub queries: Option<usize>,
}

/// A validated `sparse_attention` plan, built once by [`SparseAttention::new`];
/// `run_cpu`, `run_cuda` or `run_wgpu` runs it on buffers of the sizes [`Plan::tensors`] lists.
#[derive(Debug, Clone)]
pub struct SparseAttention {
    /// The parameters the plan was built from.
    pub params: SparseAttentionParams,
}

impl SparseAttention {
    /// Validates the params: a float `dtype` (else `Error::DType`); sizes >= 1; `heads` a multiple
    /// of `kv_heads`; `dim` in `[1, MAX_DIM]`; a finite `scale`; sizes within 32-bit
    /// indexing (else `Error::InvalidParams`).
    pub fn new(p: SparseAttentionParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        dim("sparse_attention seqs", p.seqs)?;
        dim("sparse_attention tokens", p.tokens)?;
        heads_ok(p.heads, p.kv_heads, p.dim)?;
        if !p.scale.is_finite() {
            return Err(invalid(format!("sparse_attention scale must be finite, got {}", p.scale)));
        }
        elements("sparse_attention q", &[p.tokens, p.heads, p.dim])?;
        if let Some(tq) = p.queries {
            dim("sparse_attention queries", tq)?;
            elements("sparse_attention q (decode)", &[tq, p.heads, p.dim])?;
        }
        Ok(Self { params: p })
    }

    /// Query rows: `queries` when decoding, else `tokens`.
    pub fn query_rows(&self) -> usize {
        self.params.queries.unwrap_or(self.params.tokens)
    }

    /// Checks `cu_seqlens` on the host: from 0 to `tokens` without decreasing (and
    /// `cu_seqlens_q` from 0 to `queries` when decoding); the `Error::InvalidInput` names the
    /// first bad entry.
    pub fn validate(&self, cu: &[i32], cu_q: Option<&[i32]>) -> Result<()> {
        self.check_len("cu_seqlens", cu.len())?;
        check_offsets(cu, self.params.seqs, self.params.tokens)?;
        if let (Some(tq), Some(c)) = (self.params.queries, cu_q) {
            self.check_len("cu_seqlens_q", c.len())?;
            crate::layout::check_offsets("cu_seqlens_q", c, self.params.seqs, tq, true)?;
        }
        Ok(())
    }

    /// The oracle on host slices: `q [Tq, H, D]`, `k`, `v [T, Hkv, D]`, `cu_seqlens [B + 1]`,
    /// `pos [T]` (i32), and when decoding `cu_seqlens_q [B + 1]`, `pos_q [Tq]`, in; `o [Tq, H,
    /// D]`, `lse [Tq, H]` (f32) out. `Error::DType` for buffers of another dtype, `Error::Shape`
    /// for one too short, `Error::InvalidParams` for a status word of another backend.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        q: &[T],
        k: &[T],
        v: &[T],
        cu_seqlens: &[i32],
        pos: &[i32],
        cu_seqlens_q: Option<&[i32]>,
        pos_q: Option<&[i32]>,
        o: &mut [T],
        lse: &mut [f32],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let given = [("q", q.len()), ("k", k.len()), ("v", v.len()), ("cu_seqlens", cu_seqlens.len())];
        let mut lens = [&given[..], &[("pos", pos.len()), ("o", o.len()), ("lse", lse.len())]].concat();
        lens.extend(cu_seqlens_q.map(|c| ("cu_seqlens_q", c.len())));
        lens.extend(pos_q.map(|c| ("pos_q", c.len())));
        self.check_lens(&lens)?;
        let p = &self.params;
        let (cu_q_raw, pos_q) = (cu_seqlens_q.unwrap_or(cu_seqlens), pos_q.unwrap_or(pos));
        let (Some(cu), Some(cu_q)) =
            (offsets(cu_seqlens, p.seqs, p.tokens), offsets(cu_q_raw, p.seqs, self.query_rows()))
        else {
            return status.raise(StatusBits::INDEX_OUT_OF_RANGE);
        };
        let (qf, kf, vf) = (to_f64(q), to_f64(k), to_f64(v));
        let (hd, g, kvh) = (p.dim, p.heads / p.kv_heads, p.kv_heads);
        for b in 0..p.seqs {
            for i in cu_q[b]..cu_q[b + 1] {
                let keys: Vec<usize> = (cu[b]..cu[b + 1]).filter(|&j| pos[j] <= pos_q[i]).collect();
                for h in 0..p.heads {
                    let row = |x: &[f64], t: usize| x[(t * kvh + h / g) * hd..(t * kvh + h / g + 1) * hd].to_vec();
                    let qr = &qf[(i * p.heads + h) * hd..(i * p.heads + h + 1) * hd];
                    let (out, l) = oracle::attend(qr, &|t| row(&kf, t), &|t| row(&vf, t), &keys, f64::from(p.scale));
                    for (d, x) in o[(i * p.heads + h) * hd..(i * p.heads + h + 1) * hd].iter_mut().zip(out) {
                        *d = T::from_f32(x as f32);
                    }
                    lse[i * p.heads + h] = l as f32;
                }
            }
        }
        Ok(())
    }
}

impl Plan for SparseAttention {
    type Params = SparseAttentionParams;
    const NAME: &'static str = "sparse_attention";
    fn build(p: SparseAttentionParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &SparseAttentionParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let (p, dt, tq) = (&self.params, self.params.dtype, self.query_rows());
        let mut v = vec![
            TensorSpec::input("q", dt, tq * p.heads * p.dim),
            TensorSpec::input("k", dt, p.tokens * p.kv_heads * p.dim),
            TensorSpec::input("v", dt, p.tokens * p.kv_heads * p.dim),
            TensorSpec::input("cu_seqlens", DType::I32, p.seqs + 1),
            TensorSpec::input("pos", DType::I32, p.tokens),
        ];
        if p.queries.is_some() {
            v.push(TensorSpec::input("cu_seqlens_q", DType::I32, p.seqs + 1));
            v.push(TensorSpec::input("pos_q", DType::I32, tq));
        }
        v.push(TensorSpec::output("o", dt, tq * p.heads * p.dim));
        v.push(TensorSpec::output("lse", DType::F32, tq * p.heads));
        v
    }
}

// ---------------------------------------------------------------------------------------------

/// YOPO's neighbour attention over whole sequences: each sequence holds one image of
/// `img[b] = (start, hg, wg)` (`hg x wg` visual tokens from position `start`, raster order). A
/// visual query at cell (y, x) sees every token before the image and the visual keys with
/// `|dy| <= radius` and `|dx| <= radius` (clipped at the borders; with `causal_window`, also only
/// keys at or before it in raster order); a text query sees everything before it (causal).
/// `head_mask [H] i32` (with `has_head_mask`): bit 0 zeroes visual keys' probabilities after the
/// softmax (no renormalization), bit 1 zeroes visual queries' outputs. GQA, `o [T, H, D]`,
/// `lse [T, H]` (of the softmax before any mask). An image that does not fit its sequence makes
/// the sequence all text and raises `INDEX_OUT_OF_RANGE`; bad `cu_seqlens` write nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighborAttentionParams {
    /// B: sequences, one image each (`cu_seqlens [B + 1]`, `img [B, 3]`).
    pub seqs: usize,
    /// T: tokens over all sequences, where `cu_seqlens` ends.
    pub tokens: usize,
    /// H: query heads, a multiple of `kv_heads`.
    pub heads: usize,
    /// Hkv: key and value heads (GQA groups).
    pub kv_heads: usize,
    /// D: head size, 1 to [`MAX_DIM`](super::MAX_DIM).
    pub dim: usize,
    /// Softmax scale of `q . k`; finite.
    pub scale: f32,
    /// r: the window's reach in grid cells, along y and along x; at most `i32::MAX`.
    pub radius: usize,
    /// Storage dtype of `q`, `k`, `v` and `o`: f32, f16 or bf16 (`lse` is f32).
    pub dtype: DType,
    /// Also hide visual keys after the query in raster order (default `false`).
    #[serde(default)]
    pub causal_window: bool,
    /// Take the per-head masks `head_mask [H]` (default `false`).
    #[serde(default)]
    pub has_head_mask: bool,
}

/// A validated `neighbor_attention` plan, built once by [`NeighborAttention::new`];
/// `run_cpu`, `run_cuda` or `run_wgpu` runs it on buffers of the sizes [`Plan::tensors`] lists.
#[derive(Debug, Clone)]
pub struct NeighborAttention {
    /// The parameters the plan was built from.
    pub params: NeighborAttentionParams,
}

/// Sequence b's image as (first absolute row, hg, wg), or `None` when it does not fit.
fn image(cu: &[usize], img: &[i32], b: usize) -> Option<(usize, usize, usize)> {
    let (s, hg, wg) = (img[3 * b], img[3 * b + 1], img[3 * b + 2]);
    let len = (cu[b + 1] - cu[b]) as i64;
    let ok = s >= 0 && hg >= 0 && wg >= 0 && i64::from(s) + i64::from(hg) * i64::from(wg) <= len;
    ok.then(|| (cu[b] + s as usize, hg as usize, wg as usize))
}

impl NeighborAttention {
    /// Validates the params: a float `dtype` (else `Error::DType`); sizes >= 1; `heads` a multiple
    /// of `kv_heads`; `dim` in `[1, MAX_DIM]`; a finite `scale`; `radius` within i32; sizes
    /// within 32-bit indexing (else `Error::InvalidParams`).
    pub fn new(p: NeighborAttentionParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        dim("neighbor_attention seqs", p.seqs)?;
        dim("neighbor_attention tokens", p.tokens)?;
        heads_ok(p.heads, p.kv_heads, p.dim)?;
        if !p.scale.is_finite() {
            return Err(invalid(format!("neighbor_attention scale must be finite, got {}", p.scale)));
        }
        if p.radius > i32::MAX as usize {
            return Err(invalid("neighbor_attention radius exceeds i32"));
        }
        elements("neighbor_attention q", &[p.tokens, p.heads, p.dim])?;
        Ok(Self { params: p })
    }

    /// Checks on the host what the kernel would flag: `cu_seqlens` from 0 to `tokens` without
    /// decreasing and every image inside its sequence. `Error::InvalidInput` names the first
    /// bad one.
    pub fn validate(&self, cu: &[i32], img: &[i32]) -> Result<()> {
        self.check_len("cu_seqlens", cu.len())?;
        self.check_len("img", img.len())?;
        let cu = check_offsets(cu, self.params.seqs, self.params.tokens)?;
        match (0..self.params.seqs).find(|&b| image(&cu, img, b).is_none()) {
            Some(b) => Err(Error::InvalidInput(format!(
                "img[{b}] = ({}, {}, {}) does not fit sequence {b}",
                img[3 * b],
                img[3 * b + 1],
                img[3 * b + 2]
            ))),
            None => Ok(()),
        }
    }

    /// Whether query row i sees key row j (both in sequence b with image `im`).
    fn visible(&self, im: Option<(usize, usize, usize)>, i: usize, j: usize) -> bool {
        if j > i && im.is_none() {
            return false;
        }
        let Some((s, hg, wg)) = im else { return true };
        let (vi, vj) = (i >= s && i < s + hg * wg, j >= s && j < s + hg * wg);
        if !vi {
            return j <= i;
        }
        if j < s {
            return true;
        }
        if !vj {
            return false;
        }
        let r = self.params.radius;
        let ((yi, xi), (yj, xj)) = (((i - s) / wg, (i - s) % wg), ((j - s) / wg, (j - s) % wg));
        yi.abs_diff(yj) <= r && xi.abs_diff(xj) <= r && (!self.params.causal_window || j <= i)
    }

    /// The oracle on host slices: `q [T, H, D]`, `k`, `v [T, Hkv, D]`, `cu_seqlens [B + 1]`,
    /// `img [B, 3]`, `head_mask [H]` (i32, with `has_head_mask`) in; `o [T, H, D]`,
    /// `lse [T, H]` (f32) out.
    /// `Error::DType` for buffers of another dtype, `Error::Shape` for one too short,
    /// `Error::InvalidParams` for an optional one missing or not wanted, or a status word of
    /// another backend.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        q: &[T],
        k: &[T],
        v: &[T],
        cu_seqlens: &[i32],
        img: &[i32],
        head_mask: Option<&[i32]>,
        o: &mut [T],
        lse: &mut [f32],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let mut given = vec![("q", q.len()), ("k", k.len()), ("v", v.len()), ("cu_seqlens", cu_seqlens.len())];
        given.extend([("img", img.len()), ("o", o.len()), ("lse", lse.len())]);
        given.extend(head_mask.map(|m| ("head_mask", m.len())));
        self.check_lens(&given)?;
        let p = &self.params;
        let Some(cu) = offsets(cu_seqlens, p.seqs, p.tokens) else {
            return status.raise(StatusBits::INDEX_OUT_OF_RANGE);
        };
        let (qf, kf, vf) = (to_f64(q), to_f64(k), to_f64(v));
        let (hd, g, kvh) = (p.dim, p.heads / p.kv_heads, p.kv_heads);
        let mut bits = 0;
        for b in 0..p.seqs {
            let im = image(&cu, img, b);
            // The kernels check an image in the blocks of its sequence's tokens: an empty one has none.
            bits |= if im.is_none() && cu[b + 1] > cu[b] { StatusBits::INDEX_OUT_OF_RANGE } else { 0 };
            let is_visual = |t: usize| im.is_some_and(|(s, hg, wg)| t >= s && t < s + hg * wg);
            for i in cu[b]..cu[b + 1] {
                let keys: Vec<usize> = (cu[b]..cu[b + 1]).filter(|&j| self.visible(im, i, j)).collect();
                for h in 0..p.heads {
                    let mask = head_mask.filter(|_| p.has_head_mask).map_or(0, |m| m[h]);
                    let row = |x: &[f64], t: usize| x[(t * kvh + h / g) * hd..(t * kvh + h / g + 1) * hd].to_vec();
                    let qr = &qf[(i * p.heads + h) * hd..(i * p.heads + h + 1) * hd];
                    // Key mask: visual values count as zero, the softmax keeps every visible key.
                    let val = |t: usize| if mask & 1 != 0 && is_visual(t) { vec![0.0; hd] } else { row(&vf, t) };
                    let (mut out, l) = oracle::attend(qr, &|t| row(&kf, t), &val, &keys, f64::from(p.scale));
                    if mask & 2 != 0 && is_visual(i) {
                        out.fill(0.0);
                    }
                    for (d, x) in o[(i * p.heads + h) * hd..(i * p.heads + h + 1) * hd].iter_mut().zip(out) {
                        *d = T::from_f32(x as f32);
                    }
                    lse[i * p.heads + h] = l as f32;
                }
            }
        }
        if bits != 0 {
            status.raise(bits)?;
        }
        Ok(())
    }
}

impl Plan for NeighborAttention {
    type Params = NeighborAttentionParams;
    const NAME: &'static str = "neighbor_attention";
    fn build(p: NeighborAttentionParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &NeighborAttentionParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let (p, dt) = (&self.params, self.params.dtype);
        let mut v = vec![
            TensorSpec::input("q", dt, p.tokens * p.heads * p.dim),
            TensorSpec::input("k", dt, p.tokens * p.kv_heads * p.dim),
            TensorSpec::input("v", dt, p.tokens * p.kv_heads * p.dim),
            TensorSpec::input("cu_seqlens", DType::I32, p.seqs + 1),
            TensorSpec::input("img", DType::I32, 3 * p.seqs),
        ];
        if p.has_head_mask {
            v.push(TensorSpec::input("head_mask", DType::I32, p.heads));
        }
        v.push(TensorSpec::output("o", dt, p.tokens * p.heads * p.dim));
        v.push(TensorSpec::output("lse", DType::F32, p.tokens * p.heads));
        v
    }
}
