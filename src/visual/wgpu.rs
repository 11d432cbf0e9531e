//! wgpu dispatches for the visual family (`shaders/visual_*.wgsl`).

use super::uniforms::{CompactUniform, MassUniform, MergeUniform, NeighborUniform, SelectUniform, SparseUniform};
use super::{AttnMass, Compact, Merge, NeighborAttention, Select, SelectMode, SparseAttention};
use crate::backend::wgpu::{WgpuBackend, WgpuTensor};
use crate::backend::Status;
use crate::error::Result;
use crate::layout::u32_of;
use crate::plan::Plan;

impl Select {
    /// Records one dispatch into `enc`, a workgroup per sequence; tensors as
    /// [`Select::run_cpu`]'s (`order` is bound only with `has_order`). A binding that does not
    /// fit its tensor fails with `Error::Shape` or `Error::InvalidParams`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        score: WgpuTensor,
        lens: WgpuTensor,
        order: Option<WgpuTensor>,
        idx: WgpuTensor,
        count: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let (order_buf, order_off) = match order.filter(|_| p.has_order) {
            Some(o) => (o.buffer, self.bind(&o, "order", mb)?),
            None => (score.buffer, 0),
        };
        let u = SelectUniform {
            seqs: u32_of("seqs", p.seqs)?,
            n: u32_of("n", p.n)?,
            mode: match p.mode {
                SelectMode::TopK => 0,
                SelectMode::Mass => 1,
                SelectMode::AboveMean => 2,
            },
            k: p.k.min(u32::MAX as usize) as u32,
            tau: p.tau,
            has_order: u32::from(p.has_order),
            score_off: self.bind(&score, "score", mb)?,
            lens_off: self.bind(&lens, "lens", mb)?,
            order_off,
            idx_off: self.bind(&idx, "idx", mb)?,
            count_off: self.bind(&count, "count", mb)?,
        };
        let bufs = [score.buffer, lens.buffer, order_buf, idx.buffer, count.buffer, status.wgpu_buffer("select")?];
        gpu.dispatch(enc, "visual_select", bytemuck::bytes_of(&u), &bufs, u.seqs)
    }
}

impl Compact {
    /// Records one dispatch into `enc`, a workgroup per sequence; tensors as
    /// [`Compact::run_cpu`]'s. A binding that does not fit its tensor fails with `Error::Shape`
    /// or `Error::InvalidParams`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        cu_seqlens: WgpuTensor,
        seg: WgpuTensor,
        idx: WgpuTensor,
        count: WgpuTensor,
        rows: WgpuTensor,
        pos: WgpuTensor,
        cu_out: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let u = CompactUniform {
            seqs: u32_of("seqs", p.seqs)?,
            tokens: u32_of("tokens", p.tokens)?,
            n: u32_of("n", p.n)?,
            cu_off: self.bind(&cu_seqlens, "cu_seqlens", mb)?,
            seg_off: self.bind(&seg, "seg", mb)?,
            idx_off: self.bind(&idx, "idx", mb)?,
            count_off: self.bind(&count, "count", mb)?,
            rows_off: self.bind(&rows, "rows", mb)?,
            pos_off: self.bind(&pos, "pos", mb)?,
            out_cu_off: self.bind(&cu_out, "cu_out", mb)?,
        };
        let st = status.wgpu_buffer("compact")?;
        let bufs =
            [cu_seqlens.buffer, seg.buffer, idx.buffer, count.buffer, rows.buffer, pos.buffer, cu_out.buffer, st];
        gpu.dispatch(enc, "visual_compact", bytemuck::bytes_of(&u), &bufs, u.seqs)
    }
}

