//! Prefill: the short convolution over each stream, then the chunked gated delta rule.

use serde::{Deserialize, Serialize};

use super::{
    check_offsets, check_slot_ids, conv_channel, default_chunk, default_conv, default_true, heads_ok, load_state,
    offsets, oracle, store_state, Dims, Rule,
};
use crate::backend::{Status, StatusBits};
use crate::dtype::{float_dtype, same_dtype, DType, Float};
use crate::error::{invalid, Error, Result};
use crate::layout::{dim, elements, pool_fits, slot_of};
use crate::plan::{Plan, TensorSpec};

/// Prepares each stream of [`Permute`](super::Permute) for the recurrence: row `r` of stream
/// `g = m * seqs + b` takes token `order[r]`'s projection row `x [T, P]` (memory `m`'s columns),
/// runs each conv channel through the causal depthwise convolution (`conv_w [C, W]`, no bias,
/// then SiLU), continuing from and updating the conv state of (memory `m`, `slot_ids[b]`) in the
/// f32 pool `conv_state [M' * slots, C, W]` (the last `W` inputs, newest last), and writes
/// `qkv [R, C]` and the gates `gb [R, 2H]` (`g = -exp(A_log) softplus(a + dt_bias)`, f32, then
/// `beta = sigmoid(b)`); `gate_params [2H]` holds `A_log` then `dt_bias`.
/// A sequence whose slot is outside the pool or shared with another is skipped (its rows
/// unwritten, its states untouched) and raises `SLOT_OUT_OF_RANGE` / `SLOT_REPEATED`; bad
/// `cu_mem` skips everything, a token id outside `[0, T)` reads zeros; both raise
/// `INDEX_OUT_OF_RANGE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShortConvParams {
    /// Tokens `T` (rows of `x`), at least 1.
    pub tokens: usize,
    /// Sequences `B` (entries of `slot_ids`), at least 1.
    pub seqs: usize,
    /// Routed memories `M`, in `[1, 64]`.
    pub memories: usize,
    /// Choices per token `k`, in `[1, M]`; with `shared` it sizes the rows `R = T (k + shared)`.
    pub topk: usize,
    /// Whether the shared memory (number `M`) is present; default true.
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
    /// Slots per memory; the conv-state pool holds `M' * slots` entries. At least 1.
    pub slots: usize,
    /// Storage dtype of `x`, `conv_w` and `qkv` (f32, f16 or bf16); the rest is f32 or i32.
    pub dtype: DType,
}

/// The prefill gather and short convolution of each stream (see [`ShortConvParams`]).
#[derive(Debug, Clone)]
pub struct ShortConv {
    /// The parameters, as checked by [`ShortConv::new`].
    pub params: ShortConvParams,
    /// The layer geometry the parameters describe.
    pub dims: Dims,
}

impl ShortConv {
    /// Checks the parameters (the geometry as [`Dims::new`], sizes at least 1 and within
    /// 32-bit indexing): `Error::DType` for a non-float dtype, else `Error::InvalidParams`.
    pub fn new(p: ShortConvParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        dim("short_conv tokens", p.tokens)?;
        dim("short_conv seqs", p.seqs)?;
        dim("short_conv slots", p.slots)?;
        pool_fits("short_conv", p.seqs, "seqs", p.slots)?;
        let d = Dims::new(p.memories, p.topk, p.shared, p.heads, p.head_k, p.head_v, p.conv)?;
        elements("short_conv x", &[p.tokens, d.proj_width()])?;
        elements("short_conv qkv", &[p.tokens, p.topk + 1, d.channels()])?;
        elements("short_conv conv_state", &[d.mems(), p.slots, d.channels(), p.conv])?;
        elements("short_conv streams", &[d.mems(), p.seqs])?;
        Ok(Self { params: p, dims: d })
    }
    /// Rows `R = T (k + shared)` of the permuted layout (`order`, `qkv`, `gb`).
    pub fn rows(&self) -> usize {
        self.params.tokens * (self.params.topk + usize::from(self.params.shared))
    }
    /// Streams `S = M' B`; `cu_mem` has `S + 1` entries.
    pub fn streams(&self) -> usize {
        self.dims.mems() * self.params.seqs
    }

