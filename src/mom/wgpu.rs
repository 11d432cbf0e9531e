//! wgpu dispatches for the MoM family (`shaders/mom_*.wgsl`). The conv and step shaders bind
//! ten storage buffers, above wgpu's default of eight: [`WgpuBackend::new`] asks for up to 16
//! where the adapter offers them, and an engine's own device must be created with at least 10.

use super::uniforms::{
    ChunkUniform, GatedNormUniform, PermuteUniform, PieceUniform, RouteUniform, ShortConvUniform, StepUniform,
    UnpermuteUniform,
};
use super::{
    ApplyState, GatedDeltaChunk, GatedDeltaStep, GatedNorm, Permute, PieceParams, Route, Rule, ShortConv, Transport,
    Unpermute,
};
use crate::backend::loops::{strided, tree};
use crate::backend::wgpu::{WgpuBackend, WgpuTensor};
use crate::backend::Status;
use crate::error::Result;
use crate::layout::u32_of;
use crate::plan::Plan;

impl Route {
    /// Records one dispatch into `enc` (64 tokens per workgroup), tensors as
    /// [`Route::run_cpu`].
    /// A buffer too small for its tensor is `Error::Shape`; one the shader cannot bind (no
    /// STORAGE usage, past the binding limit) or a non-wgpu `status` is `Error::InvalidParams`.
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        logits: WgpuTensor,
        idx: WgpuTensor,
        weights: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let u = RouteUniform {
            tokens: u32_of("tokens", p.tokens)?,
            memories: p.memories as u32,
            topk: p.topk as u32,
            logits_off: self.bind(&logits, "logits", mb)?,
            idx_off: self.bind(&idx, "idx", mb)?,
            w_off: self.bind(&weights, "weights", mb)?,
        };
        let bufs = [logits.buffer, idx.buffer, weights.buffer, status.wgpu_buffer("route")?];
        // The finiteness scan, then per pick a scan over the memories; both fallbacks counted.
        let (m, k) = (p.memories as u64, p.topk as u64);
        let budget = m + k * (3 + m) + k;
        let groups = u.tokens.div_ceil(64);
        gpu.dispatch(enc, &format!("mom_route_{}", p.dtype), bytemuck::bytes_of(&u), &bufs, groups, budget)
    }
}

impl Permute {
    /// Records two dispatches into `enc` (counts per stream, then offsets and placement),
    /// tensors as [`Permute::run_cpu`].
    /// A buffer too small for its tensor is `Error::Shape`; one the shader cannot bind (no
    /// STORAGE usage, past the binding limit) or a non-wgpu `status` is `Error::InvalidParams`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        idx: WgpuTensor,
        cu_seqlens: WgpuTensor,
        order: WgpuTensor,
        inverse: WgpuTensor,
        cu_mem: WgpuTensor,
        counts: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let u = PermuteUniform {
            tokens: u32_of("tokens", p.tokens)?,
            seqs: u32_of("seqs", p.seqs)?,
            memories: p.memories as u32,
            topk: p.topk as u32,
            has_shared: u32::from(p.shared),
            groups: u32_of("streams", self.streams())?,
            idx_off: self.bind(&idx, "idx", mb)?,
            cu_off: self.bind(&cu_seqlens, "cu_seqlens", mb)?,
            order_off: self.bind(&order, "order", mb)?,
            inv_off: self.bind(&inverse, "inverse", mb)?,
            cu_mem_off: self.bind(&cu_mem, "cu_mem", mb)?,
            counts_off: self.bind(&counts, "counts", mb)?,
        };
        let st = status.wgpu_buffer("permute")?;
        let bytes = bytemuck::bytes_of(&u);
        let (tokens, seqs, k) = (p.tokens as u64, p.seqs as u64, p.topk as u64);
        let n = k + u64::from(p.shared);
        gpu.dispatch(
            enc,
            "mom_permute_count",
            bytes,
            &[idx.buffer, cu_seqlens.buffer, counts.buffer, inverse.buffer, st],
            u.groups,
            // cu_seqlens' check, the bad-input fill, and a sequence's picks (each checked
            // against the token's earlier picks).
            seqs + strided(tokens * n, 256) + strided(tokens * k, 256) * (1 + k),
        )?;
        let bufs = [idx.buffer, cu_seqlens.buffer, counts.buffer, order.buffer, inverse.buffer, cu_mem.buffer];
        // The prefix over earlier groups, the tail fill, the shared stream, and the routed
        // streams' 256-row blocks (picks checked, an 8-step scan each).
        let place = strided(u64::from(u.groups), 256)
            + strided(tokens * n, 256)
            + strided(tokens, 256)
            + strided(tokens * k, 256) * (1 + k + tree(256));
        gpu.dispatch(enc, "mom_permute_place", bytes, &bufs, u.groups, place)
    }
}

