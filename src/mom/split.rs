//! Sequence pieces (LASP-2 style): run each piece of a long sequence from a zero state, then
//! apply the state that reaches it, and get what one pass gives.
//!
//! Over a piece, the delta rule is affine in the incoming state: `S_t = P_t S_in + S_t^0` with
//! `P_t = A_t ... A_1`, `A_t = e^{g_t} (I - beta_t k_t k_t^T)` (`e^{g_t} I` for the linear
//! rule), so `o_t = o_t^0 + S_in^T (P_t^T q_t)`. [`GatedDeltaChunk`](super::GatedDeltaChunk)
//! on a zeroed pool gives `S^0` and `o^0`; [`Transport`] gives `P = P_T` and the transported
//! queries `P_t^T q_t`; [`ApplyState`] adds `S_in`'s part. Pieces can run on different GPUs
//! that exchange only `(P, S^0)` per piece.

use serde::{Deserialize, Serialize};

use super::{check_offsets, check_slot_ids, heads_ok, load_state, offsets, oracle, store_state, Rule};
use crate::backend::{Status, StatusBits};
use crate::dtype::{float_dtype, same_dtype, DType, Float};
use crate::error::{invalid, Result};
use crate::layout::{dim, elements, pool_fits, slot_of};
use crate::plan::{Plan, TensorSpec};

/// The shape both kernels share: `streams` pieces over `rows` rows of `qkv [R, 2HK + HV]` and
/// `gb [R, 2H]` (as [`GatedDeltaChunk`](super::GatedDeltaChunk) reads them), stream `s` with
/// pool entry `(s / seqs) * slots + slot_ids[s % seqs]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PieceParams {
    /// Streams `S` (`cu` has `S + 1` entries), a multiple of `seqs`.
    pub streams: usize,
    /// Sequences `B` (entries of `slot_ids`); stream `s` belongs to sequence `s % B`.
    pub seqs: usize,
    /// Rows `R` of `qkv`, `gb`, `qt` and `o`, at least 1.
    pub rows: usize,
    /// Heads `H`, at least 1.
    pub heads: usize,
    /// Key head size `K`: a multiple of 8 up to `MAX_HEAD`.
    pub head_k: usize,
    /// Value head size `V`: a multiple of 8 up to `MAX_HEAD`.
    pub head_v: usize,
    /// Slots per memory; the pools hold `(S / B) * slots` entries. At least 1.
    pub slots: usize,
    /// Storage dtype of `qkv`, `qt` and `o` (f32, f16 or bf16); `gb`, states and `trans` are
    /// f32.
    pub dtype: DType,
    /// The recurrence the pieces ran; default [`Rule::Delta`].
    #[serde(default)]
    pub rule: Rule,
    /// State entries (`state`, `s_in`) are `[V, K]` rather than `[K, V]`; default false.
    #[serde(default)]
    pub v_first: bool,
    /// Query scale; `None` (the default) means `1/sqrt(K)`. Must be finite.
    #[serde(default)]
    pub scale: Option<f32>,
}

/// A stream the kernels run: its rows `r0..r1` and its pool entry.
type Piece = Option<(usize, usize, usize)>;

fn check(p: &PieceParams, what: &str) -> Result<()> {
    float_dtype(p.dtype)?;
    for (n, v) in [("streams", p.streams), ("seqs", p.seqs), ("rows", p.rows), ("slots", p.slots)] {
        dim(&format!("{what} {n}"), v)?;
    }
    pool_fits(what, p.seqs, "seqs", p.slots)?;
    heads_ok(p.heads, p.head_k, p.head_v)?;
    if !p.streams.is_multiple_of(p.seqs) {
        return Err(invalid(format!("{what} streams = {} must be a multiple of seqs = {}", p.streams, p.seqs)));
    }
    if let Some(s) = p.scale.filter(|s| !s.is_finite()) {
        return Err(invalid(format!("{what} scale must be finite, got {s}")));
    }
    elements(&format!("{what} qkv"), &[p.rows, p.heads, 2 * p.head_k + p.head_v])?;
    elements(&format!("{what} pool"), &[p.streams / p.seqs, p.slots, p.heads, p.head_k, p.head_k.max(p.head_v)])?;
    Ok(())
}

