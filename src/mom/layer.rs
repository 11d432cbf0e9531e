//! A whole MoM layer's prefill between its projections: a plan over the family's kernels whose
//! typed runs call the children's runs on the caller's buffers, on every backend.

use serde::{Deserialize, Serialize};

use super::{
    check_offsets, check_slot_ids, default_chunk, default_conv, default_eps, default_true, Dims, GatedDeltaChunk,
    GatedDeltaChunkParams, GatedDeltaStep, GatedDeltaStepParams, GatedNorm, GatedNormParams, Permute, PermuteParams,
    Route, RouteParams, Rule, ShortConv, ShortConvParams, Unpermute, UnpermuteParams,
};
use crate::backend::Status;
use crate::dtype::{float_dtype, same_dtype, DType, Float};
use crate::error::Result;
use crate::layout::dim;
use crate::plan::{Plan, TensorSpec};

/// Prefill of `seqs` packed sequences (`cu_seqlens [B + 1]` over `tokens`) through a MoM layer,
/// each sequence continuing from and ending in its pool slot: `route` (router logits
/// `[T, M]`) -> `permute` -> `short_conv` (fused projection rows `x [T, P]`) ->
/// `gated_delta_chunk` -> `unpermute` -> `gated_norm` (with the output gate `gate [T, H V]`,
/// `norm_w [V]`) into `y [T, H V]`, ready for the caller's `W_o`. [`MomLayerStep`] is the
/// same layer's decode, on the same pools.
/// Everything after `y` in [`Plan::tensors`] is scratch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MomLayerParams {
    /// Tokens `T` over all sequences, at least 1.
    pub tokens: usize,
    /// Sequences `B` (`cu_seqlens` has `B + 1` entries, `slot_ids` `B`), at least 1.
    pub seqs: usize,
    /// Routed memories `M`, in `[1, 64]` (4 in the released models).
    pub memories: usize,
    /// Memories per token `k`, in `[1, M]` (2 in the released models).
    pub topk: usize,
    /// Whether the shared memory (number `M`, every token, unweighted) runs; default true.
    #[serde(default = "default_true")]
    pub shared: bool,
    /// Heads `H`, at least 1.
    pub heads: usize,
    /// Key head size `K`: a multiple of 8 up to `MAX_HEAD`.
    pub head_k: usize,
    /// Value head size `V`: a multiple of 8 up to `MAX_HEAD`.
    pub head_v: usize,
    /// Short-convolution width `W`, in `[1, MAX_CONV]`; default 4.
    #[serde(default = "default_conv")]
    pub conv: usize,
    /// Slots per memory; both pools hold `M' * slots` entries. At least 1.
    pub slots: usize,
    /// Storage dtype of the activations and weights (f32, f16 or bf16); pools and gates are f32.
    pub dtype: DType,
    /// Rows per chunk of the gated delta rule: 16, 32 or 64; default 64.
    #[serde(default = "default_chunk")]
    pub chunk: usize,
    /// The output norm's epsilon; default 1e-6.
    #[serde(default = "default_eps")]
    pub eps: f32,
    /// The pools' state layout per head: `[K, V]` (default) or `[V, K]`, fla's
    /// `state_v_first`, so a cache imported from fla needs no transpose.
    #[serde(default)]
    pub v_first: bool,
}

/// A MoM layer's prefill as a chain of child plans (see [`MomLayerParams`]); the children run
/// with the gated delta rule, the layer's state layout and the default scale.
#[derive(Debug, Clone)]
pub struct MomLayer {
    /// The parameters, as checked by [`MomLayer::new`].
    pub params: MomLayerParams,
    /// The layer geometry the parameters describe.
    pub dims: Dims,
    /// The router over `logits`.
    pub route: Route,
    /// The grouping of (token, choice) pairs into streams.
    pub permute: Permute,
    /// The gather and short convolution of each stream.
    pub conv: ShortConv,
    /// The chunked gated delta rule over the streams.
    pub chunk: GatedDeltaChunk,
    /// The weighted sum back to token order.
    pub unpermute: Unpermute,
    /// The gated output norm.
    pub norm: GatedNorm,
}

