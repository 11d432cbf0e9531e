//! The three backends and what the machine has of them.
//!
//! `Cpu` runs the oracles; `Cuda` (cudarc, loaded at run time) and `Wgpu` (any adapter,
//! lavapipe included) run the kernels. [`Backend::best`] picks CUDA, else wgpu, else the CPU.

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "wgpu")]
pub mod loops;
#[cfg(feature = "wgpu")]
pub mod wgpu;

mod status;

#[cfg(any(feature = "cuda", feature = "wgpu"))]
use std::sync::Arc;

use crate::error::{Error, Result};

pub use status::{Status, StatusBits};

/// Which backend, without a handle to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// The f64 CPU oracles.
    Cpu,
    /// CUDA through cudarc (the `cuda` feature).
    Cuda,
    /// wgpu on any adapter, lavapipe included (the `wgpu` feature).
    Wgpu,
}

impl BackendKind {
    /// Every kind, in the order the tool lists them: CPU, wgpu, CUDA.
    pub const ALL: [BackendKind; 3] = [BackendKind::Cpu, BackendKind::Wgpu, BackendKind::Cuda];

    /// `cpu`, `cuda` or `wgpu`, as the tool's `--backend` and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Wgpu => "wgpu",
        }
    }

    /// The kind named `s` (case-insensitive), or `None`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name().eq_ignore_ascii_case(s))
    }
}

/// A live backend.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The CPU oracles; nothing to open.
    Cpu,
    /// A CUDA device (context, default stream, module cache).
    #[cfg(feature = "cuda")]
    Cuda(Arc<cuda::CudaBackend>),
    /// A wgpu device and queue (pipeline cache).
    #[cfg(feature = "wgpu")]
    Wgpu(Arc<wgpu::WgpuBackend>),
}

impl Backend {
    /// Which kind of backend this is.
    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Cpu => BackendKind::Cpu,
            #[cfg(feature = "cuda")]
            Backend::Cuda(_) => BackendKind::Cuda,
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(_) => BackendKind::Wgpu,
        }
    }

    /// Opens a backend of `kind`, or says why it is absent.
    pub fn open(kind: BackendKind) -> Result<Backend> {
        match kind {
            BackendKind::Cpu => Ok(Backend::Cpu),
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => Ok(Backend::Cuda(Arc::new(cuda::CudaBackend::new(0)?))),
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => Ok(Backend::Wgpu(Arc::new(wgpu::WgpuBackend::new()?))),
            #[allow(unreachable_patterns)]
            other => Err(Error::BackendUnavailable(format!("built without the `{}` feature", other.name()))),
        }
    }

    /// CUDA where a device works, else a wgpu adapter, else the CPU.
    pub fn best() -> Backend {
        Self::open(BackendKind::Cuda).or_else(|_| Self::open(BackendKind::Wgpu)).unwrap_or(Backend::Cpu)
    }

    /// Whether this is the emulated CUDA device on the CPU (`scripts/cuda-cpu.sh`): its results
    /// prove a kernel's logic, never that it runs on a GPU.
    pub fn is_emulated(&self) -> bool {
        match self {
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => c.is_emulated(),
            _ => false,
        }
    }

    /// The backend's name in reports: `cpu`, `wgpu`, `cuda`, or `cuda-cpu` for the emulated device.
    pub fn label(&self) -> &'static str {
        if self.is_emulated() {
            "cuda-cpu"
        } else {
            self.kind().name()
        }
    }

    /// A short description: the device's name and API.
    pub fn describe(&self) -> String {
        match self {
            Backend::Cpu => "CPU oracle (f64)".into(),
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => {
                let (a, b) = c.compute_capability();
                format!("{} (sm_{a}{b}, {} SMs)", c.name(), c.sm_count())
            }
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(w) => format!("{} ({:?}, {:?})", w.info().name, w.info().backend, w.info().device_type),
        }
    }

    /// Blocks until work queued by this crate's helpers is done.
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Backend::Cpu => Ok(()),
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => c.stream().synchronize().map_err(cuda::cuda_err),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(w) => w.wait(),
        }
    }
}

/// One line of `devices()`.
#[derive(Debug, Clone)]
pub struct DeviceReport {
    /// The backend this line is about.
    pub backend: BackendKind,
    /// Whether it can be opened on this machine (built with its feature, device present).
    pub available: bool,
    /// The device when available; why not and how to get it otherwise.
    pub detail: String,
}

/// What this machine has of each backend, and for what is absent, why.
pub fn devices() -> Vec<DeviceReport> {
    let mut v =
        vec![DeviceReport { backend: BackendKind::Cpu, available: true, detail: "CPU oracle (always present)".into() }];
    #[cfg(feature = "wgpu")]
    v.push(match wgpu::probe() {
        Ok(info) => DeviceReport {
            backend: BackendKind::Wgpu,
            available: true,
            detail: format!("{} ({:?}, {:?}, driver {})", info.name, info.backend, info.device_type, info.driver_info),
        },
        Err(why) => DeviceReport { backend: BackendKind::Wgpu, available: false, detail: why },
    });
    #[cfg(not(feature = "wgpu"))]
    v.push(DeviceReport {
        backend: BackendKind::Wgpu,
        available: false,
        detail: "built without the `wgpu` feature".into(),
    });
    #[cfg(feature = "cuda")]
    v.push(match cuda::probe().and_then(|_| cuda::CudaBackend::new(0).map_err(|e| e.to_string())) {
        Ok(c) => {
            DeviceReport { backend: BackendKind::Cuda, available: true, detail: Backend::Cuda(Arc::new(c)).describe() }
        }
        Err(why) => DeviceReport { backend: BackendKind::Cuda, available: false, detail: why },
    });
    #[cfg(not(feature = "cuda"))]
    v.push(DeviceReport {
        backend: BackendKind::Cuda,
        available: false,
        detail: "built without the `cuda` feature".into(),
    });
    v
}
