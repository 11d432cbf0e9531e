//! wgpu dispatches for the MLA family (`shaders/mla_*.wgsl`).

use super::uniforms::{AppendUniform, CombineUniform, DecodeUniform, HeadProductUniform, RopeUniform};
use super::{AbsorbQ, AppendCache, Geometry, HeadProduct, MlaDecode, MlaPrefill, ProjectOut, Rope};
use crate::backend::loops::{self, epw, strided, words};
use crate::backend::wgpu::{WgpuBackend, WgpuTensor};
use crate::backend::Status;
use crate::error::{Error, Result};
use crate::layout::u32_of;
use crate::plan::Plan;

impl MlaDecode {
    /// Records two dispatches into `enc`: the split partials into `ws`, then their combine.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        q: WgpuTensor,
        cache: WgpuTensor,
        pe_cache: Option<WgpuTensor>,
        cache_scale: Option<WgpuTensor>,
        block_table: WgpuTensor,
        seq_lens: WgpuTensor,
        o: WgpuTensor,
        lse: WgpuTensor,
        ws: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        let mb = gpu.max_binding();
        let ins = [self.bind(&q, "q", mb)?, self.bind(&cache, "cache", mb)?, 0];
        let pe = pe_cache.map(|t| self.bind(&t, "pe_cache", mb).map(|off| (t, off))).transpose()?;
        let cs = cache_scale.map(|t| self.bind(&t, "cache_scale", mb).map(|off| (t, off))).transpose()?;
        let tl = [self.bind(&block_table, "block_table", mb)?, self.bind(&seq_lens, "seq_lens", mb)?];
        let outs = [self.bind(&o, "o", mb)?, self.bind(&lse, "lse", mb)?, self.bind(&ws, "ws", mb)?];
        let g = self.geometry();
        attention(&g, gpu, enc, [q, cache], ins, pe, cs, None, [block_table, seq_lens], tl, [o, lse, ws], outs, status)
    }
}

impl MlaPrefill {
    /// As [`MlaDecode::run_wgpu`], each new token finding its sequence in `cu_seqlens`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        q: WgpuTensor,
        cache: WgpuTensor,
        pe_cache: Option<WgpuTensor>,
        cache_scale: Option<WgpuTensor>,
        cu_seqlens: WgpuTensor,
        block_table: WgpuTensor,
        seq_lens: WgpuTensor,
        o: WgpuTensor,
        lse: WgpuTensor,
        ws: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        let mb = gpu.max_binding();
        let ins = [self.bind(&q, "q", mb)?, self.bind(&cache, "cache", mb)?, 0];
        let pe = pe_cache.map(|t| self.bind(&t, "pe_cache", mb).map(|off| (t, off))).transpose()?;
        let cs = cache_scale.map(|t| self.bind(&t, "cache_scale", mb).map(|off| (t, off))).transpose()?;
        let cu = Some((cu_seqlens, self.bind(&cu_seqlens, "cu_seqlens", mb)?));
        let tl = [self.bind(&block_table, "block_table", mb)?, self.bind(&seq_lens, "seq_lens", mb)?];
        let outs = [self.bind(&o, "o", mb)?, self.bind(&lse, "lse", mb)?, self.bind(&ws, "ws", mb)?];
        let g = self.geometry();
        attention(&g, gpu, enc, [q, cache], ins, pe, cs, cu, [block_table, seq_lens], tl, [o, lse, ws], outs, status)
    }
}

