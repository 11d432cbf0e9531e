//! `select`: which candidates each sequence keeps (top-k, cumulative mass, above the mean).

use serde::{Deserialize, Serialize};

use crate::backend::{Status, StatusBits};
use crate::dtype::DType;
use crate::error::{invalid, Error, Result};
use crate::layout::{dim, elements};
use crate::plan::{Plan, TensorSpec};

use super::oracle;

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
/// the kept indices ascending then `-1`, `count [B]` (top-k may take a count per sequence,
/// `keep [B]`). Sums run in f32 in index order, so every backend keeps the same set. A `+inf`
/// score is always kept (LOOK-M's forced tokens; see [`super::oracle::select`]). A length outside
/// `[0, n]`, or a NaN or `-inf` score (or a non-finite `order`), keeps nothing and raises
/// `INDEX_OUT_OF_RANGE` / `VALUE_OUT_OF_RANGE`.
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
    /// Top-k with one count per sequence instead of `k`: input `keep [B] i32`, sequence b keeps
    /// `min(keep[b], lens[b])` (FastV's k is per image, `round_half_even(N (1 - r))`, see
    /// [`super::oracle::keep_count`]); a negative count keeps nothing and raises
    /// `INDEX_OUT_OF_RANGE`. Default false.
    #[serde(default)]
    pub per_seq_k: bool,
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
        if p.per_seq_k && p.mode != SelectMode::TopK {
            return Err(invalid("select per_seq_k goes with mode top_k"));
        }
        Ok(Self { params: p })
    }
    /// Sequence b's rule; `Err` with the status bit for a negative per-sequence count.
    fn keep(&self, keep: Option<&[i32]>, b: usize) -> std::result::Result<oracle::Keep, u32> {
        match self.params.mode {
            SelectMode::TopK => match keep.filter(|_| self.params.per_seq_k) {
                Some(kv) => usize::try_from(kv[b]).map(oracle::Keep::TopK).map_err(|_| StatusBits::INDEX_OUT_OF_RANGE),
                None => Ok(oracle::Keep::TopK(self.params.k)),
            },
            SelectMode::Mass => Ok(oracle::Keep::Mass(self.params.tau)),
            SelectMode::AboveMean => Ok(oracle::Keep::AboveMean),
        }
    }

    /// Checks on the host what the kernel would flag: every `lens[b]` in `[0, n]`, every
    /// `keep[b]` (with `per_seq_k`) at least 0, and the first `lens[b]` entries of `score` (and of
    /// `order`, with `has_order`) finite. The `Error::InvalidInput` names the first bad element.
    pub fn validate(&self, score: &[f32], lens: &[i32], order: Option<&[f32]>, keep: Option<&[i32]>) -> Result<()> {
        self.check_len("score", score.len())?;
        self.check_len("lens", lens.len())?;
        if let Some(t) = order {
            self.check_len("order", t.len())?;
        }
        let p = &self.params;
        if let Some(kv) = keep.filter(|_| p.per_seq_k) {
            self.check_len("keep", kv.len())?;
            if let Some(b) = (0..p.seqs).find(|&b| kv[b] < 0) {
                return Err(Error::InvalidInput(format!("keep[{b}] = {} is negative", kv[b])));
            }
        }
        for b in 0..p.seqs {
            let l = usize::try_from(lens[b])
                .ok()
                .filter(|&l| l <= p.n)
                .ok_or_else(|| Error::InvalidInput(format!("lens[{b}] = {} is outside [0, n = {}]", lens[b], p.n)))?;
            for (name, v) in [("score", Some(score)), ("order", order.filter(|_| p.has_order))] {
                let Some(v) = v else { continue };
                // A +inf score means "always keep"; nothing else non-finite is.
                let ok = |x: f32| x.is_finite() || (name == "score" && x == f32::INFINITY);
                if let Some(j) = (0..l).find(|&j| !ok(v[b * p.n + j])) {
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
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu(
        &self,
        score: &[f32],
        lens: &[i32],
        order: Option<&[f32]>,
        keep: Option<&[i32]>,
        idx: &mut [i32],
        count: &mut [i32],
        status: &Status,
    ) -> Result<()> {
        let mut given = vec![("score", score.len()), ("lens", lens.len()), ("idx", idx.len())];
        given.extend([("count", count.len())].into_iter().chain(order.map(|o| ("order", o.len()))));
        given.extend(keep.map(|k| ("keep", k.len())));
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
            // A negative count is as bad as a bad length (checked before the scores, as the
            // kernels do).
            let rule = match self.keep(keep, b) {
                Ok(r) => r,
                Err(bit) => {
                    bits |= bit;
                    continue;
                }
            };
            let s = &score[b * p.n..b * p.n + l];
            let ord = order.filter(|_| p.has_order).map_or(s, |o| &o[b * p.n..b * p.n + l]);
            // +inf scores are forced; NaN, -inf and a non-finite order are bad.
            let bad_score = s.iter().any(|v| !v.is_finite() && *v != f32::INFINITY);
            if bad_score || (p.has_order && ord.iter().any(|v| !v.is_finite())) {
                bits |= StatusBits::VALUE_OUT_OF_RANGE;
                continue;
            }
            let kept = oracle::select(s, ord, rule);
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
        if p.per_seq_k {
            v.push(TensorSpec::input("keep", DType::I32, p.seqs));
        }
        v.push(TensorSpec::output("idx", DType::I32, p.seqs * p.n));
        v.push(TensorSpec::output("count", DType::I32, p.seqs));
        v
    }
}
