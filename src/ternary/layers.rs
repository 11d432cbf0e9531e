//! Layers made of the family's kernels: the GLU channel mixer and a whole MatMul-free block
//! (MLGRU token mixer + GLU channel mixer, pre-norm residual, as the reference HGRNBit block).
//!
//! Each is a plan over child plans ([`BitLinear`], [`RmsNorm`], [`MlgruStep`]) with typed
//! `run_cpu` / `run_cuda` / `run_wgpu` over the engine's own buffers, which launch the same
//! kernels the registry verifies one by one; the composition is what the layer cases test.

use serde::{Deserialize, Serialize};

use super::{model_eps, padded_k, BitLinear, BitLinearParams, Fuse, MlgruParams, MlgruStep};
use crate::backend::Status;
use crate::core::{RmsNorm, RmsNormParams};
use crate::dtype::{float_dtype, same_dtype, DType, Float};
use crate::error::{invalid, Result};
use crate::layout::dim;
use crate::plan::{Plan, TensorSpec};

fn check_eps(what: &str, eps: f32) -> Result<()> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(invalid(format!("{what} must be finite and >= 0, got {eps}")))
    }
}

fn yes() -> bool {
    true
}

// ---------------------------------------------------------------------------------------------

/// `y = down(silu(g) * u)` with `[g, u] = gate_up(x)`, both BitLinear; with `accumulate`,
/// `y += ...` (the block's residual stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GluMlpParams {
    /// Rows of `x` and `y` (tokens); dense, no stride.
    pub m: usize,
    /// Model width: columns of `x` and `y`.
    pub d: usize,
    /// Intermediate width: `gate_up` has `2 * inner` outputs, `[g, u]`.
    pub inner: usize,
    /// Storage dtype of the activations and norm weights: f32, f16 or bf16.
    pub dtype: DType,
    /// The BitLinears' norm epsilon (the model's `FusedBitLinear`: 1e-6).
    #[serde(default = "model_eps")]
    pub bitlinear_eps: f32,
    /// `y += down(...)` instead of `y = down(...)` (a residual stream); default false.
    #[serde(default)]
    pub accumulate: bool,
}

/// A validated [`GluMlpParams`]: two [`BitLinear`]s. Tensors, in order: `x` `[m, d]`,
/// `up_norm` `[d]`, `up_packed`, `up_gamma` `[1]`, `down_norm` `[inner]`, `down_packed`,
/// `down_gamma` `[1]`, `y` `[m, d]`, scratch `gu` `[m, 2 * inner]`, `q1`, `s1`, `q2`, `s2`.
#[derive(Debug, Clone)]
pub struct GluMlp {
    /// The params it was built from.
    pub params: GluMlpParams,
    /// `gate_up`: `[2 * inner, d]`, one gamma, writing `[g, u]` rows into `gu`.
    pub up: BitLinear,
    /// `down`: `[d, inner]` with `glu` (it reads `silu(g) * u` from `gu`), one gamma.
    pub down: BitLinear,
}

impl GluMlp {
    /// Validates `p`: sizes >= 1 and a finite `bitlinear_eps >= 0` (else `Error::InvalidParams`),
    /// a float dtype (else `Error::DType`).
    pub fn new(p: GluMlpParams) -> Result<Self> {
        for (what, v) in [("glu_mlp m", p.m), ("glu_mlp d", p.d), ("glu_mlp inner", p.inner)] {
            dim(what, v)?;
        }
        float_dtype(p.dtype)?;
        check_eps("glu_mlp bitlinear_eps", p.bitlinear_eps)?;
        let bl = |n, k, glu, accumulate| BitLinearParams {
            m: p.m,
            n,
            k,
            projections: 1,
            partitions: 1,
            eps: p.bitlinear_eps,
            dtype: p.dtype,
            glu,
            x_stride: None,
            out_stride: None,
            accumulate,
            fuse: Fuse::Auto,
        };
        let up = BitLinear::new(bl(2 * p.inner, p.d, false, false))?;
        let down = BitLinear::new(bl(p.d, p.inner, true, p.accumulate))?;
        Ok(Self { params: p, up, down })
    }

