//! The MLGRU token mixer: a decode step on a slot-indexed state pool, and the chunked prefill.

use serde::{Deserialize, Serialize};

use super::{default_chunk, dim, elements, model_eps, oracle};
use crate::backend::{Status, StatusBits};
use crate::dtype::{float_dtype, same_dtype, to_f64, DType, Float};
use crate::error::{invalid, Error, Result};
use crate::layout::{check_slot_ids, slot_of, Rows};
use crate::plan::{Plan, TensorSpec};

// ---------------------------------------------------------------------------------------------
// MLGRU

/// One decode step of the MLGRU token mixer for `batch` sequences, each with a slot in the
/// f32 state pool `[slots, d]` (updated in place). `fcg` rows hold `[f_raw, c_raw, g_raw]`
/// (the stacked f, c, g BitLinear outputs); `o = rmsnorm(g_raw) * w * silu(h)`.
/// Slot ids within one step must be distinct (one sequence per slot). Rows whose slot is
/// outside the pool or repeated are skipped on every backend (output 0, slot untouched) and
/// raise `SLOT_OUT_OF_RANGE` or `SLOT_REPEATED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlgruParams {
    /// Sequences in this step: rows of `fcg` and `o`, entries of `slot_ids`.
    pub batch: usize,
    /// Hidden width: the state, `w`, `lb` and each of f, c, g are `d` wide.
    pub d: usize,
    /// Rows of the f32 state pool `[slots, d]` (at most `i32::MAX`).
    pub slots: usize,
    /// Storage dtype of `fcg`, `w` and `o`: f32, f16 or bf16.
    pub dtype: DType,
    /// Apply the forget-gate lower bound, `f = lb + (1 - lb) * sigmoid(f_raw)`; an f32 `lb` `[d]`
    /// is then required. Default false.
    #[serde(default)]
    pub lower_bound: bool,
    /// The output gate RMSNorm's epsilon, finite and >= 0; default
    /// [`MODEL_EPS`](super::MODEL_EPS) (1e-6).
    #[serde(default = "model_eps")]
    pub eps: f32,
    /// Elements between rows of `fcg` (default `3 * d`; never less).
    #[serde(default)]
    pub fcg_stride: Option<usize>,
}

/// A validated [`MlgruParams`]. Tensors: `fcg` (strided `[batch, 3 * d]`), `state` (f32
/// `[slots, d]`, in place), `slot_ids` (i32 `[batch]`), `lb` (f32 `[d]`, with `lower_bound`),
/// `w` (the gate norm weight `[d]`), `o` (`[batch, d]`).
#[derive(Debug, Clone)]
pub struct MlgruStep {
    /// The params it was built from.
    pub params: MlgruParams,
    /// The `fcg` view: `batch` rows of `3 * d`, `fcg_stride` apart.
    pub fcg: Rows,
}

fn mlgru_common(p: &MlgruParams, rows: usize) -> Result<Rows> {
    float_dtype(p.dtype)?;
    dim("mlgru batch", p.batch)?;
    dim("mlgru d", p.d)?;
    dim("mlgru slots", p.slots)?;
    crate::layout::pool_fits("mlgru", p.batch, "batch", p.slots)?;
    if p.slots > i32::MAX as usize {
        return Err(invalid("mlgru slots exceed i32 ids"));
    }
    elements("mlgru state", &[p.slots, p.d])?;
    if !(p.eps.is_finite() && p.eps >= 0.0) {
        return Err(invalid(format!("eps must be finite and >= 0, got {}", p.eps)));
    }
    Rows::new("mlgru fcg", rows, 3 * p.d, p.fcg_stride)
}

impl MlgruStep {
    /// Validates `p`: a float dtype (else `Error::DType`); sizes >= 1, `slots <= i32::MAX`, a
    /// finite `eps >= 0` and a stride no shorter than `3 * d` (else `Error::InvalidParams`).
    pub fn new(p: MlgruParams) -> Result<Self> {
        let fcg = mlgru_common(&p, p.batch)?;
        Ok(Self { params: p, fcg })
    }