impl MomLayer {
    /// Builds the children from the parameters; their `new` errors pass through
    /// (`Error::DType` for a non-float dtype, `Error::InvalidParams` otherwise).
    pub fn new(p: MomLayerParams) -> Result<Self> {
        float_dtype(p.dtype)?;
        dim("mom_layer tokens", p.tokens)?;
        let dims = Dims::new(p.memories, p.topk, p.shared, p.heads, p.head_k, p.head_v, p.conv)?;
        let (t, b, m, k, sh, dt) = (p.tokens, p.seqs, p.memories, p.topk, p.shared, p.dtype);
        let route = Route::new(RouteParams { tokens: t, memories: m, topk: k, dtype: dt })?;
        let permute = Permute::new(PermuteParams { tokens: t, seqs: b, memories: m, topk: k, shared: sh })?;
        let conv = ShortConv::new(ShortConvParams {
            tokens: t,
            seqs: b,
            memories: m,
            topk: k,
            shared: sh,
            heads: p.heads,
            head_k: p.head_k,
            head_v: p.head_v,
            conv: p.conv,
            slots: p.slots,
            dtype: dt,
        })?;
        let chunk = GatedDeltaChunk::new(GatedDeltaChunkParams {
            streams: permute.streams(),
            seqs: b,
            rows: permute.rows(),
            heads: p.heads,
            head_k: p.head_k,
            head_v: p.head_v,
            slots: p.slots,
            dtype: dt,
            chunk: p.chunk,
            rule: Rule::Delta,
            v_first: p.v_first,
            scale: None,
        })?;
        let unpermute = Unpermute::new(UnpermuteParams {
            tokens: t,
            topk: k,
            shared: sh,
            width: dims.hv(),
            rows: permute.rows(),
            dtype: dt,
        })?;
        let norm =
            GatedNorm::new(GatedNormParams { tokens: t, heads: p.heads, head_v: p.head_v, dtype: dt, eps: p.eps })?;
        Ok(Self { params: p, dims, route, permute, conv, chunk, unpermute, norm })
    }

    /// Host-side check of the caller's indices: `cu_seqlens` from 0, non-decreasing, ending at
    /// `T`; slot ids in `[0, slots)` and distinct. `Error::InvalidInput` names the first bad one.
    pub fn validate(&self, cu_seqlens: &[i32], slot_ids: &[i32]) -> Result<()> {
        self.check_len("cu_seqlens", cu_seqlens.len())?;
        self.check_len("slot_ids", slot_ids.len())?;
        check_offsets("cu_seqlens", cu_seqlens, self.params.seqs, self.params.tokens, true)?;
        check_slot_ids(slot_ids, self.params.seqs, self.params.slots)
    }

    /// Tensors in [`Plan::tensors`] order; everything after `y` is scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        logits: &[T],
        x: &[T],
        gate: &[T],
        conv_w: &[T],
        gate_params: &[f32],
        norm_w: &[T],
        cu_seqlens: &[i32],
        slot_ids: &[i32],
        state: &mut [f32],
        conv_state: &mut [f32],
        y: &mut [T],
        idx: &mut [i32],
        weights: &mut [f32],
        order: &mut [i32],
        inverse: &mut [i32],
        cu_mem: &mut [i32],
        counts: &mut [i32],
        qkv: &mut [T],
        gb: &mut [f32],
        o_rows: &mut [T],
        o_mix: &mut [T],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&lens![
            logits,
            x,
            gate,
            conv_w,
            gate_params,
            norm_w,
            cu_seqlens,
            slot_ids,
            state,
            conv_state,
            y,
            idx,
            weights,
            order,
            inverse,
            cu_mem,
            counts,
            qkv,
            gb,
            o_rows,
            o_mix
        ])?;
        self.route.run_cpu(logits, idx, weights, status)?;
        self.permute.run_cpu(idx, cu_seqlens, order, inverse, cu_mem, counts, status)?;
        self.conv.run_cpu(x, order, cu_mem, slot_ids, conv_w, gate_params, conv_state, qkv, gb, status)?;
        self.chunk.run_cpu(qkv, gb, cu_mem, slot_ids, state, o_rows, status)?;
        self.unpermute.run_cpu(o_rows, inverse, weights, o_mix, status)?;
        self.norm.run_cpu(o_mix, gate, norm_w, y)
    }
}

