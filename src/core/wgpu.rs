//! wgpu dispatches for the core kernels (`shaders/core_*.wgsl`).

use super::uniforms::{GatherUniform, MergeUniform, RmsNormUniform};
use super::{GatherRows, MergeStates, RmsNorm};
use crate::backend::wgpu::{WgpuBackend, WgpuTensor};
use crate::dtype::DType;
use crate::error::{Error, Result};

impl RmsNorm {
    /// Records the kernel into `enc`; nothing is submitted.
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        x: WgpuTensor,
        w: WgpuTensor,
        y: WgpuTensor,
    ) -> Result<()> {
        let (p, dt, mb) = (&self.params, self.params.dtype, gpu.max_binding());
        let u = RmsNormUniform {
            rows: p.rows as u32,
            cols: p.cols as u32,
            x_off: x.check("rmsnorm x", dt, self.x.span(), mb)?,
            x_stride: self.x.stride as u32,
            w_off: w.check("rmsnorm w", dt, p.cols, mb)?,
            y_off: y.check("rmsnorm y", dt, self.y.span(), mb)?,
            y_stride: self.y.stride as u32,
            eps: p.eps,
        };
        let groups = groups_u32(p.rows)?;
        gpu.dispatch(
            enc,
            &format!("core_rmsnorm_{dt}"),
            bytemuck::bytes_of(&u),
            &[x.buffer, w.buffer, y.buffer],
            groups,
        )
    }
}

impl MergeStates {
    /// Records the kernel into `enc`; `l1`, `l2`, `l` are f32 buffers.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        o1: WgpuTensor,
        l1: WgpuTensor,
        o2: WgpuTensor,
        l2: WgpuTensor,
        o: WgpuTensor,
        l: WgpuTensor,
    ) -> Result<()> {
        let (p, dt, mb) = (&self.params, self.params.dtype, gpu.max_binding());
        if std::ptr::eq(o.buffer, o1.buffer) || std::ptr::eq(o.buffer, o2.buffer) {
            return Err(Error::InvalidParams("merge_states: o may not alias o1 or o2 in wgpu (binding rules)".into()));
        }
        let u = MergeUniform {
            states: p.states as u32,
            dim: p.dim as u32,
            o1_off: o1.check("merge_states o1", dt, self.o1.span(), mb)?,
            o1_stride: self.o1.stride as u32,
            o2_off: o2.check("merge_states o2", dt, self.o2.span(), mb)?,
            o2_stride: self.o2.stride as u32,
            o_off: o.check("merge_states o", dt, self.o.span(), mb)?,
            o_stride: self.o.stride as u32,
            l1_off: l1.check("merge_states lse1", DType::F32, p.states, mb)?,
            l2_off: l2.check("merge_states lse2", DType::F32, p.states, mb)?,
            l_off: l.check("merge_states lse", DType::F32, p.states, mb)?,
        };
        gpu.dispatch(
            enc,
            &format!("core_merge_states_{dt}"),
            bytemuck::bytes_of(&u),
            &[o1.buffer, l1.buffer, o2.buffer, l2.buffer, o.buffer, l.buffer],
            groups_u32(p.states)?,
        )
    }
}

impl GatherRows {
    /// Records the kernel into `enc`; a bad index raises a bit in `status`.
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        src: WgpuTensor,
        idx: WgpuTensor,
        out: WgpuTensor,
        status: &crate::Status,
    ) -> Result<()> {
        let crate::Status::Wgpu(st) = status else {
            return Err(Error::InvalidParams("gather_rows: the status word is not a wgpu one".into()));
        };
        let (p, dt, mb) = (&self.params, self.params.dtype, gpu.max_binding());
        let u = GatherUniform {
            rows: p.rows as u32,
            cols: p.cols as u32,
            src_rows: p.src_rows as u32,
            src_off: src.check("gather_rows src", dt, self.src.span(), mb)?,
            src_stride: self.src.stride as u32,
            idx_off: idx.check("gather_rows idx", DType::I32, p.rows, mb)?,
            out_off: out.check("gather_rows out", dt, self.out.span(), mb)?,
            out_stride: self.out.stride as u32,
        };
        gpu.dispatch(
            enc,
            &format!("core_gather_rows_{dt}"),
            bytemuck::bytes_of(&u),
            &[src.buffer, idx.buffer, out.buffer, st],
            groups_u32(p.rows)?,
        )
    }
}

pub(crate) fn groups_u32(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::InvalidParams(format!("{n} workgroups exceed u32")))
}
