//! The harness itself: a comparison that cannot fail would make every other test worthless.

use mllm_kernels::harness::{
    check, compare, proof, random_inputs, run_kernel, verify_case, Case, Comparison, Cost, DevMap, Expected, Fixture,
    HostTensor, Kernel, Launch, Prepared, Rng, TensorMap,
};
use mllm_kernels::{Backend, BackendKind, DType, Result, Status, TensorSpec};
use serde_json::Value;

use crate::common::backends;

#[test]
fn compare_catches_wrong_unwritten_and_gap_writes() {
    let want = vec![1.0, 2.0, f64::NAN, 4.0];
    let good = HostTensor::from_f64(DType::F32, &[4], &[1.0, 2.0, f64::NAN, 4.0]);
    assert!(compare("y", &good, &want, None, None).ok);
    let off = HostTensor::from_f64(DType::F32, &[4], &[1.0, 2.001, f64::NAN, 4.0]);
    assert!(!compare("y", &off, &want, None, None).ok, "a 5e-4 error passes f32");
    let unwritten = HostTensor::poison(DType::BF16, &[4]);
    assert!(!compare("y", &unwritten, &want, None, None).ok, "poison passes");
    let gap = HostTensor::from_f64(DType::F32, &[4], &[1.0, 2.0, 3.0, 4.0]);
    assert!(!compare("y", &gap, &want, None, None).ok, "a write into a gap passes");
    let ints = HostTensor::from_i32(&[2], &[5, 6]);
    assert!(!compare("acc", &ints, &[5.0, 7.0], None, None).ok, "integers must be exact");
    assert!(compare("acc", &ints, &[5.0, 6.0], None, None).ok);
    let inf = HostTensor::from_f64(DType::F32, &[2], &[f64::NEG_INFINITY, 0.0]);
    assert!(compare("lse", &inf, &[f64::NEG_INFINITY, 0.0], None, None).ok);
    assert!(!compare("lse", &inf, &[0.0, 0.0], None, None).ok, "-inf where 0 expected");
}

#[test]
fn rng_is_reproducible() {
    let (mut a, mut b) = (Rng::new(7), Rng::new(7));
    let va: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
    let vb: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
    assert_eq!(va, vb);
    let n = Rng::new(1).normals(20000, 1.0);
    let mean = n.iter().sum::<f64>() / n.len() as f64;
    let var = n.iter().map(|x| (x - mean) * x).sum::<f64>() / n.len() as f64;
    assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
}

/// rmsnorm that "forgets" to launch: verify must fail it on every backend.
struct NoLaunch;

/// The rmsnorm plan with its launch taken out.
struct Idle(Box<dyn Prepared>);

impl Prepared for Idle {
    fn params(&self) -> Value {
        self.0.params()
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        self.0.tensors()
    }
    fn inputs(&self, f: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        self.0.inputs(f, rng)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        self.0.oracle(i)
    }
    fn launch(&self, _: &mut Launch, _: &mut DevMap, _: &mut Status) -> Result<()> {
        Ok(())
    }
    fn cost(&self) -> Cost {
        Cost::default()
    }
    fn check(&self, i: &TensorMap, e: &Expected, o: &TensorMap) -> Vec<Comparison> {
        self.0.check(i, e, o)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.0.validate_inputs(i)
    }
}

impl Kernel for NoLaunch {
    fn family(&self) -> &'static str {
        "test"
    }
    fn name(&self) -> &'static str {
        "no_launch"
    }
    fn cases(&self) -> Vec<Case> {
        self.inner().cases()
    }
    fn bench_cases(&self) -> Vec<Case> {
        vec![]
    }
    fn prepare(&self, p: &Value) -> Result<Box<dyn Prepared>> {
        Ok(Box::new(Idle(self.inner().prepare(p)?)))
    }
}

impl NoLaunch {
    fn inner(&self) -> &'static dyn Kernel {
        mllm_kernels::registry::kernels()
            .into_iter()
            .find(|k| k.id() == "core.rmsnorm")
            .expect("core.rmsnorm is registered")
    }
}

#[test]
fn verify_fails_a_kernel_that_writes_nothing() {
    for b in backends() {
        for case in NoLaunch.cases() {
            let r = verify_case(&NoLaunch, &b, &case, 1);
            assert!(!r.ok, "{} passed on {} without launching", case.label, b.describe());
        }
    }
}