impl Unpermute {
    /// Records one dispatch into `enc` (a workgroup per token), tensors as
    /// [`Unpermute::run_cpu`].
    /// A buffer too small for its tensor is `Error::Shape`; one the shader cannot bind (no
    /// STORAGE usage, past the binding limit) or a non-wgpu `status` is `Error::InvalidParams`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        y: WgpuTensor,
        inverse: WgpuTensor,
        weights: WgpuTensor,
        out: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let u = UnpermuteUniform {
            tokens: u32_of("tokens", p.tokens)?,
            topk: p.topk as u32,
            n: (p.topk + usize::from(p.shared)) as u32,
            width: u32_of("width", p.width)?,
            rows: u32_of("rows", p.rows)?,
            y_off: self.bind(&y, "y", mb)?,
            inv_off: self.bind(&inverse, "inverse", mb)?,
            w_off: self.bind(&weights, "weights", mb)?,
            out_off: self.bind(&out, "out", mb)?,
        };
        let bufs = [y.buffer, inverse.buffer, weights.buffer, out.buffer, status.wgpu_buffer("unpermute")?];
        let budget = strided(p.width as u64, 64) * (1 + u64::from(u.n));
        gpu.dispatch(enc, &format!("mom_unpermute_{}", p.dtype), bytemuck::bytes_of(&u), &bufs, u.tokens, budget)
    }
}

impl ShortConv {
    /// Records one dispatch into `enc` (a workgroup per 64 channels and gates of a stream),
    /// tensors as [`ShortConv::run_cpu`]. Needs a device with 10 storage buffers per stage.
    /// A buffer too small for its tensor is `Error::Shape`; one the shader cannot bind (no
    /// STORAGE usage, past the binding limit) or a non-wgpu `status` is `Error::InvalidParams`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        x: WgpuTensor,
        order: WgpuTensor,
        cu_mem: WgpuTensor,
        slot_ids: WgpuTensor,
        conv_w: WgpuTensor,
        gate_params: WgpuTensor,
        conv_state: WgpuTensor,
        qkv: WgpuTensor,
        gb: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        gpu.require_storage_buffers(10, "mom short_conv")?;
        let (p, d, mb) = (&self.params, &self.dims, gpu.max_binding());
        let u = ShortConvUniform {
            tokens: u32_of("tokens", p.tokens)?,
            seqs: u32_of("seqs", p.seqs)?,
            mems: d.mems() as u32,
            heads: u32_of("heads", p.heads)?,
            head_k: p.head_k as u32,
            head_v: p.head_v as u32,
            conv: p.conv as u32,
            slots: u32_of("slots", p.slots)?,
            rows: u32_of("rows", self.rows())?,
            streams: u32_of("streams", self.streams())?,
            pw: u32_of("projection width", d.proj_width())?,
            chan: u32_of("channels", d.channels())?,
            x_off: self.bind(&x, "x", mb)?,
            order_off: self.bind(&order, "order", mb)?,
            cu_off: self.bind(&cu_mem, "cu_mem", mb)?,
            slot_off: self.bind(&slot_ids, "slot_ids", mb)?,
            cw_off: self.bind(&conv_w, "conv_w", mb)?,
            gp_off: self.bind(&gate_params, "gate_params", mb)?,
            cs_off: self.bind(&conv_state, "conv_state", mb)?,
            qkv_off: self.bind(&qkv, "qkv", mb)?,
            gb_off: self.bind(&gb, "gb", mb)?,
            w0: 0,
            w1: 0,
        };
        let groups = u32_of("workgroups", (d.channels() + 2 * p.heads).div_ceil(64) * self.streams())?;
        let bufs = [x.buffer, order.buffer, cu_mem.buffer, slot_ids.buffer, conv_w.buffer, gate_params.buffer];
        let bufs = [&bufs[..], &[conv_state.buffer, qkv.buffer, gb.buffer, status.wgpu_buffer("short_conv")?]].concat();
        // The cu_mem and slot checks and the conv window's load and store, then each row of the
        // dispatch's window through the conv window, on both sides of the channel/gate branch.
        let conv = p.conv as u64;
        let fixed = (self.streams() + p.seqs) as u64 + 2 * conv;
        let module = format!("mom_short_conv_{}", p.dtype);
        let fix = "use a smaller conv";
        gpu.dispatch_windows(enc, &module, &bufs, groups, self.rows(), (fixed, 2 + conv), fix, |w0, w1| {
            bytemuck::bytes_of(&ShortConvUniform { w0, w1, ..u }).to_vec()
        })
    }
}

