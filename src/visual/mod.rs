//! Sparse visual-token attention: score visual tokens by the attention they receive, keep a
//! subset, and attend over fewer keys (FastV, SparseVLM, ZipVL, VTC-CLS, AIM).
//!
//! Each sequence of a packed batch (`cu_seqlens [B + 1]`) holds one visual segment
//! `seg[b] = (start, len)` (positions within the sequence). The FastV-style pipeline at layer K:
//! [`AttnMass`] (the attention mass each visual key receives from chosen query rows) ->
//! [`Select`] (top-k, cumulative mass, above mean) -> [`Compact`] (the kept tokens' source rows
//! and original positions, varlen) -> `core.gather_rows` (hidden states, K, V by those rows) ->
//! [`SparseAttention`] (causal by original positions, GQA). [`NeighborAttention`] is YOPO's
//! alternative: visual queries attend to a 2D window of the image instead of all of it.
//! [`Merge`] folds dropped tokens into their most similar kept token instead of dropping them.

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
use crate::error::{invalid, Error, Result};
use crate::layout::{dim, elements};
use crate::plan::{Plan, TensorSpec};

/// Largest head size (a query row lives in workgroup memory).
pub const MAX_DIM: usize = 256;

/// `cu_seqlens` from 0 to `end` without decreasing, or `None` (the kernels raise the status).
fn offsets(cu: &[i32], n: usize, end: usize) -> Option<Vec<usize>> {
    crate::layout::offsets(cu, n, end, true)
}

fn check_offsets(cu: &[i32], n: usize, end: usize) -> Result<Vec<usize>> {
    crate::layout::check_offsets("cu_seqlens", cu, n, end, true)
}

/// Sequence b's visual segment as absolute rows, or `None` when it does not fit the sequence
/// or exceeds `nmax` candidates.
fn segment(cu: &[usize], seg: &[i32], b: usize, nmax: usize) -> Option<(usize, usize)> {
    let (s, n) = (seg[2 * b], seg[2 * b + 1]);
    let len = cu[b + 1] - cu[b];
    let ok = s >= 0 && n >= 0 && (s as usize) + (n as usize) <= len && (n as usize) <= nmax;
    ok.then(|| (cu[b] + s as usize, n as usize))
}

fn heads_ok(heads: usize, kv_heads: usize, d: usize) -> Result<()> {
    dim("visual heads", heads)?;
    dim("visual kv_heads", kv_heads)?;
    if !heads.is_multiple_of(kv_heads) {
        return Err(invalid(format!("heads = {heads} must be a multiple of kv_heads = {kv_heads} (GQA)")));
    }
    if d == 0 || d > MAX_DIM {
        return Err(invalid(format!("head dim = {d} must be in [1, {MAX_DIM}]")));
    }
    Ok(())
}

fn default_true() -> bool {
    true
}

// ---------------------------------------------------------------------------------------------

/// How [`Select`] keeps candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectMode {
    /// The `k` largest (ties to the lower index); [`oracle::keep_count`] turns FastV's drop
    /// ratio into `k`.
    #[default]
    TopK,
    /// ZipVL: the fewest `p` whose largest raw masses reach `tau` times the total, then the
    /// top-`p` by `order` (the raw mass unless given).
    Mass,
    /// Every candidate strictly above the mean.
    AboveMean,
}

/// Keeps candidates of `score [B, n]` (f32; the first `lens[b]` are sequence b's): `idx [B, n]`
/// the kept indices ascending then `-1`, `count [B]`. Sums run in f32 in index order, so every
/// backend keeps the same set. A length outside `[0, n]` or a non-finite score keeps nothing
/// and raises `INDEX_OUT_OF_RANGE` / `VALUE_OUT_OF_RANGE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectParams {
    /// B: sequences (rows of `score`, `order` and `idx`; entries of `lens` and `count`).
    pub seqs: usize,
    /// Candidates per sequence: the row length of `score`, `order` and `idx`.
    pub n: usize,
    /// How candidates are kept (default [`SelectMode::TopK`]).
    #[serde(default)]
    pub mode: SelectMode,
    /// Top-k's `k` (default 0): a sequence keeps `min(k, lens[b])` candidates.
    #[serde(default)]
    pub k: usize,
    /// Mass mode's share of the total mass to reach, in `[0, 1]` (default 0.9).
    #[serde(default = "default_tau")]
    pub tau: f32,
    /// A separate ranking score `order [B, n]` (mass mode).
    #[serde(default)]
    pub has_order: bool,
}

fn default_tau() -> f32 {
    0.9
}

