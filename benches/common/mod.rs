//! Shared by the per-family criterion benches: every bench case of a family on every backend
//! present. For GPU numbers with roofline shares and baselines, use `mllm-kernels bench`.

use criterion::Criterion;
use mllm_kernels::harness::bench::Staged;
use mllm_kernels::{Backend, BackendKind};

pub fn family(c: &mut Criterion, family: &str) {
    for kind in [BackendKind::Wgpu, BackendKind::Cuda] {
        let Ok(backend) = Backend::open(kind) else {
            eprintln!("bench: {} backend absent, skipped", kind.name());
            continue;
        };
        // A CPU rasterizer (lavapipe) times nothing worth knowing and takes minutes on the
        // large shapes; MLLM_BENCH_CPU_ADAPTER=1 runs it anyway.
        #[cfg(feature = "wgpu")]
        if let Backend::Wgpu(w) = &backend {
            if w.info().device_type == mllm_kernels::backend::wgpu::wgpu::DeviceType::Cpu
                && std::env::var_os("MLLM_BENCH_CPU_ADAPTER").is_none()
            {
                eprintln!("bench: wgpu adapter {} is a CPU; skipped (MLLM_BENCH_CPU_ADAPTER=1 to run)", w.info().name);
                continue;
            }
        }
        for k in mllm_kernels::registry::kernels().into_iter().filter(|k| k.family() == family) {
            for case in k.bench_cases() {
                let name = format!("{}/{}/{}/{}", k.id(), kind.name(), case.dtype, case.label);
                match Staged::new(k, &backend, &case) {
                    Ok(mut p) => {
                        c.bench_function(&name, |b| b.iter(|| p.run().expect("launch")));
                    }
                    Err(e) => eprintln!("bench {name}: {e}"),
                }
            }
        }
    }
}
