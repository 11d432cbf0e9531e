//! Decode: one token per sequence through its routed memories and the shared one, fused.

use serde::{Deserialize, Serialize};

use super::{check_slot_ids, conv_channel, default_conv, default_true, load_state, oracle, store_state, Dims, Rule};
use crate::backend::{Status, StatusBits};
use crate::dtype::{float_dtype, same_dtype, DType, Float};
use crate::error::{invalid, Error, Result};
use crate::layout::{dim, elements, pool_fits, slot_of};
use crate::plan::{Plan, TensorSpec};

/// One decode step for `batch` sequences, one launch: for sequence `b`, each of its routed
/// memories `idx [B, k]` and the shared memory (in that order) takes the projection row
/// `x [B, P]` through the conv step (state `conv_state [M' * slots, C, W]`, f32), normalizes q
/// and k, updates its state in `state [M' * slots, H, K, V]` at entry `m * slots +
/// slot_ids[b]` in place, and reads `o_m = S^T q`; `o [B, H V] = sum_j weights[b, j] o_j +
/// o_shared`. The conv outputs stay in f32 (the prefill path stores them in the input dtype).
/// A slot outside the pool or named twice skips the sequence (`o` row 0, states untouched,
/// `SLOT_OUT_OF_RANGE` / `SLOT_REPEATED`); a choice outside `[0, M)` or repeating an earlier
/// one is skipped and raises `INDEX_OUT_OF_RANGE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatedDeltaStepParams {
    /// Sequences `B` decoding one token each (rows of `x`, `idx`, `o`), at least 1.
    pub batch: usize,
    /// Routed memories `M`, in `[1, 64]`.
    pub memories: usize,
    /// Choices per sequence `k` (columns of `idx` and `weights`), in `[1, M]`.
    pub topk: usize,
    /// Whether the shared memory (number `M`, added unweighted) runs too; default true.
    #[serde(default = "default_true")]
    pub shared: bool,
    /// Heads `H`, at least 1.
    pub heads: usize,
    /// Key head size `K`: a multiple of 8 up to `MAX_HEAD`.
    pub head_k: usize,
    /// Value head size `V`: a multiple of 8 up to `MAX_HEAD`.
    pub head_v: usize,
    /// Convolution width `W`, in `[1, MAX_CONV]`; default 4.
    #[serde(default = "default_conv")]
    pub conv: usize,
    /// Slots per memory; both pools hold `M' * slots` entries. At least 1.
    pub slots: usize,
    /// Storage dtype of `x`, `conv_w` and `o` (f32, f16 or bf16); states and gates are f32.
    pub dtype: DType,
    /// The recurrence; default [`Rule::Delta`].
    #[serde(default)]
    pub rule: Rule,
    /// State entries are `[V, K]` (fla's layout) rather than `[K, V]`; default false.
    #[serde(default)]
    pub v_first: bool,
    /// Query scale; `None` (the default) means `1/sqrt(K)`. Must be finite.
    #[serde(default)]
    pub scale: Option<f32>,
}

/// The fused decode step of a MoM layer's memories (see [`GatedDeltaStepParams`]).
#[derive(Debug, Clone)]
pub struct GatedDeltaStep {
    /// The parameters, as checked by [`GatedDeltaStep::new`].
    pub params: GatedDeltaStepParams,
    /// The layer geometry the parameters describe.
    pub dims: Dims,
}

impl GatedDeltaStep {
    /// Checks the parameters (the geometry as [`Dims::new`], sizes at least 1 and within
    /// 32-bit indexing): `Error::DType` for a non-float dtype, else `Error::InvalidParams`.
    pub fn new(p: GatedDeltaStepParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        dim("step batch", p.batch)?;
        dim("step slots", p.slots)?;
        pool_fits("step", p.batch, "batch", p.slots)?;
        let d = Dims::new(p.memories, p.topk, p.shared, p.heads, p.head_k, p.head_v, p.conv)?;
        if let Some(s) = p.scale.filter(|s| !s.is_finite()) {
            return Err(invalid(format!("step scale must be finite, got {s}")));
        }
        elements("step x", &[p.batch, d.proj_width()])?;
        elements("step state", &[d.mems(), p.slots, p.heads, p.head_k, p.head_v])?;
        elements("step conv_state", &[d.mems(), p.slots, d.channels(), p.conv])?;
        Ok(Self { params: p, dims: d })
    }
    /// The query scale the kernels apply: `scale`, or `1/sqrt(K)` when it is `None`.
    pub fn scale(&self) -> f32 {
        self.params.scale.unwrap_or(1.0 / (self.params.head_k as f32).sqrt())
    }

    /// Host-side check of what the kernel would skip with a status bit: slot ids in
    /// `[0, slots)` and distinct, each choice in `idx` within `[0, M)` and not repeated.
    /// `Error::InvalidInput` names the first bad choice or slot.
    pub fn validate(&self, idx: &[i32], slot_ids: &[i32]) -> Result<()> {
        self.check_len("idx", idx.len())?;
        self.check_len("slot_ids", slot_ids.len())?;
        let p = &self.params;
        check_slot_ids(slot_ids, p.batch, p.slots)?;
        for b in 0..p.batch {
            if let Some(j) = (0..p.topk).find(|&j| oracle::choice(idx, b, j, p.topk, p.memories).is_none()) {
                return Err(Error::InvalidInput(format!(
                    "idx[{b}][{j}] = {} is outside [0, {}) or repeats an earlier choice",
                    idx[b * p.topk + j],
                    p.memories
                )));
            }
        }
        Ok(())
    }

