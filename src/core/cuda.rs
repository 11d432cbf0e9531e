//! CUDA launches for the core kernels (`kernels/core.cu`).

use std::sync::Arc;

use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, PushKernelArg};

use super::{GatherRows, MergeStates, RmsNorm};
use crate::backend::cuda::{cuda_err, grid_1d, CudaBackend, CudaFloat};
use crate::backend::Status;
use crate::dtype::same_dtype;
use crate::error::{Error, Result};
use crate::plan::Plan;

const THREADS: u32 = 256;

impl RmsNorm {
    /// Launches on `stream` (the caller's); returns without synchronizing.
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        x: &impl DevicePtr<T>,
        w: &impl DevicePtr<T>,
        y: &mut impl DevicePtrMut<T>,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&[("x", x.len()), ("w", w.len()), ("y", y.len())])?;
        let f = cuda.function("core", &format!("core_rmsnorm_{}", T::DTYPE))?;
        let cfg = grid_1d(self.params.rows, THREADS)?;
        let (cols, xs, ys, eps) =
            (self.params.cols as i32, self.x.stride as i64, self.y.stride as i64, self.params.eps);
        let (xp, _gx) = x.device_ptr(stream);
        let (wp, _gw) = w.device_ptr(stream);
        let (yp, _gy) = y.device_ptr_mut(stream);
        let mut b = stream.launch_builder(&f);
        b.arg(&xp).arg(&wp).arg(&yp).arg(&cols).arg(&xs).arg(&ys).arg(&eps);
        // SAFETY: the arguments match core_rmsnorm_<dtype>(x, w, y, int, i64, i64, float); buffer
        // lengths were checked against the plan's spans, so every access is in bounds.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl MergeStates {
    /// Launches on `stream`; `l1`, `l2`, `l` are f32 LSEs.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        o1: &impl DevicePtr<T>,
        l1: &impl DevicePtr<f32>,
        o2: &impl DevicePtr<T>,
        l2: &impl DevicePtr<f32>,
        o: &mut impl DevicePtrMut<T>,
        l: &mut impl DevicePtrMut<f32>,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&[
            ("o1", o1.len()),
            ("lse1", l1.len()),
            ("o2", o2.len()),
            ("lse2", l2.len()),
            ("o", o.len()),
            ("lse", l.len()),
        ])?;
        let f = cuda.function("core", &format!("core_merge_states_{}", T::DTYPE))?;
        let cfg = grid_1d(self.params.states, 64)?;
        let dim = self.params.dim as i32;
        let (s1, s2, so) = (self.o1.stride as i64, self.o2.stride as i64, self.o.stride as i64);
        let (o1p, _a) = o1.device_ptr(stream);
        let (l1p, _b) = l1.device_ptr(stream);
        let (o2p, _c) = o2.device_ptr(stream);
        let (l2p, _d) = l2.device_ptr(stream);
        let (op, _e) = o.device_ptr_mut(stream);
        let (lp, _f) = l.device_ptr_mut(stream);
        let mut b = stream.launch_builder(&f);
        b.arg(&o1p).arg(&l1p).arg(&o2p).arg(&l2p).arg(&op).arg(&lp).arg(&dim).arg(&s1).arg(&s2).arg(&so);
        // SAFETY: the arguments match core_merge_states_<dtype>; lengths were checked above.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl GatherRows {
    /// Launches on `stream`; a bad index raises a bit in `status` (read it with `Status::check`).
    pub fn run_cuda<T: CudaFloat>(
        &self,
        cuda: &CudaBackend,
        stream: &Arc<CudaStream>,
        src: &impl DevicePtr<T>,
        idx: &impl DevicePtr<i32>,
        out: &mut impl DevicePtrMut<T>,
        status: &mut Status,
    ) -> Result<()> {
        same_dtype::<T>(self.params.dtype)?;
        self.check_lens(&[("src", src.len()), ("idx", idx.len()), ("out", out.len())])?;
        let Status::Cuda(st) = status else {
            return Err(Error::InvalidParams("gather_rows: the status word is not a CUDA one".into()));
        };
        let f = cuda.function("core", &format!("core_gather_rows_{}", T::DTYPE))?;
        // Parts of GATHER_PER (128) 16-byte pieces of a row each, as the kernel splits it.
        let per = 128 * (16 / T::DTYPE.size());
        let mut cfg = grid_1d(self.params.rows, 64)?;
        let parts = self.params.cols.div_ceil(per);
        if parts > 65535 {
            return Err(Error::InvalidParams(format!("gather_rows: {} columns exceed CUDA's grid", self.params.cols)));
        }
        cfg.grid_dim.2 = parts as u32;
        let (src_rows, cols) = (self.params.src_rows as i32, self.params.cols as i32);
        let (ss, os) = (self.src.stride as i64, self.out.stride as i64);
        let (sp, _a) = src.device_ptr(stream);
        let (ip, _b) = idx.device_ptr(stream);
        let (op, _c) = out.device_ptr_mut(stream);
        let (stp, _d) = st.device_ptr_mut(stream);
        let mut b = stream.launch_builder(&f);
        b.arg(&sp).arg(&ip).arg(&op).arg(&stp).arg(&src_rows).arg(&cols).arg(&ss).arg(&os);
        // SAFETY: the arguments match core_gather_rows_<dtype>; lengths were checked above and
        // the kernel never dereferences an index outside [0, src_rows); each part (grid z)
        // copies its own columns of the row, below `cols`.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }
}