impl GatedDeltaChunk {
    /// Records one dispatch into `enc` (a workgroup per 64 state columns, head and stream),
    /// tensors as [`GatedDeltaChunk::run_cpu`]; tiles of at most 32 rows, same math.
    /// A buffer too small for its tensor is `Error::Shape`; one the shader cannot bind (no
    /// STORAGE usage, past the binding limit) or a non-wgpu `status` is `Error::InvalidParams`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        qkv: WgpuTensor,
        gb: WgpuTensor,
        cu: WgpuTensor,
        slot_ids: WgpuTensor,
        state: WgpuTensor,
        o: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let vtiles = p.head_v.div_ceil(64);
        let u = ChunkUniform {
            streams: u32_of("streams", p.streams)?,
            seqs: u32_of("seqs", p.seqs)?,
            rows: u32_of("rows", p.rows)?,
            heads: u32_of("heads", p.heads)?,
            head_k: p.head_k as u32,
            head_v: p.head_v as u32,
            slots: u32_of("slots", p.slots)?,
            chunk: p.chunk as u32,
            rule: u32::from(p.rule == Rule::Linear),
            v_first: u32::from(p.v_first),
            scale: self.scale(),
            vtiles: vtiles as u32,
            qkv_off: self.bind(&qkv, "qkv", mb)?,
            gb_off: self.bind(&gb, "gb", mb)?,
            cu_off: self.bind(&cu, "cu", mb)?,
            slot_off: self.bind(&slot_ids, "slot_ids", mb)?,
            st_off: self.bind(&state, "state", mb)?,
            o_off: self.bind(&o, "o", mb)?,
            t0: 0,
            t1: 0,
        };
        let groups = u32_of("workgroups", vtiles * p.heads * p.streams)?;
        let st = status.wgpu_buffer("gated_delta_chunk")?;
        let bufs = [qkv.buffer, gb.buffer, cu.buffer, slot_ids.buffer, state.buffer, o.buffer, st];
        // A stream has at most every row: its tiles go in windows, a dispatch each, the state
        // carrying over through the pool.
        let module = format!("mom_chunk_{}", p.dtype);
        let budget = chunk_loops(p.streams, p.seqs, p.head_k, p.chunk);
        let tiles = p.rows.div_ceil(p.chunk.clamp(1, 32));
        gpu.dispatch_windows(enc, &module, &bufs, groups, tiles, budget, "use a smaller head_k", |t0, t1| {
            bytemuck::bytes_of(&ChunkUniform { t0, t1, ..u }).to_vec()
        })
    }
}