impl Plan for MomLayer {
    type Params = MomLayerParams;
    const NAME: &'static str = "mom_layer";
    fn build(p: MomLayerParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &MomLayerParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let (p, d, dt) = (&self.params, &self.dims, self.params.dtype);
        let (rows, groups) = (self.permute.rows(), self.permute.streams());
        let entries = d.mems() * p.slots;
        vec![
            TensorSpec::input("logits", dt, p.tokens * p.memories),
            TensorSpec::input("x", dt, p.tokens * d.proj_width()),
            TensorSpec::input("gate", dt, p.tokens * d.hv()),
            TensorSpec::input("conv_w", dt, d.channels() * p.conv),
            TensorSpec::input("gate_params", DType::F32, 2 * p.heads),
            TensorSpec::input("norm_w", dt, p.head_v),
            TensorSpec::input("cu_seqlens", DType::I32, p.seqs + 1),
            TensorSpec::input("slot_ids", DType::I32, p.seqs),
            TensorSpec::in_out("state", DType::F32, entries * p.heads * p.head_k * p.head_v),
            TensorSpec::in_out("conv_state", DType::F32, entries * d.channels() * p.conv),
            TensorSpec::output("y", dt, p.tokens * d.hv()),
            TensorSpec::scratch("idx", DType::I32, p.tokens * p.topk),
            TensorSpec::scratch("weights", DType::F32, p.tokens * p.topk),
            TensorSpec::scratch("order", DType::I32, rows),
            TensorSpec::scratch("inverse", DType::I32, rows),
            TensorSpec::scratch("cu_mem", DType::I32, groups + 1),
            TensorSpec::scratch("counts", DType::I32, groups),
            TensorSpec::scratch("qkv", dt, rows * d.channels()),
            TensorSpec::scratch("gb", DType::F32, rows * 2 * p.heads),
            TensorSpec::scratch("o_rows", dt, rows * d.hv()),
            TensorSpec::scratch("o_mix", dt, p.tokens * d.hv()),
        ]
    }
}

/// One decode token per sequence through a MoM layer: `route` -> [`GatedDeltaStep`] (conv,
/// the routed and shared memories and their mix in one launch) -> `gated_norm`, into
/// `y [B, H V]`; the pools are [`MomLayer`]'s. Everything after `y` in [`Plan::tensors`] is
/// scratch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MomLayerStepParams {
    /// Sequences `B`, one token each, at least 1.
    pub batch: usize,
    /// Routed memories `M`, in `[1, 64]`.
    pub memories: usize,
    /// Memories per token `k`, in `[1, M]`.
    pub topk: usize,
    /// Whether the shared memory (number `M`, unweighted) runs; default true.
    #[serde(default = "default_true")]
    pub shared: bool,
    /// Heads `H`, at least 1.
    pub heads: usize,
    /// Key head size `K`: a multiple of 8 up to `MAX_HEAD`.
    pub head_k: usize,
    /// Value head size `V`: a multiple of 8 up to `MAX_HEAD`.
    pub head_v: usize,
    /// Short-convolution width `W`, in `[1, MAX_CONV]`; default 4.
    #[serde(default = "default_conv")]
    pub conv: usize,
    /// Slots per memory; both pools hold `M' * slots` entries. At least 1.
    pub slots: usize,
    /// Storage dtype of the activations and weights (f32, f16 or bf16); pools and gates are f32.
    pub dtype: DType,
    /// The output norm's epsilon; default 1e-6.
    #[serde(default = "default_eps")]
    pub eps: f32,
    /// The pools' state layout per head: `[K, V]` (default) or `[V, K]`, fla's
    /// `state_v_first`, so a cache imported from fla needs no transpose.
    #[serde(default)]
    pub v_first: bool,
}

/// A MoM layer's decode as a chain of child plans (see [`MomLayerStepParams`]); the step runs
/// the gated delta rule on `[K, V]` states with the default scale.
#[derive(Debug, Clone)]
pub struct MomLayerStep {
    /// The parameters, as checked by [`MomLayerStep::new`].
    pub params: MomLayerStepParams,
    /// The layer geometry the parameters describe.
    pub dims: Dims,
    /// The router over `logits`.
    pub route: Route,
    /// The fused decode step of the routed and shared memories.
    pub step: GatedDeltaStep,
    /// The gated output norm.
    pub norm: GatedNorm,
}