impl AttnMass {
    /// Records two dispatches into `enc` (one with `has_lse`): each row's LSE into `ws`, then
    /// the masses; tensors as [`AttnMass::run_cpu`]'s. Binds 9 storage buffers, one more than
    /// wgpu's default limit: a device without `max_storage_buffers_per_shader_stage >= 9` gets
    /// `Error::InvalidParams`, as does a binding that does not fit its tensor.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        q: WgpuTensor,
        qpos: WgpuTensor,
        qw: WgpuTensor,
        k: WgpuTensor,
        cu_seqlens: WgpuTensor,
        seg: WgpuTensor,
        lse: Option<WgpuTensor>,
        mass: WgpuTensor,
        ws: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        gpu.require_storage_buffers(9, "visual attn_mass")?;
        let (p, mb) = (&self.params, gpu.max_binding());
        let ws_off = self.bind(&ws, "ws", mb)?;
        let (lse_buf, lse_off) = match lse.filter(|_| p.has_lse) {
            Some(l) => (l.buffer, self.bind(&l, "lse", mb)?),
            None => (ws.buffer, ws_off),
        };
        let u = MassUniform {
            seqs: u32_of("seqs", p.seqs)?,
            tokens: u32_of("tokens", p.tokens)?,
            rows: u32_of("rows", p.rows)?,
            heads: u32_of("heads", p.heads)?,
            kv_heads: u32_of("kv_heads", p.kv_heads)?,
            dim: p.dim as u32,
            n: u32_of("n", p.n)?,
            scale: p.scale,
            reduce: u32::from(p.reduce_heads),
            q_off: self.bind(&q, "q", mb)?,
            qpos_off: self.bind(&qpos, "qpos", mb)?,
            qw_off: self.bind(&qw, "qw", mb)?,
            k_off: self.bind(&k, "k", mb)?,
            cu_off: self.bind(&cu_seqlens, "cu_seqlens", mb)?,
            seg_off: self.bind(&seg, "seg", mb)?,
            lse_off,
            mass_off: self.bind(&mass, "mass", mb)?,
            ws_off,
        };
        let bytes = bytemuck::bytes_of(&u);
        if !p.has_lse {
            let bufs = [q.buffer, qpos.buffer, k.buffer, cu_seqlens.buffer, ws.buffer];
            gpu.dispatch(
                enc,
                &format!("visual_row_lse_{}", p.dtype),
                bytes,
                &bufs,
                u32_of("workgroups", p.rows * p.heads)?,
            )?;
        }
        let st = status.wgpu_buffer("attn_mass")?;
        let bufs =
            [q.buffer, qpos.buffer, qw.buffer, k.buffer, cu_seqlens.buffer, seg.buffer, lse_buf, mass.buffer, st];
        let groups = u32_of("workgroups", p.n.div_ceil(64) * p.seqs)?;
        gpu.dispatch(enc, &format!("visual_mass_{}", p.dtype), bytes, &bufs, groups)
    }
}

impl SparseAttention {
    /// Records one dispatch into `enc`, a workgroup per (token, head); tensors as
    /// [`SparseAttention::run_cpu`]'s. A binding that does not fit its tensor fails with
    /// `Error::Shape` or `Error::InvalidParams`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        q: WgpuTensor,
        k: WgpuTensor,
        v: WgpuTensor,
        cu_seqlens: WgpuTensor,
        pos: WgpuTensor,
        o: WgpuTensor,
        lse: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let u = SparseUniform {
            seqs: u32_of("seqs", p.seqs)?,
            tokens: u32_of("tokens", p.tokens)?,
            heads: u32_of("heads", p.heads)?,
            kv_heads: u32_of("kv_heads", p.kv_heads)?,
            dim: p.dim as u32,
            scale: p.scale,
            q_off: self.bind(&q, "q", mb)?,
            k_off: self.bind(&k, "k", mb)?,
            v_off: self.bind(&v, "v", mb)?,
            cu_off: self.bind(&cu_seqlens, "cu_seqlens", mb)?,
            pos_off: self.bind(&pos, "pos", mb)?,
            o_off: self.bind(&o, "o", mb)?,
            lse_off: self.bind(&lse, "lse", mb)?,
        };
        let st = status.wgpu_buffer("sparse_attention")?;
        let bufs = [q.buffer, k.buffer, v.buffer, cu_seqlens.buffer, pos.buffer, o.buffer, lse.buffer, st];
        let groups = u32_of("workgroups", p.tokens * p.heads)?;
        gpu.dispatch(enc, &format!("visual_sparse_attention_{}", p.dtype), bytemuck::bytes_of(&u), &bufs, groups)
    }
}