/// A validated `select` plan, built once by [`Select::new`]; `run_cpu`, `run_cuda`
/// or `run_wgpu` runs it on buffers of the sizes [`Plan::tensors`] lists.
#[derive(Debug, Clone)]
pub struct Select {
    /// The parameters the plan was built from.
    pub params: SelectParams,
}

impl Select {
    /// Validates the params: `seqs` and `n` >= 1, `score` within 32-bit indexing, `tau` in
    /// `[0, 1]`; else `Error::InvalidParams`.
    pub fn new(p: SelectParams) -> Result<Self> {
        dim("select seqs", p.seqs)?;
        dim("select n", p.n)?;
        elements("select score", &[p.seqs, p.n])?;
        if !(p.tau.is_finite() && (0.0..=1.0).contains(&p.tau)) {
            return Err(invalid(format!("select tau = {} must be in [0, 1]", p.tau)));
        }
        Ok(Self { params: p })
    }
    fn keep(&self) -> oracle::Keep {
        match self.params.mode {
            SelectMode::TopK => oracle::Keep::TopK(self.params.k),
            SelectMode::Mass => oracle::Keep::Mass(self.params.tau),
            SelectMode::AboveMean => oracle::Keep::AboveMean,
        }
    }

    /// Checks on the host what the kernel would flag: every `lens[b]` in `[0, n]` and the first
    /// `lens[b]` entries of `score` (and of `order`, with `has_order`) finite. The
    /// `Error::InvalidInput` names the first bad element.
    pub fn validate(&self, score: &[f32], lens: &[i32], order: Option<&[f32]>) -> Result<()> {
        self.check_len("score", score.len())?;
        self.check_len("lens", lens.len())?;
        if let Some(t) = order {
            self.check_len("order", t.len())?;
        }
        let p = &self.params;
        for b in 0..p.seqs {
            let l = usize::try_from(lens[b])
                .ok()
                .filter(|&l| l <= p.n)
                .ok_or_else(|| Error::InvalidInput(format!("lens[{b}] = {} is outside [0, n = {}]", lens[b], p.n)))?;
            for (name, v) in [("score", Some(score)), ("order", order.filter(|_| p.has_order))] {
                let Some(v) = v else { continue };
                if let Some(j) = (0..l).find(|&j| !v[b * p.n + j].is_finite()) {
                    return Err(Error::InvalidInput(format!("{name}[{b}][{j}] = {} is not finite", v[b * p.n + j])));
                }
            }
        }
        Ok(())
    }

    /// The oracle on host slices: `score [B, n]`, `lens [B]`, `order [B, n]` (with `has_order`)
    /// in; `idx [B, n]`, `count [B]` out; bad lengths and scores raise their bits in `status`.
    /// `Error::Shape` for a buffer too short, `Error::InvalidParams` for `order` missing or not
    /// wanted, or a status word of another backend.
    pub fn run_cpu(
        &self,
        score: &[f32],
        lens: &[i32],
        order: Option<&[f32]>,
        idx: &mut [i32],
        count: &mut [i32],
        status: &Status,
    ) -> Result<()> {
        let mut given = vec![("score", score.len()), ("lens", lens.len()), ("idx", idx.len())];
        given.extend([("count", count.len())].into_iter().chain(order.map(|o| ("order", o.len()))));
        self.check_lens(&given)?;
        let (p, mut bits) = (&self.params, 0);
        for b in 0..p.seqs {
            let row = b * p.n..(b + 1) * p.n;
            idx[row.clone()].fill(-1);
            count[b] = 0;
            let Some(l) = usize::try_from(lens[b]).ok().filter(|&l| l <= p.n) else {
                bits |= StatusBits::INDEX_OUT_OF_RANGE;
                continue;
            };
            let s = &score[b * p.n..b * p.n + l];
            let ord = order.filter(|_| p.has_order).map_or(s, |o| &o[b * p.n..b * p.n + l]);
            if s.iter().chain(ord).any(|v| !v.is_finite()) {
                bits |= StatusBits::VALUE_OUT_OF_RANGE;
                continue;
            }
            let kept = oracle::select(s, ord, self.keep());
            count[b] = kept.len() as i32;
            for (i, j) in kept.into_iter().enumerate() {
                idx[b * p.n + i] = j as i32;
            }
        }
        if bits != 0 {
            status.raise(bits)?;
        }
        Ok(())
    }
}

impl Plan for Select {
    type Params = SelectParams;
    const NAME: &'static str = "select";
    fn build(p: SelectParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &SelectParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        let mut v =
            vec![TensorSpec::input("score", DType::F32, p.seqs * p.n), TensorSpec::input("lens", DType::I32, p.seqs)];
        if p.has_order {
            v.push(TensorSpec::input("order", DType::F32, p.seqs * p.n));
        }
        v.push(TensorSpec::output("idx", DType::I32, p.seqs * p.n));
        v.push(TensorSpec::output("count", DType::I32, p.seqs));
        v
    }
}