    /// Tensors in [`Plan::tensors`] order; `gu`, `q1`, `s1`, `q2`, `s2` are scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        x: &[T],
        up_norm: &[T],
        up_packed: &[u32],
        up_gamma: &[f32],
        down_norm: &[T],
        down_packed: &[u32],
        down_gamma: &[f32],
        y: &mut [T],
        gu: &mut [T],
        q1: &mut [i8],
        s1: &mut [f32],
        q2: &mut [i8],
        s2: &mut [f32],
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&lens![
            x,
            up_norm,
            up_packed,
            up_gamma,
            down_norm,
            down_packed,
            down_gamma,
            y,
            gu,
            q1,
            s1,
            q2,
            s2
        ])?;
        self.up.run_cpu(x, up_norm, up_packed, up_gamma, q1, s1, gu)?;
        self.down.run_cpu(gu, down_norm, down_packed, down_gamma, q2, s2, y)
    }
}

// ---------------------------------------------------------------------------------------------

/// One MatMul-free block, decode step: for each of `m` sequences (pool slot per row),
/// `x += o_proj(mlgru(fcg_proj(rmsnorm(x))))`, then `x += down(glu(gate_up(rmsnorm(x))))`.
/// `x` (the residual stream) and the state pool are updated in place.
/// Epsilons default to the model's (`HGRNBitConfig.rms_norm_eps` and `FusedBitLinear`: 1e-6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatmulFreeBlockParams {
    /// Sequences decoded this step: rows of `x`, one slot id each.
    pub m: usize,
    /// Model width (hidden size): `x`, the MLGRU state and every projection but the GLU's.
    pub d: usize,
    /// The GLU channel mixer's intermediate width.
    pub inner: usize,
    /// Rows of the f32 state pool `[slots, d]`.
    pub slots: usize,
    /// Storage dtype of `x`, the norm weights and the intermediates: f32, f16 or bf16.
    pub dtype: DType,
    /// The block's pre-norms (`attn_norm`, `mlp_norm`).
    #[serde(default = "model_eps")]
    pub norm_eps: f32,
    /// The MLGRU's output gate norm (`g_norm`).
    #[serde(default = "model_eps")]
    pub gate_eps: f32,
    /// The norm inside every BitLinear.
    #[serde(default = "model_eps")]
    pub bitlinear_eps: f32,
    /// Apply the layer's forget-gate lower bound `lb` (the model skips it in layer 0).
    #[serde(default = "yes")]
    pub lower_bound: bool,
}

/// A validated [`MatmulFreeBlockParams`]: the child plans, launched in this order: `norm`,
/// `fcg`, `step`, `o_proj`, `norm` again, `mlp`. `run_*` take the tensors of
/// [`Plan::tensors`] in that order.
#[derive(Debug, Clone)]
pub struct MatmulFreeBlock {
    /// The params it was built from.
    pub params: MatmulFreeBlockParams,
    /// The pre-norm over `[m, d]`, run twice (with `attn_norm`, then `mlp_norm`).
    pub norm: RmsNorm,
    /// The f, c and g projections: 3 stacked `[d, d]` BitLinears, one gamma each.
    pub fcg: BitLinear,
    /// The MLGRU decode step on the slot-indexed state pool.
    pub step: MlgruStep,
    /// The output projection `[d, d]`, added to `x` (the residual).
    pub o_proj: BitLinear,
    /// The GLU channel mixer, added to `x`.
    pub mlp: GluMlp,
}