    /// Every slot id in the pool and distinct, checked on the host (an error names the row).
    pub fn validate_slot_ids(&self, ids: &[i32]) -> Result<()> {
        self.check_len("slot_ids", ids.len())?;
        check_slot_ids(ids, self.params.batch, self.params.slots, "row")
    }

    /// Slot ids out of range or repeated skip the row (output 0) and raise their status bit.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        fcg: &[T],
        state: &mut [f32],
        slot_ids: &[i32],
        lb: Option<&[f32]>,
        w: &[T],
        o: &mut [T],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let p = &self.params;
        let mut lens = vec![("fcg", fcg.len()), ("state", state.len()), ("slot_ids", slot_ids.len()), ("w", w.len())];
        lens.extend([("o", o.len())].into_iter().chain(lb.map(|l| ("lb", l.len()))));
        self.check_lens(&lens)?;
        let x = to_f64(&self.fcg.gather(fcg));
        let wf = to_f64(&w[..p.d]);
        let lbf: Option<Vec<f64>> =
            lb.filter(|_| p.lower_bound).map(|l| l[..p.d].iter().map(|&v| f64::from(v)).collect());
        for b in 0..p.batch {
            let slot = match slot_of(&slot_ids[..p.batch], b, p.slots) {
                Ok(slot) => slot,
                Err(bit) => {
                    status.raise(bit)?;
                    o[b * p.d..(b + 1) * p.d].fill(T::from_f32(0.0));
                    continue;
                }
            };
            let row = &x[b * 3 * p.d..(b + 1) * 3 * p.d];
            let mut h: Vec<f64> = state[slot * p.d..(slot + 1) * p.d].iter().map(|&v| f64::from(v)).collect();
            let out = oracle::mlgru_step(
                &row[..p.d],
                &row[p.d..2 * p.d],
                &row[2 * p.d..],
                &mut h,
                lbf.as_deref(),
                &wf,
                f64::from(p.eps),
            );
            for (d, v) in state[slot * p.d..(slot + 1) * p.d].iter_mut().zip(&h) {
                *d = *v as f32;
            }
            for (d, v) in o[b * p.d..(b + 1) * p.d].iter_mut().zip(out) {
                *d = T::from_f32(v as f32);
            }
        }
        Ok(())
    }
}

/// Prefill of the MLGRU over `seqs` packed sequences (`cu_seqlens [seqs + 1]`, `tokens` rows in
/// all), each starting from and ending in its pool slot. Chunked: each chunk scans from zero and
/// records its summed log decay; a carry pass chains the chunks; a third pass applies the carry.
/// `max_len` is the caller's host-side bound on any sequence's length (no device read).
/// Bad `cu_seqlens` raise `INDEX_OUT_OF_RANGE` (outputs unspecified); a slot id outside the
/// pool, or one that another sequence also names, runs its sequence from a zero state, drops the
/// final state and raises `SLOT_OUT_OF_RANGE` or `SLOT_REPEATED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlgruScanParams {
    /// Sequences: `cu_seqlens` has `seqs + 1` entries, `slot_ids` `seqs`.
    pub seqs: usize,
    /// Rows of `fcg` and `o` over all sequences; `cu_seqlens[seqs]` must equal it.
    pub tokens: usize,
    /// Host-side bound on any sequence's length (`<= tokens`); sets the chunk count and so the
    /// workspace size.
    pub max_len: usize,
    /// Hidden width: the state, `w`, `lb` and each of f, c, g are `d` wide.
    pub d: usize,
    /// Rows of the f32 state pool `[slots, d]` (at most `i32::MAX`).
    pub slots: usize,
    /// Storage dtype of `fcg`, `w` and `o`: f32, f16 or bf16.
    pub dtype: DType,
    /// Tokens per chunk of the GPU scan (>= 1); default 64.
    #[serde(default = "default_chunk")]
    pub chunk: usize,
    /// Apply the forget-gate lower bound, `f = lb + (1 - lb) * sigmoid(f_raw)`; an f32 `lb` `[d]`
    /// is then required. Default false.
    #[serde(default)]
    pub lower_bound: bool,
    /// The output gate RMSNorm's epsilon, finite and >= 0; default
    /// [`MODEL_EPS`](super::MODEL_EPS) (1e-6).
    #[serde(default = "model_eps")]
    pub eps: f32,
    /// Elements between rows of `fcg` (default `3 * d`; never less).
    #[serde(default)]
    pub fcg_stride: Option<usize>,
}