impl MomLayerStep {
    /// Builds the children from the parameters; their `new` errors pass through
    /// (`Error::DType` for a non-float dtype, `Error::InvalidParams` otherwise).
    pub fn new(p: MomLayerStepParams) -> Result<Self> {
        dim("mom_layer_step batch", p.batch)?;
        let route = Route::new(RouteParams { tokens: p.batch, memories: p.memories, topk: p.topk, dtype: p.dtype })?;
        let step = GatedDeltaStep::new(GatedDeltaStepParams {
            batch: p.batch,
            memories: p.memories,
            topk: p.topk,
            shared: p.shared,
            heads: p.heads,
            head_k: p.head_k,
            head_v: p.head_v,
            conv: p.conv,
            slots: p.slots,
            dtype: p.dtype,
            rule: Rule::Delta,
            v_first: p.v_first,
            scale: None,
        })?;
        let norm = GatedNorm::new(GatedNormParams {
            tokens: p.batch,
            heads: p.heads,
            head_v: p.head_v,
            dtype: p.dtype,
            eps: p.eps,
        })?;
        Ok(Self { dims: step.dims, params: p, route, step, norm })
    }

    /// Host-side check of `slot_ids`: each in `[0, slots)` and no two equal.
    /// `Error::InvalidInput` names the first bad one (the router's `idx` needs no check).
    pub fn validate(&self, slot_ids: &[i32]) -> Result<()> {
        self.check_len("slot_ids", slot_ids.len())?;
        check_slot_ids(slot_ids, self.params.batch, self.params.slots)
    }

    /// Tensors in [`Plan::tensors`] order; `idx`, `weights`, `o_mix` are scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        logits: &[T],
        x: &[T],
        gate: &[T],
        conv_w: &[T],
        gate_params: &[f32],
        norm_w: &[T],
        slot_ids: &[i32],
        state: &mut [f32],
        conv_state: &mut [f32],
        y: &mut [T],
        idx: &mut [i32],
        weights: &mut [f32],
        o_mix: &mut [T],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&lens![
            logits,
            x,
            gate,
            conv_w,
            gate_params,
            norm_w,
            slot_ids,
            state,
            conv_state,
            y,
            idx,
            weights,
            o_mix
        ])?;
        self.route.run_cpu(logits, idx, weights, status)?;
        self.step.run_cpu(x, conv_w, gate_params, idx, weights, slot_ids, state, conv_state, o_mix, status)?;
        self.norm.run_cpu(o_mix, gate, norm_w, y)
    }
}

impl Plan for MomLayerStep {
    type Params = MomLayerStepParams;
    const NAME: &'static str = "mom_layer_step";
    fn build(p: MomLayerStepParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &MomLayerStepParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let (p, d, dt) = (&self.params, &self.dims, self.params.dtype);
        let entries = d.mems() * p.slots;
        vec![
            TensorSpec::input("logits", dt, p.batch * p.memories),
            TensorSpec::input("x", dt, p.batch * d.proj_width()),
            TensorSpec::input("gate", dt, p.batch * d.hv()),
            TensorSpec::input("conv_w", dt, d.channels() * p.conv),
            TensorSpec::input("gate_params", DType::F32, 2 * p.heads),
            TensorSpec::input("norm_w", dt, p.head_v),
            TensorSpec::input("slot_ids", DType::I32, p.batch),
            TensorSpec::in_out("state", DType::F32, entries * p.heads * p.head_k * p.head_v),
            TensorSpec::in_out("conv_state", DType::F32, entries * d.channels() * p.conv),
            TensorSpec::output("y", dt, p.batch * d.hv()),
            TensorSpec::scratch("idx", DType::I32, p.batch * p.topk),
            TensorSpec::scratch("weights", DType::F32, p.batch * p.topk),
            TensorSpec::scratch("o_mix", dt, p.batch * d.hv()),
        ]
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::Arc;

    use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut};

    use super::{MomLayer, MomLayerStep};
    use crate::backend::cuda::{CudaBackend, CudaFloat};
    use crate::backend::Status;
    use crate::dtype::same_dtype;
    use crate::error::Result;
    use crate::plan::Plan;