impl GatedDeltaStep {
    /// Records one dispatch into `enc` (a workgroup per head and sequence), tensors as
    /// [`GatedDeltaStep::run_cpu`]. Needs a device with 10 storage buffers per stage.
    /// A buffer too small for its tensor is `Error::Shape`; one the shader cannot bind (no
    /// STORAGE usage, past the binding limit) or a non-wgpu `status` is `Error::InvalidParams`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        x: WgpuTensor,
        conv_w: WgpuTensor,
        gate_params: WgpuTensor,
        idx: WgpuTensor,
        weights: WgpuTensor,
        slot_ids: WgpuTensor,
        state: WgpuTensor,
        conv_state: WgpuTensor,
        o: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        gpu.require_storage_buffers(10, "mom gated_delta_step")?;
        let (p, d, mb) = (&self.params, &self.dims, gpu.max_binding());
        let u = StepUniform {
            batch: u32_of("batch", p.batch)?,
            memories: p.memories as u32,
            topk: p.topk as u32,
            has_shared: u32::from(p.shared),
            heads: u32_of("heads", p.heads)?,
            head_k: p.head_k as u32,
            head_v: p.head_v as u32,
            conv: p.conv as u32,
            slots: u32_of("slots", p.slots)?,
            rule: u32::from(p.rule == Rule::Linear),
            v_first: u32::from(p.v_first),
            scale: self.scale(),
            pw: u32_of("projection width", d.proj_width())?,
            x_off: self.bind(&x, "x", mb)?,
            cw_off: self.bind(&conv_w, "conv_w", mb)?,
            gp_off: self.bind(&gate_params, "gate_params", mb)?,
            idx_off: self.bind(&idx, "idx", mb)?,
            w_off: self.bind(&weights, "weights", mb)?,
            slot_off: self.bind(&slot_ids, "slot_ids", mb)?,
            st_off: self.bind(&state, "state", mb)?,
            cs_off: self.bind(&conv_state, "conv_state", mb)?,
            o_off: self.bind(&o, "o", mb)?,
        };
        let groups = u32_of("workgroups", p.heads * p.batch)?;
        let bufs = [x.buffer, conv_w.buffer, gate_params.buffer, idx.buffer, weights.buffer, slot_ids.buffer];
        let bufs =
            [&bufs[..], &[state.buffer, conv_state.buffer, o.buffer, status.wgpu_buffer("gated_delta_step")?]].concat();
        // The slot check and fault fill, then per memory of the token: its pick, the conv of
        // the head's q, k, v channels, two norms, and the delta rule over K for each column.
        let (k, v, topk) = (p.head_k as u64, p.head_v as u64, p.topk as u64);
        let per_memory =
            1 + topk + strided(2 * k + v, 64) * (1 + p.conv as u64) + 2 * (strided(k, 64) + tree(64)) + 4 * (1 + 2 * k);
        let budget = p.batch as u64 + strided(v, 64) + (topk + u64::from(p.shared)) * per_memory + 4;
        gpu.dispatch(enc, &format!("mom_step_{}", p.dtype), bytemuck::bytes_of(&u), &bufs, groups, budget)
    }
}

impl GatedNorm {
    /// Records one dispatch into `enc` (a workgroup per token and head), tensors as
    /// [`GatedNorm::run_cpu`]. A buffer too small for its tensor is `Error::Shape`; one the
    /// shader cannot bind is `Error::InvalidParams`.
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        o: WgpuTensor,
        gate: WgpuTensor,
        w: WgpuTensor,
        y: WgpuTensor,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let u = GatedNormUniform {
            rows: u32_of("rows", p.tokens * p.heads)?,
            head_v: p.head_v as u32,
            eps: p.eps,
            o_off: self.bind(&o, "o", mb)?,
            gate_off: self.bind(&gate, "gate", mb)?,
            w_off: self.bind(&w, "w", mb)?,
            y_off: self.bind(&y, "y", mb)?,
        };
        let bufs = [o.buffer, gate.buffer, w.buffer, y.buffer];
        let budget = 2 * strided(p.head_v as u64, 64) + tree(64);
        gpu.dispatch(enc, &format!("mom_gated_norm_{}", p.dtype), bytemuck::bytes_of(&u), &bufs, u.rows, budget)
    }
}

fn piece_uniform(p: &PieceParams) -> Result<PieceUniform> {
    Ok(PieceUniform {
        streams: u32_of("streams", p.streams)?,
        seqs: u32_of("seqs", p.seqs)?,
        rows: u32_of("rows", p.rows)?,
        heads: u32_of("heads", p.heads)?,
        head_k: p.head_k as u32,
        head_v: p.head_v as u32,
        slots: u32_of("slots", p.slots)?,
        rule: u32::from(p.rule == Rule::Linear),
        v_first: u32::from(p.v_first),
        scale: p.scale.unwrap_or(1.0 / (p.head_k as f32).sqrt()),
        ..PieceUniform::default()
    })
}