#[test]
fn check_files_round_trip_on_every_backend() {
    let k = mllm_kernels::registry::kernels().into_iter().find(|k| k.id() == "core.merge_states").unwrap();
    let case = k.cases().into_iter().find(|c| c.dtype == DType::BF16 && c.label.contains("strided")).unwrap();
    let inputs = random_inputs(k, &case.params, &Fixture::default(), 3).unwrap();
    let (outs, _) = run_kernel(k, &Backend::Cpu, &case.params, &inputs).unwrap();
    let bytes = check::write_file(&k.id(), &case.params, &inputs, &outs, &[]).unwrap();
    let file = check::parse_file(&bytes).unwrap();
    assert_eq!(file.kernel, "core.merge_states");
    assert_eq!(file.inputs, inputs);
    for b in backends() {
        let cmps = check::run_check(&mllm_kernels::registry::kernels(), &file, &b).unwrap();
        assert_eq!(cmps.len(), 3, "o, lse and the status word");
        assert!(cmps.iter().all(|c| c.ok), "{}: {cmps:?}", b.describe());
    }
    // A tampered expectation must fail.
    let mut bad = outs.clone();
    let o = bad.get_mut("lse").unwrap();
    o.bytes[4..8].copy_from_slice(&1.5f32.to_le_bytes());
    let file = check::parse_file(&check::write_file(&k.id(), &case.params, &inputs, &bad, &[]).unwrap()).unwrap();
    let cmps = check::run_check(&mllm_kernels::registry::kernels(), &file, &Backend::Cpu).unwrap();
    assert!(cmps.iter().any(|c| !c.ok));
    assert!(check::parse_file(b"not a safetensors file").is_err());
}

#[test]
fn gpu_verified_table_parses() {
    let t = "| core | 0123456789abcdef | abc1234 | 2026-11-26 | H100 |\n| family | source hash | x | y | z |\n";
    assert_eq!(proof::proven_hashes(t), vec![("core".to_string(), "0123456789abcdef".to_string())]);
    let (unproven, total, _) = proof::unproven(&mllm_kernels::registry::kernels());
    assert!(unproven <= total && total >= 3);
}

#[test]
fn devices_lists_every_backend() {
    let d = mllm_kernels::devices();
    for k in BackendKind::ALL {
        let r = d.iter().find(|r| r.backend == k).expect("every backend is listed");
        assert!(!r.detail.is_empty());
    }
}

/// The tool beside this test binary: cargo's path, or `MLLM_KERNELS_BIN` on a GPU host where
/// the bundle was copied elsewhere.
pub fn tool() -> String {
    std::env::var("MLLM_KERNELS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_mllm-kernels").to_string())
}

#[test]
fn the_tool_verifies_every_backend_present() {
    let out = std::process::Command::new(tool())
        .args(["verify", "--family", "core", "--seed", "42"])
        .output()
        .expect("run mllm-kernels");
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("");
    assert!(out.status.success(), "verify failed:\n{text}");
    assert!(last.ends_with(", 0 failed") && !last.starts_with("0 passed"), "last line: {last}");
    assert!(
        text.contains("| family | backend | passed | failed | CUDA on a GPU | CUDA emulated (cuda-cpu) |"),
        "no closing table:\n{text}"
    );
    let bad =
        std::process::Command::new(tool()).args(["verify", "--family", "nope"]).output().expect("run mllm-kernels");
    assert!(!bad.status.success());
}

/// The README's `check` table names every kernel with its params and tensors as the plans
/// declare them (so a file written from the table is accepted).
#[test]
fn readme_check_table_matches_the_plans() {
    use mllm_kernels::Role;
    let readme = std::fs::read_to_string(crate::common::repo_file("README.md")).unwrap();
    let quoted = |cell: &str| -> Vec<String> {
        cell.split('`').skip(1).step_by(2).flat_map(|q| q.split([',', ' ', '['])).map(str::to_string).collect()
    };
    for k in mllm_kernels::registry::kernels() {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", k.id())))
            .unwrap_or_else(|| panic!("README check table has no row for {}", k.id()));
        let cells: Vec<&str> = row.split(" | ").collect();
        let (params, inputs, outputs) = (quoted(cells[1]), quoted(cells[2]), quoted(cells[3]));
        for case in k.cases() {
            let plan = k.prepare(&case.params).unwrap();
            for key in plan.params().as_object().unwrap().keys() {
                assert!(params.contains(key), "{}: param `{key}` is not in the README row", k.id());
            }
            for s in plan.tensors() {
                let col = match s.role {
                    Role::In => &inputs,
                    Role::Out => &outputs,
                    Role::InOut => {
                        assert!(inputs.iter().any(|n| n == s.name), "{}: in-out `{}` not among inputs", k.id(), s.name);
                        &outputs
                    }
                    Role::Scratch => continue,
                };
                assert!(
                    col.iter().any(|n| n == s.name),
                    "{}: tensor `{}` ({:?}) not in the README row",
                    k.id(),
                    s.name,
                    s.role
                );
            }
        }
    }
}

