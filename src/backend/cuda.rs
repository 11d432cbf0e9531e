//! CUDA backend: a context, module cache and launch helpers over cudarc.
//!
//! cudarc loads libcuda and libnvrtc at run time and panics when they are missing, so every
//! entry point here probes for the library first and returns `Error::BackendUnavailable`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig};
use cudarc::nvrtc::Ptx;

use crate::error::{Error, Result};
use crate::sources;

pub use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DevicePtr, DevicePtrMut};

pub(crate) fn cuda_err(e: impl std::fmt::Debug) -> Error {
    Error::Cuda(format!("{e:?}"))
}

/// Why CUDA cannot be used here, or `Ok` with the device count.
pub fn probe() -> std::result::Result<usize, String> {
    // SAFETY: only dlopen-probes for libcuda; nothing is called through it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("libcuda not found (no NVIDIA driver); install the driver or run on a GPU host".into());
    }
    let n = CudaContext::device_count().map_err(|e| format!("cuInit/cuDeviceGetCount failed: {e:?}"))?;
    if n <= 0 {
        return Err("the NVIDIA driver reports no CUDA device".into());
    }
    Ok(n as usize)
}

/// The name the emulated CUDA device (`cuda-cpu/`, run through `scripts/cuda-cpu.sh`) gives
/// itself. Its runs prove a kernel's logic and memory safety, never that it works on a GPU.
pub const EMULATED_DEVICE_NAME: &str = "cuda-cpu (emulated)";

/// A CUDA device with its module cache. Engines wrap their own context with
/// [`CudaBackend::from_context`] and pass their own stream to every `run`.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    cc: (i32, i32),
    sm_count: u32,
    shared_optin: u32,
    name: String,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBackend({}, sm_{}{})", self.name, self.cc.0, self.cc.1)
    }
}

impl CudaBackend {
    /// Opens device `ordinal` with its primary context.
    pub fn new(ordinal: usize) -> Result<Self> {
        probe().map_err(Error::BackendUnavailable)?;
        let ctx = CudaContext::new(ordinal).map_err(cuda_err)?;
        Self::from_context(ctx)
    }

    /// Wraps an engine's context; nothing is allocated until a kernel's module is first needed.
    pub fn from_context(ctx: Arc<CudaContext>) -> Result<Self> {
        let cc = ctx.compute_capability().map_err(cuda_err)?;
        let sm = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(cuda_err)?;
        let optin = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(cuda_err)?;
        let name = ctx.name().map_err(cuda_err)?;
        let stream = ctx.default_stream();
        let (modules, sm_count, shared_optin) = (Mutex::new(HashMap::new()), sm.max(1) as u32, optin.max(0) as u32);
        Ok(Self { ctx, stream, modules, cc, sm_count, shared_optin, name })
    }

    /// The wrapped context (modules are loaded into it).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The context's default stream, for tests and the tool; engines pass their own.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// `(major, minor)`, e.g. `(9, 0)` for sm_90; picks the cubin `module` loads.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }

    /// The device's multiprocessor count (at least 1).
    pub fn sm_count(&self) -> u32 {
        self.sm_count
    }

    /// The most shared memory one block may use, in bytes, once it opts in (227 KiB on an H100,
    /// 163 KiB on an A100, 99 KiB on sm_86 / sm_89).
    pub fn shared_optin(&self) -> u32 {
        self.shared_optin
    }

    /// The device's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is the emulated device on the CPU ([`EMULATED_DEVICE_NAME`]), not a GPU.
    pub fn is_emulated(&self) -> bool {
        self.name == EMULATED_DEVICE_NAME
    }