    /// Host-side check of what the kernel would skip with a status bit: `cu_mem` from 0,
    /// non-decreasing, at most `R`; slot ids in `[0, slots)` and distinct; each placed `order`
    /// entry in `[0, T)`. `Error::InvalidInput` names the first bad entry.
    pub fn validate(&self, order: &[i32], cu_mem: &[i32], slot_ids: &[i32]) -> Result<()> {
        self.check_len("order", order.len())?;
        self.check_len("cu_mem", cu_mem.len())?;
        self.check_len("slot_ids", slot_ids.len())?;
        check_offsets("cu_mem", cu_mem, self.streams(), self.rows(), false)?;
        check_slot_ids(slot_ids, self.params.seqs, self.params.slots)?;
        let end = cu_mem[self.streams()] as usize;
        if let Some(r) = (0..end).find(|&r| order[r] < 0 || order[r] as usize >= self.params.tokens) {
            return Err(Error::InvalidInput(format!(
                "order[{r}] = {} is outside [0, {})",
                order[r], self.params.tokens
            )));
        }
        Ok(())
    }

    /// The reference on host slices, in [`Plan::tensors`] order: `x [T, P]`, `order [R]`,
    /// `cu_mem [S + 1]`, `slot_ids [B]`, `conv_w [C, W]`, `gate_params [2H]` (f32) in;
    /// `conv_state` (f32) updated in place; `qkv [R, C]` and `gb [R, 2H]` (f32) out.
    /// `Error::DType` if the element type is not the plan's dtype, `Error::Shape` for a short
    /// buffer; bad contents raise status bits on the CPU `status`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        x: &[T],
        order: &[i32],
        cu_mem: &[i32],
        slot_ids: &[i32],
        conv_w: &[T],
        gate_params: &[f32],
        conv_state: &mut [f32],
        qkv: &mut [T],
        gb: &mut [f32],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let lens = [("x", x.len()), ("order", order.len()), ("cu_mem", cu_mem.len()), ("slot_ids", slot_ids.len())];
        let more = [("conv_w", conv_w.len()), ("gate_params", gate_params.len()), ("conv_state", conv_state.len())];
        self.check_lens(&[&lens[..], &more[..], &[("qkv", qkv.len()), ("gb", gb.len())]].concat())?;
        let (p, d) = (&self.params, &self.dims);
        let Some(cu) = offsets(cu_mem, self.streams(), self.rows(), false) else {
            return status.raise(StatusBits::INDEX_OUT_OF_RANGE);
        };
        let (c_n, w_n, h_n, pw) = (d.channels(), p.conv, p.heads, d.proj_width());
        let mut bits = 0;
        for g in 0..self.streams() {
            let (m, b) = (g / p.seqs, g % p.seqs);
            let slot = match slot_of(&slot_ids[..p.seqs], b, p.slots) {
                Ok(s) => s,
                Err(bit) => {
                    bits |= bit;
                    continue;
                }
            };
            let e = m * p.slots + slot;
            for r in cu[g]..cu[g + 1] {
                let t = usize::try_from(order[r]).ok().filter(|&t| t < p.tokens);
                bits |= if t.is_none() { StatusBits::INDEX_OUT_OF_RANGE } else { 0 };
                let xv = |col: usize| t.map_or(0.0, |t| f64::from(x[t * pw + col].to_f32()));
                for c in 0..c_n {
                    let st = &mut conv_state[(e * c_n + c) * w_n..(e * c_n + c + 1) * w_n];
                    let y = conv_channel(st, &conv_w[c * w_n..(c + 1) * w_n], xv(d.col(m, c)));
                    qkv[r * c_n + c] = T::from_f32(y as f32);
                }
                for h in 0..h_n {
                    let (a_log, dt) = (f64::from(gate_params[h]), f64::from(gate_params[h_n + h]));
                    gb[r * 2 * h_n + h] = oracle::decay(xv(d.gate_col(m, h, false)), a_log, dt) as f32;
                    gb[r * 2 * h_n + h_n + h] = oracle::sigmoid(xv(d.gate_col(m, h, true))) as f32;
                }
            }
        }
        if bits != 0 {
            status.raise(bits)?;
        }
        Ok(())
    }
}

impl Plan for ShortConv {
    type Params = ShortConvParams;
    const NAME: &'static str = "short_conv";
    fn build(p: ShortConvParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &ShortConvParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let (p, d) = (&self.params, &self.dims);
        vec![
            TensorSpec::input("x", p.dtype, p.tokens * d.proj_width()),
            TensorSpec::input("order", DType::I32, self.rows()),
            TensorSpec::input("cu_mem", DType::I32, self.streams() + 1),
            TensorSpec::input("slot_ids", DType::I32, p.seqs),
            TensorSpec::input("conv_w", p.dtype, d.channels() * p.conv),
            TensorSpec::input("gate_params", DType::F32, 2 * p.heads),
            TensorSpec::in_out("conv_state", DType::F32, d.mems() * p.slots * d.channels() * p.conv),
            TensorSpec::output("qkv", p.dtype, self.rows() * d.channels()),
            TensorSpec::output("gb", DType::F32, self.rows() * 2 * p.heads),
        ]
    }
}