/// The two dispatches of decode and prefill; every binding's offset was checked by the caller.
#[allow(clippy::too_many_arguments)]
fn attention(
    g: &Geometry,
    gpu: &WgpuBackend,
    enc: &mut wgpu::CommandEncoder,
    [q, cache]: [WgpuTensor; 2],
    [q_off, cache_off, _]: [u32; 3],
    pe_cache: Option<(WgpuTensor, u32)>,
    cache_scale: Option<(WgpuTensor, u32)>,
    cu: Option<(WgpuTensor, u32)>,
    [table, lens]: [WgpuTensor; 2],
    [table_off, lens_off]: [u32; 2],
    [o, lse, ws]: [WgpuTensor; 3],
    [o_off, lse_off, ws_off]: [u32; 3],
    status: &Status,
) -> Result<()> {
    let Status::Wgpu(st) = status else {
        return Err(Error::InvalidParams("mla attention: the status word is not a wgpu one".into()));
    };
    let w = g.latent + g.rope;
    let dummy = gpu.dummy()?;
    // The rope keys: their own cache, or the tail of each unified row (the same buffer bound
    // twice, read-only).
    let (pe_buf, pe_off, kv_stride, pe_stride) = match (pe_cache, g.split_cache) {
        (Some((pe, off)), true) => (pe.buffer, off, g.latent, g.rope),
        (None, true) if g.rope == 0 => (&dummy, 0, g.latent, 0),
        (None, false) => (cache.buffer, cache_off + g.latent as u32, w, w),
        _ => return Err(Error::InvalidParams("mla attention: pe_cache goes with the split layout and R > 0".into())),
    };
    if g.dtype.size() == 2 && o_off % 2 != 0 {
        return Err(Error::InvalidParams("mla attention o: a 16-bit view must start on an even element".into()));
    }
    let (cu_buf, cu_off) = match cu {
        Some((t, off)) => (t.buffer, off),
        None => (table.buffer, 0),
    };
    // The fp8 cache's scales (the `_e4m3_` modules read them; a float cache binds a stand-in).
    let (cs_buf, cs_off) = match cache_scale {
        Some((t, off)) => (t.buffer, off),
        None => (table.buffer, 0),
    };
    let u = DecodeUniform {
        batch: u32_of("batch", g.grid_batch)?,
        sq: u32_of("sq", g.sq)?,
        heads: g.heads as u32,
        latent: g.latent as u32,
        rope: g.rope as u32,
        page_size: u32_of("page_size", g.page_size)?,
        pages: u32_of("pages", g.pages)?,
        max_pages: u32_of("max_pages", g.max_pages)?,
        splits: u32_of("splits", g.splits)?,
        q_off,
        kv_off: cache_off,
        kv_stride: kv_stride as u32,
        pe_off,
        pe_stride: pe_stride as u32,
        table_off,
        lens_off,
        ws_off,
        scale: g.scale,
        prefill: u32::from(cu.is_some()),
        nseq: u32_of("batch", g.nseq)?,
        cu_off,
        cs_off,
    };
    let total = g.grid_batch * g.sq * g.heads;
    let groups = u32_of("workgroups", total * g.splits)?;
    let bufs = [q.buffer, cache.buffer, pe_buf, table.buffer, lens.buffer, ws.buffer, st, cu_buf, cs_buf];
    let module = format!("mla_decode_{}{}", if g.fp8() { "e4m3_" } else { "" }, g.dtype);
    let prefill = u.prefill != 0;
    let budget = decode_loops(g, prefill);
    gpu.refuse_loops(&module, budget, || {
        // The fewest splits whose key walk fits: each split walks at most `tiles` 64-key tiles.
        let base = decode_loops(&Geometry { max_pages: 0, ..*g }, prefill);
        let tiles = (loops::CPU_LOOP_LIMIT - 1).saturating_sub(base) / decode_loops_per_tile(g).max(1);
        match (g.max_pages * g.page_size).div_ceil(64).checked_div(tiles as usize) {
            Some(s) => format!("raise `splits` to {} or more (each split then walks fewer keys)", s.max(1) + 1),
            None => "use fewer latent dims".into(),
        }
    })?;
    gpu.dispatch(enc, &module, bytemuck::bytes_of(&u), &bufs, groups, budget)?;
    let c = CombineUniform {
        total: u32_of("rows", total)?,
        sq: u.sq,
        heads: u.heads,
        latent: u.latent,
        splits: u.splits,
        ws_off,
        o_off,
        lse_off,
    };
    let bufs = [ws.buffer, o.buffer, lse.buffer];
    let splits = g.splits as u64;
    let combine = 2 * splits + words(g.latent as u64, g.dtype, 64) * (1 + epw(g.dtype) * (1 + splits));
    gpu.dispatch(enc, &format!("mla_combine_{}", g.dtype), bytemuck::bytes_of(&c), &bufs, c.total, combine)
}