    impl MomLayer {
        /// Six launch sequences on `stream`; nothing is read back.
        #[allow(clippy::too_many_arguments)]
        pub fn run_cuda<T: CudaFloat>(
            &self,
            cuda: &CudaBackend,
            stream: &Arc<CudaStream>,
            logits: &impl DevicePtr<T>,
            x: &impl DevicePtr<T>,
            gate: &impl DevicePtr<T>,
            conv_w: &impl DevicePtr<T>,
            gate_params: &impl DevicePtr<f32>,
            norm_w: &impl DevicePtr<T>,
            cu_seqlens: &impl DevicePtr<i32>,
            slot_ids: &impl DevicePtr<i32>,
            state: &mut impl DevicePtrMut<f32>,
            conv_state: &mut impl DevicePtrMut<f32>,
            y: &mut impl DevicePtrMut<T>,
            idx: &mut (impl DevicePtr<i32> + DevicePtrMut<i32>),
            weights: &mut (impl DevicePtr<f32> + DevicePtrMut<f32>),
            order: &mut (impl DevicePtr<i32> + DevicePtrMut<i32>),
            inverse: &mut (impl DevicePtr<i32> + DevicePtrMut<i32>),
            cu_mem: &mut (impl DevicePtr<i32> + DevicePtrMut<i32>),
            counts: &mut (impl DevicePtr<i32> + DevicePtrMut<i32>),
            qkv: &mut (impl DevicePtr<T> + DevicePtrMut<T>),
            gb: &mut (impl DevicePtr<f32> + DevicePtrMut<f32>),
            o_rows: &mut (impl DevicePtr<T> + DevicePtrMut<T>),
            o_mix: &mut (impl DevicePtr<T> + DevicePtrMut<T>),
            status: &mut Status,
        ) -> Result<()> {
            same_dtype::<T>(self.params.dtype)?;
            self.check_lens(&lens![
                logits,
                x,
                gate,
                conv_w,
                gate_params,
                norm_w,
                cu_seqlens,
                slot_ids,
                state,
                conv_state,
                y,
                idx,
                weights,
                order,
                inverse,
                cu_mem,
                counts,
                qkv,
                gb,
                o_rows,
                o_mix
            ])?;
            self.route.run_cuda(cuda, stream, logits, idx, weights, status)?;
            self.permute.run_cuda(cuda, stream, &*idx, cu_seqlens, order, inverse, cu_mem, counts, status)?;
            let (order, cu_mem) = (&*order, &*cu_mem);
            let c = &self.conv;
            c.run_cuda(cuda, stream, x, order, cu_mem, slot_ids, conv_w, gate_params, conv_state, qkv, gb, status)?;
            self.chunk.run_cuda(cuda, stream, &*qkv, &*gb, cu_mem, slot_ids, state, o_rows, status)?;
            self.unpermute.run_cuda(cuda, stream, &*o_rows, &*inverse, &*weights, o_mix, status)?;
            self.norm.run_cuda(cuda, stream, &*o_mix, gate, norm_w, y)
        }
    }

    impl MomLayerStep {
        /// Three launches on `stream`; nothing is read back.
        #[allow(clippy::too_many_arguments)]
        pub fn run_cuda<T: CudaFloat>(
            &self,
            cuda: &CudaBackend,
            stream: &Arc<CudaStream>,
            logits: &impl DevicePtr<T>,
            x: &impl DevicePtr<T>,
            gate: &impl DevicePtr<T>,
            conv_w: &impl DevicePtr<T>,
            gate_params: &impl DevicePtr<f32>,
            norm_w: &impl DevicePtr<T>,
            slot_ids: &impl DevicePtr<i32>,
            state: &mut impl DevicePtrMut<f32>,
            conv_state: &mut impl DevicePtrMut<f32>,
            y: &mut impl DevicePtrMut<T>,
            idx: &mut (impl DevicePtr<i32> + DevicePtrMut<i32>),
            weights: &mut (impl DevicePtr<f32> + DevicePtrMut<f32>),
            o_mix: &mut (impl DevicePtr<T> + DevicePtrMut<T>),
            status: &mut Status,
        ) -> Result<()> {
            same_dtype::<T>(self.params.dtype)?;
            self.check_lens(&lens![
                logits,
                x,
                gate,
                conv_w,
                gate_params,
                norm_w,
                slot_ids,
                state,
                conv_state,
                y,
                idx,
                weights,
                o_mix
            ])?;
            self.route.run_cuda(cuda, stream, logits, idx, weights, status)?;
            let (i, w) = (&*idx, &*weights);
            self.step.run_cuda(
                cuda,
                stream,
                x,
                conv_w,
                gate_params,
                i,
                w,
                slot_ids,
                state,
                conv_state,
                o_mix,
                status,
            )?;
            self.norm.run_cuda(cuda, stream, &*o_mix, gate, norm_w, y)
        }
    }
}

