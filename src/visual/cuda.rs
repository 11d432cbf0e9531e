//! CUDA launches for the visual family (`kernels/visual.cu`).

use std::sync::Arc;

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::{AttnMass, Compact, Merge, NeighborAttention, Select, SelectMode, SparseAttention};
use crate::backend::cuda::{cuda_err, opt_ptr, CudaBackend, CudaFloat};
use crate::backend::Status;
use crate::dtype::{same_dtype, DType};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::tc::{attention_tile, shared_bytes};

fn grid_dim(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v)
        .ok()
        .filter(|&v| v <= 65535 || what == "x")
        .ok_or_else(|| Error::InvalidParams(format!("visual: {what} grid of {v} blocks exceeds CUDA's limit")))
}

/// The pointers and sizes of one tensor-core attention launch (`visual_attention_tc_*`).
struct TcAttention {
    qkv: [u64; 3],
    cu: u64,
    pos: u64,
    /// The query rows' offsets and positions (the keys' own but for a decode over a pruned cache).
    cu_q: u64,
    pos_q: u64,
    /// Query rows Tq (T but for a decode).
    tq: usize,
    img: u64,
    head_mask: u64,
    out: [u64; 2],
    status: u64,
    sizes: [usize; 5], // seqs, tokens, heads, kv_heads, dim
    scale: f32,
    radius: i32,
    causal: i32,
}

/// Runs the attention on tensor cores when it can: f16/bf16, D a multiple of 16, q, k and v
/// 16-byte aligned (cp.async copies 16 bytes), and a tile that fits the device's shared memory.
/// Ok(false): the caller launches the CUDA-core kernel instead.
fn attention_tc<T: CudaFloat>(cuda: &CudaBackend, stream: &Arc<CudaStream>, a: &TcAttention) -> Result<bool> {
    let [seqs, tokens, heads, kv_heads, d] = a.sizes;
    let g = heads / kv_heads;
    let ok = matches!(T::DTYPE, DType::F16 | DType::BF16) && d.is_multiple_of(16) && a.qkv.iter().all(|p| p % 16 == 0);
    let tile =
        if ok { attention_tile(d, Some(d), d, a.tq * g, false, cuda.shared_optin() as usize, &[64, 32]) } else { None };
    let Some(t) = tile else { return Ok(false) };
    let f = cuda.function("visual", &format!("visual_attention_tc_g{}_k{}_{}", t.rows, t.keys, T::DTYPE))?;
    f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, t.shared as i32)
        .map_err(cuda_err)?;
    let ints = [seqs, tokens, a.tq, heads, kv_heads, d].map(|x| x as i32);
    let mut b = stream.launch_builder(&f);
    let ptrs = [&a.cu, &a.pos, &a.cu_q, &a.pos_q, &a.img, &a.head_mask];
    for p in a.qkv.iter().chain(ptrs).chain(&a.out).chain([&a.status]) {
        b.arg(p);
    }
    for v in &ints {
        b.arg(v);
    }
    b.arg(&a.scale).arg(&a.radius).arg(&a.causal);
    // Every sequence's groups of G (query row, head) pairs in one grid row per KV head: at most
    // ceil(Tq g / G) + B of them (a block past the last returns at once).
    let groups = (a.tq * g).div_ceil(t.rows) + seqs;
    let cfg = LaunchConfig {
        grid_dim: (grid_dim("x", groups)?, grid_dim("y", kv_heads)?, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: t.shared as u32,
    };
    // SAFETY: matches visual_attention_tc_g<G>_k<TK>_<dtype>; the caller checked every length
    // against the plan's tensor list; cu_seqlens is validated in every block before any other
    // read, groups lie inside their sequence (so keys, pos and outputs are read and written within
    // it), the image is checked against its sequence, head_mask is read only when non-null; q,
    // k and v are 16-byte aligned and D a multiple of 16 (checked above); `t.shared` is the
    // kernel's layout within the device's opt-in limit; each output row belongs to one group.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(true)
}