/// The loop budget of one `mla_decode.wgsl` invocation: the query row's load, the prefill's
/// walks over `cu_seqlens`, and per 64-key tile of its split the key's score (L + R), two
/// 64-lane reductions, the rescale and the weighted sum of the tile's rows (64 keys, L / 64 dims
/// each).
fn decode_loops(g: &Geometry, prefill: bool) -> u64 {
    let (l, r) = (g.latent as u64, g.rope as u64);
    let np = strided(l, 64);
    let keys = ((g.max_pages * g.page_size) as u64).div_ceil(g.splits.max(1) as u64);
    let prefill = if prefill { 3 * g.nseq as u64 } else { 0 };
    strided(l + r, 64) + prefill + 2 * np + strided(keys, 64).saturating_mul(decode_loops_per_tile(g))
}

fn decode_loops_per_tile(g: &Geometry) -> u64 {
    let (l, r) = (g.latent as u64, g.rope as u64);
    let np = strided(l, 64);
    1 + l + r + 2 * loops::tree(64) + np + 64 * (1 + np)
}

impl AppendCache {
    /// Records one dispatch into `enc`; bad or shared slots are skipped and raise their bit.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        kv_new: WgpuTensor,
        pe_new: Option<WgpuTensor>,
        slots: WgpuTensor,
        cache: WgpuTensor,
        pe_cache: Option<WgpuTensor>,
        cache_scale: Option<WgpuTensor>,
        status: &Status,
    ) -> Result<()> {
        let Status::Wgpu(st) = status else {
            return Err(Error::InvalidParams("append_cache: the status word is not a wgpu one".into()));
        };
        let fp8 = self.cache_dtype() == crate::dtype::DType::F8E4M3;
        let (p, mb) = (&self.params, gpu.max_binding());
        let dummy = gpu.dummy()?;
        let cache_off = self.bind(&cache, "cache", mb)?;
        let (pe_new_buf, pe_off) = match pe_new {
            Some(v) => (v.buffer, self.bind(&v, "pe_new", mb)?),
            // Nothing is read through it; kv_new stands in (a second read-only binding of a
            // buffer is allowed, the placeholder is bound writable below).
            None if p.rope == 0 => (kv_new.buffer, 0),
            None => return Err(Error::InvalidParams("append_cache: pe_new is missing (R > 0)".into())),
        };
        let (pe_cache_buf, pe_cache_off) = match pe_cache {
            Some(v) => (v.buffer, self.bind(&v, "pe_cache", mb)?),
            None => (&dummy, 0),
        };
        if p.dtype.size() == 2 && !fp8 && (cache_off % 2 != 0 || pe_cache_off % 2 != 0) {
            return Err(Error::InvalidParams("append_cache: 16-bit cache views must start on an even element".into()));
        }
        let (cs_buf, cs_off) = match (fp8, cache_scale) {
            (true, Some(v)) => (v.buffer, self.bind(&v, "cache_scale", mb)?),
            (true, None) => return Err(Error::InvalidParams("append_cache: an fp8 cache needs cache_scale".into())),
            (false, _) => (&dummy, 0),
        };
        let u = AppendUniform {
            tokens: u32_of("tokens", p.tokens)?,
            latent: p.latent as u32,
            rope: p.rope as u32,
            n_slots: u32_of("slots", self.slots())?,
            unified: u32::from(!p.split_cache),
            kv_off: self.bind(&kv_new, "kv_new", mb)?,
            pe_off,
            slots_off: self.bind(&slots, "slots", mb)?,
            cache_off,
            pe_cache_off,
            cs_off,
        };
        // The repeated-slot scan over every token, then the row's latent and rope parts.
        let scan = strided(p.tokens as u64, 64);
        if fp8 {
            // The row's largest magnitude, a 64-lane tree, then words of four bytes (4 per word).
            let w = (p.latent + p.rope) as u64;
            let budget = scan + strided(w, 64) + loops::tree(64) + strided(w / 4, 64) * 5;
            let bufs = [kv_new.buffer, pe_new_buf, slots.buffer, cache.buffer, pe_cache_buf, st, cs_buf];
            let module = format!("mla_append_e4m3_{}", p.dtype);
            return gpu.dispatch(enc, &module, bytemuck::bytes_of(&u), &bufs, u.tokens, budget);
        }
        let bufs = [kv_new.buffer, pe_new_buf, slots.buffer, cache.buffer, pe_cache_buf, st];
        let lane = 64 * epw(p.dtype);
        let budget = scan + strided(p.latent as u64, lane) + strided(p.rope as u64, lane);
        gpu.dispatch(enc, &format!("mla_append_{}", p.dtype), bytemuck::bytes_of(&u), &bufs, u.tokens, budget)
    }
}