// ---------------------------------------------------------------------------------------------

/// The kept tokens' layout after a selection: sequence b keeps its tokens before the visual
/// segment `seg[b] = (start, len)`, the segment's candidates `idx[b][..count[b]]` (ascending,
/// as [`Select`] writes them), and its tokens after the segment. `rows [T]`: each kept token's
/// row in the original packing, `pos [T]`: its original position in its sequence (for RoPE and
/// causality), both `-1` past the last; `cu_out [B + 1]`. Gather hidden states, K and V with
/// `core.gather_rows` by `rows`. A segment that does not fit its sequence, or a selection that is
/// not ascending within the segment, keeps no visual token of that sequence and raises
/// `INDEX_OUT_OF_RANGE`; bad `cu_seqlens` keep nothing at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactParams {
    /// B: sequences in the packing (`cu_seqlens [B + 1]`, `seg [B, 2]`, `count [B]`).
    pub seqs: usize,
    /// T: tokens in the packing, where `cu_seqlens` ends; also the length of `rows` and `pos`.
    pub tokens: usize,
    /// Candidates per sequence in `idx` (the selection's `n`).
    pub n: usize,
}

/// A validated `compact` plan, built once by [`Compact::new`]; `run_cpu`, `run_cuda`
/// or `run_wgpu` runs it on buffers of the sizes [`Plan::tensors`] lists.
#[derive(Debug, Clone)]
pub struct Compact {
    /// The parameters the plan was built from.
    pub params: CompactParams,
}

impl Compact {
    /// Validates the params: `seqs`, `tokens` and `n` >= 1 and `idx` within 32-bit indexing
    /// (else `Error::InvalidParams`).
    pub fn new(p: CompactParams) -> Result<Self> {
        dim("compact seqs", p.seqs)?;
        dim("compact tokens", p.tokens)?;
        dim("compact n", p.n)?;
        elements("compact idx", &[p.seqs, p.n])?;
        Ok(Self { params: p })
    }

    /// Checks on the host what the kernel would flag: `cu_seqlens` from 0 to `tokens` without
    /// decreasing, every segment inside its sequence and at most `n` long, and every
    /// `idx[b][..count[b]]` ascending within the segment. `Error::InvalidInput` names the first
    /// bad one.
    pub fn validate(&self, cu: &[i32], seg: &[i32], idx: &[i32], count: &[i32]) -> Result<()> {
        self.check_len("cu_seqlens", cu.len())?;
        self.check_len("seg", seg.len())?;
        self.check_len("idx", idx.len())?;
        self.check_len("count", count.len())?;
        let p = &self.params;
        let cu = check_offsets(cu, p.seqs, p.tokens)?;
        for b in 0..p.seqs {
            let (_, n) = segment(&cu, seg, b, p.n).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "seg[{b}] = ({}, {}) does not fit sequence {b}",
                    seg[2 * b],
                    seg[2 * b + 1]
                ))
            })?;
            if self.kept(idx, count, b, n).is_none() {
                return Err(Error::InvalidInput(format!(
                    "count[{b}] = {} or idx[{b}] is not an ascending selection of [0, {n})",
                    count[b]
                )));
            }
        }
        Ok(())
    }

    /// Sequence b's kept candidates, or `None` when they are not an ascending selection.
    fn kept<'a>(&self, idx: &'a [i32], count: &[i32], b: usize, n: usize) -> Option<&'a [i32]> {
        let c = usize::try_from(count[b]).ok().filter(|&c| c <= n)?;
        let s = &idx[b * self.params.n..b * self.params.n + c];
        let ok = s.iter().all(|&j| j >= 0 && (j as usize) < n) && s.windows(2).all(|w| w[0] < w[1]);
        ok.then_some(s)
    }

    /// The oracle on host slices: `cu_seqlens [B + 1]`, `seg [B, 2]`, `idx [B, n]`, `count [B]`
    /// (i32) in; `rows [T]`, `pos [T]`, `cu_out [B + 1]` (i32) out; bad contents raise
    /// `INDEX_OUT_OF_RANGE` in `status`. `Error::Shape` for a buffer too short,
    /// `Error::InvalidParams` for a status word of another backend.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu(
        &self,
        cu_seqlens: &[i32],
        seg: &[i32],
        idx: &[i32],
        count: &[i32],
        rows: &mut [i32],
        pos: &mut [i32],
        cu_out: &mut [i32],
        status: &Status,
    ) -> Result<()> {
        let given = [("cu_seqlens", cu_seqlens.len()), ("seg", seg.len()), ("idx", idx.len()), ("count", count.len())];
        self.check_lens(&[&given[..], &[("rows", rows.len()), ("pos", pos.len()), ("cu_out", cu_out.len())]].concat())?;
        let p = &self.params;
        rows[..p.tokens].fill(-1);
        pos[..p.tokens].fill(-1);
        cu_out[..=p.seqs].fill(0);
        let Some(cu) = offsets(cu_seqlens, p.seqs, p.tokens) else {
            return status.raise(StatusBits::INDEX_OUT_OF_RANGE);
        };
        let (mut out, mut bits) = (0usize, 0);
        for b in 0..p.seqs {
            cu_out[b] = out as i32;
            let (start, kept): (usize, Vec<usize>) = match segment(&cu, seg, b, p.n) {
                Some((s, n)) => match self.kept(idx, count, b, n) {
                    Some(k) => (s, k.iter().map(|&j| s + j as usize).chain(s + n..cu[b + 1]).collect()),
                    None => {
                        bits |= StatusBits::INDEX_OUT_OF_RANGE;
                        (s, (s + n..cu[b + 1]).collect())
                    }
                },
                None => {
                    bits |= StatusBits::INDEX_OUT_OF_RANGE;
                    (cu[b + 1], vec![])
                }
            };
            for r in (cu[b]..start).chain(kept) {
                rows[out] = r as i32;
                pos[out] = (r - cu[b]) as i32;
                out += 1;
            }
        }
        cu_out[p.seqs] = out as i32;
        if bits != 0 {
            status.raise(bits)?;
        }
        Ok(())
    }
}