impl PieceParams {
    fn entries(&self) -> usize {
        self.streams / self.seqs * self.slots
    }
    fn width(&self) -> usize {
        self.heads * (2 * self.head_k + self.head_v)
    }
    fn scale(&self) -> f64 {
        f64::from(self.scale.unwrap_or(1.0 / (self.head_k as f32).sqrt()))
    }
    /// Each stream's rows and pool entry, `None` for a stream the kernels skip; the status bits.
    fn plan_streams(&self, cu: &[i32], slot_ids: &[i32]) -> (Vec<Piece>, u32) {
        let Some(cu) = offsets(cu, self.streams, self.rows, false) else {
            return (vec![None; self.streams], StatusBits::INDEX_OUT_OF_RANGE);
        };
        let mut bits = 0;
        let v = (0..self.streams)
            .map(|s| match slot_of(&slot_ids[..self.seqs], s % self.seqs, self.slots) {
                Ok(slot) => Some((cu[s], cu[s + 1], (s / self.seqs) * self.slots + slot)),
                Err(bit) => {
                    bits |= bit;
                    None
                }
            })
            .collect();
        (v, bits)
    }
    fn validate(&self, cu: &[i32], slot_ids: &[i32]) -> Result<()> {
        check_offsets("cu", cu, self.streams, self.rows, false)?;
        check_slot_ids(slot_ids, self.seqs, self.slots)
    }
}

/// The transition of each piece: `trans [entries, H, K, K]` f32 (`P`, row-major, written at the
/// stream's entry) and the transported queries `qt [R, H K]` (`P_t^T q_t`, q normalized and
/// scaled as the rule reads it). A stream with a bad or shared slot is skipped (nothing
/// written, its status bit raised); bad `cu` skips all and raises `INDEX_OUT_OF_RANGE`.
#[derive(Debug, Clone)]
pub struct Transport {
    /// The parameters, as checked by [`Transport::new`].
    pub params: PieceParams,
}

impl Transport {
    /// Checks the parameters (ranges as on the fields, sizes within 32-bit indexing):
    /// `Error::DType` for a non-float dtype, else `Error::InvalidParams`.
    pub fn new(p: PieceParams) -> Result<Self> {
        check(&p, "transport")?;
        Ok(Self { params: p })
    }

    /// Host-side check of what the kernel would skip with a status bit: `cu` from 0,
    /// non-decreasing, at most `R`; slot ids in `[0, slots)` and distinct.
    /// `Error::InvalidInput` names the first bad entry (`Error::Shape` for a short buffer).
    pub fn validate(&self, cu: &[i32], slot_ids: &[i32]) -> Result<()> {
        self.check_len("cu", cu.len())?;
        self.check_len("slot_ids", slot_ids.len())?;
        self.params.validate(cu, slot_ids)
    }

    /// The reference on host slices, in [`Plan::tensors`] order: `qkv [R, 2HK + HV]`,
    /// `gb [R, 2H]` (f32), `cu [S + 1]`, `slot_ids [B]` in; `trans` (f32, at each stream's
    /// entry) and `qt [R, H K]` out. `Error::DType` if the element type is not the plan's dtype,
    /// `Error::Shape` for a short buffer; bad contents raise status bits on the CPU `status`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        qkv: &[T],
        gb: &[f32],
        cu: &[i32],
        slot_ids: &[i32],
        trans: &mut [f32],
        qt: &mut [T],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let lens = [("qkv", qkv.len()), ("gb", gb.len()), ("cu", cu.len()), ("slot_ids", slot_ids.len())];
        self.check_lens(&[&lens[..], &[("trans", trans.len()), ("qt", qt.len())]].concat())?;
        let p = &self.params;
        let (h_n, k_n, w, hk) = (p.heads, p.head_k, p.width(), p.heads * p.head_k);
        let (streams, bits) = p.plan_streams(cu, slot_ids);
        for (r0, r1, e) in streams.into_iter().flatten() {
            for h in 0..h_n {
                // P as the oracle's recurrence on a K x K state with zero values from S = I.
                let mut st: Vec<f64> = (0..k_n * k_n).map(|i| f64::from(u8::from(i / k_n == i % k_n))).collect();
                for r in r0..r1 {
                    let row: Vec<f64> = qkv[r * w..(r + 1) * w].iter().map(|v| f64::from(v.to_f32())).collect();
                    let q: Vec<f64> =
                        oracle::l2norm(&row[h * k_n..(h + 1) * k_n]).iter().map(|v| v * p.scale()).collect();
                    let k = oracle::l2norm(&row[hk + h * k_n..hk + (h + 1) * k_n]);
                    let (g, beta) = (f64::from(gb[r * 2 * h_n + h]), f64::from(gb[r * 2 * h_n + h_n + h]));
                    let out = oracle::recur(&mut st, &q, &k, &vec![0.0; k_n], g, beta, p.rule.oracle());
                    for (c, v) in out.iter().enumerate() {
                        qt[r * hk + h * k_n + c] = T::from_f32(*v as f32);
                    }
                }
                let base = (e * h_n + h) * k_n * k_n;
                store_state(&mut trans[base..base + k_n * k_n], &st, k_n, k_n, false);
            }
        }
        if bits != 0 {
            status.raise(bits)?;
        }
        Ok(())
    }
}