impl MatmulFreeBlock {
    /// Validates `p`: sizes >= 1 and finite epsilons >= 0 (else `Error::InvalidParams`), a float
    /// dtype (else `Error::DType`).
    pub fn new(p: MatmulFreeBlockParams) -> Result<Self> {
        for (what, v) in [("block m", p.m), ("block d", p.d), ("block inner", p.inner), ("block slots", p.slots)] {
            dim(what, v)?;
        }
        check_eps("block norm_eps", p.norm_eps)?;
        check_eps("block gate_eps", p.gate_eps)?;
        let (m, d, dtype, eps) = (p.m, p.d, p.dtype, p.bitlinear_eps);
        let norm =
            RmsNorm::new(RmsNormParams { rows: m, cols: d, eps: p.norm_eps, dtype, x_stride: None, y_stride: None })?;
        let bl = |projections, accumulate| BitLinearParams {
            m,
            n: d,
            k: d,
            projections,
            partitions: 1,
            eps,
            dtype,
            glu: false,
            x_stride: None,
            out_stride: None,
            accumulate,
            fuse: Fuse::Auto,
        };
        let step = MlgruStep::new(MlgruParams {
            batch: m,
            d,
            slots: p.slots,
            dtype,
            lower_bound: p.lower_bound,
            eps: p.gate_eps,
            fcg_stride: None,
        })?;
        let mlp = GluMlp::new(GluMlpParams { m, d, inner: p.inner, dtype, bitlinear_eps: eps, accumulate: true })?;
        Ok(Self {
            fcg: BitLinear::new(bl(3, false))?,
            o_proj: BitLinear::new(bl(1, true))?,
            params: p,
            norm,
            step,
            mlp,
        })
    }

    /// Tensors in [`Plan::tensors`] order; everything after `down_gamma` is scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu<T: Float>(
        &self,
        x: &mut [T],
        attn_norm: &[T],
        fcg_norm: &[T],
        fcg_packed: &[u32],
        fcg_gamma: &[f32],
        state: &mut [f32],
        slot_ids: &[i32],
        lb: Option<&[f32]>,
        g_norm: &[T],
        o_norm: &[T],
        o_packed: &[u32],
        o_gamma: &[f32],
        mlp_norm: &[T],
        up_norm: &[T],
        up_packed: &[u32],
        up_gamma: &[f32],
        down_norm: &[T],
        down_packed: &[u32],
        down_gamma: &[f32],
        a: &mut [T],
        fcg: &mut [T],
        o: &mut [T],
        qa: &mut [i8],
        sa: &mut [f32],
        gu: &mut [T],
        q1: &mut [i8],
        s1: &mut [f32],
        q2: &mut [i8],
        s2: &mut [f32],
        status: &Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let mut given = lens![
            x,
            attn_norm,
            fcg_norm,
            fcg_packed,
            fcg_gamma,
            state,
            slot_ids,
            g_norm,
            o_norm,
            o_packed,
            o_gamma,
            mlp_norm,
            up_norm,
            up_packed,
            up_gamma,
            down_norm,
            down_packed,
            down_gamma,
            a,
            fcg,
            o,
            qa,
            sa,
            gu,
            q1,
            s1,
            q2,
            s2
        ]
        .to_vec();
        given.extend(lb.as_ref().map(|t| ("lb", t.len())));
        self.check_lens(&given)?;
        self.norm.run_cpu(x, attn_norm, a)?;
        self.fcg.run_cpu(a, fcg_norm, fcg_packed, fcg_gamma, qa, sa, fcg)?;
        self.step.run_cpu(fcg, state, slot_ids, lb, g_norm, o, status)?;
        self.o_proj.run_cpu(o, o_norm, o_packed, o_gamma, q1, s1, x)?;
        self.norm.run_cpu(x, mlp_norm, a)?;
        self.mlp.run_cpu(a, up_norm, up_packed, up_gamma, down_norm, down_packed, down_gamma, x, gu, q1, s1, q2, s2)
    }
}

// ---------------------------------------------------------------------------------------------
// The tensors of each plan, declared once.

impl Plan for GluMlp {
    type Params = GluMlpParams;
    const NAME: &'static str = "glu_mlp";
    fn build(p: GluMlpParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &GluMlpParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        let (dt, m) = (p.dtype, p.m);
        let y = if p.accumulate { TensorSpec::in_out } else { TensorSpec::output };
        let mut v = vec![TensorSpec::input("x", dt, m * p.d)];
        v.extend(bitlinear_weights(&self.up, ["up_norm", "up_packed", "up_gamma"]));
        v.extend(bitlinear_weights(&self.down, ["down_norm", "down_packed", "down_gamma"]));
        v.extend([
            y("y", dt, m * p.d),
            TensorSpec::scratch("gu", dt, m * 2 * p.inner),
            TensorSpec::scratch("q1", DType::I8, m * padded_k(p.d)),
            TensorSpec::scratch("s1", DType::F32, m),
            TensorSpec::scratch("q2", DType::I8, m * padded_k(p.inner)),
            TensorSpec::scratch("s2", DType::F32, m),
        ]);
        v
    }
}