impl Plan for Compact {
    type Params = CompactParams;
    const NAME: &'static str = "compact";
    fn build(p: CompactParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &CompactParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        vec![
            TensorSpec::input("cu_seqlens", DType::I32, p.seqs + 1),
            TensorSpec::input("seg", DType::I32, 2 * p.seqs),
            TensorSpec::input("idx", DType::I32, p.seqs * p.n),
            TensorSpec::input("count", DType::I32, p.seqs),
            TensorSpec::output("rows", DType::I32, p.tokens),
            TensorSpec::output("pos", DType::I32, p.tokens),
            TensorSpec::output("cu_out", DType::I32, p.seqs + 1),
        ]
    }
}

// ---------------------------------------------------------------------------------------------

/// The attention mass each visual key receives: for sequence b and candidate j of its segment,
/// `mass[b][h][j] = sum_r w_r softmax_r(scale q_r . K)[seg_start + j]` over the chosen query
/// rows r of that sequence (`q [R, H, D]` at token rows `qpos [R]`, weights `qw [R]`), each
/// row's softmax over every key it sees (causal: keys up to its own row), GQA (`k [T, Hkv, D]`).
/// `reduce_heads` sums over heads (`mass [B, 1, n]`), else `[B, H, n]`; entries past the
/// segment are 0. With `has_lse` the caller's natural-log LSE per (row, head) (`lse [R, H]`,
/// from its own attention) saves the first pass. A row outside the tokens is ignored and a
/// segment that does not fit its sequence scores 0; both raise `INDEX_OUT_OF_RANGE`. Each
/// output is owned by one thread that loops over rows and heads: no atomics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttnMassParams {
    /// B: sequences (`cu_seqlens [B + 1]`, `seg [B, 2]`).
    pub seqs: usize,
    /// T: key rows of `k` over all sequences, where `cu_seqlens` ends.
    pub tokens: usize,
    /// R: chosen query rows (of `q`, `qpos`, `qw` and `lse`).
    pub rows: usize,
    /// H: query heads, a multiple of `kv_heads`.
    pub heads: usize,
    /// Hkv: key heads (GQA groups).
    pub kv_heads: usize,
    /// D: head size, 1 to [`MAX_DIM`].
    pub dim: usize,
    /// Columns of `mass` per sequence and head: no segment may be longer.
    pub n: usize,
    /// Softmax scale of `q . k`; finite.
    pub scale: f32,
    /// Storage dtype of `q` and `k`: f32, f16 or bf16 (`qw`, `lse`, `mass` and `ws` are f32).
    pub dtype: DType,
    /// Sum over heads into `mass [B, 1, n]` (default `true`); else `mass [B, H, n]`.
    #[serde(default = "default_true")]
    pub reduce_heads: bool,
    /// Take the caller's `lse [R, H]` instead of computing it (default `false`).
    #[serde(default)]
    pub has_lse: bool,
}

