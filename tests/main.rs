//! One integration-test binary (so the GPU bundle stays small): every family's oracle tests on
//! every backend present, bad-input tests, the harness's own checks, the PTX resource check and
//! every CUDA kernel on the emulated CUDA device (cuda-cpu).
//!
//! Under `CI=true` a missing wgpu adapter or PTX is a failure; elsewhere a missing backend is
//! skipped with a message saying what is missing and how to get it.

mod bad_files;
mod common;
mod core_tests;
mod cuda_cpu;
mod entry_points;
mod fuzz;
mod harness_tests;
mod loop_budgets;
mod mla_tests;
mod mom_tests;
mod properties;
mod ptx;
mod ternary_tests;
mod visual_tests;