/// A validated [`MlgruScanParams`]. Tensors: `fcg` (strided `[tokens, 3 * d]`), `cu_seqlens`
/// (i32 `[seqs + 1]`), `state` (f32 `[slots, d]`, in place), `slot_ids` (i32 `[seqs]`), `lb`
/// (f32 `[d]`, with `lower_bound`), `w` (`[d]`), scratch `ws` (f32), `o` (`[tokens, d]`).
#[derive(Debug, Clone)]
pub struct MlgruScan {
    /// The params it was built from.
    pub params: MlgruScanParams,
    /// The `fcg` view: `tokens` rows of `3 * d`, `fcg_stride` apart.
    pub fcg: Rows,
}

impl MlgruScan {
    /// Validates `p`: what [`MlgruStep::new`] checks (with `seqs` as the batch), `tokens`,
    /// `max_len` and `chunk` >= 1, `max_len <= tokens`, and a workspace within 32-bit indexing
    /// (else `Error::InvalidParams`).
    pub fn new(p: MlgruScanParams) -> Result<Self> {
        dim("mlgru_scan seqs", p.seqs)?;
        crate::layout::pool_fits("mlgru_scan", p.seqs, "seqs", p.slots)?;
        let common = MlgruParams {
            batch: p.seqs,
            d: p.d,
            slots: p.slots,
            dtype: p.dtype,
            lower_bound: p.lower_bound,
            eps: p.eps,
            fcg_stride: p.fcg_stride,
        };
        dim("mlgru_scan tokens", p.tokens)?;
        dim("mlgru_scan max_len", p.max_len)?;
        dim("mlgru_scan chunk", p.chunk)?;
        if p.max_len > p.tokens {
            return Err(invalid(format!("mlgru_scan max_len = {} exceeds tokens = {}", p.max_len, p.tokens)));
        }
        let fcg = mlgru_common(&common, p.tokens)?;
        let carries = elements("mlgru_scan ws carries", &[2, p.seqs, p.max_len.div_ceil(p.chunk), p.d])?;
        let h = elements("mlgru_scan ws h", &[p.tokens, p.d])?;
        elements("mlgru_scan ws", &[h.saturating_add(carries)])?;
        Ok(Self { params: p, fcg })
    }

    /// Chunks per sequence in the GPU scan: `max_len / chunk`, rounded up.
    pub fn chunks(&self) -> usize {
        self.params.max_len.div_ceil(self.params.chunk)
    }

    /// f32 workspace: per-token h `[tokens, d]`, then per-chunk decay and state `[seqs, chunks, d]` x 2.
    pub(crate) fn workspace_len(&self) -> usize {
        let p = &self.params;
        p.tokens * p.d + 2 * p.seqs * self.chunks() * p.d
    }

    /// Every slot id in the pool and distinct, checked on the host (an error names the row of
    /// `slot_ids`, one per sequence).
    pub fn validate_slot_ids(&self, ids: &[i32]) -> Result<()> {
        self.check_len("slot_ids", ids.len())?;
        check_slot_ids(ids, self.params.seqs, self.params.slots, "row")
    }

    /// Checks `cu_seqlens` on the host: starts at 0, never decreases, ends at `tokens`, and no
    /// sequence is longer than `max_len`. The kernels flag violations instead of reading past.
    pub fn validate_cu_seqlens(&self, cu: &[i32]) -> Result<()> {
        self.check_len("cu_seqlens", cu.len())?;
        let p = &self.params;
        if cu[0] != 0 {
            return Err(Error::InvalidInput(format!("cu_seqlens[0] = {}, must be 0", cu[0])));
        }
        if cu[p.seqs] as i64 != p.tokens as i64 {
            return Err(Error::InvalidInput(format!(
                "cu_seqlens[{}] = {}, must be tokens = {}",
                p.seqs, cu[p.seqs], p.tokens
            )));
        }
        for b in 0..p.seqs {
            let len = i64::from(cu[b + 1]) - i64::from(cu[b]);
            if len < 0 || len > p.max_len as i64 {
                return Err(Error::InvalidInput(format!(
                    "cu_seqlens[{}] - cu_seqlens[{b}] = {len}: sequence {b}'s length must be in [0, max_len = {}]",
                    b + 1,
                    p.max_len
                )));
            }
        }
        Ok(())
    }