/// A validated `attn_mass` plan, built once by [`AttnMass::new`]; `run_cpu`, `run_cuda`
/// or `run_wgpu` runs it on buffers of the sizes [`Plan::tensors`] lists.
#[derive(Debug, Clone)]
pub struct AttnMass {
    /// The parameters the plan was built from.
    pub params: AttnMassParams,
}

impl AttnMass {
    /// Validates the params: a float `dtype` (else `Error::DType`); sizes >= 1; `heads` a multiple
    /// of `kv_heads`; `dim` in `[1, MAX_DIM]`; a finite `scale`; sizes within 32-bit
    /// indexing (else `Error::InvalidParams`).
    pub fn new(p: AttnMassParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        for (w, v) in [("seqs", p.seqs), ("tokens", p.tokens), ("rows", p.rows), ("n", p.n)] {
            dim(&format!("attn_mass {w}"), v)?;
        }
        heads_ok(p.heads, p.kv_heads, p.dim)?;
        if !p.scale.is_finite() {
            return Err(invalid(format!("attn_mass scale must be finite, got {}", p.scale)));
        }
        elements("attn_mass k", &[p.tokens, p.kv_heads, p.dim])?;
        elements("attn_mass q", &[p.rows, p.heads, p.dim])?;
        elements("attn_mass mass", &[p.seqs, p.heads, p.n])?;
        Ok(Self { params: p })
    }
    fn out_heads(&self) -> usize {
        if self.params.reduce_heads {
            1
        } else {
            self.params.heads
        }
    }

    /// Checks on the host what the kernel would flag: `cu_seqlens` from 0 to `tokens` without
    /// decreasing, every `qpos` in `[0, tokens)`, every segment inside its sequence and at most
    /// `n` long. `Error::InvalidInput` names the first bad one.
    pub fn validate(&self, qpos: &[i32], cu: &[i32], seg: &[i32]) -> Result<()> {
        self.check_len("qpos", qpos.len())?;
        self.check_len("cu_seqlens", cu.len())?;
        self.check_len("seg", seg.len())?;
        let p = &self.params;
        let cu = check_offsets(cu, p.seqs, p.tokens)?;
        if let Some(r) = (0..p.rows).find(|&r| qpos[r] < 0 || qpos[r] as usize >= p.tokens) {
            return Err(Error::InvalidInput(format!("qpos[{r}] = {} is outside [0, {})", qpos[r], p.tokens)));
        }
        if let Some(b) = (0..p.seqs).find(|&b| segment(&cu, seg, b, p.n).is_none()) {
            return Err(Error::InvalidInput(format!(
                "seg[{b}] = ({}, {}) does not fit its sequence",
                seg[2 * b],
                seg[2 * b + 1]
            )));
        }
        Ok(())
    }

    /// The oracle on host slices: `q [R, H, D]`, `qpos [R]`, `qw [R]` (f32), `k [T, Hkv, D]`,
    /// `cu_seqlens [B + 1]`, `seg [B, 2]`, `lse [R, H]` (with `has_lse`) in; `mass` out; `ws`
    /// (f32 `[R, H]`, unused here) is checked so one call shape serves every backend.
    /// `Error::DType` for buffers of another dtype, `Error::Shape` for one too short,
    /// `Error::InvalidParams` for an optional one missing or not wanted, or a status word of
    /// another backend.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        q: &[T],
        qpos: &[i32],
        qw: &[f32],
        k: &[T],
        cu_seqlens: &[i32],
        seg: &[i32],
        lse: Option<&[f32]>,
        mass: &mut [f32],
        ws: &mut [f32],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let mut given = vec![("q", q.len()), ("qpos", qpos.len()), ("qw", qw.len()), ("k", k.len())];
        given.extend([("cu_seqlens", cu_seqlens.len()), ("seg", seg.len()), ("mass", mass.len()), ("ws", ws.len())]);
        given.extend(lse.map(|l| ("lse", l.len())));
        self.check_lens(&given)?;
        let p = &self.params;
        mass[..p.seqs * self.out_heads() * p.n].fill(0.0);
        let Some(cu) = offsets(cu_seqlens, p.seqs, p.tokens) else {
            return status.raise(StatusBits::INDEX_OUT_OF_RANGE);
        };
        let (qf, kf) = (to_f64(q), to_f64(k));
        let (hd, g) = (p.dim, p.heads / p.kv_heads);
        let key = |t: usize, h: usize| &kf[(t * p.kv_heads + h / g) * hd..(t * p.kv_heads + h / g + 1) * hd];
        let score = |r: usize, h: usize, t: usize| {
            f64::from(p.scale)
                * qf[(r * p.heads + h) * hd..(r * p.heads + h + 1) * hd]
                    .iter()
                    .zip(key(t, h))
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
        };
        let (mut bits, mut acc) = (0, vec![0.0f64; mass.len()]);
        if (0..p.seqs).any(|b| segment(&cu, seg, b, p.n).is_none()) {
            bits |= StatusBits::INDEX_OUT_OF_RANGE;
        }
        for r in 0..p.rows {
            let Some(t) = usize::try_from(qpos[r]).ok().filter(|&t| t < p.tokens) else {
                bits |= StatusBits::INDEX_OUT_OF_RANGE;
                continue;
            };
            let b = (0..p.seqs).find(|&b| t < cu[b + 1]).unwrap_or(0);
            let Some((s0, n)) = segment(&cu, seg, b, p.n) else {
                bits |= StatusBits::INDEX_OUT_OF_RANGE;
                continue;
            };
            for h in 0..p.heads {
                let l = match lse {
                    Some(l) => f64::from(l[r * p.heads + h]),
                    None => {
                        let s: Vec<f64> = (cu[b]..=t).map(|j| score(r, h, j)).collect();
                        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        m + s.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
                    }
                };
                let oh = if p.reduce_heads { 0 } else { h };
                for j in 0..n.min((t + 1).saturating_sub(s0)) {
                    acc[(b * self.out_heads() + oh) * p.n + j] += f64::from(qw[r]) * (score(r, h, s0 + j) - l).exp();
                }
            }
        }
        mass.iter_mut().zip(acc).for_each(|(m, a)| *m = a as f32);
        if bits != 0 {
            status.raise(bits)?;
        }
        Ok(())
    }
}

