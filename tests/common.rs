//! Backends for the tests, and the family-wide oracle loop.

use mllm_kernels::harness::{fresh_seed, verify_case};
use mllm_kernels::{Backend, BackendKind};

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `Some(backend)`, or `None` after saying why it is skipped. In CI, wgpu must be present.
pub fn backend(kind: BackendKind) -> Option<Backend> {
    match Backend::open(kind) {
        Ok(b) => Some(b),
        Err(e) => {
            if kind == BackendKind::Wgpu && in_ci() {
                panic!("CI=true and no wgpu adapter: {e}. scripts/test.sh installs lavapipe (mesa-vulkan-drivers).");
            }
            eprintln!("skipping the {} backend: {e}", kind.name());
            None
        }
    }
}

/// Every backend present (CPU always).
pub fn backends() -> Vec<Backend> {
    BackendKind::ALL.into_iter().filter_map(backend).collect()
}

/// Runs every registered case of `family` on `backend` with a fresh, printed seed; panics with
/// every failing row.
pub fn verify_family(family: &str, backend: &Backend) {
    let seed = fresh_seed();
    eprintln!("{family} on {}: seed {seed}", backend.describe());
    let mut failures = Vec::new();
    let mut n = 0;
    for k in mllm_kernels::registry::kernels().into_iter().filter(|k| k.family() == family) {
        for (i, case) in k.cases().iter().enumerate() {
            let r = verify_case(k, backend, case, seed.wrapping_add(i as u64));
            n += 1;
            if !r.ok {
                failures.push(format!("{} {} {}: {} (seed {})", r.kernel, r.dtype, r.shape, r.note, r.seed));
            }
        }
    }
    assert!(n > 0, "no case registered for {family}");
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed on {}:\n{}",
        failures.len(),
        backend.describe(),
        failures.join("\n")
    );
}

/// The case of `k` with the fewest elements among those without a fixture (a fixture pins
/// shapes to its own case's params), else its first case.
pub fn smallest_case(k: &dyn mllm_kernels::harness::Kernel) -> mllm_kernels::harness::Case {
    let size = |c: &mllm_kernels::harness::Case| {
        k.prepare(&c.params).map(|p| p.tensors().iter().map(|s| s.len).sum::<usize>()).unwrap_or(usize::MAX)
    };
    let cases = k.cases();
    cases.iter().filter(|c| c.fixture.0.is_null()).min_by_key(|c| size(c)).unwrap_or(&cases[0]).clone()
}

/// A file of the repository: beside the sources this binary was built from, or, where the
/// binary runs elsewhere (the GPU bundle runs in a copy of the tree), under the working directory.
pub fn repo_file(rel: &str) -> std::path::PathBuf {
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    if built.exists() {
        built
    } else {
        std::path::PathBuf::from(rel)
    }
}
