//! CUDA launches for the ternary family (`kernels/ternary.cu`).

use std::sync::Arc;

use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg, SyncOnDrop};

use super::{
    words_per_row, BitLinear, MlgruScan, MlgruStep, Pack, QuantizeWeights, RmsNormQuant, TernaryMatmul, Unpack,
};
use crate::backend::cuda::{cuda_err, grid_1d, opt_ptr, CudaBackend, CudaFloat};
use crate::backend::Status;
use crate::dtype::same_dtype;
use crate::error::{Error, Result};
use crate::plan::Plan;

/// Largest dynamic shared memory the fused BitLinear asks for: under the 48 KiB that needs no
/// opt-in, with room for the kernel's static shared memory (reduction scratch, scales).
pub const FUSED_SMEM: usize = 46 * 1024;

/// The status word's pointer, with the guard that records the kernel's write when dropped.
fn status_ptr<'a>(status: &'a mut Status, stream: &'a Arc<CudaStream>) -> Result<(u64, SyncOnDrop<'a>)> {
    match status {
        Status::Cuda(s) => Ok(s.device_ptr_mut(stream)),
        _ => Err(Error::InvalidParams("the status word is not a CUDA one".into())),
    }
}

/// i8 rows are read and written 16 bytes at a time: a view must start on a 16-byte boundary.
fn aligned16(what: &str, ptr: u64) -> Result<()> {
    if ptr.is_multiple_of(16) {
        Ok(())
    } else {
        Err(Error::InvalidParams(format!("{what}: an i8 view must start on a 16-byte boundary")))
    }
}

fn grid(x: usize, y: usize, z: usize, threads: u32, smem: u32) -> Result<LaunchConfig> {
    if x == 0 || y == 0 || z == 0 || x > i32::MAX as usize || y > 65535 || z > 65535 {
        return Err(Error::InvalidParams(format!("grid {x} x {y} x {z} does not fit CUDA")));
    }
    Ok(LaunchConfig { grid_dim: (x as u32, y as u32, z as u32), block_dim: (threads, 1, 1), shared_mem_bytes: smem })
}