/// The chunked gated delta rule over `streams` variable-length streams (`cu [S + 1]` over the
/// rows of `qkv [R, 2HK + HV]` and `gb [R, 2H]`, as [`ShortConv`] writes them), each starting
/// from and ending in its pool entry: stream `s` uses entry `(s / seqs) * slots +
/// slot_ids[s % seqs]` of the f32 pool `state [(S / seqs) * slots, H, K, V]` (`[.., V, K]` with
/// `v_first`). q and k are L2-normalized in the kernel, q scaled by `scale` (default
/// `1/sqrt(K)`). Within a chunk of `chunk` rows the recurrence is solved as a triangular
/// system, so the result equals [`GatedDeltaStep`](super::GatedDeltaStep) token by token.
/// `o [R, H V]`: rows outside every stream stay unwritten. A stream whose slot is bad or shared
/// is skipped (its rows 0, its entry untouched) and raises its status bit; bad `cu` skips all
/// (nothing written) and raises `INDEX_OUT_OF_RANGE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatedDeltaChunkParams {
    /// Streams `S` (`cu` has `S + 1` entries): `M' * seqs` in the layer; a multiple of `seqs`.
    pub streams: usize,
    /// Sequences `B` (entries of `slot_ids`); stream `s` belongs to sequence `s % B`.
    pub seqs: usize,
    /// Rows `R` of `qkv`, `gb` and `o`, at least 1.
    pub rows: usize,
    /// Heads `H`, at least 1.
    pub heads: usize,
    /// Key head size `K`: a multiple of 8 up to `MAX_HEAD`.
    pub head_k: usize,
    /// Value head size `V`: a multiple of 8 up to `MAX_HEAD`.
    pub head_v: usize,
    /// Slots per memory; the pool holds `(S / B) * slots` entries. At least 1.
    pub slots: usize,
    /// Storage dtype of `qkv` and `o` (f32, f16 or bf16); `gb` and `state` are f32.
    pub dtype: DType,
    /// 16, 32 or 64 (the WGSL path tiles at most 32 rows at a time; the math is the same).
    #[serde(default = "default_chunk")]
    pub chunk: usize,
    /// The recurrence; default [`Rule::Delta`].
    #[serde(default)]
    pub rule: Rule,
    /// Pool entries are `[V, K]` (fla's layout) rather than `[K, V]`; default false.
    #[serde(default)]
    pub v_first: bool,
    /// Query scale; `None` (the default) means `1/sqrt(K)`. Must be finite.
    #[serde(default)]
    pub scale: Option<f32>,
}

/// The chunked gated delta rule over variable-length streams (see [`GatedDeltaChunkParams`]).
#[derive(Debug, Clone)]
pub struct GatedDeltaChunk {
    /// The parameters, as checked by [`GatedDeltaChunk::new`].
    pub params: GatedDeltaChunkParams,
}

impl GatedDeltaChunk {
    /// Checks the parameters (ranges as on the fields, `chunk` one of 16, 32, 64, sizes within
    /// 32-bit indexing): `Error::DType` for a non-float dtype, else `Error::InvalidParams`.
    pub fn new(p: GatedDeltaChunkParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        dim("chunk streams", p.streams)?;
        dim("chunk seqs", p.seqs)?;
        dim("chunk rows", p.rows)?;
        dim("chunk slots", p.slots)?;
        pool_fits("chunk", p.seqs, "seqs", p.slots)?;
        heads_ok(p.heads, p.head_k, p.head_v)?;
        if !p.streams.is_multiple_of(p.seqs) {
            return Err(invalid(format!("chunk streams = {} must be a multiple of seqs = {}", p.streams, p.seqs)));
        }
        if ![16, 32, 64].contains(&p.chunk) {
            return Err(invalid(format!("chunk = {} must be 16, 32 or 64", p.chunk)));
        }
        if let Some(s) = p.scale.filter(|s| !s.is_finite()) {
            return Err(invalid(format!("chunk scale must be finite, got {s}")));
        }
        elements("chunk qkv", &[p.rows, p.heads, 2 * p.head_k + p.head_v])?;
        elements("chunk state", &[p.streams / p.seqs, p.slots, p.heads, p.head_k, p.head_v])?;
        Ok(Self { params: p })
    }
    /// The query scale the kernels apply: `scale`, or `1/sqrt(K)` when it is `None`.
    pub fn scale(&self) -> f32 {
        self.params.scale.unwrap_or(1.0 / (self.params.head_k as f32).sqrt())
    }
    fn width(&self) -> usize {
        self.params.heads * (2 * self.params.head_k + self.params.head_v)
    }