impl Transport {
    /// Records one dispatch into `enc` (a workgroup per 64 columns of `P`, head and stream),
    /// tensors as [`Transport::run_cpu`].
    /// A buffer too small for its tensor is `Error::Shape`; one the shader cannot bind (no
    /// STORAGE usage, past the binding limit) or a non-wgpu `status` is `Error::InvalidParams`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        qkv: WgpuTensor,
        gb: WgpuTensor,
        cu: WgpuTensor,
        slot_ids: WgpuTensor,
        trans: WgpuTensor,
        qt: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let u = PieceUniform {
            qkv_off: self.bind(&qkv, "qkv", mb)?,
            gb_off: self.bind(&gb, "gb", mb)?,
            cu_off: self.bind(&cu, "cu", mb)?,
            slot_off: self.bind(&slot_ids, "slot_ids", mb)?,
            tr_off: self.bind(&trans, "trans", mb)?,
            qt_off: self.bind(&qt, "qt", mb)?,
            ..piece_uniform(p)?
        };
        let groups = u32_of("workgroups", p.head_k.div_ceil(64) * p.heads * p.streams)?;
        let st = status.wgpu_buffer("transport")?;
        let bufs = [qkv.buffer, gb.buffer, cu.buffer, slot_ids.buffer, trans.buffer, qt.buffer, st];
        // The stream checks and the identity, then per row the q and k loads, two reductions
        // and the column's two K-long passes.
        let k = p.head_k as u64;
        let fixed = (p.streams + p.seqs) as u64 + k;
        let per_row = 1 + strided(k, 64) + 2 * tree(64) + 2 * k;
        let module = format!("mom_transport_{}", p.dtype);
        let fix = "use a smaller head_k";
        gpu.dispatch_windows(enc, &module, &bufs, groups, p.rows, (fixed, per_row), fix, |w0, w1| {
            bytemuck::bytes_of(&PieceUniform { w0, w1, ..u }).to_vec()
        })
    }
}

impl ApplyState {
    /// Records one dispatch into `enc` (a workgroup per 64 state columns, head and stream),
    /// tensors as [`ApplyState::run_cpu`].
    /// A buffer too small for its tensor is `Error::Shape`; one the shader cannot bind (no
    /// STORAGE usage, past the binding limit) or a non-wgpu `status` is `Error::InvalidParams`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        s_in: WgpuTensor,
        trans: WgpuTensor,
        qt: WgpuTensor,
        cu: WgpuTensor,
        slot_ids: WgpuTensor,
        state: WgpuTensor,
        o: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let u = PieceUniform {
            sin_off: self.bind(&s_in, "s_in", mb)?,
            tr_off: self.bind(&trans, "trans", mb)?,
            qt_off: self.bind(&qt, "qt", mb)?,
            cu_off: self.bind(&cu, "cu", mb)?,
            slot_off: self.bind(&slot_ids, "slot_ids", mb)?,
            st_off: self.bind(&state, "state", mb)?,
            o_off: self.bind(&o, "o", mb)?,
            ..piece_uniform(p)?
        };
        let groups = u32_of("workgroups", p.head_v.div_ceil(64) * p.heads * p.streams)?;
        let st = status.wgpu_buffer("apply_state")?;
        let bufs = [s_in.buffer, trans.buffer, qt.buffer, cu.buffer, slot_ids.buffer, state.buffer, o.buffer, st];
        // The stream checks and the K x K state update of the column, then a K-long dot per row.
        let k = p.head_k as u64;
        let fixed = (p.streams + p.seqs) as u64 + k * (1 + k);
        let module = format!("mom_apply_state_{}", p.dtype);
        let fix = "use a smaller head_k";
        gpu.dispatch_windows(enc, &module, &bufs, groups, p.rows, (fixed, 1 + k), fix, |w0, w1| {
            bytemuck::bytes_of(&PieceUniform { w0, w1, ..u }).to_vec()
        })
    }
}

/// The loop budget of a `mom_chunk.wgsl` invocation as (fixed, per tile): the stream checks,
/// then per tile of `min(chunk, 32)` rows the fault fill or the key norms, the tile's
/// triangular products and state reads in 16-wide slices of K, the column's triangular solve,
/// and the state update.
fn chunk_loops(streams: usize, seqs: usize, head_k: usize, chunk: usize) -> (u64, u64) {
    let (k, ch) = (head_k as u64, chunk.clamp(1, 32) as u64);
    let ksteps = strided(k, 16);
    let square = strided(ch * ch, 64);
    let slice = 1 + strided(ch * 16, 64) + square * (1 + 16) + 16 * (1 + ch);
    let update = 1 + strided(ch * 16, 64) + 16 * (1 + ch);
    let per_tile = ch + k + square + ch + 32 + ksteps * (slice + update) + ch * (2 + 2 * ch);
    ((streams + seqs) as u64, per_tile)
}