impl Plan for Transport {
    type Params = PieceParams;
    const NAME: &'static str = "transport";
    fn build(p: PieceParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &PieceParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        vec![
            TensorSpec::input("qkv", p.dtype, p.rows * p.width()),
            TensorSpec::input("gb", DType::F32, p.rows * 2 * p.heads),
            TensorSpec::input("cu", DType::I32, p.streams + 1),
            TensorSpec::input("slot_ids", DType::I32, p.seqs),
            TensorSpec::in_out("trans", DType::F32, p.entries() * p.heads * p.head_k * p.head_k),
            TensorSpec::output("qt", p.dtype, p.rows * p.heads * p.head_k),
        ]
    }
}

/// Applies the state `s_in [streams, H, K, V]` (f32, the pool's layout) that reaches each piece:
/// the pool entry (holding the piece's zero-start final state) becomes `P S_in + S^0`, and each
/// of the piece's output rows `o [R, H V]` gains `S_in^T (P_t^T q_t)` from `qt`. Skips and
/// status as [`Transport`].
#[derive(Debug, Clone)]
pub struct ApplyState {
    /// The parameters, as checked by [`ApplyState::new`].
    pub params: PieceParams,
}

impl ApplyState {
    /// Checks the parameters as [`Transport::new`] does.
    pub fn new(p: PieceParams) -> Result<Self> {
        check(&p, "apply_state")?;
        Ok(Self { params: p })
    }

    /// Host-side check of `cu` and `slot_ids`, as [`Transport::validate`].
    pub fn validate(&self, cu: &[i32], slot_ids: &[i32]) -> Result<()> {
        self.check_len("cu", cu.len())?;
        self.check_len("slot_ids", slot_ids.len())?;
        self.params.validate(cu, slot_ids)
    }

    /// The reference on host slices, in [`Plan::tensors`] order: `s_in [S, H, K, V]` and
    /// `trans` (f32), `qt [R, H K]`, `cu [S + 1]`, `slot_ids [B]` in; `state` (f32) and
    /// `o [R, H V]` updated in place. Errors and status bits as [`Transport::run_cpu`].
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        s_in: &[f32],
        trans: &[f32],
        qt: &[T],
        cu: &[i32],
        slot_ids: &[i32],
        state: &mut [f32],
        o: &mut [T],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let lens = [("s_in", s_in.len()), ("trans", trans.len()), ("qt", qt.len()), ("cu", cu.len())];
        let more = [("slot_ids", slot_ids.len()), ("state", state.len()), ("o", o.len())];
        self.check_lens(&[&lens[..], &more[..]].concat())?;
        let p = &self.params;
        let (h_n, k_n, v_n) = (p.heads, p.head_k, p.head_v);
        let (streams, bits) = p.plan_streams(cu, slot_ids);
        for (s, plan) in streams.into_iter().enumerate() {
            let Some((r0, r1, e)) = plan else { continue };
            for h in 0..h_n {
                let kv = k_n * v_n;
                let sin = load_state(&s_in[(s * h_n + h) * kv..(s * h_n + h + 1) * kv], k_n, v_n, p.v_first);
                let tb = (e * h_n + h) * k_n * k_n;
                let pm: Vec<f64> = trans[tb..tb + k_n * k_n].iter().map(|&v| f64::from(v)).collect();
                let ent = &mut state[(e * h_n + h) * kv..(e * h_n + h + 1) * kv];
                let mut st = load_state(ent, k_n, v_n, p.v_first);
                for i in 0..k_n {
                    for c in 0..v_n {
                        st[i * v_n + c] += (0..k_n).map(|j| pm[i * k_n + j] * sin[j * v_n + c]).sum::<f64>();
                    }
                }
                store_state(ent, &st, k_n, v_n, p.v_first);
                for r in r0..r1 {
                    let q = &qt[r * h_n * k_n + h * k_n..r * h_n * k_n + (h + 1) * k_n];
                    for c in 0..v_n {
                        let add: f64 = (0..k_n).map(|j| f64::from(q[j].to_f32()) * sin[j * v_n + c]).sum();
                        let d = &mut o[r * h_n * v_n + h * v_n + c];
                        *d = T::from_f32((f64::from(d.to_f32()) + add) as f32);
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

impl Plan for ApplyState {
    type Params = PieceParams;
    const NAME: &'static str = "apply_state";
    fn build(p: PieceParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &PieceParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        let kv = p.heads * p.head_k * p.head_v;
        vec![
            TensorSpec::input("s_in", DType::F32, p.streams * kv),
            TensorSpec::input("trans", DType::F32, p.entries() * p.heads * p.head_k * p.head_k),
            TensorSpec::input("qt", p.dtype, p.rows * p.heads * p.head_k),
            TensorSpec::input("cu", DType::I32, p.streams + 1),
            TensorSpec::input("slot_ids", DType::I32, p.seqs),
            TensorSpec::in_out("state", DType::F32, p.entries() * kv),
            TensorSpec::in_out("o", p.dtype, p.rows * p.heads * p.head_v),
        ]
    }
}