impl QuantizeWeights {
    /// Three launches: row |W| sums into the `ws` scratch, gammas, packing.
    /// Non-finite weights raise `StatusBits::VALUE_OUT_OF_RANGE`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        w: &impl DevicePtr<T>,
        ws: &mut impl DevicePtrMut<f32>,
        packed: &mut impl DevicePtrMut<u32>,
        gamma: &mut impl DevicePtrMut<f32>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let p = &self.params;
        self.check_lens(&[("w", w.len()), ("ws", ws.len()), ("packed", packed.len()), ("gamma", gamma.len())])?;
        let (st, _sg) = status_ptr(status, stream)?;
        let (n, k, kw, rpp) = (p.n as i32, p.k as i32, words_per_row(p.k) as i32, (p.n / p.partitions) as i32);
        let (wp, _a) = w.device_ptr(stream);
        let (wsp, _b) = ws.device_ptr_mut(stream);
        let (pp, _c) = packed.device_ptr_mut(stream);
        let (gp, _d) = gamma.device_ptr_mut(stream);
        let f1 = cuda.function("ternary", &format!("ternary_row_abs_sum_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f1);
        b.arg(&wp).arg(&wsp).arg(&st).arg(&k);
        // SAFETY: matches ternary_row_abs_sum_<dtype>(w, rowsum, status, k); w holds n * k, ws n.
        unsafe { b.launch(grid_1d(p.n, 256)?) }.map_err(cuda_err)?;
        let f2 = cuda.function("ternary", "ternary_gamma")?;
        let mut b = stream.launch_builder(&f2);
        b.arg(&wsp).arg(&gp).arg(&rpp).arg(&k);
        // SAFETY: matches ternary_gamma(rowsum, gamma, rows_per_part, k); one block per partition.
        unsafe { b.launch(grid_1d(p.partitions, 256)?) }.map_err(cuda_err)?;
        let f3 = cuda.function("ternary", &format!("ternary_quant_pack_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f3);
        b.arg(&wp).arg(&gp).arg(&pp).arg(&n).arg(&k).arg(&kw).arg(&rpp);
        // SAFETY: matches ternary_quant_pack_<dtype>; threads past n * kw words exit.
        unsafe { b.launch(grid_1d(self.packed_len().div_ceil(256), 256)?) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl Pack {
    /// Packs padded i8 rows; values outside {-1, 0, 1} clamp and raise `VALUE_OUT_OF_RANGE`.
    pub fn run_cuda(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        t: &impl DevicePtr<i8>,
        packed: &mut impl DevicePtrMut<u32>,
        status: &mut Status,
    ) -> Result<()> {
        self.check_lens(&[("t", t.len()), ("packed", packed.len())])?;
        let (tp, _a) = t.device_ptr(stream);
        let (pp, _b) = packed.device_ptr_mut(stream);
        self.launch_pair(cuda, stream, "ternary_pack", tp, pp, status)
    }

    fn unpack_cuda(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        packed: &impl DevicePtr<u32>,
        t: &mut impl DevicePtrMut<i8>,
        status: &mut Status,
    ) -> Result<()> {
        self.check_lens(&[("packed", packed.len()), ("t", t.len())])?;
        let (pp, _a) = packed.device_ptr(stream);
        let (tp, _b) = t.device_ptr_mut(stream);
        aligned16("unpack t", tp)?;
        self.launch_pair(cuda, stream, "ternary_unpack", pp, tp, status)
    }

    fn launch_pair(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        name: &str,
        a: u64,
        b: u64,
        status: &mut Status,
    ) -> Result<()> {
        let (st, _sg) = status_ptr(status, stream)?;
        let (n, k, kw) = (self.params.n as i32, self.params.k as i32, words_per_row(self.params.k) as i32);
        let f = cuda.function("ternary", name)?;
        let mut l = stream.launch_builder(&f);
        l.arg(&a).arg(&b).arg(&st).arg(&n).arg(&k).arg(&kw);
        // SAFETY: matches ternary_pack / ternary_unpack(src, dst, status, n, k, kw); lengths were
        // checked by the callers; threads past n * kw words exit.
        unsafe { l.launch(grid_1d(self.packed_len().div_ceil(256), 256)?) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl Unpack {
    /// Unpacks to padded i8 rows; code 3 reads as 0 and raises `BAD_TERNARY_CODE`.
    pub fn run_cuda(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        packed: &impl DevicePtr<u32>,
        t: &mut impl DevicePtrMut<i8>,
        status: &mut Status,
    ) -> Result<()> {
        self.pack.unpack_cuda(cuda, stream, packed, t, status)
    }
}

impl RmsNormQuant {
    /// One launch on `stream`; tensors as [`RmsNormQuant::run_cpu`]. `Error::DType` for a wrong
    /// `T`, `Error::Shape` for a short buffer, `Error::Cuda` if loading or launching fails.
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        x: &impl DevicePtr<T>,
        w: &impl DevicePtr<T>,
        q: &mut impl DevicePtrMut<i8>,
        s: &mut impl DevicePtrMut<f32>,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let p = &self.params;
        self.check_lens(&[("x", x.len()), ("norm_w", w.len()), ("q", q.len()), ("s", s.len())])?;
        let f = cuda.function("ternary", &format!("ternary_rmsnorm_quant_{}", T::DTYPE))?;
        let (m, k, kp, xs, eps, glu) =
            (p.m as i32, p.k as i32, super::padded_k(p.k) as i32, self.x.stride as i64, p.eps, i32::from(p.glu));
        let (xp, _a) = x.device_ptr(stream);
        let (wp, _b) = w.device_ptr(stream);
        let (qp, _c) = q.device_ptr_mut(stream);
        let (sp, _d) = s.device_ptr_mut(stream);
        let mut b = stream.launch_builder(&f);
        b.arg(&xp).arg(&wp).arg(&qp).arg(&sp).arg(&m).arg(&k).arg(&kp).arg(&xs).arg(&eps).arg(&glu);
        // SAFETY: matches ternary_rmsnorm_quant_<dtype>; grid (m, projections) covers exactly the
        // rows the lengths above were checked for.
        unsafe { b.launch(grid(p.m, p.projections, 1, 256, 0)?) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl TernaryMatmul {
    /// GEMV for M <= 8, tiled GEMM otherwise. `acc_out` (i32, `acc_len`) only with `write_acc`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        q: &impl DevicePtr<i8>,
        s: &impl DevicePtr<f32>,
        packed: &impl DevicePtr<u32>,
        gamma: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<T>,
        acc_out: Option<&mut cudarc::driver::CudaSlice<i32>>,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_buffers(q.len(), s.len(), packed.len(), gamma.len(), out.len(), acc_out.as_ref().map(|a| a.len()))?;
        let p = &self.params;
        let (qp, _a) = q.device_ptr(stream);
        aligned16("ternary_matmul q", qp)?;
        let (sp, _b) = s.device_ptr(stream);
        let (pp, _c) = packed.device_ptr(stream);
        let (gp, _d) = gamma.device_ptr(stream);
        let (op, _e) = out.device_ptr_mut(stream);
        let mut acc_guard = None;
        let ap: u64 = match acc_out {
            None => 0,
            Some(a) => {
                let (ptr, g) = a.device_ptr_mut(stream);
                acc_guard = Some(g);
                ptr
            }
        };
        let (m, n, kw, pr, parts) =
            (p.m as i32, p.n as i32, words_per_row(p.k) as i32, p.projections as i32, p.partitions as i32);
        let (os, accu) = (self.out.stride as i64, i32::from(p.accumulate));
        let (name, cfg) = if self.uses_gemv() {
            let r = self.gemv_rows_per_block(cuda.sm_count() as usize);
            (format!("gemv_r{r}"), grid(p.projections * p.n.div_ceil(r), 1, 1, 256, 0)?)
        } else if self.uses_tensor_cores(cuda.compute_capability().0) {
            ("gemm_mma".into(), grid(p.n.div_ceil(128), p.m.div_ceil(128), p.projections, 256, 0)?)
        } else {
            ("gemm".into(), grid(p.n.div_ceil(64), p.m.div_ceil(64), p.projections, 256, 0)?)
        };
        let f = cuda.function("ternary", &format!("ternary_{name}_{}", T::DTYPE))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&qp)
            .arg(&sp)
            .arg(&pp)
            .arg(&gp)
            .arg(&op)
            .arg(&ap)
            .arg(&m)
            .arg(&n)
            .arg(&kw)
            .arg(&pr)
            .arg(&parts)
            .arg(&os)
            .arg(&accu);
        // SAFETY: matches ternary_gemv_r<R>/gemm/gemm_mma_<dtype> (one signature); every buffer length was checked
        // against the plan (the GEMV reads q in 16-byte pieces: q is 16-byte aligned, checked above, and its rows are
        // padded to whole words of 16 codes); acc_out is null unless write_acc, in which case its length was checked.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        drop(acc_guard);
        Ok(())
    }
}

impl BitLinear {
    /// One fused launch for M <= 8 when a projection's quantized rows fit in shared memory,
    /// else `rmsnorm_quant` then `ternary_matmul`. `q` and `s` are written either way.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        x: &impl DevicePtr<T>,
        norm_w: &impl DevicePtr<T>,
        packed: &impl DevicePtr<u32>,
        gamma: &impl DevicePtr<f32>,
        q: &mut (impl DevicePtr<i8> + DevicePtrMut<i8>),
        s: &mut (impl DevicePtr<f32> + DevicePtrMut<f32>),
        out: &mut impl DevicePtrMut<T>,
    ) -> Result<()> {
        if !self.fused(FUSED_SMEM, true) {
            self.quant.run_cuda(cuda, stream, x, norm_w, q, s)?;
            return self.matmul.run_cuda(cuda, stream, &*q, &*s, packed, gamma, out, None);
        }
        same_dtype::<T>(self.params.dtype)?;
        let p = &self.params;
        self.check_lens(&[
            ("x", x.len()),
            ("norm_w", norm_w.len()),
            ("packed", packed.len()),
            ("gamma", gamma.len()),
            ("q", q.len()),
            ("s", s.len()),
            ("out", out.len()),
        ])?;
        let f = cuda.function("ternary", &format!("ternary_bitlinear_gemv_{}", T::DTYPE))?;
        let smem = (p.m * super::padded_k(p.k)) as u32;
        let (xp, _a) = x.device_ptr(stream);
        let (wp, _b) = norm_w.device_ptr(stream);
        let (pp, _c) = packed.device_ptr(stream);
        let (gp, _d) = gamma.device_ptr(stream);
        let (op, _e) = out.device_ptr_mut(stream);
        let (qp, _f) = q.device_ptr_mut(stream);
        let (sp, _g) = s.device_ptr_mut(stream);
        let (m, n, k, kw, pr, parts) =
            (p.m as i32, p.n as i32, p.k as i32, words_per_row(p.k) as i32, p.projections as i32, p.partitions as i32);
        let (xs, os, eps, accu) =
            (self.quant.x.stride as i64, self.matmul.out.stride as i64, p.eps, i32::from(p.accumulate));
        let mut b = stream.launch_builder(&f);
        b.arg(&xp).arg(&wp).arg(&pp).arg(&gp).arg(&op).arg(&qp).arg(&sp);
        b.arg(&m).arg(&n).arg(&k).arg(&kw).arg(&pr).arg(&parts).arg(&xs).arg(&os).arg(&eps).arg(&accu);
        // SAFETY: matches ternary_bitlinear_gemv_<dtype>; M <= 8 and M * kp bytes of dynamic shared
        // memory (under 48 KiB) as `fused` checked; all lengths were checked above.
        unsafe { b.launch(grid(p.n.div_ceil(32), p.projections, 1, 256, smem)?) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl MlgruStep {
    /// One launch on `stream`. Tensors: `fcg` (strided), `state` (f32 `[slots, d]`, in place),
    /// `slot_ids` (i32 `[batch]`), `lb` (f32 `[d]`, exactly when `lower_bound`), `w` (`[d]`), `o`
    /// (`[batch, d]`). Bad slot ids raise their bit in `status`, which must be a CUDA one (else
    /// `Error::InvalidParams`); nothing is synchronized.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        fcg: &impl DevicePtr<T>,
        state: &mut impl DevicePtrMut<f32>,
        slot_ids: &impl DevicePtr<i32>,
        lb: Option<&cudarc::driver::CudaSlice<f32>>,
        w: &impl DevicePtr<T>,
        o: &mut impl DevicePtrMut<T>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let p = &self.params;
        let mut lens = vec![("fcg", fcg.len()), ("state", state.len()), ("slot_ids", slot_ids.len()), ("w", w.len())];
        lens.extend([("o", o.len())].into_iter().chain(lb.map(|l| ("lb", l.len()))));
        self.check_lens(&lens)?;
        let (st, _sg) = status_ptr(status, stream)?;
        let (lbp, _lg) = opt_ptr(lb, stream, 0); // null without a lower bound
        let f = cuda.function("ternary", &format!("ternary_mlgru_step_{}", T::DTYPE))?;
        let (fp, _a) = fcg.device_ptr(stream);
        let (hp, _b) = state.device_ptr_mut(stream);
        let (ip, _c) = slot_ids.device_ptr(stream);
        let (wp, _d) = w.device_ptr(stream);
        let (op, _e) = o.device_ptr_mut(stream);
        let (d, slots, fs, eps) = (p.d as i32, p.slots as i32, self.fcg.stride as i64, p.eps);
        let mut b = stream.launch_builder(&f);
        b.arg(&fp).arg(&hp).arg(&ip).arg(&lbp).arg(&wp).arg(&op).arg(&st).arg(&d).arg(&slots).arg(&fs).arg(&eps);
        // 256 channels of one sequence a block (MLGRU_STEP_CH); a batch over 65535 is an error.
        let cfg = grid(p.d.div_ceil(256), p.batch, 1, 256, 0)?;
        // SAFETY: matches ternary_mlgru_step_<dtype>; lengths checked; slot ids are range-checked
        // in the kernel before any state access; each block writes only its own channels of its
        // row; lb is null without a lower bound.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl MlgruScan {
    /// Four launches: chunk-local scans, the carry across chunks (updating the pool), the
    /// carry applied per token, the output gate. `ws` is the f32 scratch of `Plan::scratch`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        fcg: &impl DevicePtr<T>,
        cu: &impl DevicePtr<i32>,
        state: &mut impl DevicePtrMut<f32>,
        slot_ids: &impl DevicePtr<i32>,
        lb: Option<&cudarc::driver::CudaSlice<f32>>,
        w: &impl DevicePtr<T>,
        ws: &mut impl DevicePtrMut<f32>,
        o: &mut impl DevicePtrMut<T>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        let p = &self.params;
        let mut lens =
            vec![("fcg", fcg.len()), ("cu_seqlens", cu.len()), ("state", state.len()), ("slot_ids", slot_ids.len())];
        lens.extend([("w", w.len()), ("ws", ws.len()), ("o", o.len())].into_iter().chain(lb.map(|l| ("lb", l.len()))));
        self.check_lens(&lens)?;
        let (st, _sg) = status_ptr(status, stream)?;
        let (lbp, _lg) = opt_ptr(lb, stream, 0); // null without a lower bound
        let chunks = self.chunks();
        let (fp, _a) = fcg.device_ptr(stream);
        let (cp, _b) = cu.device_ptr(stream);
        let (hp, _c) = state.device_ptr_mut(stream);
        let (ip, _d) = slot_ids.device_ptr(stream);
        let (wp, _e) = w.device_ptr(stream);
        let (wsp, _f) = ws.device_ptr_mut(stream);
        let (op, _g) = o.device_ptr_mut(stream);
        let hws = wsp;
        let chunk_a = wsp + 4 * (p.tokens * p.d) as u64;
        let chunk_h = chunk_a + 4 * (p.seqs * chunks * p.d) as u64;
        let (d, tokens, max_len, chunk, nch, slots) =
            (p.d as i32, p.tokens as i32, p.max_len as i32, p.chunk as i32, chunks as i32, p.slots as i32);
        let (fs, eps) = (self.fcg.stride as i64, p.eps);
        let dt = T::DTYPE;
        let blocks = p.d.div_ceil(128);

        let f = cuda.function("ternary", &format!("ternary_scan_local_{dt}"))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&fp).arg(&cp).arg(&lbp).arg(&hws).arg(&chunk_a).arg(&chunk_h).arg(&st);
        b.arg(&d).arg(&tokens).arg(&max_len).arg(&chunk).arg(&nch).arg(&fs);
        // SAFETY: matches ternary_scan_local_<dtype>; the workspace holds tokens * d + 2 * seqs *
        // chunks * d floats (checked); token ranges come from cu_seqlens, validated in the kernel.
        unsafe { b.launch(grid(blocks, chunks, p.seqs, 128, 0)?) }.map_err(cuda_err)?;

        let f = cuda.function("ternary", "ternary_scan_carry")?;
        let mut b = stream.launch_builder(&f);
        b.arg(&cp).arg(&ip).arg(&hp).arg(&chunk_a).arg(&chunk_h).arg(&st);
        b.arg(&d).arg(&tokens).arg(&max_len).arg(&nch).arg(&slots);
        // SAFETY: matches ternary_scan_carry; slot ids are range-checked in the kernel.
        unsafe { b.launch(grid(blocks, p.seqs, 1, 128, 0)?) }.map_err(cuda_err)?;

        let f = cuda.function("ternary", &format!("ternary_scan_apply_{dt}"))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&fp).arg(&cp).arg(&lbp).arg(&hws).arg(&chunk_h).arg(&st);
        b.arg(&d).arg(&tokens).arg(&max_len).arg(&chunk).arg(&nch).arg(&fs);
        // SAFETY: as the local pass.
        unsafe { b.launch(grid(blocks, chunks, p.seqs, 128, 0)?) }.map_err(cuda_err)?;

        let f = cuda.function("ternary", &format!("ternary_gate_norm_{dt}"))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&fp).arg(&hws).arg(&wp).arg(&op).arg(&d).arg(&fs).arg(&eps);
        // SAFETY: matches ternary_gate_norm_<dtype>; one block per token row of fcg, hws and o.
        unsafe { b.launch(grid_1d(p.tokens, 256)?) }.map_err(cuda_err)?;
        Ok(())
    }
}