    /// Loads a family's module once: the cubin for this device's compute capability if the build
    /// embedded one, else the PTX (JIT-compiled by the driver), else NVRTC on the embedded source.
    pub fn module(&self, family: &'static str) -> Result<Arc<CudaModule>> {
        let mut cache = self.modules.lock().map_err(|_| Error::Cuda("module cache poisoned".into()))?;
        if let Some(m) = cache.get(family) {
            return Ok(m.clone());
        }
        let src = sources::cuda_module(family).ok_or_else(|| Error::Cuda(format!("no CUDA family `{family}`")))?;
        let sm = (self.cc.0 * 10 + self.cc.1) as u32;
        let mut errors = Vec::new();
        let mut module = None;
        if let Some((_, cubin)) = src.cubins.iter().find(|(a, _)| *a == sm) {
            match self.ctx.load_module(Ptx::from_binary(cubin.to_vec())) {
                Ok(m) => module = Some(m),
                Err(e) => errors.push(format!("cubin sm_{sm}: {e:?}")),
            }
        }
        if module.is_none() {
            if let Some(ptx) = src.ptx {
                match self.ctx.load_module(Ptx::from_src(ptx)) {
                    Ok(m) => module = Some(m),
                    Err(e) => errors.push(format!("PTX: {e:?} (a driver older than the PTX ISA?)")),
                }
            }
        }
        if module.is_none() {
            let ptx = compile_at_runtime(src.source, family)?;
            module = Some(self.ctx.load_module(ptx).map_err(|e| {
                errors.push(format!("NVRTC PTX: {e:?}"));
                Error::Cuda(format!("cannot load CUDA family `{family}`: {}", errors.join("; ")))
            })?);
        }
        let m = module.ok_or_else(|| Error::Cuda(format!("cannot load `{family}`")))?;
        cache.insert(family, m.clone());
        Ok(m)
    }

    pub(crate) fn function(&self, family: &'static str, name: &str) -> Result<CudaFunction> {
        self.module(family)?.load_function(name).map_err(|e| Error::Cuda(format!("{name}: {e:?}")))
    }

    /// Launches the empty kernel (`core_noop`, one warp) on the backend's stream: what `bench`
    /// times as the launch floor.
    pub(crate) fn launch_noop(&self) -> Result<()> {
        let f = self.function("core", "core_noop")?;
        let cfg = cudarc::driver::LaunchConfig { grid_dim: (1, 1, 1), block_dim: (32, 1, 1), shared_mem_bytes: 0 };
        let mut b = self.stream().launch_builder(&f);
        // SAFETY: core_noop takes no arguments and touches no memory.
        unsafe { b.launch(cfg) }.map(|_| ()).map_err(cuda_err)
    }
}

fn compile_at_runtime(source: &str, family: &str) -> Result<Ptx> {
    // SAFETY: only dlopen-probes for libnvrtc.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(Error::BackendUnavailable(format!(
            "CUDA family `{family}` was built without PTX and libnvrtc is not on the loader path; \
             rebuild where nvcc or NVRTC exists (scripts/setup-cuda.sh) or add libnvrtc to LD_LIBRARY_PATH"
        )));
    }
    let mut include_paths = Vec::new();
    for var in ["MLLM_CUDA_INCLUDE", "CUDA_HOME", "CUDA_PATH"] {
        if let Ok(v) = std::env::var(var) {
            include_paths.push(if var == "MLLM_CUDA_INCLUDE" { v } else { format!("{v}/include") });
        }
    }
    include_paths.push("/usr/local/cuda/include".into());
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some("compute_80"),
        include_paths,
        options: vec!["--std=c++17".into()],
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(source, opts).map_err(|e| Error::Cuda(format!("NVRTC `{family}`: {e:?}")))
}

/// A grid of `n` blocks of `threads` threads, one block per row or state.
pub(crate) fn grid_1d(n: usize, threads: u32) -> Result<LaunchConfig> {
    if n == 0 || n > (1usize << 31) - 1 {
        return Err(Error::InvalidParams(format!("{n} blocks do not fit a CUDA grid")));
    }
    Ok(LaunchConfig { grid_dim: (n as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 })
}

/// The device pointer of an optional buffer, or `absent` without one (null, or a stand-in the
/// kernel never reads), with the guard that orders the launch after the buffer's last use.
pub(crate) fn opt_ptr<'a, T>(
    buf: Option<&'a cudarc::driver::CudaSlice<T>>,
    stream: &'a Arc<CudaStream>,
    absent: u64,
) -> (u64, Option<cudarc::driver::SyncOnDrop<'a>>) {
    use cudarc::driver::DevicePtr;
    match buf {
        Some(b) => {
            let (ptr, guard) = b.device_ptr(stream);
            (ptr, Some(guard))
        }
        None => (absent, None),
    }
}

/// A float storage type a CUDA kernel takes: f32, f16 or bf16.
pub trait CudaFloat: crate::dtype::Float + cudarc::driver::DeviceRepr {}
impl CudaFloat for f32 {}
impl CudaFloat for half::f16 {}
impl CudaFloat for half::bf16 {}
impl CudaFloat for crate::dtype::E4M3 {}
