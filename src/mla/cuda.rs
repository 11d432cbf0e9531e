//! CUDA launches for the MLA family (`kernels/mla.cu`).

use std::sync::Arc;

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::{tc_tile, AbsorbQ, AppendCache, Geometry, HeadProduct, MlaDecode, MlaPrefill, ProjectOut, Rope};
use crate::backend::cuda::{cuda_err, opt_ptr, CudaBackend, CudaFloat};
use crate::backend::Status;
use crate::dtype::{same_dtype, DType};
use crate::error::{Error, Result};
use crate::plan::Plan;

impl MlaDecode {
    /// Two launches on `stream`: the split partials into `ws`, then their combine into `o` and
    /// `lse`. Nothing is read back; bad table entries or lengths raise `INDEX_OUT_OF_RANGE`.
    /// `C` is the cache's storage: `T`, or [`crate::E4M3`] with `cache_scale`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat, C: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        q: &impl DevicePtr<T>,
        cache: &impl DevicePtr<C>,
        pe_cache: Option<&CudaSlice<C>>,
        cache_scale: Option<&CudaSlice<f32>>,
        block_table: &impl DevicePtr<i32>,
        seq_lens: &impl DevicePtr<i32>,
        o: &mut impl DevicePtrMut<T>,
        lse: &mut impl DevicePtrMut<f32>,
        ws: &mut impl DevicePtrMut<f32>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        same_dtype::<C>(self.geometry().cache_dtype)?;
        let mut lens = vec![("q", q.len()), ("cache", cache.len()), ("block_table", block_table.len())];
        lens.extend([("seq_lens", seq_lens.len()), ("o", o.len()), ("lse", lse.len()), ("ws", ws.len())]);
        lens.extend(pe_cache.map(|c| ("pe_cache", c.len())));
        lens.extend(cache_scale.map(|c| ("cache_scale", c.len())));
        self.check_lens(&lens)?;
        let bufs = Bufs { q, cache, pe_cache, cache_scale, cu: None, block_table, seq_lens };
        attention(&self.geometry(), cuda, stream, bufs, o, lse, ws, status)
    }
}

impl MlaPrefill {
    /// As [`MlaDecode::run_cuda`], each new token finding its sequence in `cu_seqlens`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat, C: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        q: &impl DevicePtr<T>,
        cache: &impl DevicePtr<C>,
        pe_cache: Option<&CudaSlice<C>>,
        cache_scale: Option<&CudaSlice<f32>>,
        cu_seqlens: &CudaSlice<i32>,
        block_table: &impl DevicePtr<i32>,
        seq_lens: &impl DevicePtr<i32>,
        o: &mut impl DevicePtrMut<T>,
        lse: &mut impl DevicePtrMut<f32>,
        ws: &mut impl DevicePtrMut<f32>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        same_dtype::<C>(self.geometry().cache_dtype)?;
        let mut lens = vec![("q", q.len()), ("cache", cache.len()), ("cu_seqlens", cu_seqlens.len())];
        lens.extend([("block_table", block_table.len()), ("seq_lens", seq_lens.len()), ("o", o.len())]);
        lens.extend([("lse", lse.len()), ("ws", ws.len())].into_iter().chain(pe_cache.map(|c| ("pe_cache", c.len()))));
        lens.extend(cache_scale.map(|c| ("cache_scale", c.len())));
        self.check_lens(&lens)?;
        let bufs = Bufs { q, cache, pe_cache, cache_scale, cu: Some(cu_seqlens), block_table, seq_lens };
        attention(&self.geometry(), cuda, stream, bufs, o, lse, ws, status)
    }
}

/// The read-only buffers of one attention launch (`E` the cache's element).
struct Bufs<'a, E: CudaFloat, Q, C, B, L> {
    q: &'a Q,
    cache: &'a C,
    pe_cache: Option<&'a CudaSlice<E>>,
    cache_scale: Option<&'a CudaSlice<f32>>,
    cu: Option<&'a CudaSlice<i32>>,
    block_table: &'a B,
    seq_lens: &'a L,
}