impl NeighborAttention {
    /// Records one dispatch into `enc`, a workgroup per (token, head); tensors as
    /// [`NeighborAttention::run_cpu`]'s. Binds 9 storage buffers, one more than wgpu's default
    /// limit: a device without `max_storage_buffers_per_shader_stage >= 9` gets
    /// `Error::InvalidParams`, as does a binding that does not fit its tensor.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        q: WgpuTensor,
        k: WgpuTensor,
        v: WgpuTensor,
        cu_seqlens: WgpuTensor,
        img: WgpuTensor,
        head_mask: Option<WgpuTensor>,
        o: WgpuTensor,
        lse: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        gpu.require_storage_buffers(9, "visual neighbor_attention")?;
        let (p, mb) = (&self.params, gpu.max_binding());
        let (mask_buf, mask_off) = match head_mask.filter(|_| p.has_head_mask) {
            Some(m) => (m.buffer, self.bind(&m, "head_mask", mb)?),
            None => (img.buffer, 0),
        };
        let u = NeighborUniform {
            seqs: u32_of("seqs", p.seqs)?,
            tokens: u32_of("tokens", p.tokens)?,
            heads: u32_of("heads", p.heads)?,
            kv_heads: u32_of("kv_heads", p.kv_heads)?,
            dim: p.dim as u32,
            scale: p.scale,
            radius: u32_of("radius", p.radius)?,
            causal: u32::from(p.causal_window),
            has_mask: u32::from(p.has_head_mask),
            q_off: self.bind(&q, "q", mb)?,
            k_off: self.bind(&k, "k", mb)?,
            v_off: self.bind(&v, "v", mb)?,
            cu_off: self.bind(&cu_seqlens, "cu_seqlens", mb)?,
            img_off: self.bind(&img, "img", mb)?,
            mask_off,
            o_off: self.bind(&o, "o", mb)?,
            lse_off: self.bind(&lse, "lse", mb)?,
        };
        let st = status.wgpu_buffer("neighbor_attention")?;
        let bufs = [q.buffer, k.buffer, v.buffer, cu_seqlens.buffer, img.buffer, mask_buf, o.buffer, lse.buffer, st];
        let groups = u32_of("workgroups", p.tokens * p.heads)?;
        gpu.dispatch(enc, &format!("visual_neighbor_attention_{}", p.dtype), bytemuck::bytes_of(&u), &bufs, groups)
    }
}

impl Merge {
    /// Records two dispatches into `enc`: each candidate's kept slot into `assign`, then the
    /// means into `merged`; tensors as [`Merge::run_cpu`]'s. A binding that does not fit its
    /// tensor fails with `Error::Shape` or `Error::InvalidParams`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        x: WgpuTensor,
        cu_seqlens: WgpuTensor,
        seg: WgpuTensor,
        idx: WgpuTensor,
        count: WgpuTensor,
        assign: WgpuTensor,
        merged: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let u = MergeUniform {
            seqs: u32_of("seqs", p.seqs)?,
            tokens: u32_of("tokens", p.tokens)?,
            n: u32_of("n", p.n)?,
            dim: u32_of("dim", p.dim)?,
            x_off: self.bind(&x, "x", mb)?,
            cu_off: self.bind(&cu_seqlens, "cu_seqlens", mb)?,
            seg_off: self.bind(&seg, "seg", mb)?,
            idx_off: self.bind(&idx, "idx", mb)?,
            count_off: self.bind(&count, "count", mb)?,
            assign_off: self.bind(&assign, "assign", mb)?,
            merged_off: self.bind(&merged, "merged", mb)?,
        };
        let bytes = bytemuck::bytes_of(&u);
        let st = status.wgpu_buffer("merge")?;
        let ins = [x.buffer, cu_seqlens.buffer, seg.buffer, idx.buffer, count.buffer];
        let bufs = [&ins[..], &[assign.buffer, st]].concat();
        let dt = p.dtype;
        gpu.dispatch(
            enc,
            &format!("visual_merge_assign_{dt}"),
            bytes,
            &bufs,
            u32_of("workgroups", p.n.div_ceil(64) * p.seqs)?,
        )?;
        let bufs = [&ins[..], &[assign.buffer, merged.buffer]].concat();
        gpu.dispatch(enc, &format!("visual_merge_mean_{dt}"), bytes, &bufs, u32_of("workgroups", p.n * p.seqs)?)
    }
}