/// Plans and backends are shared across an engine's threads (every plan is `Send + Sync`, a
/// bound of `Plan`): each registered plan runs from four threads at once on each backend (one status word and set of buffers per thread) and every
/// thread gets the single-threaded result.
#[test]
fn plans_and_backends_run_from_several_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<mllm_kernels::core::RmsNorm>();
    send_sync::<mllm_kernels::mla::MlaDecode>();
    send_sync::<mllm_kernels::ternary::MatmulFreeBlock>();
    send_sync::<Backend>();
    for b in backends() {
        for k in mllm_kernels::registry::kernels() {
            let id = k.id();
            let cases = k.cases();
            let case = cases.iter().find(|c| c.dtype == DType::F32 && c.fixture.0.is_null()).unwrap_or(&cases[0]);
            let inputs = random_inputs(k, &case.params, &case.fixture, 9).unwrap();
            let (want, _) = run_kernel(k, &b, &case.params, &inputs).unwrap();
            std::thread::scope(|s| {
                let runs: Vec<_> =
                    (0..4).map(|_| s.spawn(|| run_kernel(k, &b, &case.params, &inputs).unwrap().0)).collect();
                for r in runs {
                    let got = r.join().unwrap();
                    for (name, t) in &want {
                        let (g, w) = (got[name].to_f64(), t.to_f64());
                        let same = g.iter().zip(&w).all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
                        assert!(same, "{id} {name} on {} differs across threads", b.describe());
                    }
                }
            });
        }
    }
}

/// Every bench case builds a plan (bench shapes are only run on a GPU, so a bad one would
/// otherwise surface there first).
#[test]
fn every_bench_case_builds_a_plan() {
    for k in mllm_kernels::registry::kernels() {
        for case in k.bench_cases() {
            let plan = k.prepare(&case.params).unwrap_or_else(|e| panic!("{} bench {}: {e}", k.id(), case.label));
            assert!(!plan.tensors().is_empty(), "{} bench {}", k.id(), case.label);
        }
    }
}

/// `bench` at a user's own shapes: one with `--kernel` and `--params`, several from a JSON
/// file; a bad kernel, params or file is an error with a non-zero exit.
#[test]
fn bench_takes_a_users_shapes() {
    let run = |args: &[&str]| std::process::Command::new(tool()).args(args).output().expect("run mllm-kernels");
    let one = run(&[
        "bench",
        "--backend",
        "cpu",
        "--iters",
        "1",
        "--kernel",
        "core.rmsnorm",
        "--params",
        r#"{"rows":3,"cols":40,"dtype":"f32"}"#,
    ]);
    let text = String::from_utf8_lossy(&one.stdout);
    assert!(one.status.success(), "{text}{}", String::from_utf8_lossy(&one.stderr));
    assert!(text.lines().any(|l| l.starts_with("core.rmsnorm") && l.contains("cols=40 rows=3")), "{text}");
    let file = std::env::temp_dir().join(format!("mllm-bench-cases-{}.json", std::process::id()));
    std::fs::write(
        &file,
        r#"[{"kernel": "core.gather_rows", "params": {"rows": 2, "src_rows": 5, "cols": 8, "dtype": "f16"}},
            {"kernel": "ternary.matmul", "params": {"m": 9, "n": 33, "k": 70, "dtype": "bf16"}}]"#,
    )
    .unwrap();
    let many = run(&["bench", "--backend", "cpu", "--iters", "1", "--cases", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&many.stdout);
    assert!(many.status.success(), "{text}{}", String::from_utf8_lossy(&many.stderr));
    assert!(text.contains("core.gather_rows") && text.contains("ternary.matmul"), "{text}");
    for bad in [
        vec!["bench", "--backend", "cpu", "--kernel", "core.nope"],
        vec!["bench", "--backend", "cpu", "--kernel", "core.rmsnorm", "--params", "{rows"],
        vec!["bench", "--backend", "cpu", "--kernel", "core.rmsnorm", "--params", r#"{"rows":0,"cols":4}"#],
        vec!["bench", "--backend", "cpu", "--params", r#"{"rows":1}"#],
        vec!["bench", "--backend", "cpu", "--cases", "/nonexistent/cases.json"],
    ] {
        let out = run(&bad);
        assert!(!out.status.success(), "{bad:?} passed");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{bad:?}");
    }
    let _ = std::fs::remove_file(&file);
}

/// The harness runs lists of kernels handed in: no file of it names a family's module (the
/// launch floor's no-op kernel goes through the backend).
#[test]
fn the_harness_imports_no_family() {
    let dir = crate::common::repo_file("src/harness");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for family in ["core", "mla", "mom", "ternary", "visual"] {
            for pat in [format!("crate::{family}::"), format!("mllm_kernels::{family}::")] {
                assert!(!text.contains(&pat), "{} names `{pat}`", path.display());
            }
        }
    }
}
