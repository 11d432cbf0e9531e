//! Criterion benches for the core family on every backend present. For GPU numbers with the
//! roofline share and baselines, use `mllm-kernels bench` (scripts/gpu-check.sh).

use criterion::{criterion_group, criterion_main, Criterion};
use mllm_kernels::harness::bench::Prepared;
use mllm_kernels::harness::registry;
use mllm_kernels::{Backend, BackendKind};

fn core(c: &mut Criterion) {
    for kind in BackendKind::ALL {
        let Ok(backend) = Backend::open(kind) else {
            eprintln!("bench: {} backend absent, skipped", kind.name());
            continue;
        };
        for k in registry().into_iter().filter(|k| k.family() == "core") {
            for case in k.bench_cases() {
                let name = format!("{}/{}/{}/{}", k.id(), kind.name(), case.dtype, case.label);
                match Prepared::new(k, &backend, &case) {
                    Ok(mut p) => {
                        c.bench_function(&name, |b| b.iter(|| p.run().expect("launch")));
                    }
                    Err(e) => eprintln!("bench {name}: {e}"),
                }
            }
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(2));
    targets = core
}
criterion_main!(benches);
