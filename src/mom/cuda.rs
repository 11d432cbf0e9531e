//! CUDA launches for the MoM family (`kernels/mom.cu`).

use std::sync::Arc;

use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::{
    ApplyState, GatedDeltaChunk, GatedDeltaStep, GatedNorm, Permute, Route, Rule, ShortConv, Transport, Unpermute,
};
use crate::backend::cuda::{cuda_err, CudaBackend, CudaFloat};
use crate::backend::Status;
use crate::dtype::same_dtype;
use crate::error::{Error, Result};
use crate::plan::Plan;

fn i32_of(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::InvalidParams(format!("mom {what} = {v} exceeds i32")))
}

/// A 1-D grid of `n` blocks folded into (x, y) within CUDA's 65535 limit on y.
fn grid_of(n: usize) -> (u32, u32, u32) {
    let gx = n.clamp(1, 65535);
    (gx as u32, n.div_ceil(gx).max(1) as u32, 1)
}

impl Route {
    /// One launch, a thread per token.
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        logits: &impl DevicePtr<T>,
        idx: &mut impl DevicePtrMut<i32>,
        weights: &mut impl DevicePtrMut<f32>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&[("logits", logits.len()), ("idx", idx.len()), ("weights", weights.len())])?;
        let p = &self.params;
        let (stp, _s) = status.cuda_slice("mom")?.device_ptr_mut(stream);
        let (lp, _a) = logits.device_ptr(stream);
        let (ip, _b) = idx.device_ptr_mut(stream);
        let (wp, _c) = weights.device_ptr_mut(stream);
        let [t, m, k] = [p.tokens, p.memories, p.topk].map(|v| v as i32);
        let f = cuda.function("mom", &format!("mom_route_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&lp).arg(&ip).arg(&wp).arg(&stp).arg(&t).arg(&m).arg(&k);
        let cfg = LaunchConfig {
            grid_dim: (p.tokens.div_ceil(128) as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches mom_route_<dtype>; logits hold T * M, idx and weights T * k elements
        // (checked); threads past T return; M <= 64 fits the kernel's selection mask.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl Permute {
    /// Two launches: counts per stream, then offsets and placement.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        idx: &impl DevicePtr<i32>,
        cu_seqlens: &impl DevicePtr<i32>,
        order: &mut impl DevicePtrMut<i32>,
        inverse: &mut impl DevicePtrMut<i32>,
        cu_mem: &mut impl DevicePtrMut<i32>,
        counts: &mut impl DevicePtrMut<i32>,
        status: &mut Status,
    ) -> Result<()> {
        let lens = [("idx", idx.len()), ("cu_seqlens", cu_seqlens.len()), ("order", order.len())];
        self.check_lens(
            &[&lens[..], &[("inverse", inverse.len()), ("cu_mem", cu_mem.len()), ("counts", counts.len())]].concat(),
        )?;
        let p = &self.params;
        let (stp, _s) = status.cuda_slice("mom")?.device_ptr_mut(stream);
        let (ip, _a) = idx.device_ptr(stream);
        let (cp, _b) = cu_seqlens.device_ptr(stream);
        let (op, _c) = order.device_ptr_mut(stream);
        let (vp, _d) = inverse.device_ptr_mut(stream);
        let (mp, _e) = cu_mem.device_ptr_mut(stream);
        let (np, _f) = counts.device_ptr_mut(stream);
        let [t, s, m, k, sh] = [p.tokens, p.seqs, p.memories, p.topk, usize::from(p.shared)].map(|v| v as i32);
        let groups =
            u32::try_from(self.streams()).map_err(|_| Error::InvalidParams("permute: too many streams".into()))?;
        let cfg = LaunchConfig { grid_dim: (groups, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let f = cuda.function("mom", "mom_permute_count")?;
        let mut b = stream.launch_builder(&f);
        b.arg(&ip).arg(&cp).arg(&np).arg(&vp).arg(&stp).arg(&t).arg(&s).arg(&m).arg(&k).arg(&sh);
        // SAFETY: matches mom_permute_count; one block per stream (counts holds one each);
        // cu_seqlens (seqs + 1) is validated in every block before any token is read; pairs are
        // read below cu[seqs] * k = T * k (checked length of idx) and inverse holds T * (k + shared).
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        let f = cuda.function("mom", "mom_permute_place")?;
        let mut b = stream.launch_builder(&f);
        b.arg(&ip).arg(&cp).arg(&np).arg(&op).arg(&vp).arg(&mp).arg(&t).arg(&s).arg(&m).arg(&k).arg(&sh);
        // SAFETY: matches mom_permute_place; a stream with a nonzero count had valid cu_seqlens in
        // pass 1, and its rows base..base+count lie within T * (k + shared) because the counts
        // partition the valid pairs; cu_mem holds streams + 1 entries.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl Unpermute {
    /// One launch, a block per token.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        y: &impl DevicePtr<T>,
        inverse: &impl DevicePtr<i32>,
        weights: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<T>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let lens = [("y", y.len()), ("inverse", inverse.len()), ("weights", weights.len()), ("out", out.len())];
        self.check_lens(&lens)?;
        let p = &self.params;
        let (stp, _s) = status.cuda_slice("mom")?.device_ptr_mut(stream);
        let (yp, _a) = y.device_ptr(stream);
        let (ip, _b) = inverse.device_ptr(stream);
        let (wp, _c) = weights.device_ptr(stream);
        let (op, _d) = out.device_ptr_mut(stream);
        let [k, n, w, r] = [p.topk, p.topk + usize::from(p.shared), p.width, p.rows].map(|v| v as i32);
        let f = cuda.function("mom", &format!("mom_unpermute_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        let t = p.tokens as i32;
        b.arg(&yp).arg(&ip).arg(&wp).arg(&op).arg(&stp).arg(&t).arg(&k).arg(&n).arg(&w).arg(&r);
        let cfg = LaunchConfig { grid_dim: grid_of(p.tokens), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: matches mom_unpermute_<dtype>; blocks past T return;
        // rows of y are read only for 0 <= inverse < rows (checked in the kernel), and every
        // length was checked against the tensor list.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl ShortConv {
    /// One launch: a block per 128 channels of one stream.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        x: &impl DevicePtr<T>,
        order: &impl DevicePtr<i32>,
        cu_mem: &impl DevicePtr<i32>,
        slot_ids: &impl DevicePtr<i32>,
        conv_w: &impl DevicePtr<T>,
        gate_params: &impl DevicePtr<f32>,
        conv_state: &mut impl DevicePtrMut<f32>,
        qkv: &mut impl DevicePtrMut<T>,
        gb: &mut impl DevicePtrMut<f32>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let lens = [("x", x.len()), ("order", order.len()), ("cu_mem", cu_mem.len()), ("slot_ids", slot_ids.len())];
        let more = [("conv_w", conv_w.len()), ("gate_params", gate_params.len()), ("conv_state", conv_state.len())];
        self.check_lens(&[&lens[..], &more[..], &[("qkv", qkv.len()), ("gb", gb.len())]].concat())?;
        let (p, d) = (&self.params, &self.dims);
        let (stp, _s) = status.cuda_slice("mom")?.device_ptr_mut(stream);
        let (xp, _a) = x.device_ptr(stream);
        let (op, _b) = order.device_ptr(stream);
        let (cp, _c) = cu_mem.device_ptr(stream);
        let (sp, _d) = slot_ids.device_ptr(stream);
        let (wp, _e) = conv_w.device_ptr(stream);
        let (gp, _f) = gate_params.device_ptr(stream);
        let (csp, _g) = conv_state.device_ptr_mut(stream);
        let (qp, _h) = qkv.device_ptr_mut(stream);
        let (bp, _i) = gb.device_ptr_mut(stream);
        let ints =
            [p.tokens, p.seqs, d.mems(), p.heads, p.head_k, p.head_v, p.conv, p.slots, self.rows(), d.proj_width()];
        let [t, s, mp, h, k, v, w, slots, rows, pw] = ints.map(|v| v as i32);
        let streams = self.streams();
        if streams > 65535 {
            return Err(Error::InvalidParams(format!("short_conv: {streams} streams exceed CUDA's 65535 grid rows")));
        }
        let f = cuda.function("mom", &format!("mom_short_conv_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&xp).arg(&op).arg(&cp).arg(&sp).arg(&wp).arg(&gp).arg(&csp).arg(&qp).arg(&bp).arg(&stp);
        b.arg(&t).arg(&s).arg(&mp).arg(&h).arg(&k).arg(&v).arg(&w).arg(&slots).arg(&rows).arg(&pw);
        let cfg = LaunchConfig {
            grid_dim: ((d.channels() + 2 * p.heads).div_ceil(128) as u32, streams as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches mom_short_conv_<dtype>; cu_mem is validated (monotonic, within rows)
        // in every block before rows are touched, slots are checked against the pool and for
        // repeats, token ids are range-checked before x is read, W <= 8 fits the window registers;
        // every length was checked against the tensor list.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl GatedDeltaChunk {
    /// One launch: a block per (64 state columns, head, stream).
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        qkv: &impl DevicePtr<T>,
        gb: &impl DevicePtr<f32>,
        cu: &impl DevicePtr<i32>,
        slot_ids: &impl DevicePtr<i32>,
        state: &mut impl DevicePtrMut<f32>,
        o: &mut impl DevicePtrMut<T>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let lens = [("qkv", qkv.len()), ("gb", gb.len()), ("cu", cu.len()), ("slot_ids", slot_ids.len())];
        self.check_lens(&[&lens[..], &[("state", state.len()), ("o", o.len())]].concat())?;
        let p = &self.params;
        let (stp, _s) = status.cuda_slice("mom")?.device_ptr_mut(stream);
        let (qp, _a) = qkv.device_ptr(stream);
        let (gp, _b) = gb.device_ptr(stream);
        let (cp, _c) = cu.device_ptr(stream);
        let (sp, _d) = slot_ids.device_ptr(stream);
        let (tp, _e) = state.device_ptr_mut(stream);
        let (op, _f) = o.device_ptr_mut(stream);
        let [seqs, rows, h, k, v, slots, chunk] =
            [p.seqs, p.rows, p.heads, p.head_k, p.head_v, p.slots, p.chunk].map(|x| x as i32);
        let (rule, vf, scale) = (i32::from(p.rule == Rule::Linear), i32::from(p.v_first), self.scale());
        if p.streams > 65535 || p.heads > 65535 {
            return Err(Error::InvalidParams(format!("gated_delta_chunk: {} streams exceed CUDA's grid", p.streams)));
        }
        let f = cuda.function("mom", &format!("mom_chunk_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&qp).arg(&gp).arg(&cp).arg(&sp).arg(&tp).arg(&op).arg(&stp);
        b.arg(&seqs).arg(&rows).arg(&h).arg(&k).arg(&v).arg(&slots).arg(&chunk).arg(&rule).arg(&vf).arg(&scale);
        let cfg = LaunchConfig {
            grid_dim: (p.head_v.div_ceil(64) as u32, p.heads as u32, p.streams as u32),
            block_dim: (64, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches mom_chunk_<dtype>; cu is validated in every block (monotonic, within
        // rows) so streams are disjoint row ranges, slots are range- and repeat-checked so no
        // two blocks share a pool entry's column, chunk <= 64 fits the shared tiles, K and V are
        // multiples of 8 up to 256 (the 16-wide K passes stay inside a row); lengths checked.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl GatedDeltaStep {
    /// One launch: a block per (head, sequence).
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        x: &impl DevicePtr<T>,
        conv_w: &impl DevicePtr<T>,
        gate_params: &impl DevicePtr<f32>,
        idx: &impl DevicePtr<i32>,
        weights: &impl DevicePtr<f32>,
        slot_ids: &impl DevicePtr<i32>,
        state: &mut impl DevicePtrMut<f32>,
        conv_state: &mut impl DevicePtrMut<f32>,
        o: &mut impl DevicePtrMut<T>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let lens = [("x", x.len()), ("conv_w", conv_w.len()), ("gate_params", gate_params.len()), ("idx", idx.len())];
        let more = [("weights", weights.len()), ("slot_ids", slot_ids.len()), ("state", state.len())];
        self.check_lens(&[&lens[..], &more[..], &[("conv_state", conv_state.len()), ("o", o.len())]].concat())?;
        let (p, d) = (&self.params, &self.dims);
        let (stp, _s) = status.cuda_slice("mom")?.device_ptr_mut(stream);
        let (xp, _a) = x.device_ptr(stream);
        let (wp, _b) = conv_w.device_ptr(stream);
        let (gp, _c) = gate_params.device_ptr(stream);
        let (ip, _d) = idx.device_ptr(stream);
        let (rp, _e) = weights.device_ptr(stream);
        let (sp, _f) = slot_ids.device_ptr(stream);
        let (tp, _g) = state.device_ptr_mut(stream);
        let (cp, _h) = conv_state.device_ptr_mut(stream);
        let (op, _i) = o.device_ptr_mut(stream);
        let ints = [p.memories, p.topk, usize::from(p.shared), p.heads, p.head_k, p.head_v, p.conv, p.slots];
        let [m, k, sh, h, kd, vd, w, slots] = ints.map(|v| v as i32);
        let (rule, vf, scale, pw) =
            (i32::from(p.rule == Rule::Linear), i32::from(p.v_first), self.scale(), i32_of("row", d.proj_width())?);
        if p.batch > 65535 || p.heads > 65535 {
            return Err(Error::InvalidParams(format!("gated_delta_step: batch {} exceeds CUDA's grid", p.batch)));
        }
        let f = cuda.function("mom", &format!("mom_step_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&xp).arg(&wp).arg(&gp).arg(&ip).arg(&rp).arg(&sp).arg(&tp).arg(&cp).arg(&op).arg(&stp);
        b.arg(&m).arg(&k).arg(&sh).arg(&h).arg(&kd).arg(&vd).arg(&w).arg(&slots).arg(&rule).arg(&vf).arg(&scale);
        b.arg(&pw);
        let cfg =
            LaunchConfig { grid_dim: (p.heads as u32, p.batch as u32, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: matches mom_step_<dtype>; slots are range- and repeat-checked before any pool
        // access, choices outside [0, M) or repeated are skipped, K, V <= 256 fit the shared
        // q/k/v rows and V <= 2 * 128 the two accumulators, W <= 8; lengths checked.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl GatedNorm {
    /// One launch, a block per (token, head).
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        o: &impl DevicePtr<T>,
        gate: &impl DevicePtr<T>,
        w: &impl DevicePtr<T>,
        y: &mut impl DevicePtrMut<T>,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&[("o", o.len()), ("gate", gate.len()), ("w", w.len()), ("y", y.len())])?;
        let p = &self.params;
        let rows = p.tokens * p.heads;
        let grid = grid_of(rows);
        let (op, _a) = o.device_ptr(stream);
        let (gp, _b) = gate.device_ptr(stream);
        let (wp, _c) = w.device_ptr(stream);
        let (yp, _d) = y.device_ptr_mut(stream);
        let (v, nrows) = (p.head_v as i32, rows as i32);
        let f = cuda.function("mom", &format!("mom_gated_norm_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&op).arg(&gp).arg(&wp).arg(&yp).arg(&nrows).arg(&v).arg(&p.eps);
        let cfg = LaunchConfig { grid_dim: grid, block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: matches mom_gated_norm_<dtype>; blocks past tokens * heads rows return, and every length was checked against the tensor list.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl Transport {
    /// One launch: a block per (64 columns of P, head, stream).
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        qkv: &impl DevicePtr<T>,
        gb: &impl DevicePtr<f32>,
        cu: &impl DevicePtr<i32>,
        slot_ids: &impl DevicePtr<i32>,
        trans: &mut impl DevicePtrMut<f32>,
        qt: &mut impl DevicePtrMut<T>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let lens = [("qkv", qkv.len()), ("gb", gb.len()), ("cu", cu.len()), ("slot_ids", slot_ids.len())];
        self.check_lens(&[&lens[..], &[("trans", trans.len()), ("qt", qt.len())]].concat())?;
        let p = &self.params;
        let (stp, _s) = status.cuda_slice("mom")?.device_ptr_mut(stream);
        let (qp, _a) = qkv.device_ptr(stream);
        let (gp, _b) = gb.device_ptr(stream);
        let (cp, _c) = cu.device_ptr(stream);
        let (sp, _d) = slot_ids.device_ptr(stream);
        let (tp, _e) = trans.device_ptr_mut(stream);
        let (op, _f) = qt.device_ptr_mut(stream);
        let [seqs, rows, h, k, v, slots] = [p.seqs, p.rows, p.heads, p.head_k, p.head_v, p.slots].map(|x| x as i32);
        let rule = i32::from(p.rule == Rule::Linear);
        let scale = p.scale.unwrap_or(1.0 / (p.head_k as f32).sqrt());
        if p.streams > 65535 || p.heads > 65535 {
            return Err(Error::InvalidParams(format!("transport: {} streams exceed CUDA's grid", p.streams)));
        }
        let f = cuda.function("mom", &format!("mom_transport_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&qp).arg(&gp).arg(&cp).arg(&sp).arg(&tp).arg(&op).arg(&stp);
        b.arg(&seqs).arg(&rows).arg(&h).arg(&k).arg(&v).arg(&slots).arg(&rule).arg(&scale);
        let cfg = LaunchConfig {
            grid_dim: (p.head_k.div_ceil(64) as u32, p.heads as u32, p.streams as u32),
            block_dim: (64, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches mom_transport_<dtype>; cu is validated in every block and slots are
        // range- and repeat-checked, so each block owns columns of one entry and disjoint qt
        // rows; K <= 256 fits the shared q and k rows; lengths checked.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl ApplyState {
    /// One launch: a block per (64 state columns, head, stream).
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        s_in: &impl DevicePtr<f32>,
        trans: &impl DevicePtr<f32>,
        qt: &impl DevicePtr<T>,
        cu: &impl DevicePtr<i32>,
        slot_ids: &impl DevicePtr<i32>,
        state: &mut impl DevicePtrMut<f32>,
        o: &mut impl DevicePtrMut<T>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let lens = [("s_in", s_in.len()), ("trans", trans.len()), ("qt", qt.len()), ("cu", cu.len())];
        let more = [("slot_ids", slot_ids.len()), ("state", state.len()), ("o", o.len())];
        self.check_lens(&[&lens[..], &more[..]].concat())?;
        let p = &self.params;
        let (stp, _s) = status.cuda_slice("mom")?.device_ptr_mut(stream);
        let (ip, _a) = s_in.device_ptr(stream);
        let (tp, _b) = trans.device_ptr(stream);
        let (qp, _c) = qt.device_ptr(stream);
        let (cp, _d) = cu.device_ptr(stream);
        let (sp, _e) = slot_ids.device_ptr(stream);
        let (xp, _f) = state.device_ptr_mut(stream);
        let (op, _g) = o.device_ptr_mut(stream);
        let [seqs, rows, h, k, v, slots] = [p.seqs, p.rows, p.heads, p.head_k, p.head_v, p.slots].map(|x| x as i32);
        let vf = i32::from(p.v_first);
        if p.streams > 65535 || p.heads > 65535 {
            return Err(Error::InvalidParams(format!("apply_state: {} streams exceed CUDA's grid", p.streams)));
        }
        let f = cuda.function("mom", &format!("mom_apply_state_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&ip).arg(&tp).arg(&qp).arg(&cp).arg(&sp).arg(&xp).arg(&op).arg(&stp);
        b.arg(&seqs).arg(&rows).arg(&h).arg(&k).arg(&v).arg(&slots).arg(&vf);
        let cfg = LaunchConfig {
            grid_dim: (p.head_v.div_ceil(64) as u32, p.heads as u32, p.streams as u32),
            block_dim: (64, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches mom_apply_state_<dtype>; cu is validated in every block and slots are
        // range- and repeat-checked, so each block owns columns of one entry and of its own
        // stream's o rows; lengths checked.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}
