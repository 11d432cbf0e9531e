//! wgpu dispatches for the visual family (`shaders/visual_*.wgsl`).

use super::uniforms::{CompactUniform, MassUniform, MergeUniform, NeighborUniform, SelectUniform, SparseUniform};
use super::{AttnMass, Compact, Merge, NeighborAttention, Select, SelectMode, SparseAttention};
use crate::backend::loops::{strided, tree};
use crate::backend::wgpu::{WgpuBackend, WgpuTensor};
use crate::backend::Status;
use crate::error::{Error, Result};
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
        keep: Option<WgpuTensor>,
        idx: WgpuTensor,
        count: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let (order_buf, order_off) = match order.filter(|_| p.has_order) {
            Some(o) => (o.buffer, self.bind(&o, "order", mb)?),
            None => (score.buffer, 0),
        };
        let (keep_buf, keep_off) = match keep.filter(|_| p.per_seq_k) {
            Some(k) => (k.buffer, self.bind(&k, "keep", mb)?),
            None if p.per_seq_k => return Err(Error::InvalidParams("select: per_seq_k needs `keep`".into())),
            None => (lens.buffer, 0),
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
            per_seq_k: u32::from(p.per_seq_k),
            keep_off,
        };
        let st = status.wgpu_buffer("select")?;
        let bufs = [score.buffer, lens.buffer, order_buf, idx.buffer, count.buffer, st, keep_buf];
        gpu.dispatch(enc, "visual_select", bytemuck::bytes_of(&u), &bufs, u.seqs, self.wgpu_loops())
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
        // cu_seqlens' check, the bad-input fill, the new lengths of the earlier sequences (each
        // checking its kept list), its own list, its rows and the tail fill.
        let (seqs, tokens, n) = (p.seqs as u64, p.tokens as u64, p.n as u64);
        let budget = seqs + 3 * strided(tokens, 256) + (strided(seqs, 256) + 1) * n;
        gpu.dispatch(enc, "visual_compact", bytemuck::bytes_of(&u), &bufs, u.seqs, budget)
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
            hpo: self.heads_per_output() as u32,
            q_off: self.bind(&q, "q", mb)?,
            qpos_off: self.bind(&qpos, "qpos", mb)?,
            qw_off: self.bind(&qw, "qw", mb)?,
            k_off: self.bind(&k, "k", mb)?,
            cu_off: self.bind(&cu_seqlens, "cu_seqlens", mb)?,
            seg_off: self.bind(&seg, "seg", mb)?,
            lse_off,
            mass_off: self.bind(&mass, "mass", mb)?,
            ws_off,
            r0: 0,
            r1: 0,
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
                self.lse_loops(),
            )?;
        }
        let st = status.wgpu_buffer("attn_mass")?;
        let bufs =
            [q.buffer, qpos.buffer, qw.buffer, k.buffer, cu_seqlens.buffer, seg.buffer, lse_buf, mass.buffer, st];
        let ho = self.out_heads();
        let groups = u32_of("workgroups", p.n.div_ceil(64) * ho * p.seqs)?;
        let module = format!("visual_mass_{}", p.dtype);
        // Rater rows in windows, one dispatch each (at least one, which writes the zeros).
        let budget = (self.mass_loops(0), self.mass_loops(1) - self.mass_loops(0));
        let fix = "use fewer heads or a smaller head dim";
        gpu.dispatch_windows(enc, &module, &bufs, groups, p.rows, budget, fix, |r0, r1| {
            bytemuck::bytes_of(&MassUniform { r0, r1, ..u }).to_vec()
        })
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
        cu_seqlens_q: Option<WgpuTensor>,
        pos_q: Option<WgpuTensor>,
        o: WgpuTensor,
        lse: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        // Decode: the new tokens' offsets and positions; prefill: the keys' own, bound twice.
        let ((cuq_buf, cuq_off), (posq_buf, posq_off)) = match (p.queries, cu_seqlens_q, pos_q) {
            (Some(_), Some(c), Some(q)) => {
                ((c.buffer, self.bind(&c, "cu_seqlens_q", mb)?), (q.buffer, self.bind(&q, "pos_q", mb)?))
            }
            (Some(_), _, _) => {
                return Err(Error::InvalidParams("sparse_attention: a decode needs cu_seqlens_q and pos_q".into()))
            }
            (None, _, _) => (
                (cu_seqlens.buffer, self.bind(&cu_seqlens, "cu_seqlens", mb)?),
                (pos.buffer, self.bind(&pos, "pos", mb)?),
            ),
        };
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
            tq: u32_of("queries", self.query_rows())?,
            cuq_off,
            posq_off,
        };
        let st = status.wgpu_buffer("sparse_attention")?;
        let bufs =
            [q.buffer, k.buffer, v.buffer, cu_seqlens.buffer, pos.buffer, o.buffer, lse.buffer, st, cuq_buf, posq_buf];
        let groups = u32_of("workgroups", self.query_rows() * p.heads)?;
        // Both offset checks walk the sequences; the key walk is the keys' (attend_loops).
        let budget = attend_loops(p.seqs, p.tokens, p.dim) + p.seqs as u64;
        gpu.dispatch(
            enc,
            &format!("visual_sparse_attention_{}", p.dtype),
            bytemuck::bytes_of(&u),
            &bufs,
            groups,
            budget,
        )
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
        let budget = attend_loops(p.seqs, p.tokens, p.dim);
        let module = format!("visual_neighbor_attention_{}", p.dtype);
        gpu.dispatch(enc, &module, bytemuck::bytes_of(&u), &bufs, groups, budget)
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
            u32_of("workgroups", p.n * p.seqs)?,
            self.assign_loops(),
        )?;
        let bufs = [&ins[..], &[assign.buffer, merged.buffer]].concat();
        // The checks, then per output dim a walk over the sequence's candidates.
        let (n, dim) = (p.n as u64, p.dim as u64);
        let mean = p.seqs as u64 + n + strided(dim, 64) * (2 + n);
        gpu.dispatch(enc, &format!("visual_merge_mean_{dt}"), bytes, &bufs, u32_of("workgroups", p.n * p.seqs)?, mean)
    }
}