    /// The reference on host slices, in [`Plan::tensors`] order: `x [B, P]`, `conv_w [C, W]`,
    /// `gate_params [2H]` (f32), `idx [B, k]`, `weights [B, k]` (f32), `slot_ids [B]` in;
    /// `state` and `conv_state` (f32) updated in place; `o [B, H V]` out. `Error::DType` if the
    /// element type is not the plan's dtype, `Error::Shape` for a short buffer; bad contents
    /// raise status bits on the CPU `status`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        x: &[T],
        conv_w: &[T],
        gate_params: &[f32],
        idx: &[i32],
        weights: &[f32],
        slot_ids: &[i32],
        state: &mut [f32],
        conv_state: &mut [f32],
        o: &mut [T],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let lens = [("x", x.len()), ("conv_w", conv_w.len()), ("gate_params", gate_params.len()), ("idx", idx.len())];
        let more = [("weights", weights.len()), ("slot_ids", slot_ids.len()), ("state", state.len())];
        self.check_lens(&[&lens[..], &more[..], &[("conv_state", conv_state.len()), ("o", o.len())]].concat())?;
        let (p, d) = (&self.params, &self.dims);
        let (h_n, k_n, v_n, c_n, w_n) = (p.heads, p.head_k, p.head_v, d.channels(), p.conv);
        let (hk, pw, scale) = (d.hk(), d.proj_width(), f64::from(self.scale()));
        let mut bits = 0;
        for b in 0..p.batch {
            let orow = &mut o[b * d.hv()..(b + 1) * d.hv()];
            orow.fill(T::from_f32(0.0));
            let slot = match slot_of(&slot_ids[..p.batch], b, p.slots) {
                Ok(s) => s,
                Err(bit) => {
                    bits |= bit;
                    continue;
                }
            };
            let xv = |col: usize| f64::from(x[b * pw + col].to_f32());
            let mut acc = vec![0.0f64; d.hv()];
            for j in 0..p.topk + usize::from(p.shared) {
                let (m, wt) = if j < p.topk {
                    match oracle::choice(idx, b, j, p.topk, p.memories) {
                        Some(m) => (m, f64::from(weights[b * p.topk + j])),
                        None => {
                            bits |= StatusBits::INDEX_OUT_OF_RANGE;
                            continue;
                        }
                    }
                } else {
                    (p.memories, 1.0)
                };
                let e = m * p.slots + slot;
                let y: Vec<f64> = (0..c_n)
                    .map(|c| {
                        let st = &mut conv_state[(e * c_n + c) * w_n..(e * c_n + c + 1) * w_n];
                        conv_channel(st, &conv_w[c * w_n..(c + 1) * w_n], xv(d.col(m, c)))
                    })
                    .collect();
                for h in 0..h_n {
                    let q: Vec<f64> = oracle::l2norm(&y[h * k_n..(h + 1) * k_n]).iter().map(|v| v * scale).collect();
                    let k = oracle::l2norm(&y[hk + h * k_n..hk + (h + 1) * k_n]);
                    let v = &y[2 * hk + h * v_n..2 * hk + (h + 1) * v_n];
                    let (a_log, dt) = (f64::from(gate_params[h]), f64::from(gate_params[h_n + h]));
                    let g = oracle::decay(xv(d.gate_col(m, h, false)), a_log, dt);
                    let beta = oracle::sigmoid(xv(d.gate_col(m, h, true)));
                    let base = (e * h_n + h) * k_n * v_n;
                    let ent = &mut state[base..base + k_n * v_n];
                    let mut st = load_state(ent, k_n, v_n, p.v_first);
                    let out = oracle::recur(&mut st, &q, &k, v, g, beta, p.rule.oracle());
                    store_state(ent, &st, k_n, v_n, p.v_first);
                    for (c, val) in out.iter().enumerate() {
                        acc[h * v_n + c] += wt * val;
                    }
                }
            }
            for (dst, v) in orow.iter_mut().zip(acc) {
                *dst = T::from_f32(v as f32);
            }
        }
        if bits != 0 {
            status.raise(bits)?;
        }
        Ok(())
    }
}

impl Plan for GatedDeltaStep {
    type Params = GatedDeltaStepParams;
    const NAME: &'static str = "gated_delta_step";
    fn build(p: GatedDeltaStepParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &GatedDeltaStepParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let (p, d) = (&self.params, &self.dims);
        let entries = d.mems() * p.slots;
        vec![
            TensorSpec::input("x", p.dtype, p.batch * d.proj_width()),
            TensorSpec::input("conv_w", p.dtype, d.channels() * p.conv),
            TensorSpec::input("gate_params", DType::F32, 2 * p.heads),
            TensorSpec::input("idx", DType::I32, p.batch * p.topk),
            TensorSpec::input("weights", DType::F32, p.batch * p.topk),
            TensorSpec::input("slot_ids", DType::I32, p.batch),
            TensorSpec::in_out("state", DType::F32, entries * p.heads * p.head_k * p.head_v),
            TensorSpec::in_out("conv_state", DType::F32, entries * d.channels() * p.conv),
            TensorSpec::output("o", p.dtype, p.batch * d.hv()),
        ]
    }
}