    /// The sequential recurrence (the oracle for the chunked kernels). `ws` is unused here (the
    /// GPU paths' chunk carries); it is checked so one call shape serves every backend.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        fcg: &[T],
        cu: &[i32],
        state: &mut [f32],
        slot_ids: &[i32],
        lb: Option<&[f32]>,
        w: &[T],
        ws: &mut [f32],
        o: &mut [T],
        status: &Status,
    ) -> Result<()> {
        let p = &self.params;
        let mut lens =
            vec![("fcg", fcg.len()), ("cu_seqlens", cu.len()), ("state", state.len()), ("slot_ids", slot_ids.len())];
        lens.extend([("w", w.len()), ("ws", ws.len()), ("o", o.len())].into_iter().chain(lb.map(|l| ("lb", l.len()))));
        self.check_lens(&lens)?;
        if self.validate_cu_seqlens(cu).is_err() {
            status.raise(StatusBits::INDEX_OUT_OF_RANGE)?;
            return Ok(());
        }
        let step = MlgruStep::new(MlgruParams {
            batch: 1,
            d: p.d,
            slots: p.slots,
            dtype: p.dtype,
            lower_bound: p.lower_bound,
            eps: p.eps,
            fcg_stride: None,
        })?;
        let step_alone = MlgruStep::new(MlgruParams { slots: 1, ..step.params.clone() })?;
        let stride = self.fcg.stride;
        let mut scratch = vec![0f32; p.d];
        for b in 0..p.seqs {
            // A slot outside the pool or shared with another sequence: the sequence runs from a
            // zero state and its final state is dropped, as on the devices, and the status says so.
            let slot = slot_of(&slot_ids[..p.seqs], b, p.slots);
            if let Err(bit) = slot {
                status.raise(bit)?;
                scratch.fill(0.0);
            }
            for t in cu[b] as usize..cu[b + 1] as usize {
                let row = &fcg[t * stride..t * stride + 3 * p.d];
                let out = &mut o[t * p.d..(t + 1) * p.d];
                match slot {
                    Ok(_) => step.run_cpu(row, state, &slot_ids[b..b + 1], lb, w, out, status)?,
                    Err(_) => step_alone.run_cpu(row, &mut scratch, &[0], lb, w, out, status)?,
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The tensors of each plan, declared once.

impl Plan for MlgruStep {
    type Params = MlgruParams;
    const NAME: &'static str = "mlgru_step";
    fn build(p: MlgruParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &MlgruParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        let mut v = vec![
            TensorSpec::input("fcg", p.dtype, self.fcg.span()),
            TensorSpec::in_out("state", DType::F32, p.slots * p.d),
            TensorSpec::input("slot_ids", DType::I32, p.batch),
        ];
        if p.lower_bound {
            v.push(TensorSpec::input("lb", DType::F32, p.d));
        }
        v.push(TensorSpec::input("w", p.dtype, p.d));
        v.push(TensorSpec::output("o", p.dtype, p.batch * p.d));
        v
    }
}

impl Plan for MlgruScan {
    type Params = MlgruScanParams;
    const NAME: &'static str = "mlgru_scan";
    fn build(p: MlgruScanParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &MlgruScanParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        let mut v = vec![
            TensorSpec::input("fcg", p.dtype, self.fcg.span()),
            TensorSpec::input("cu_seqlens", DType::I32, p.seqs + 1),
            TensorSpec::in_out("state", DType::F32, p.slots * p.d),
            TensorSpec::input("slot_ids", DType::I32, p.seqs),
        ];
        if p.lower_bound {
            v.push(TensorSpec::input("lb", DType::F32, p.d));
        }
        v.push(TensorSpec::input("w", p.dtype, p.d));
        v.push(TensorSpec::scratch("ws", DType::F32, self.workspace_len()));
        v.push(TensorSpec::output("o", p.dtype, p.tokens * p.d));
        v
    }
}
