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
