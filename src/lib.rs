#![warn(missing_docs)]
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
//! building blocks), [`ternary`] (MatMul-free layers), [`mla`] (MLA latent attention),
//! [`mom`] (Mixture-of-Memories linear attention), [`visual`] (sparse visual-token attention).
//!
//! Backends wrap what an engine already has: `CudaBackend::from_context` takes its cudarc
//! context (runs go on the stream it passes), `WgpuBackend::from_device` its device and queue
//! (runs are recorded into its encoder; buffers need `STORAGE` usage). Kernels that index with
//! the caller's data (slot ids, block tables, `cu_seqlens`) never read out of bounds on a bad
//! value: they raise a bit in a [`Status`] word, which [`Status::check`] turns into an
//! [`Error`] naming the input. Every other bad input is an [`Error`] from `new` or `run_*`
//! (the README's "Bad input" table).
//!
//! ```
//! use mllm_kernels::core::{RmsNorm, RmsNormParams};
//! use mllm_kernels::{DType, Plan};
//!
//! // Validated once; the plan also lists its tensors (names, dtypes, lengths).
//! let plan = RmsNorm::new(RmsNormParams { rows: 2, cols: 4, eps: 1e-6, dtype: DType::F32, x_stride: None, y_stride: None })?;
//! assert_eq!(plan.spec("x")?.len, 8);
//! let x = [1.0f32, 2.0, 3.0, 4.0, -1.0, 0.5, 0.0, 2.0];
//! let mut y = [0.0f32; 8];
//! plan.run_cpu(&x, &[1.0f32; 4], &mut y)?;
//! assert!((y[3] - 4.0 / (7.5f32 + 1e-6).sqrt()).abs() < 1e-6);
//! // A buffer too short is an error naming the tensor, never a fault.
//! assert!(plan.run_cpu(&x[..7], &[1.0f32; 4], &mut y).is_err());
//! // On a GPU the same plan takes the engine's buffers: `plan.run_cuda(&cuda, &stream, &x_dev,
//! // &w_dev, &mut y_dev)` (`CudaBackend::from_context`) or `plan.run_wgpu(&gpu, &mut encoder,
//! // x_buf, w_buf, y_buf)` (`WgpuBackend::from_device`); kernels that can see bad indices raise
//! // bits in a `Status` word instead of reading out of bounds.
//! # Ok::<(), mllm_kernels::Error>(())
//! ```
//!
//! [`registry`] lists every kernel (the one place that names the families); the [`harness`]
//! runs such a list for the `mllm-kernels` tool (`verify`, `bench`, `check`) and the tests.

/// Declares the uniform blocks that WGSL shaders read as `Params` (binding 0): one
/// `#[repr(C)]`, `Pod` struct per entry. `build.rs` reads the same invocation in
/// `src/<family>/uniforms.rs` and emits the matching WGSL `struct Params` for every shader
/// listed after `for`, so the Rust and WGSL layouts come from one source. Fields are `u32`,
/// `i32` or `f32` (four bytes each, so no padding).
#[allow(unused_macros)]
macro_rules! uniforms {
    ($($(#[$meta:meta])* $name:ident for [$($shader:literal),+ $(,)?] { $($field:ident: $ty:ty),+ $(,)? })*) => {
        $(
            $(#[$meta])*
            #[repr(C)]
            #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
            pub(crate) struct $name {
                $(pub(crate) $field: $ty,)+
            }
        )*
    };
}

/// `[("x", x.len()), ("w", w.len())]` from `lens![x, w]`: each buffer's length under the name
/// of the tensor it holds, for `Plan::check_lens` (a plan's `run_*` arguments are named after
/// its tensors).
#[allow(unused_macros)]
macro_rules! lens {
    ($($t:ident),* $(,)?) => { [$((stringify!($t), $t.len())),*] };
}

/// `[("x", Some(&x)), ("lb", lb.as_ref())]` from `bindings![x; lb]` for `Plan::bind_all`:
/// required wgpu tensors, then optional ones.
#[allow(unused_macros)]
macro_rules! bindings {
    ($($t:ident),* $(; $($o:ident),*)?) => { [$((stringify!($t), Some(&$t)),)* $($((stringify!($o), $o.as_ref()),)*)?] };
}

pub mod backend;
pub mod core;
pub mod dtype;
pub mod error;
pub mod harness;
pub mod layout;
pub mod mla;
pub mod mom;
pub mod plan;
pub mod registry;
pub mod sources;
pub mod tc;
pub mod ternary;
pub mod visual;

#[cfg(feature = "cuda")]
pub use backend::cuda::{CudaBackend, CudaFloat};
#[cfg(feature = "wgpu")]
pub use backend::wgpu::{WgpuBackend, WgpuTensor};
pub use backend::{devices, Backend, BackendKind, DeviceReport, Status, StatusBits};
pub use dtype::{e4m3_from_f32, e4m3_scale, e4m3_to_f32, DType, Float, E4M3};
pub use error::{Error, Result};
pub use layout::Rows;
pub use plan::{Plan, Role, TensorSpec};