#[allow(clippy::too_many_arguments)]
fn attention<T: CudaFloat, E: CudaFloat, Q: DevicePtr<T>, C: DevicePtr<E>, B: DevicePtr<i32>, L: DevicePtr<i32>>(
    g: &Geometry,
    cuda: &CudaBackend,
    stream: &Arc<CudaStream>,
    i: Bufs<'_, E, Q, C, B, L>,
    o: &mut impl DevicePtrMut<T>,
    lse: &mut impl DevicePtrMut<f32>,
    ws: &mut impl DevicePtrMut<f32>,
    status: &mut Status,
) -> Result<()> {
    let Status::Cuda(st) = status else {
        return Err(Error::InvalidParams("the status word is not a CUDA one".into()));
    };
    let (stp, _sg) = st.device_ptr_mut(stream);
    let w = (g.latent + g.rope) as i64;
    let (qp, _a) = i.q.device_ptr(stream);
    let (cp, _b) = i.cache.device_ptr(stream);
    // The rope keys: their own cache, or the tail of each unified row.
    let (_pe_guard, pp, kv_stride, pe_stride) = match i.pe_cache {
        Some(pe) => {
            let (ptr, guard) = pe.device_ptr(stream);
            (Some(guard), ptr, g.latent as i64, g.rope as i64)
        }
        None if g.split_cache => (None, cp, g.latent as i64, 0),
        None => (None, cp + (g.latent * E::DTYPE.size()) as u64, w, w),
    };
    // The fp8 cache's scales (null for a float cache).
    let (csp, _cs_guard) = opt_ptr(i.cache_scale, stream, 0);
    // `_e4m3` kernels read an fp8 cache.
    let cache_tag = if g.fp8() { "e4m3_" } else { "" };
    let (cup, _cu_guard) = opt_ptr(i.cu, stream, 0);
    let (tp, _c) = i.block_table.device_ptr(stream);
    let (lp, _d) = i.seq_lens.device_ptr(stream);
    let (op, _e) = o.device_ptr_mut(stream);
    let (ep, _f) = lse.device_ptr_mut(stream);
    let (wp, _g) = ws.device_ptr_mut(stream);
    let ints = [g.nseq, g.sq, g.heads, g.latent, g.rope, g.page_size, g.pages, g.max_pages, g.splits].map(|v| v as i32);
    let [nseq, sq, heads, l, r, ps, pages, max_pages, splits] = ints;
    let rows = g.sq * g.heads;
    let total = (g.grid_batch * rows) as i64;
    if rows > i32::MAX as usize || g.splits > 65535 || g.grid_batch > 65535 {
        return Err(Error::InvalidParams(format!(
            "mla attention grid {rows} x {} x {} does not fit CUDA (splits and batch at most 65535)",
            g.splits, g.grid_batch
        )));
    }
    // f16 and bf16 run on tensor cores when cp.async can copy 16 bytes at a time from every
    // buffer and the workspace takes 8-byte pairs (an engine's view at an odd offset takes the
    // CUDA-core kernel instead).
    let aligned = [qp, cp, pp].iter().all(|p| p % 16 == 0) && wp % 8 == 0;
    let tile = match T::DTYPE {
        DType::F16 | DType::BF16 if aligned => tc_tile(g.latent, g.rope, rows, g.fp8(), cuda.shared_optin() as usize),
        _ => None,
    };
    if let Some(t) = tile {
        let name = format!("mla_decode_tc_g{}_k{}_{cache_tag}{}", t.rows, t.keys, T::DTYPE);
        let f = cuda.function("mla", &name)?;
        f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, t.shared as i32)
            .map_err(cuda_err)?;
        let mut b = stream.launch_builder(&f);
        b.arg(&qp).arg(&cp).arg(&pp).arg(&csp).arg(&tp).arg(&lp).arg(&cup).arg(&wp).arg(&stp).arg(&nseq);
        b.arg(&sq).arg(&heads).arg(&l).arg(&r).arg(&ps).arg(&pages).arg(&max_pages).arg(&splits);
        b.arg(&kv_stride).arg(&pe_stride).arg(&g.scale).arg(&total);
        // Decode: groups of each sequence's rows, one grid row per sequence. Prefill: every
        // sequence's groups in one row, at most ceil(rows / G) + B of them (a block past the
        // last returns at once).
        let groups = if i.cu.is_some() { rows.div_ceil(t.rows) + g.nseq } else { rows.div_ceil(t.rows) };
        let cfg = LaunchConfig {
            grid_dim: (groups as u32, g.splits as u32, g.grid_batch as u32),
            block_dim: (256, 1, 1),
            shared_mem_bytes: t.shared as u32,
        };
        // SAFETY: matches mla_decode_tc_g<G>_k<TK>_[e4m3_]<dtype>; every buffer's length was
        // checked against the plan's tensor list by the caller (cache_scale, one f32 per cache
        // row, given exactly when the cache is fp8) and q, the cache and the rope cache are
        // 16-byte aligned (checked above; L and R are multiples of 16, so every row is); a block
        // writes only its own rows (decode: the group's; prefill: a valid cu_seqlens partitions
        // the tokens, a bad one sends every block to its own flat rows); table entries are read
        // below ceil(clamped len / P) and page ids range-checked before any copy; `t.shared` is
        // what the kernel lays out and within the device's opt-in limit (tc_tile).
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    } else {
        let f = cuda.function("mla", &format!("mla_decode_{cache_tag}{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&qp).arg(&cp).arg(&pp).arg(&csp).arg(&tp).arg(&lp).arg(&cup).arg(&wp).arg(&stp).arg(&nseq);
        b.arg(&sq).arg(&heads).arg(&l).arg(&r).arg(&ps).arg(&pages).arg(&max_pages).arg(&splits);
        b.arg(&kv_stride).arg(&pe_stride).arg(&g.scale);
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, g.splits as u32, g.grid_batch as u32),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches mla_decode_[e4m3_]<dtype>; every buffer's length was checked against
        // the plan's tensor list by the caller (cache_scale: one f32 per cache row, null for a
        // float cache, which the kernel then never reads); cu_seqlens (prefill) is searched within its nseq + 1 entries;
        // table entries are read only below ceil(clamped len / P) <= max_pages and page ids are
        // range-checked before any cache access; L <= 2048 and R <= 128 fit the kernel's shared
        // query row and register tile (checked by `new`).
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    }

    let f = cuda.function("mla", &format!("mla_combine_{}", T::DTYPE))?;
    let mut b = stream.launch_builder(&f);
    b.arg(&wp).arg(&op).arg(&ep).arg(&sq).arg(&heads).arg(&l).arg(&splits).arg(&total);
    let (gx, gy) = (total.min(65535) as u32, (total as u64).div_ceil(65535) as u32);
    let cfg = LaunchConfig { grid_dim: (gx, gy, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: matches mla_combine_<dtype>; ws holds splits * total * (L + 1) f32 (checked), o
    // holds total * L, lse total; blocks past `total` return at once.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

impl AppendCache {
    /// One launch on `stream`; bad or shared slots are skipped and raise their status bit. `C` is
    /// the cache's storage: `T`, or [`crate::E4M3`] with `cache_scale`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat, C: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        kv_new: &impl DevicePtr<T>,
        pe_new: Option<&CudaSlice<T>>,
        slots: &impl DevicePtr<i32>,
        cache: &mut impl DevicePtrMut<C>,
        pe_cache: Option<&mut CudaSlice<C>>,
        cache_scale: Option<&mut CudaSlice<f32>>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        same_dtype::<C>(self.cache_dtype())?;
        let mut lens = vec![("kv_new", kv_new.len()), ("slots", slots.len()), ("cache", cache.len())];
        lens.extend(pe_new.map(|v| ("pe_new", v.len())));
        lens.extend(pe_cache.as_ref().map(|v| ("pe_cache", v.len())));
        lens.extend(cache_scale.as_ref().map(|v| ("cache_scale", v.len())));
        self.check_lens(&lens)?;
        let p = &self.params;
        let Status::Cuda(st) = status else {
            return Err(Error::InvalidParams("the status word is not a CUDA one".into()));
        };
        let (stp, _sg) = st.device_ptr_mut(stream);
        let (kp, _a) = kv_new.device_ptr(stream);
        let (sp, _b) = slots.device_ptr(stream);
        let (cp, _c) = cache.device_ptr_mut(stream);
        let (pp, _g1) = opt_ptr(pe_new, stream, kp);
        let w = (p.latent + p.rope) as i64;
        let (_g2, dst_pe, kv_stride, pe_stride) = match pe_cache {
            Some(pc) => {
                let (ptr, g) = pc.device_ptr_mut(stream);
                (Some(g), ptr, p.latent as i64, p.rope as i64)
            }
            None if p.split_cache => (None, cp, p.latent as i64, 0),
            None => (None, cp + (p.latent * C::DTYPE.size()) as u64, w, w),
        };
        let (_g3, csp) = match cache_scale {
            Some(cs) => {
                let (ptr, g) = cs.device_ptr_mut(stream);
                (Some(g), ptr)
            }
            None => (None, 0u64),
        };
        let ints = [p.tokens, p.latent, p.rope, self.slots()].map(|v| v as i32);
        let [tokens, l, r, n_slots] = ints;
        let tag = if C::DTYPE == DType::F8E4M3 { "e4m3_" } else { "" };
        let f = cuda.function("mla", &format!("mla_append_{tag}{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&kp).arg(&pp).arg(&sp).arg(&cp).arg(&dst_pe).arg(&csp).arg(&stp);
        b.arg(&tokens).arg(&l).arg(&r).arg(&n_slots).arg(&kv_stride).arg(&pe_stride);
        let (gx, gy) = (p.tokens.min(65535) as u32, p.tokens.div_ceil(65535) as u32);
        let cfg = LaunchConfig { grid_dim: (gx, gy, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: matches mla_append_[e4m3_]<dtype>; lengths were checked against the tensor list
        // (cache_scale, one f32 per slot, exactly when the cache is fp8; the float kernel never
        // touches it); a slot is range-checked (and checked against every other token's) before
        // any write.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl Rope {
    /// One launch on `stream`, rotating `x` in place.
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        x: &mut impl DevicePtrMut<T>,
        cos: &impl DevicePtr<f32>,
        sin: &impl DevicePtr<f32>,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&[("x", x.len()), ("cos", cos.len()), ("sin", sin.len())])?;
        let p = &self.params;
        let (xp, _a) = x.device_ptr_mut(stream);
        let (cp, _b) = cos.device_ptr(stream);
        let (sp, _c) = sin.device_ptr(stream);
        let (heads, d, inter) = (p.heads as i32, p.dim as i32, i32::from(p.interleaved));
        let (hs, ts) = (self.head_stride as i64, self.token_stride as i64);
        let f = cuda.function("mla", &format!("mla_rope_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&xp).arg(&cp).arg(&sp).arg(&heads).arg(&d).arg(&inter).arg(&hs).arg(&ts);
        let (gx, gy) = (p.tokens.min(65535) as u32, p.tokens.div_ceil(65535) as u32);
        if gx as usize * gy as usize != p.tokens {
            return Err(Error::InvalidParams(format!("rope: {} tokens do not tile a 65535-wide grid", p.tokens)));
        }
        let cfg = LaunchConfig { grid_dim: (gx, gy, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: matches mla_rope_<dtype>; x spans every token, head and pair (checked), the
        // tables tokens * dim/2; `new` made the head and token views disjoint, so no two threads
        // touch one element.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl HeadProduct {
    fn launch_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        a: &impl DevicePtr<T>,
        w: &impl DevicePtr<T>,
        out: &mut impl DevicePtrMut<T>,
    ) -> Result<()> {
        let (ap, _a) = a.device_ptr(stream);
        let (wp, _b) = w.device_ptr(stream);
        let (op, _c) = out.device_ptr_mut(stream);
        let ints = [self.tokens, self.heads, self.k, self.n].map(|v| v as i32);
        let [tokens, heads, k, n] = ints;
        let (wh, wk, wj) = self.w;
        let longs = [self.a.0, self.a.1, self.out.0, self.out.1, wh, wk, wj].map(|v| v as i64);
        if let Some(transposed) = self.tensor_core_layout(T::DTYPE, [ap, wp]) {
            let name = format!("mla_head_product_tc{}_{}", if transposed { "_wt" } else { "" }, T::DTYPE);
            let f = cuda.function("mla", &name)?;
            let mut b = stream.launch_builder(&f);
            b.arg(&ap).arg(&wp).arg(&op).arg(&tokens).arg(&k).arg(&n);
            for v in &longs {
                b.arg(v);
            }
            let grid = (self.n.div_ceil(64), self.tokens.div_ceil(64), self.heads);
            if grid.1 > 65535 || grid.2 > 65535 {
                return Err(Error::InvalidParams(format!("head product grid {grid:?} does not fit CUDA")));
            }
            let cfg = LaunchConfig {
                grid_dim: (grid.0 as u32, grid.1 as u32, grid.2 as u32),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: matches mla_head_product_tc[_wt]_<dtype>; a, w and out hold their views'
            // spans (checked by the caller); every copy is range-checked against tokens, K and N
            // before it reads, and 16-byte aligned (tensor_core_layout); each output element is
            // written by one thread of one block, and output rows do not overlap (checked by `new`).
            unsafe { b.launch(cfg) }.map_err(cuda_err)?;
            return Ok(());
        }
        let f = cuda.function("mla", &format!("mla_head_product_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&ap).arg(&wp).arg(&op).arg(&tokens).arg(&heads).arg(&k).arg(&n);
        for v in &longs {
            b.arg(v);
        }
        let g = self.tokens * self.heads;
        let cfg = LaunchConfig {
            grid_dim: (g.min(65535) as u32, g.div_ceil(65535) as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches mla_head_product_<dtype>; a, w and out hold their views' spans
        // (checked by the caller); k <= 4096 fits the staged row; blocks past tokens * heads
        // return at once; output rows do not overlap (checked by `new`).
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl AbsorbQ {
    /// One launch on `stream`: `q`'s latent rows from `q_nope` and `w_uk`.
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        q_nope: &impl DevicePtr<T>,
        w_uk: &impl DevicePtr<T>,
        q: &mut impl DevicePtrMut<T>,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&[("q_nope", q_nope.len()), ("w_uk", w_uk.len()), ("q", q.len())])?;
        self.product.launch_cuda(cuda, stream, q_nope, w_uk, q)
    }
}

impl ProjectOut {
    /// One launch on `stream`: `out` from the latent output `o` and `w_uv`.
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        o: &impl DevicePtr<T>,
        w_uv: &impl DevicePtr<T>,
        out: &mut impl DevicePtrMut<T>,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&[("o", o.len()), ("w_uv", w_uv.len()), ("out", out.len())])?;
        self.product.launch_cuda(cuda, stream, o, w_uv, out)
    }
}