impl Rope {
    /// Records one dispatch into `enc`, rotating `x` in place.
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        x: WgpuTensor,
        cos: WgpuTensor,
        sin: WgpuTensor,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let u = RopeUniform {
            tokens: u32_of("tokens", p.tokens)?,
            heads: u32_of("heads", p.heads)?,
            dim: u32_of("dim", p.dim)?,
            interleaved: u32::from(p.interleaved),
            x_off: self.bind(&x, "x", mb)?,
            head_stride: u32_of("head_stride", self.head_stride)?,
            token_stride: u32_of("token_stride", self.token_stride)?,
            cos_off: self.bind(&cos, "cos", mb)?,
            sin_off: self.bind(&sin, "sin", mb)?,
        };
        let bufs = [x.buffer, cos.buffer, sin.buffer];
        let budget = strided((p.heads * (p.dim / 2)) as u64, 64);
        gpu.dispatch(enc, &format!("mla_rope_{}", p.dtype), bytemuck::bytes_of(&u), &bufs, u.tokens, budget)
    }
}

impl HeadProduct {
    fn dispatch_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        dtype: crate::dtype::DType,
        (a, a_off): (WgpuTensor, u32),
        (w, w_off): (WgpuTensor, u32),
        (out, o_off): (WgpuTensor, u32),
    ) -> Result<()> {
        let (wh, wk, wj) = self.w;
        let u = HeadProductUniform {
            tokens: u32_of("tokens", self.tokens)?,
            heads: u32_of("heads", self.heads)?,
            k: u32_of("k", self.k)?,
            n: u32_of("n", self.n)?,
            a_off,
            a_ts: u32_of("stride", self.a.0)?,
            a_hs: u32_of("stride", self.a.1)?,
            o_off,
            o_ts: u32_of("stride", self.out.0)?,
            o_hs: u32_of("stride", self.out.1)?,
            w_off,
            w_hs: u32_of("stride", wh)?,
            w_ks: u32_of("stride", wk)?,
            w_js: u32_of("stride", wj)?,
        };
        let groups = u32_of("workgroups", self.tokens * self.heads)?;
        let bufs = [a.buffer, w.buffer, out.buffer];
        // The input row's load, then per output word a K-long dot for each of its elements.
        let k = self.k as u64;
        let budget = strided(k, 64) + words(self.n as u64, dtype, 64) * (1 + epw(dtype) * (1 + k));
        gpu.dispatch(enc, &format!("mla_head_product_{dtype}"), bytemuck::bytes_of(&u), &bufs, groups, budget)
    }
}

impl AbsorbQ {
    /// Records one dispatch: `q`'s latent rows from `q_nope` and `w_uk`.
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        q_nope: WgpuTensor,
        w_uk: WgpuTensor,
        q: WgpuTensor,
    ) -> Result<()> {
        let mb = gpu.max_binding();
        let offs = (self.bind(&q_nope, "q_nope", mb)?, self.bind(&w_uk, "w_uk", mb)?, self.bind(&q, "q", mb)?);
        let dt = self.params.dtype;
        self.product.dispatch_wgpu(gpu, enc, dt, (q_nope, offs.0), (w_uk, offs.1), (q, offs.2))
    }
}

impl ProjectOut {
    /// Records one dispatch: `out` from the latent output `o` and `w_uv`.
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        o: WgpuTensor,
        w_uv: WgpuTensor,
        out: WgpuTensor,
    ) -> Result<()> {
        let mb = gpu.max_binding();
        let offs = (self.bind(&o, "o", mb)?, self.bind(&w_uv, "w_uv", mb)?, self.bind(&out, "out", mb)?);
        let dt = self.params.dtype;
        self.product.dispatch_wgpu(gpu, enc, dt, (o, offs.0), (w_uv, offs.1), (out, offs.2))
    }
}
