//! wgpu dispatches for the core kernels (`shaders/core_*.wgsl`).

use super::uniforms::{GatherUniform, MergeUniform, RmsNormUniform};
use super::{GatherRows, MergeStates, RmsNorm};
use crate::backend::loops;
use crate::backend::wgpu::{WgpuBackend, WgpuTensor};
use crate::error::{Error, Result};
use crate::plan::Plan;

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
            x_off: self.bind(&x, "x", mb)?,
            x_stride: self.x.stride as u32,
            w_off: self.bind(&w, "w", mb)?,
            y_off: self.bind(&y, "y", mb)?,
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
            // Sum of squares, the 256-lane reduction, the scaled row's word walk.
            loops::strided(p.cols as u64, 256) + loops::tree(256) + loops::word_walk(p.cols as u64, dt, 256),
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
            o1_off: self.bind(&o1, "o1", mb)?,
            o1_stride: self.o1.stride as u32,
            o2_off: self.bind(&o2, "o2", mb)?,
            o2_stride: self.o2.stride as u32,
            o_off: self.bind(&o, "o", mb)?,
            o_stride: self.o.stride as u32,
            l1_off: self.bind(&l1, "lse1", mb)?,
            l2_off: self.bind(&l2, "lse2", mb)?,
            l_off: self.bind(&l, "lse", mb)?,
        };
        gpu.dispatch(
            enc,
            &format!("core_merge_states_{dt}"),
            bytemuck::bytes_of(&u),
            &[o1.buffer, l1.buffer, o2.buffer, l2.buffer, o.buffer, l.buffer],
            groups_u32(p.states)?,
            loops::word_walk(p.dim as u64, dt, 64),
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
        let crate::backend::Status::Wgpu(st) = status else {
            return Err(Error::InvalidParams("gather_rows: the status word is not a wgpu one".into()));
        };
        let (p, dt, mb) = (&self.params, self.params.dtype, gpu.max_binding());
        let u = GatherUniform {
            rows: p.rows as u32,
            cols: p.cols as u32,
            src_rows: p.src_rows as u32,
            src_off: self.bind(&src, "src", mb)?,
            src_stride: self.src.stride as u32,
            idx_off: self.bind(&idx, "idx", mb)?,
            out_off: self.bind(&out, "out", mb)?,
            out_stride: self.out.stride as u32,
        };
        gpu.dispatch(
            enc,
            &format!("core_gather_rows_{dt}"),
            bytemuck::bytes_of(&u),
            &[src.buffer, idx.buffer, out.buffer, st],
            groups_u32(p.rows)?,
            loops::word_walk(p.cols as u64, dt, 64),
        )
    }
}

pub(crate) fn groups_u32(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::InvalidParams(format!("{n} workgroups exceed u32")))
}