impl Select {
    /// One launch, a block per sequence.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        score: &impl DevicePtr<f32>,
        lens: &impl DevicePtr<i32>,
        order: Option<&CudaSlice<f32>>,
        keep: Option<&CudaSlice<i32>>,
        idx: &mut impl DevicePtrMut<i32>,
        count: &mut impl DevicePtrMut<i32>,
        status: &mut Status,
    ) -> Result<()> {
        let mut given = vec![("score", score.len()), ("lens", lens.len()), ("idx", idx.len())];
        given.extend([("count", count.len())].into_iter().chain(order.map(|o| ("order", o.len()))));
        given.extend(keep.map(|k| ("keep", k.len())));
        self.check_lens(&given)?;
        let p = &self.params;
        let (stp, _s) = status.cuda_slice("visual")?.device_ptr_mut(stream);
        let (sp, _a) = score.device_ptr(stream);
        let (lp, _b) = lens.device_ptr(stream);
        let (op, _og) = opt_ptr(order.filter(|_| p.has_order), stream, sp);
        // The per-sequence counts (null: `k` for every sequence).
        let (kp, _kg) = opt_ptr(keep.filter(|_| p.per_seq_k), stream, 0);
        let (ip, _c) = idx.device_ptr_mut(stream);
        let (cp, _d) = count.device_ptr_mut(stream);
        let mode = match p.mode {
            SelectMode::TopK => 0i32,
            SelectMode::Mass => 1,
            SelectMode::AboveMean => 2,
        };
        let (n, k, ho) = (p.n as i32, p.k.min(i32::MAX as usize) as i32, i32::from(p.has_order));
        // Ranks by a block-wide sort of (score, index) pairs when they fit shared memory: 9
        // bytes per slot of the power of two at or above n; else by counting (O(n^2)).
        let slots = p.n.next_power_of_two().max(2);
        let sort_n = if mode != 2 && 9 * slots <= cuda.shared_optin() as usize { slots } else { 0 };
        let f = cuda.function("visual", "visual_select")?;
        f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (9 * sort_n) as i32)
            .map_err(cuda_err)?;
        let sort_i = sort_n as i32;
        let mut b = stream.launch_builder(&f);
        b.arg(&sp).arg(&lp).arg(&op).arg(&kp).arg(&ip).arg(&cp).arg(&stp).arg(&n).arg(&mode).arg(&k).arg(&p.tau);
        b.arg(&ho);
        b.arg(&sort_i);
        let cfg = LaunchConfig {
            grid_dim: (grid_dim("x", p.seqs)?, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: (9 * sort_n) as u32,
        };
        // SAFETY: matches visual_select; one block per sequence reads its n scores (and order)
        // only below lens[b] after checking 0 <= lens[b] <= n, and keep[b] (null without
        // per_seq_k; its length checked otherwise), and writes its own idx row and
        // count; the sort's arrays hold sort_n >= n slots in the 9 * sort_n bytes of dynamic
        // shared memory (within the opt-in limit, or 0 and unused); lengths checked against
        // the tensor list.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl Compact {
    /// One launch, a block per sequence.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        cu_seqlens: &impl DevicePtr<i32>,
        seg: &impl DevicePtr<i32>,
        idx: &impl DevicePtr<i32>,
        count: &impl DevicePtr<i32>,
        rows: &mut impl DevicePtrMut<i32>,
        pos: &mut impl DevicePtrMut<i32>,
        cu_out: &mut impl DevicePtrMut<i32>,
        status: &mut Status,
    ) -> Result<()> {
        let given = [("cu_seqlens", cu_seqlens.len()), ("seg", seg.len()), ("idx", idx.len()), ("count", count.len())];
        self.check_lens(&[&given[..], &[("rows", rows.len()), ("pos", pos.len()), ("cu_out", cu_out.len())]].concat())?;
        let p = &self.params;
        let (stp, _s) = status.cuda_slice("visual")?.device_ptr_mut(stream);
        let (cp, _a) = cu_seqlens.device_ptr(stream);
        let (gp, _b) = seg.device_ptr(stream);
        let (ip, _c) = idx.device_ptr(stream);
        let (np, _d) = count.device_ptr(stream);
        let (rp, _e) = rows.device_ptr_mut(stream);
        let (pp, _f) = pos.device_ptr_mut(stream);
        let (op, _g) = cu_out.device_ptr_mut(stream);
        let (t, n) = (p.tokens as i32, p.n as i32);
        let f = cuda.function("visual", "visual_compact")?;
        let mut b = stream.launch_builder(&f);
        b.arg(&cp).arg(&gp).arg(&ip).arg(&np).arg(&rp).arg(&pp).arg(&op).arg(&stp).arg(&t).arg(&n);
        let cfg =
            LaunchConfig { grid_dim: (grid_dim("x", p.seqs)?, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: matches visual_compact; cu_seqlens is validated in every block, each segment
        // and selection is checked against its sequence before use, and the new lengths sum to
        // at most tokens, so every block writes its own range of rows and pos.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl AttnMass {
    /// Two launches (one with `has_lse`): the rows' LSE into `ws`, then the masses.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        q: &impl DevicePtr<T>,
        qpos: &impl DevicePtr<i32>,
        qw: &impl DevicePtr<f32>,
        k: &impl DevicePtr<T>,
        cu_seqlens: &impl DevicePtr<i32>,
        seg: &impl DevicePtr<i32>,
        lse: Option<&CudaSlice<f32>>,
        mass: &mut impl DevicePtrMut<f32>,
        ws: &mut impl DevicePtrMut<f32>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let mut given = vec![("q", q.len()), ("qpos", qpos.len()), ("qw", qw.len()), ("k", k.len())];
        given.extend([("cu_seqlens", cu_seqlens.len()), ("seg", seg.len()), ("mass", mass.len()), ("ws", ws.len())]);
        given.extend(lse.map(|l| ("lse", l.len())));
        self.check_lens(&given)?;
        let p = &self.params;
        let (stp, _s) = status.cuda_slice("visual")?.device_ptr_mut(stream);
        let (qp, _a) = q.device_ptr(stream);
        let (pp, _b) = qpos.device_ptr(stream);
        let (wp, _c) = qw.device_ptr(stream);
        let (kp, _d) = k.device_ptr(stream);
        let (cp, _e) = cu_seqlens.device_ptr(stream);
        let (gp, _f) = seg.device_ptr(stream);
        let (mp, _g) = mass.device_ptr_mut(stream);
        let (sp, _h) = ws.device_ptr_mut(stream);
        let ints = [p.seqs, p.tokens, p.rows, p.heads, p.kv_heads, p.dim, p.n].map(|v| v as i32);
        let [seqs, tokens, rows, h, hkv, d, n] = ints;
        // Tensor cores for f16/bf16 when cp.async can copy q and k rows 16 bytes at a time.
        let optin = cuda.shared_optin() as usize;
        let tc =
            matches!(T::DTYPE, DType::F16 | DType::BF16) && p.dim.is_multiple_of(16) && qp % 16 == 0 && kp % 16 == 0;
        let mass_shared = 2 * 64 * (p.dim + 8) * T::DTYPE.size();
        let lse_shared = shared_bytes(64, 64, p.dim, None);
        let (_lg, lp) = match lse.filter(|_| p.has_lse) {
            Some(l) => {
                let (ptr, g) = l.device_ptr(stream);
                (Some(g), ptr)
            }
            None if tc && lse_shared <= optin => {
                let f = cuda.function("visual", &format!("visual_row_lse_tc_{}", T::DTYPE))?;
                f.set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    lse_shared as i32,
                )
                .map_err(cuda_err)?;
                let mut b = stream.launch_builder(&f);
                b.arg(&qp).arg(&pp).arg(&kp).arg(&cp).arg(&sp).arg(&seqs).arg(&tokens).arg(&rows).arg(&h).arg(&hkv);
                b.arg(&d).arg(&p.scale);
                let groups = (p.rows * (p.heads / p.kv_heads)).div_ceil(64);
                let cfg = LaunchConfig {
                    grid_dim: (grid_dim("x", groups)?, grid_dim("y", p.kv_heads)?, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: lse_shared as u32,
                };
                // SAFETY: matches visual_row_lse_tc_<dtype>; bad cu_seqlens return before any
                // read; a group's pairs are rows < R, a row with qpos outside the tokens sees no
                // key, keys are read within [first key of a row's sequence, last row position];
                // q and k 16-byte aligned and D a multiple of 16 (checked); `lse_shared` is the
                // core's layout for G = TK = 64 within the opt-in limit; each (row, head) of ws
                // belongs to one group.
                unsafe { b.launch(cfg) }.map_err(cuda_err)?;
                (None, sp)
            }
            None => {
                let f = cuda.function("visual", &format!("visual_row_lse_{}", T::DTYPE))?;
                let mut b = stream.launch_builder(&f);
                b.arg(&qp).arg(&pp).arg(&kp).arg(&cp).arg(&sp).arg(&seqs).arg(&tokens).arg(&h).arg(&hkv).arg(&d);
                b.arg(&p.scale);
                let cfg = LaunchConfig {
                    grid_dim: (grid_dim("x", p.rows)?, grid_dim("y", p.heads)?, 1),
                    block_dim: (128, 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: matches visual_row_lse_<dtype>; rows with qpos outside the tokens or
                // bad cu_seqlens return before reading; keys are read within the row's own
                // sequence up to its position; D <= 256 fits the shared query row.
                unsafe { b.launch(cfg) }.map_err(cuda_err)?;
                (None, sp)
            }
        };
        let hpo = self.heads_per_output() as i32;
        if tc && mass_shared <= optin {
            let f = cuda.function("visual", &format!("visual_mass_tc_{}", T::DTYPE))?;
            f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, mass_shared as i32)
                .map_err(cuda_err)?;
            let mut b = stream.launch_builder(&f);
            b.arg(&qp).arg(&pp).arg(&wp).arg(&kp).arg(&cp).arg(&gp).arg(&lp).arg(&mp).arg(&stp);
            b.arg(&seqs).arg(&tokens).arg(&rows).arg(&h).arg(&hkv).arg(&d).arg(&n).arg(&p.scale).arg(&hpo);
            let cfg = LaunchConfig {
                grid_dim: (grid_dim("x", p.n.div_ceil(64))?, grid_dim("y", p.seqs)?, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: mass_shared as u32,
            };
            // SAFETY: matches visual_mass_tc_<dtype>; each block writes only its own 64 columns
            // of its sequence's masses; keys are read at validated segment rows below the
            // segment's length, rows outside the sequence or the tokens are skipped; q and k
            // 16-byte aligned, D a multiple of 16 (checked); `mass_shared` holds Q and K
            // [64][D + 8] within the opt-in limit; lengths checked.
            unsafe { b.launch(cfg) }.map_err(cuda_err)?;
            return Ok(());
        }
        let f = cuda.function("visual", &format!("visual_mass_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&qp).arg(&pp).arg(&wp).arg(&kp).arg(&cp).arg(&gp).arg(&lp).arg(&mp).arg(&stp);
        b.arg(&seqs).arg(&tokens).arg(&rows).arg(&h).arg(&hkv).arg(&d).arg(&n).arg(&p.scale).arg(&hpo);
        let cfg = LaunchConfig {
            grid_dim: (grid_dim("x", p.n.div_ceil(128))?, grid_dim("y", p.seqs)?, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches visual_mass_<dtype>; each thread writes only its own candidate's
        // masses, keys are read at validated segment rows, rows with a bad qpos are skipped;
        // lengths checked.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl SparseAttention {
    /// One launch, a block per (token, head).
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        q: &impl DevicePtr<T>,
        k: &impl DevicePtr<T>,
        v: &impl DevicePtr<T>,
        cu_seqlens: &impl DevicePtr<i32>,
        pos: &impl DevicePtr<i32>,
        cu_seqlens_q: Option<&CudaSlice<i32>>,
        pos_q: Option<&CudaSlice<i32>>,
        o: &mut impl DevicePtrMut<T>,
        lse: &mut impl DevicePtrMut<f32>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let given = [("q", q.len()), ("k", k.len()), ("v", v.len()), ("cu_seqlens", cu_seqlens.len())];
        let mut lens = [&given[..], &[("pos", pos.len()), ("o", o.len()), ("lse", lse.len())]].concat();
        lens.extend(cu_seqlens_q.map(|c| ("cu_seqlens_q", c.len())));
        lens.extend(pos_q.map(|c| ("pos_q", c.len())));
        self.check_lens(&lens)?;
        let p = &self.params;
        let (stp, _s) = status.cuda_slice("visual")?.device_ptr_mut(stream);
        let (qp, _a) = q.device_ptr(stream);
        let (kp, _b) = k.device_ptr(stream);
        let (vp, _c) = v.device_ptr(stream);
        let (cp, _d) = cu_seqlens.device_ptr(stream);
        let (pp, _e) = pos.device_ptr(stream);
        // Decode: the new tokens' offsets and positions; prefill: the keys' own.
        let ((cqp, _cqg), (pqp, _pqg)) = (opt_ptr(cu_seqlens_q, stream, cp), opt_ptr(pos_q, stream, pp));
        let tq = self.query_rows();
        let (op, _f) = o.device_ptr_mut(stream);
        let (lp, _g) = lse.device_ptr_mut(stream);
        let tc = TcAttention {
            qkv: [qp, kp, vp],
            cu: cp,
            pos: pp,
            cu_q: cqp,
            pos_q: pqp,
            tq,
            img: 0,
            head_mask: 0,
            out: [op, lp],
            status: stp,
            sizes: [p.seqs, p.tokens, p.heads, p.kv_heads, p.dim],
            scale: p.scale,
            radius: 0,
            causal: 0,
        };
        if attention_tc::<T>(cuda, stream, &tc)? {
            return Ok(());
        }
        let [seqs, tokens, tq_i, h, hkv, d] = [p.seqs, p.tokens, tq, p.heads, p.kv_heads, p.dim].map(|x| x as i32);
        let f = cuda.function("visual", &format!("visual_sparse_attention_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&qp).arg(&kp).arg(&vp).arg(&cp).arg(&pp).arg(&cqp).arg(&pqp).arg(&op).arg(&lp).arg(&stp);
        b.arg(&seqs).arg(&tokens).arg(&tq_i).arg(&h).arg(&hkv).arg(&d).arg(&p.scale);
        let cfg = LaunchConfig {
            grid_dim: (grid_dim("x", tq)?, grid_dim("y", p.heads)?, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches visual_sparse_attention_<dtype>; both cu_seqlens (keys, queries) are
        // validated in every block before anything else is read, keys are read within the query
        // row's own sequence, D <= 256 fits the shared query row and the two accumulators per
        // thread; lengths checked (cu_seqlens_q and pos_q exactly when the plan decodes).
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl NeighborAttention {
    /// One launch, a block per (token, head).
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        q: &impl DevicePtr<T>,
        k: &impl DevicePtr<T>,
        v: &impl DevicePtr<T>,
        cu_seqlens: &impl DevicePtr<i32>,
        img: &impl DevicePtr<i32>,
        head_mask: Option<&CudaSlice<i32>>,
        o: &mut impl DevicePtrMut<T>,
        lse: &mut impl DevicePtrMut<f32>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let mut given = vec![("q", q.len()), ("k", k.len()), ("v", v.len()), ("cu_seqlens", cu_seqlens.len())];
        given.extend([("img", img.len()), ("o", o.len()), ("lse", lse.len())]);
        given.extend(head_mask.map(|m| ("head_mask", m.len())));
        self.check_lens(&given)?;
        let p = &self.params;
        let (stp, _s) = status.cuda_slice("visual")?.device_ptr_mut(stream);
        let (qp, _a) = q.device_ptr(stream);
        let (kp, _b) = k.device_ptr(stream);
        let (vp, _c) = v.device_ptr(stream);
        let (cp, _d) = cu_seqlens.device_ptr(stream);
        let (ip, _e) = img.device_ptr(stream);
        let (mp, _mg) = opt_ptr(head_mask.filter(|_| p.has_head_mask), stream, 0);
        let (op, _f) = o.device_ptr_mut(stream);
        let (lp, _g) = lse.device_ptr_mut(stream);
        let [seqs, tokens, h, hkv, d, r] = [p.seqs, p.tokens, p.heads, p.kv_heads, p.dim, p.radius].map(|x| x as i32);
        let causal = i32::from(p.causal_window);
        let tc = TcAttention {
            qkv: [qp, kp, vp],
            cu: cp,
            pos: 0,
            cu_q: cp,
            pos_q: 0,
            tq: p.tokens,
            img: ip,
            head_mask: mp,
            out: [op, lp],
            status: stp,
            sizes: [p.seqs, p.tokens, p.heads, p.kv_heads, p.dim],
            scale: p.scale,
            radius: r,
            causal,
        };
        if attention_tc::<T>(cuda, stream, &tc)? {
            return Ok(());
        }
        let f = cuda.function("visual", &format!("visual_neighbor_attention_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&qp).arg(&kp).arg(&vp).arg(&cp).arg(&ip).arg(&mp).arg(&op).arg(&lp).arg(&stp);
        b.arg(&seqs).arg(&tokens).arg(&h).arg(&hkv).arg(&d).arg(&p.scale).arg(&r).arg(&causal);
        let cfg = LaunchConfig {
            grid_dim: (grid_dim("x", p.tokens)?, grid_dim("y", p.heads)?, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches visual_neighbor_attention_<dtype>; cu_seqlens is validated in every
        // block, the image is checked against its sequence before use (a bad one makes the
        // sequence all text), keys are read within the query's own sequence, head_mask is read
        // only when given (null otherwise); D <= 256; lengths checked.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl Merge {
    /// Two launches: the assignment, then the means.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        x: &impl DevicePtr<T>,
        cu_seqlens: &impl DevicePtr<i32>,
        seg: &impl DevicePtr<i32>,
        idx: &impl DevicePtr<i32>,
        count: &impl DevicePtr<i32>,
        assign: &mut impl DevicePtrMut<i32>,
        merged: &mut impl DevicePtrMut<T>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let given = [("x", x.len()), ("cu_seqlens", cu_seqlens.len()), ("seg", seg.len()), ("idx", idx.len())];
        let more = [("count", count.len()), ("assign", assign.len()), ("merged", merged.len())];
        self.check_lens(&[&given[..], &more[..]].concat())?;
        let p = &self.params;
        let (stp, _s) = status.cuda_slice("visual")?.device_ptr_mut(stream);
        let (xp, _a) = x.device_ptr(stream);
        let (cp, _b) = cu_seqlens.device_ptr(stream);
        let (gp, _c) = seg.device_ptr(stream);
        let (ip, _d) = idx.device_ptr(stream);
        let (np, _e) = count.device_ptr(stream);
        let (ap, _f) = assign.device_ptr_mut(stream);
        let (mp, _g) = merged.device_ptr_mut(stream);
        let [seqs, tokens, n, d] = [p.seqs, p.tokens, p.n, p.dim].map(|v| v as i32);
        let f = cuda.function("visual", &format!("visual_merge_assign_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&xp).arg(&cp).arg(&gp).arg(&ip).arg(&np).arg(&ap).arg(&stp).arg(&seqs).arg(&tokens).arg(&n).arg(&d);
        let cfg = LaunchConfig {
            grid_dim: (grid_dim("x", p.n.div_ceil(128))?, grid_dim("y", p.seqs)?, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches visual_merge_assign_<dtype>; each thread writes its own candidate's
        // slot; segments and selections are validated before hidden rows are read; lengths
        // checked.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        let f = cuda.function("visual", &format!("visual_merge_mean_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&xp).arg(&cp).arg(&gp).arg(&ip).arg(&np).arg(&ap).arg(&mp).arg(&seqs).arg(&tokens).arg(&n).arg(&d);
        let cfg = LaunchConfig {
            grid_dim: (grid_dim("x", p.n)?, grid_dim("y", p.seqs)?, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches visual_merge_mean_<dtype>; each block writes its own slot's row; the
        // assignment (pass 1, ordered on the stream) holds slots below the kept count or -1.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}