    /// Host-side check of what the kernel would skip with a status bit: `cu` from 0,
    /// non-decreasing, at most `R`; slot ids in `[0, slots)` and distinct.
    /// `Error::InvalidInput` names the first bad entry (`Error::Shape` for a short buffer).
    pub fn validate(&self, cu: &[i32], slot_ids: &[i32]) -> Result<()> {
        self.check_len("cu", cu.len())?;
        self.check_len("slot_ids", slot_ids.len())?;
        check_offsets("cu", cu, self.params.streams, self.params.rows, false)?;
        check_slot_ids(slot_ids, self.params.seqs, self.params.slots)
    }

    /// The recurrence token by token (the oracle of the chunked kernels).
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        qkv: &[T],
        gb: &[f32],
        cu: &[i32],
        slot_ids: &[i32],
        state: &mut [f32],
        o: &mut [T],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let lens = [("qkv", qkv.len()), ("gb", gb.len()), ("cu", cu.len()), ("slot_ids", slot_ids.len())];
        self.check_lens(&[&lens[..], &[("state", state.len()), ("o", o.len())]].concat())?;
        let p = &self.params;
        let Some(cu) = offsets(cu, p.streams, p.rows, false) else {
            return status.raise(StatusBits::INDEX_OUT_OF_RANGE);
        };
        let (h_n, k_n, v_n, w) = (p.heads, p.head_k, p.head_v, self.width());
        let (hk, scale) = (h_n * k_n, f64::from(self.scale()));
        let mut bits = 0;
        for s in 0..p.streams {
            let slot = match slot_of(&slot_ids[..p.seqs], s % p.seqs, p.slots) {
                Ok(v) => v,
                Err(bit) => {
                    bits |= bit;
                    o[cu[s] * h_n * v_n..cu[s + 1] * h_n * v_n].fill(T::from_f32(0.0));
                    continue;
                }
            };
            let e = (s / p.seqs) * p.slots + slot;
            for h in 0..h_n {
                let base = (e * h_n + h) * k_n * v_n;
                let ent = &mut state[base..base + k_n * v_n];
                let mut st = load_state(ent, k_n, v_n, p.v_first);
                for r in cu[s]..cu[s + 1] {
                    let row: Vec<f64> = qkv[r * w..(r + 1) * w].iter().map(|v| f64::from(v.to_f32())).collect();
                    let q: Vec<f64> = oracle::l2norm(&row[h * k_n..(h + 1) * k_n]).iter().map(|v| v * scale).collect();
                    let k = oracle::l2norm(&row[hk + h * k_n..hk + (h + 1) * k_n]);
                    let v = &row[2 * hk + h * v_n..2 * hk + (h + 1) * v_n];
                    let (g, beta) = (f64::from(gb[r * 2 * h_n + h]), f64::from(gb[r * 2 * h_n + h_n + h]));
                    let out = oracle::recur(&mut st, &q, &k, v, g, beta, p.rule.oracle());
                    for (c, val) in out.iter().enumerate() {
                        o[r * h_n * v_n + h * v_n + c] = T::from_f32(*val as f32);
                    }
                }
                store_state(ent, &st, k_n, v_n, p.v_first);
            }
        }
        if bits != 0 {
            status.raise(bits)?;
        }
        Ok(())
    }
}

impl Plan for GatedDeltaChunk {
    type Params = GatedDeltaChunkParams;
    const NAME: &'static str = "gated_delta_chunk";
    fn build(p: GatedDeltaChunkParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &GatedDeltaChunkParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        let entries = p.streams / p.seqs * p.slots;
        vec![
            TensorSpec::input("qkv", p.dtype, p.rows * self.width()),
            TensorSpec::input("gb", DType::F32, p.rows * 2 * p.heads),
            TensorSpec::input("cu", DType::I32, p.streams + 1),
            TensorSpec::input("slot_ids", DType::I32, p.seqs),
            TensorSpec::in_out("state", DType::F32, entries * p.heads * p.head_k * p.head_v),
            TensorSpec::output("o", p.dtype, p.rows * p.heads * p.head_v),
        ]
    }
}
