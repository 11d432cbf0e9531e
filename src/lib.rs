//! # mllm-kernels
//!
//! Hand-written GPU kernels for LLM and multimodal-LLM inference, each as CUDA C++ (PTX and
//! cubins built by `build.rs`, launched with cudarc on the caller's stream), as WGSL (validated
//! by naga, recorded into the caller's wgpu encoder), and as an f64 CPU oracle that the other
//! two are checked against.
//!
//! Every kernel follows one pattern: a params struct, a plan that validates it once
//! (`RmsNorm::new`), and `run_cpu` / `run_cuda` / `run_wgpu` methods that check buffer sizes and
//! launch without allocating device memory or synchronizing. Families: [`core`] (shared
//! building blocks), [`ternary`] (MatMul-free layers).
//!
//! The [`harness`] holds the registry that the `mllm-kernels` tool (`verify`, `bench`, `check`)
//! and the tests run.

pub mod backend;
pub mod core;
pub mod dtype;
pub mod error;
pub mod harness;
pub mod layout;
pub mod sources;
pub mod ternary;

#[cfg(feature = "cuda")]
pub use backend::cuda::{CudaBackend, CudaFloat};
#[cfg(feature = "wgpu")]
pub use backend::wgpu::{WgpuBackend, WgpuTensor};
pub use backend::{devices, Backend, BackendKind, DeviceReport, Status, StatusBits};
pub use dtype::{DType, Float};
pub use error::{Error, Result};
pub use layout::Rows;