/// The loop budget of `visual_attend.wgsli` behind its kernel's setup: cu_seqlens' check and the
/// walk to the row's sequence, the query's load, then per 64-key tile of the sequence (at most
/// every token) the key's score, two 64-lane reductions and the weighted sum over D / 64 dims.
fn attend_loops(seqs: usize, tokens: usize, dim: usize) -> u64 {
    let (d, ne) = (dim as u64, strided(dim as u64, 64));
    let tile = 1 + d + 2 * tree(64) + ne * (1 + 64);
    2 * seqs as u64 + strided(d, 64) + strided(tokens as u64, 64).saturating_mul(tile) + ne
}

impl Select {
    /// The loop budget of `visual_select.wgsl`: the finiteness scan, the total, the fault fill
    /// and the tail fill, then for `AboveMean` a prefix sum per 256-candidate block, else the
    /// index fill and the bitonic sorts (by score for `Mass`, by order, by index), and the
    /// cumulative walk for `Mass`.
    fn wgpu_loops(&self) -> u64 {
        let p = &self.params;
        let n = p.n as u64;
        let blocks = strided(n, 256);
        let base = 4 * blocks + n;
        base + match p.mode {
            SelectMode::AboveMean => blocks * (1 + tree(256)),
            SelectMode::TopK => blocks + 2 * bitonic_loops(n),
            SelectMode::Mass => blocks + 3 * bitonic_loops(n) + n,
        }
    }
}

/// The loop budget of `sort` in visual_select.wgsl over `len` entries: the power of two, then
/// per merge size the mirrored step and the half-cleaning steps, each 256 lanes over half the
/// padded length.
fn bitonic_loops(len: u64) -> u64 {
    let n2 = len.max(1).next_power_of_two();
    let stages = u64::from(n2.ilog2());
    let half = strided(n2 / 2, 256);
    stages + (1..=stages).map(|s| 1 + half + (s - 1) * (1 + half)).sum::<u64>()
}

impl AttnMass {
    /// The loop budget of `visual_row_lse.wgsl`: the walk to the row's sequence, cu_seqlens'
    /// check, the query's load, a D-long score per key of the sequence (at most every token) and
    /// the 64-lane reduction.
    fn lse_loops(&self) -> u64 {
        let p = &self.params;
        let d = p.dim as u64;
        2 * p.seqs as u64 + strided(d, 64) + strided(p.tokens as u64, 64) * (1 + d) + tree(64)
    }

    /// The loop budget of a `visual_mass.wgsl` dispatch over `rows` rater rows: cu_seqlens'
    /// check, the row check, then per row the scores over the heads the invocation sums (all
    /// query heads of its output head), each D long.
    fn mass_loops(&self, rows: usize) -> u64 {
        let p = &self.params;
        let (rows, d) = (rows as u64, p.dim as u64);
        let per_row = self.heads_per_output() as u64;
        p.seqs as u64 + rows + rows * (1 + per_row * (1 + d))
    }
}

impl Merge {
    /// The loop budget of `visual_merge_assign.wgsl`: the checks, the binary search among the
    /// kept, the candidate's norm, a D-long cosine against every 64th kept token, the tree.
    fn assign_loops(&self) -> u64 {
        let p = &self.params;
        let (n, d) = (p.n as u64, p.dim as u64);
        p.seqs as u64 + n + 2 + u64::from(n.max(1).ilog2()) + d + strided(n, 64) * (1 + d) + tree(64)
    }
}