/// A BitLinear's weight tensors (norm, packed, gamma) under the layer's names.
fn bitlinear_weights(b: &BitLinear, names: [&'static str; 3]) -> [TensorSpec; 3] {
    let spec = |i: usize| {
        let s = b.tensors()[i + 1];
        TensorSpec { name: names[i], ..s }
    };
    [spec(0), spec(1), spec(2)]
}

impl Plan for MatmulFreeBlock {
    type Params = MatmulFreeBlockParams;
    const NAME: &'static str = "block";
    fn build(p: MatmulFreeBlockParams) -> Result<Self> {
        Self::new(p)
    }
    fn params(&self) -> &MatmulFreeBlockParams {
        &self.params
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        let p = &self.params;
        let (dt, m, d) = (p.dtype, p.m, p.d);
        let mut v = vec![TensorSpec::in_out("x", dt, m * d), TensorSpec::input("attn_norm", dt, d)];
        v.extend(bitlinear_weights(&self.fcg, ["fcg_norm", "fcg_packed", "fcg_gamma"]));
        v.extend([TensorSpec::in_out("state", DType::F32, p.slots * d), TensorSpec::input("slot_ids", DType::I32, m)]);
        if p.lower_bound {
            v.push(TensorSpec::input("lb", DType::F32, d));
        }
        v.push(TensorSpec::input("g_norm", dt, d));
        v.extend(bitlinear_weights(&self.o_proj, ["o_norm", "o_packed", "o_gamma"]));
        v.push(TensorSpec::input("mlp_norm", dt, d));
        let mlp = self.mlp.tensors();
        v.extend(mlp.iter().filter(|s| s.name.starts_with("up_") || s.name.starts_with("down_")));
        v.extend([
            TensorSpec::scratch("a", dt, m * d),
            TensorSpec::scratch("fcg", dt, m * 3 * d),
            TensorSpec::scratch("o", dt, m * d),
            TensorSpec::scratch("qa", DType::I8, 3 * m * padded_k(d)),
            TensorSpec::scratch("sa", DType::F32, 3 * m),
        ]);
        v.extend(mlp.iter().filter(|s| s.role == crate::plan::Role::Scratch));
        v
    }
}

// ---------------------------------------------------------------------------------------------
// CUDA: the same composition on the caller's stream.

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::Arc;

    use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

    use super::{GluMlp, MatmulFreeBlock};
    use crate::backend::cuda::{CudaBackend, CudaFloat};
    use crate::backend::Status;
    use crate::dtype::same_dtype;
    use crate::error::Result;
    use crate::plan::Plan;

    impl GluMlp {
        /// Tensors in [`crate::plan::Plan::tensors`] order; `gu`, `q1`, `s1`, `q2`, `s2` are scratch.
        #[allow(clippy::too_many_arguments)]
        pub fn run_cuda<T: CudaFloat>(
            &self,
            cuda: &CudaBackend,
            stream: &Arc<CudaStream>,
            x: &impl DevicePtr<T>,
            up_norm: &impl DevicePtr<T>,
            up_packed: &impl DevicePtr<u32>,
            up_gamma: &impl DevicePtr<f32>,
            down_norm: &impl DevicePtr<T>,
            down_packed: &impl DevicePtr<u32>,
            down_gamma: &impl DevicePtr<f32>,
            y: &mut impl DevicePtrMut<T>,
            gu: &mut (impl DevicePtr<T> + DevicePtrMut<T>),
            q1: &mut (impl DevicePtr<i8> + DevicePtrMut<i8>),
            s1: &mut (impl DevicePtr<f32> + DevicePtrMut<f32>),
            q2: &mut (impl DevicePtr<i8> + DevicePtrMut<i8>),
            s2: &mut (impl DevicePtr<f32> + DevicePtrMut<f32>),
        ) -> Result<()> {
            same_dtype::<T>(self.params.dtype)?;
            self.check_lens(&lens![
                x,
                up_norm,
                up_packed,
                up_gamma,
                down_norm,
                down_packed,
                down_gamma,
                y,
                gu,
                q1,
                s1,
                q2,
                s2
            ])?;
            self.up.run_cuda(cuda, stream, x, up_norm, up_packed, up_gamma, q1, s1, gu)?;
            self.down.run_cuda(cuda, stream, &*gu, down_norm, down_packed, down_gamma, q2, s2, y)
        }
    }

    impl MatmulFreeBlock {
        /// Tensors in [`crate::plan::Plan::tensors`] order; everything after `down_gamma` is scratch.
        #[allow(clippy::too_many_arguments)]
        pub fn run_cuda<T: CudaFloat>(
            &self,
            cuda: &CudaBackend,
            stream: &Arc<CudaStream>,
            x: &mut (impl DevicePtr<T> + DevicePtrMut<T>),
            attn_norm: &impl DevicePtr<T>,
            fcg_norm: &impl DevicePtr<T>,
            fcg_packed: &impl DevicePtr<u32>,
            fcg_gamma: &impl DevicePtr<f32>,
            state: &mut impl DevicePtrMut<f32>,
            slot_ids: &impl DevicePtr<i32>,
            lb: Option<&CudaSlice<f32>>,
            g_norm: &impl DevicePtr<T>,
            o_norm: &impl DevicePtr<T>,
            o_packed: &impl DevicePtr<u32>,
            o_gamma: &impl DevicePtr<f32>,
            mlp_norm: &impl DevicePtr<T>,
            up_norm: &impl DevicePtr<T>,
            up_packed: &impl DevicePtr<u32>,
            up_gamma: &impl DevicePtr<f32>,
            down_norm: &impl DevicePtr<T>,
            down_packed: &impl DevicePtr<u32>,
            down_gamma: &impl DevicePtr<f32>,
            a: &mut (impl DevicePtr<T> + DevicePtrMut<T>),
            fcg: &mut (impl DevicePtr<T> + DevicePtrMut<T>),
            o: &mut (impl DevicePtr<T> + DevicePtrMut<T>),
            qa: &mut (impl DevicePtr<i8> + DevicePtrMut<i8>),
            sa: &mut (impl DevicePtr<f32> + DevicePtrMut<f32>),
            gu: &mut (impl DevicePtr<T> + DevicePtrMut<T>),
            q1: &mut (impl DevicePtr<i8> + DevicePtrMut<i8>),
            s1: &mut (impl DevicePtr<f32> + DevicePtrMut<f32>),
            q2: &mut (impl DevicePtr<i8> + DevicePtrMut<i8>),
            s2: &mut (impl DevicePtr<f32> + DevicePtrMut<f32>),
            status: &mut Status,
        ) -> Result<()> {
            same_dtype::<T>(self.params.dtype)?;
            let mut given = lens![
                x,
                attn_norm,
                fcg_norm,
                fcg_packed,
                fcg_gamma,
                state,
                slot_ids,
                g_norm,
                o_norm,
                o_packed,
                o_gamma,
                mlp_norm,
                up_norm,
                up_packed,
                up_gamma,
                down_norm,
                down_packed,
                down_gamma,
                a,
                fcg,
                o,
                qa,
                sa,
                gu,
                q1,
                s1,
                q2,
                s2
            ]
            .to_vec();
            given.extend(lb.as_ref().map(|t| ("lb", t.len())));
            self.check_lens(&given)?;
            self.norm.run_cuda(cuda, stream, &*x, attn_norm, a)?;
            self.fcg.run_cuda(cuda, stream, &*a, fcg_norm, fcg_packed, fcg_gamma, qa, sa, fcg)?;
            self.step.run_cuda(cuda, stream, &*fcg, state, slot_ids, lb, g_norm, o, status)?;
            self.o_proj.run_cuda(cuda, stream, &*o, o_norm, o_packed, o_gamma, q1, s1, x)?;
            self.norm.run_cuda(cuda, stream, &*x, mlp_norm, a)?;
            let mlp = &self.mlp;
            mlp.run_cuda(
                cuda,
                stream,
                &*a,
                up_norm,
                up_packed,
                up_gamma,
                down_norm,
                down_packed,
                down_gamma,
                x,
                gu,
                q1,
                s1,
                q2,
                s2,
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// wgpu: the same composition recorded into the caller's encoder.

#[cfg(feature = "wgpu")]
mod wgpu_impl {
    use super::{GluMlp, MatmulFreeBlock};
    use crate::backend::wgpu::{WgpuBackend, WgpuTensor};
    use crate::backend::Status;
    use crate::error::Result;
    use crate::plan::Plan;

    impl GluMlp {
        /// Tensors in [`crate::plan::Plan::tensors`] order; `gu`, `q1`, `s1`, `q2`, `s2` are scratch.
        #[allow(clippy::too_many_arguments)]
        pub fn run_wgpu(
            &self,
            gpu: &WgpuBackend,
            enc: &mut wgpu::CommandEncoder,
            x: WgpuTensor,
            up_norm: WgpuTensor,
            up_packed: WgpuTensor,
            up_gamma: WgpuTensor,
            down_norm: WgpuTensor,
            down_packed: WgpuTensor,
            down_gamma: WgpuTensor,
            y: WgpuTensor,
            gu: WgpuTensor,
            q1: WgpuTensor,
            s1: WgpuTensor,
            q2: WgpuTensor,
            s2: WgpuTensor,
        ) -> Result<()> {
            self.bind_all(
                gpu,
                &bindings![x, up_norm, up_packed, up_gamma, down_norm, down_packed, down_gamma, y, gu, q1, s1, q2, s2],
            )?;
            self.up.run_wgpu(gpu, enc, x, up_norm, up_packed, up_gamma, q1, s1, gu)?;
            self.down.run_wgpu(gpu, enc, gu, down_norm, down_packed, down_gamma, q2, s2, y)
        }
    }

    impl MatmulFreeBlock {
        /// Tensors in [`crate::plan::Plan::tensors`] order; everything after `down_gamma` is scratch.
        #[allow(clippy::too_many_arguments)]
        pub fn run_wgpu(
            &self,
            gpu: &WgpuBackend,
            enc: &mut wgpu::CommandEncoder,
            x: WgpuTensor,
            attn_norm: WgpuTensor,
            fcg_norm: WgpuTensor,
            fcg_packed: WgpuTensor,
            fcg_gamma: WgpuTensor,
            state: WgpuTensor,
            slot_ids: WgpuTensor,
            lb: Option<WgpuTensor>,
            g_norm: WgpuTensor,
            o_norm: WgpuTensor,
            o_packed: WgpuTensor,
            o_gamma: WgpuTensor,
            mlp_norm: WgpuTensor,
            up_norm: WgpuTensor,
            up_packed: WgpuTensor,
            up_gamma: WgpuTensor,
            down_norm: WgpuTensor,
            down_packed: WgpuTensor,
            down_gamma: WgpuTensor,
            a: WgpuTensor,
            fcg: WgpuTensor,
            o: WgpuTensor,
            qa: WgpuTensor,
            sa: WgpuTensor,
            gu: WgpuTensor,
            q1: WgpuTensor,
            s1: WgpuTensor,
            q2: WgpuTensor,
            s2: WgpuTensor,
            status: &Status,
        ) -> Result<()> {
            self.bind_all(
                gpu,
                &bindings![
                    x, attn_norm, fcg_norm, fcg_packed, fcg_gamma, state, slot_ids, g_norm, o_norm, o_packed,
                    o_gamma, mlp_norm, up_norm, up_packed, up_gamma, down_norm, down_packed, down_gamma, a, fcg, o,
                    qa, sa, gu, q1, s1, q2, s2; lb
                ],
            )?;
            self.norm.run_wgpu(gpu, enc, x, attn_norm, a)?;
            self.fcg.run_wgpu(gpu, enc, a, fcg_norm, fcg_packed, fcg_gamma, qa, sa, fcg)?;
            self.step.run_wgpu(gpu, enc, fcg, state, slot_ids, lb, g_norm, o, status)?;
            self.o_proj.run_wgpu(gpu, enc, o, o_norm, o_packed, o_gamma, q1, s1, x)?;
            self.norm.run_wgpu(gpu, enc, x, mlp_norm, a)?;
            self.mlp.run_wgpu(
                gpu,
                enc,
                a,
                up_norm,
                up_packed,
                up_gamma,
                down_norm,
                down_packed,
                down_gamma,
                x,
                gu,
                q1,
                s1,
                q2,
                s2,
            )
        }
    }
}