impl Plan for AttnMass {
    type Params = AttnMassParams;
    const NAME: &'static str = "attn_mass";
    fn build(p: AttnMassParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &AttnMassParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let (p, dt) = (&self.params, self.params.dtype);
        let mut v = vec![
            TensorSpec::input("q", dt, p.rows * p.heads * p.dim),
            TensorSpec::input("qpos", DType::I32, p.rows),
            TensorSpec::input("qw", DType::F32, p.rows),
            TensorSpec::input("k", dt, p.tokens * p.kv_heads * p.dim),
            TensorSpec::input("cu_seqlens", DType::I32, p.seqs + 1),
            TensorSpec::input("seg", DType::I32, 2 * p.seqs),
        ];
        if p.has_lse {
            v.push(TensorSpec::input("lse", DType::F32, p.rows * p.heads));
        }
        v.push(TensorSpec::output("mass", DType::F32, p.seqs * self.out_heads() * p.n));
        v.push(TensorSpec::scratch("ws", DType::F32, p.rows * p.heads));
        v
    }
}

// ---------------------------------------------------------------------------------------------

/// Prefill attention over the kept tokens (as [`Compact`] lays them out, with K and V gathered):
/// query i of sequence b sees key j of b iff `pos[j] <= pos[i]` (causal by original position),
/// GQA (`q [T, H, D]`, `k`, `v [T, Hkv, D]`), `o [T, H, D]` and the natural-log `lse [T, H]`
/// (f32; a row that sees nothing gets `o = 0`, `lse = -inf`). Every token kept: dense causal
/// attention. Bad `cu_seqlens` write nothing and raise `INDEX_OUT_OF_RANGE`.
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
    /// D: head size, 1 to [`MAX_DIM`].
    pub dim: usize,
    /// Softmax scale of `q . k`; finite.
    pub scale: f32,
    /// Storage dtype of `q`, `k`, `v` and `o`: f32, f16 or bf16 (`lse` is f32).
    pub dtype: DType,
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
        Ok(Self { params: p })
    }

    /// Checks `cu_seqlens` on the host: from 0 to `tokens` without decreasing; the
    /// `Error::InvalidInput` names the first bad entry.
    pub fn validate(&self, cu: &[i32]) -> Result<()> {
        self.check_len("cu_seqlens", cu.len())?;
        check_offsets(cu, self.params.seqs, self.params.tokens).map(|_| ())
    }

    /// The oracle on host slices: `q [T, H, D]`, `k`, `v [T, Hkv, D]`, `cu_seqlens [B + 1]`,
    /// `pos [T]` (i32) in; `o [T, H, D]`, `lse [T, H]` (f32) out.
    /// `Error::DType` for buffers of another dtype, `Error::Shape` for one too short,
    /// `Error::InvalidParams` for a status word of another backend.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        q: &[T],
        k: &[T],
        v: &[T],
        cu_seqlens: &[i32],
        pos: &[i32],
        o: &mut [T],
        lse: &mut [f32],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let given = [("q", q.len()), ("k", k.len()), ("v", v.len()), ("cu_seqlens", cu_seqlens.len())];
        self.check_lens(&[&given[..], &[("pos", pos.len()), ("o", o.len()), ("lse", lse.len())]].concat())?;
        let p = &self.params;
        let Some(cu) = offsets(cu_seqlens, p.seqs, p.tokens) else {
            return status.raise(StatusBits::INDEX_OUT_OF_RANGE);
        };
        let (qf, kf, vf) = (to_f64(q), to_f64(k), to_f64(v));
        let (hd, g, kvh) = (p.dim, p.heads / p.kv_heads, p.kv_heads);
        for b in 0..p.seqs {
            for i in cu[b]..cu[b + 1] {
                let keys: Vec<usize> = (cu[b]..cu[b + 1]).filter(|&j| pos[j] <= pos[i]).collect();
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
        let (p, dt) = (&self.params, self.params.dtype);
        vec![
            TensorSpec::input("q", dt, p.tokens * p.heads * p.dim),
            TensorSpec::input("k", dt, p.tokens * p.kv_heads * p.dim),
            TensorSpec::input("v", dt, p.tokens * p.kv_heads * p.dim),
            TensorSpec::input("cu_seqlens", DType::I32, p.seqs + 1),
            TensorSpec::input("pos", DType::I32, p.tokens),
            TensorSpec::output("o", dt, p.tokens * p.heads * p.dim),
            TensorSpec::output("lse", DType::F32, p.tokens * p.heads),
        ]
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
    /// D: head size, 1 to [`MAX_DIM`].
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

// ---------------------------------------------------------------------------------------------

/// Token merging (AIM, SparseVLM's recycling, LOOK-M): each dropped candidate of sequence b's
/// segment goes to the kept candidate of highest cosine similarity of hidden states `x [T, D]`
/// (ties to the lower kept slot; a zero vector has similarity 0), and a kept token becomes the
/// mean of itself and the tokens merged into it. `assign [B, n] i32`: each candidate's kept slot
/// (`-1` past the segment, or when nothing is kept); `merged [B, n, D]`: slot e's mean for
/// `e < count[b]`, then zeros. Two passes, each output with one owner (the mean sums in index
/// order), so it is exact whatever the order of work. A bad segment or selection merges nothing
/// in its sequence (assign -1, merged 0) and raises `INDEX_OUT_OF_RANGE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeParams {
    /// B: sequences (`cu_seqlens [B + 1]`, `seg [B, 2]`, `count [B]`).
    pub seqs: usize,
    /// T: rows of `x` over all sequences, where `cu_seqlens` ends.
    pub tokens: usize,
    /// Candidates per sequence (the selection's `n`): rows of `idx` and `assign`, slots of
    /// `merged`; no segment may be longer.
    pub n: usize,
    /// D: hidden size, the row length of `x` and `merged`.
    pub dim: usize,
    /// Storage dtype of `x` and `merged`: f32, f16 or bf16.
    pub dtype: DType,
}

/// A validated `merge` plan, built once by [`Merge::new`]; `run_cpu`, `run_cuda`
/// or `run_wgpu` runs it on buffers of the sizes [`Plan::tensors`] lists.
#[derive(Debug, Clone)]
pub struct Merge {
    /// The parameters the plan was built from.
    pub params: MergeParams,
}

impl Merge {
    /// Validates the params: a float `dtype` (else `Error::DType`); sizes >= 1; `x` and `merged`
    /// within 32-bit indexing (else `Error::InvalidParams`).
    pub fn new(p: MergeParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        for (w, v) in [("seqs", p.seqs), ("tokens", p.tokens), ("n", p.n), ("dim", p.dim)] {
            dim(&format!("merge {w}"), v)?;
        }
        elements("merge x", &[p.tokens, p.dim])?;
        elements("merge merged", &[p.seqs, p.n, p.dim])?;
        Ok(Self { params: p })
    }

    /// Checks on the host what the kernel would flag, as [`Compact::validate`] does for the same
    /// `cu_seqlens`, `seg`, `idx` and `count`.
    pub fn validate(&self, cu: &[i32], seg: &[i32], idx: &[i32], count: &[i32]) -> Result<()> {
        self.check_len("cu_seqlens", cu.len())?;
        self.check_len("seg", seg.len())?;
        self.check_len("idx", idx.len())?;
        self.check_len("count", count.len())?;
        let p = &self.params;
        Compact::new(CompactParams { seqs: p.seqs, tokens: p.tokens, n: p.n })?.validate(cu, seg, idx, count)
    }

    /// Cosine similarity of two rows (0 when either is zero), in f64.
    pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
        let (ab, aa, bb) = a.iter().zip(b).fold((0.0, 0.0, 0.0), |(x, y, z), (u, v)| (x + u * v, y + u * u, z + v * v));
        if aa == 0.0 || bb == 0.0 {
            0.0
        } else {
            ab / (aa * bb).sqrt()
        }
    }

    /// The merge of sequence b given an assignment: slot e's mean of its members, in index order.
    pub fn means(x: &[f64], d: usize, rows: &[usize], kept: &[usize], assign: &[i32]) -> Vec<f64> {
        let mut out = vec![0.0; kept.len() * d];
        for e in 0..kept.len() {
            let members: Vec<usize> = (0..rows.len()).filter(|&j| assign[j] == e as i32).collect();
            for &j in &members {
                for c in 0..d {
                    out[e * d + c] += x[rows[j] * d + c] / members.len() as f64;
                }
            }
        }
        out
    }

    /// The oracle on host slices: `x [T, D]`, `cu_seqlens [B + 1]`, `seg [B, 2]`, `idx [B, n]`,
    /// `count [B]` (i32) in; `assign [B, n]` (i32) and `merged [B, n, D]` out.
    /// `Error::DType` for buffers of another dtype, `Error::Shape` for one too short,
    /// `Error::InvalidParams` for a status word of another backend.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        x: &[T],
        cu_seqlens: &[i32],
        seg: &[i32],
        idx: &[i32],
        count: &[i32],
        assign: &mut [i32],
        merged: &mut [T],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let given = [("x", x.len()), ("cu_seqlens", cu_seqlens.len()), ("seg", seg.len()), ("idx", idx.len())];
        let more = [("count", count.len()), ("assign", assign.len()), ("merged", merged.len())];
        self.check_lens(&[&given[..], &more[..]].concat())?;
        let p = &self.params;
        assign[..p.seqs * p.n].fill(-1);
        merged[..p.seqs * p.n * p.dim].fill(T::from_f32(0.0));
        let Some(cu) = offsets(cu_seqlens, p.seqs, p.tokens) else {
            return status.raise(StatusBits::INDEX_OUT_OF_RANGE);
        };
        let compact = Compact::new(CompactParams { seqs: p.seqs, tokens: p.tokens, n: p.n })?;
        let (xf, d) = (to_f64(x), p.dim);
        let mut bits = 0;
        for b in 0..p.seqs {
            let Some((s, n)) = segment(&cu, seg, b, p.n) else {
                bits |= StatusBits::INDEX_OUT_OF_RANGE;
                continue;
            };
            let Some(kept) = compact.kept(idx, count, b, n) else {
                bits |= StatusBits::INDEX_OUT_OF_RANGE;
                continue;
            };
            let kept: Vec<usize> = kept.iter().map(|&j| j as usize).collect();
            if kept.is_empty() {
                continue;
            }
            let rows: Vec<usize> = (s..s + n).collect();
            let row = |j: usize| &xf[rows[j] * d..(rows[j] + 1) * d];
            let a = &mut assign[b * p.n..b * p.n + n];
            for (j, slot) in a.iter_mut().enumerate() {
                *slot = match kept.binary_search(&j) {
                    Ok(e) => e as i32,
                    Err(_) => {
                        let sims: Vec<f64> = kept.iter().map(|&e| Self::cosine(row(j), row(e))).collect();
                        let best = sims.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        sims.iter().position(|&v| v == best).unwrap_or(0) as i32
                    }
                };
            }
            let m = Self::means(&xf, d, &rows, &kept, a);
            for (o, v) in merged[b * p.n * d..].iter_mut().zip(m) {
                *o = T::from_f32(v as f32);
            }
        }
        if bits != 0 {
            status.raise(bits)?;
        }
        Ok(())
    }
}

impl Plan for Merge {
    type Params = MergeParams;
    const NAME: &'static str = "merge";
    fn build(p: MergeParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &MergeParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let (p, dt) = (&self.params, self.params.dtype);
        vec![
            TensorSpec::input("x", dt, p.tokens * p.dim),
            TensorSpec::input("cu_seqlens", DType::I32, p.seqs + 1),
            TensorSpec::input("seg", DType::I32, 2 * p.seqs),
            TensorSpec::input("idx", DType::I32, p.seqs * p.n),
            TensorSpec::input("count", DType::I32, p.seqs),
            TensorSpec::output("assign", DType::I32, p.seqs * p.n),
            TensorSpec::output("merged", dt, p.seqs * p.n * p.dim),
        ]
    }
}
