//! The kernel sources as public constants, for engines that load them through another framework.
//!
//! `build.rs` fills these in: CUDA families (expanded source, PTX, cubins) and WGSL modules after
//! per-dtype expansion (`core_rmsnorm_bf16`, ...), each validated by naga.

/// One CUDA kernel family as the build produced it.
#[derive(Debug, Clone, Copy)]
pub struct CudaModuleSource {
    /// `core`, `ternary`, ...: the file `kernels/<family>.cu`.
    pub family: &'static str,
    /// Self-contained CUDA C++ (local headers inlined), for NVRTC at run time.
    pub source: &'static str,
    /// PTX for `compute_80`, where nvcc or NVRTC was present at build time.
    pub ptx: Option<&'static str>,
    /// `(sm, cubin)` pairs assembled by ptxas at build time.
    pub cubins: &'static [(u32, &'static [u8])],
    /// `(sm, report)`: what `ptxas -v` said while assembling each cubin (registers, stack,
    /// spills per kernel); tests/ptx.rs reads it instead of assembling everything again.
    pub ptxas_reports: &'static [(u32, &'static str)],
}

/// One WGSL module, ready for `create_shader_module`.
#[derive(Debug, Clone, Copy)]
pub struct WgslModuleSource {
    /// The file stem of `shaders/<name>.wgsl`, with `_<dtype>` appended for shaders expanded
    /// per dtype (`core_rmsnorm_bf16`).
    pub name: &'static str,
    /// The WGSL text: includes inlined, the generated `Params` struct and status constants
    /// appended.
    pub source: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/generated.rs"));

/// The CUDA family named `family`.
pub fn cuda_module(family: &str) -> Option<&'static CudaModuleSource> {
    CUDA_MODULES.iter().find(|m| m.family == family)
}

/// The WGSL module named `name` (e.g. `core_rmsnorm_f16`).
pub fn wgsl_module(name: &str) -> Option<&'static str> {
    WGSL_MODULES.iter().find(|m| m.name == name).map(|m| m.source)
}

/// FNV-1a of a family's CUDA source: `GPU_VERIFIED.md` records it, so an edited kernel reads as
/// unproven until it runs on a GPU again.
pub fn cuda_source_hash(family: &str) -> Option<String> {
    let src = cuda_module(family)?.source;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in src.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Some(format!("{h:016x}"))
}