#[cfg(feature = "wgpu")]
mod gpu {
    use super::{MomLayer, MomLayerStep};
    use crate::backend::wgpu::{WgpuBackend, WgpuTensor};
    use crate::backend::Status;
    use crate::error::Result;
    use crate::plan::Plan;

    impl MomLayer {
        /// Records every child's dispatches into `enc`; the tensors after `y` are scratch.
        #[allow(clippy::too_many_arguments)]
        pub fn run_wgpu(
            &self,
            gpu: &WgpuBackend,
            enc: &mut wgpu::CommandEncoder,
            logits: WgpuTensor,
            x: WgpuTensor,
            gate: WgpuTensor,
            conv_w: WgpuTensor,
            gate_params: WgpuTensor,
            norm_w: WgpuTensor,
            cu_seqlens: WgpuTensor,
            slot_ids: WgpuTensor,
            state: WgpuTensor,
            conv_state: WgpuTensor,
            y: WgpuTensor,
            idx: WgpuTensor,
            weights: WgpuTensor,
            order: WgpuTensor,
            inverse: WgpuTensor,
            cu_mem: WgpuTensor,
            counts: WgpuTensor,
            qkv: WgpuTensor,
            gb: WgpuTensor,
            o_rows: WgpuTensor,
            o_mix: WgpuTensor,
            status: &Status,
        ) -> Result<()> {
            self.bind_all(
                gpu,
                &bindings![
                    logits,
                    x,
                    gate,
                    conv_w,
                    gate_params,
                    norm_w,
                    cu_seqlens,
                    slot_ids,
                    state,
                    conv_state,
                    y,
                    idx,
                    weights,
                    order,
                    inverse,
                    cu_mem,
                    counts,
                    qkv,
                    gb,
                    o_rows,
                    o_mix
                ],
            )?;
            self.route.run_wgpu(gpu, enc, logits, idx, weights, status)?;
            self.permute.run_wgpu(gpu, enc, idx, cu_seqlens, order, inverse, cu_mem, counts, status)?;
            let c = &self.conv;
            c.run_wgpu(gpu, enc, x, order, cu_mem, slot_ids, conv_w, gate_params, conv_state, qkv, gb, status)?;
            self.chunk.run_wgpu(gpu, enc, qkv, gb, cu_mem, slot_ids, state, o_rows, status)?;
            self.unpermute.run_wgpu(gpu, enc, o_rows, inverse, weights, o_mix, status)?;
            self.norm.run_wgpu(gpu, enc, o_mix, gate, norm_w, y)
        }
    }

    impl MomLayerStep {
        /// Records the three dispatches into `enc`; `idx`, `weights`, `o_mix` are scratch.
        #[allow(clippy::too_many_arguments)]
        pub fn run_wgpu(
            &self,
            gpu: &WgpuBackend,
            enc: &mut wgpu::CommandEncoder,
            logits: WgpuTensor,
            x: WgpuTensor,
            gate: WgpuTensor,
            conv_w: WgpuTensor,
            gate_params: WgpuTensor,
            norm_w: WgpuTensor,
            slot_ids: WgpuTensor,
            state: WgpuTensor,
            conv_state: WgpuTensor,
            y: WgpuTensor,
            idx: WgpuTensor,
            weights: WgpuTensor,
            o_mix: WgpuTensor,
            status: &Status,
        ) -> Result<()> {
            self.bind_all(
                gpu,
                &bindings![
                    logits,
                    x,
                    gate,
                    conv_w,
                    gate_params,
                    norm_w,
                    slot_ids,
                    state,
                    conv_state,
                    y,
                    idx,
                    weights,
                    o_mix
                ],
            )?;
            self.route.run_wgpu(gpu, enc, logits, idx, weights, status)?;
            self.step.run_wgpu(
                gpu,
                enc,
                x,
                conv_w,
                gate_params,
                idx,
                weights,
                slot_ids,
                state,
                conv_state,
                o_mix,
                status,
            )?;
            self.norm.run_wgpu(gpu, enc, o_mix, gate, norm_w, y)
        }
    }
}
