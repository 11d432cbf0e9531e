//! Every public entry point against every class of bad input, on every backend present: the
//! tests behind the README's "Bad input" table. Each class is driven from the registry, so a
//! kernel is covered the day it is registered. A row of the table names the test here that backs
//! it; each test runs its class on the CPU, wgpu and (where present) CUDA.

use mllm_kernels::harness::{
    launch_once, random_inputs, Case, DevMap, DevTensor, HostTensor, Kernel, Prepared, TensorMap,
};
use mllm_kernels::{Backend, BackendKind, DType, Error, Role, Status};
use serde_json::{json, Value};

use crate::common::backends;

fn kernels() -> Vec<&'static dyn Kernel> {
    mllm_kernels::registry::kernels()
}

/// The case of `k` with the fewest elements, its plan and random inputs.
fn smallest(k: &'static dyn Kernel) -> (Case, Box<dyn Prepared>, TensorMap) {
    let case = crate::common::smallest_case(k);
    let plan = k.prepare(&case.params).unwrap();
    let inputs = random_inputs(k, &case.params, &case.fixture, 7).unwrap();
    (case, plan, inputs)
}

/// Elements to drop so that a buffer is short on `backend`, if it can be: wgpu buffers are
/// padded to whole words (at least one), so a 16-bit or 8-bit tensor loses a word's worth, and
/// a tensor of one word has no shorter buffer.
fn shortfall(dtype: DType, len: usize, backend: &Backend) -> Option<usize> {
    let drop = match backend.kind() {
        BackendKind::Wgpu => (4 / dtype.size()).max(1),
        _ => 1,
    };
    let words = |n: usize| (n * dtype.size()).div_ceil(4).max(1);
    let short = len.checked_sub(drop)?;
    (backend.kind() != BackendKind::Wgpu || words(short) < words(len)).then_some(drop)
}

/// The plan's tensors on `backend` as the harness stages them (inputs uploaded, outputs and
/// scratch poisoned), with `short` one tensor cut to `len` elements.
fn stage(plan: &dyn Prepared, backend: &Backend, inputs: &TensorMap, short: Option<(&str, usize)>) -> DevMap {
    let cut = |name: &str, t: HostTensor| match short {
        Some((n, len)) if n == name => {
            let bytes = t.bytes[..len * t.dtype.size()].to_vec();
            HostTensor { dtype: t.dtype, shape: vec![len], bytes }
        }
        _ => t,
    };
    let mut dev = DevMap::new();
    for (name, t) in inputs {
        dev.insert(name.clone(), DevTensor::upload(backend, &cut(name, t.clone())).unwrap());
    }
    for s in plan.tensors() {
        if matches!(s.role, Role::Out | Role::Scratch) && !inputs.contains_key(s.name) {
            let t = cut(s.name, HostTensor::poison(s.dtype, &[s.len]));
            dev.insert(s.name.to_string(), DevTensor::upload(backend, &t).unwrap());
        }
    }
    dev
}

/// Row "buffer too small": every tensor of every plan (inputs, outputs, in-place and scratch),
/// one at a time, short on every backend: `run_*` returns `Error::Shape` naming the tensor
/// before anything is launched, and the same plan then runs on full buffers.
#[test]
fn short_buffers_are_shape_errors() {
    let mut failures = Vec::new();
    let mut n = 0;
    for b in backends() {
        for k in kernels() {
            let (_, plan, inputs) = smallest(k);
            for s in plan.tensors() {
                let Some(drop) = shortfall(s.dtype, s.len, &b) else { continue };
                n += 1;
                let mut dev = stage(&*plan, &b, &inputs, Some((s.name, s.len - drop)));
                let mut status = Status::new(&b).unwrap();
                let what = format!("{} on {}: `{}` {} of {}", k.id(), b.kind().name(), s.name, s.len - drop, s.len);
                match launch_once(&*plan, &b, &mut dev, &mut status) {
                    Err(Error::Shape { what: w, .. }) if w.contains(s.name) => {}
                    Err(e) => failures.push(format!("{what}: an error that does not name it as a shape: {e}")),
                    Ok(()) => failures.push(format!("{what}: accepted")),
                }
            }
            let mut dev = stage(&*plan, &b, &inputs, None);
            let mut status = Status::new(&b).unwrap();
            if let Err(e) = launch_once(&*plan, &b, &mut dev, &mut status).and_then(|_| b.synchronize()) {
                failures.push(format!("{} on {}: full buffers refused after short ones: {e}", k.id(), b.kind().name()));
            }
        }
    }
    assert!(n > 100, "only {n} short-buffer runs");
    assert!(failures.is_empty(), "{} of {n}:\n{}", failures.len(), failures.join("\n"));
}

/// Row "buffer too small" for the host-side checks: every plan's `validate*` (what `check` and
/// an engine call to name a bad index) on inputs cut short or empty returns an `Error`, never
/// a panic.
#[test]
fn validation_of_short_inputs_is_an_error() {
    let mut failures = Vec::new();
    for k in kernels() {
        let (_, plan, inputs) = smallest(k);
        if let Err(e) = plan.validate_inputs(&inputs) {
            failures.push(format!("{}: validate_inputs refused good inputs: {e}", k.id()));
        }
        for (name, t) in &inputs {
            let n = t.bytes.len() / t.dtype.size();
            for len in [0, n / 2, n.saturating_sub(1)] {
                let mut cut = inputs.clone();
                let bytes = t.bytes[..len * t.dtype.size()].to_vec();
                cut.insert(name.clone(), HostTensor { dtype: t.dtype, shape: vec![len], bytes });
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| plan.validate_inputs(&cut)));
                match r {
                    Err(_) => {
                        failures.push(format!("{}: validate_inputs with `{name}` of {len} of {n}: panicked", k.id()))
                    }
                    // Index tensors the check reads must be long enough (float inputs it never
                    // reads may be anything).
                    Ok(Ok(())) if len < n && t.dtype == DType::I32 && plan.validate_inputs(&inputs).is_ok() => {
                        failures.push(format!("{}: validate_inputs accepted `{name}` of {len} of {n}", k.id()))
                    }
                    Ok(_) => {}
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}:\n{}", failures.len(), failures.join("\n"));
}

/// Row "wrong dtype" on the typed entry points: `run_cpu::<T>` and `run_cuda::<T>` of every
/// float plan check `T` against the plan's dtype (`same_dtype`) before touching a buffer. Read
/// from the sources, so a new `run_*` without the check fails here; the behaviour itself runs in
/// `core_tests::bad_buffers_are_errors_on_cpu` and `_on_cuda`. wgpu buffers are untyped: the
/// plan's dtype decides how their bytes are read, and their size is checked.
#[test]
fn typed_entry_points_check_their_dtype() {
    let mut missing = Vec::new();
    let mut n = 0;
    for dir in ["core", "ternary", "mla", "mom", "visual"] {
        for entry in std::fs::read_dir(crate::common::repo_file(&format!("src/{dir}"))).unwrap() {
            let path = entry.unwrap().path();
            let src = std::fs::read_to_string(&path).unwrap();
            for (at, _) in src.match_indices("fn run_cpu<T").chain(src.match_indices("fn run_cuda<T")) {
                n += 1;
                // The body: up to the next function at the same indentation.
                let body = &src[at..];
                let end = body[3..]
                    .find("\n    pub fn ")
                    .or_else(|| body[3..].find("\n    fn "))
                    .map_or(body.len(), |e| e + 3);
                let body = &body[..end];
                let delegates =
                    body.contains(".run_cpu(") || body.contains(".run_cuda(") || body.contains("run_cpu::<T>");
                if !body.contains("same_dtype") && !body.contains("check_dtype") && !delegates {
                    let line = src[..at].lines().count() + 1;
                    missing.push(format!("{}:{line}", path.display()));
                }
            }
        }
    }
    assert!(n > 40, "found only {n} typed entry points");
    assert!(
        missing.is_empty(),
        "typed entry points that never compare T with the plan's dtype:\n{}",
        missing.join("\n")
    );
}

/// Integer-valued params of a case (sizes, counts, strides given as numbers).
fn integer_params(params: &Value) -> Vec<String> {
    params.as_object().map_or(vec![], |o| o.iter().filter(|(_, v)| v.is_u64()).map(|(k, _)| k.clone()).collect())
}

/// Runs `plan` on `inputs` on `b` and compares with the oracle (outputs and status), as
/// `verify` does; `Err` names what differed.
fn agrees(plan: &dyn Prepared, b: &Backend, inputs: &TensorMap) -> Result<u32, String> {
    let expected = plan.oracle(inputs).map_err(|e| format!("oracle: {e}"))?;
    let (outs, bits) = mllm_kernels::harness::execute(plan, b, inputs).map_err(|e| format!("run: {e}"))?;
    if bits != expected.status {
        return Err(format!("status 0x{bits:x}, the oracle says 0x{:x}", expected.status));
    }
    let bad: Vec<String> = plan.check(inputs, &expected, &outs).into_iter().filter(|c| !c.ok).map(|c| c.note).collect();
    if bad.is_empty() {
        Ok(bits)
    } else {
        Err(bad.join("; "))
    }
}

/// Tensors whose elements stay under this are run; larger accepted plans are only built.
const RUN_LIMIT: usize = 1 << 18;

/// Rows "zero sizes" and "overflowing sizes": every integer param of every kernel set to 0 and
/// to values whose products overflow. `new` returns `Error::InvalidParams` naming the param (no
/// allocation happens first), or accepts it, and then the plan's tensor sizes are sane and it
/// runs and matches the oracle on every backend.
#[test]
fn zero_and_overflowing_sizes() {
    let bs = backends();
    let mut failures = Vec::new();
    let mut refused = 0;
    for k in kernels() {
        let (case, _, _) = smallest(k);
        let params = case.params;
        for key in integer_params(&params) {
            for v in [json!(0), json!(1u64 << 31), json!(1u64 << 32), json!(1u64 << 62), json!(u64::MAX)] {
                let mut p = params.clone();
                p[&key] = v.clone();
                let what = format!("{} {key} = {v}", k.id());
                let plan = match k.prepare(&p) {
                    Err(Error::InvalidParams(m)) | Err(Error::DType(m)) => {
                        refused += 1;
                        let named = m.contains(&key) || m.contains(&key.replace('_', " "));
                        if !named && !m.contains("overflow") && !m.contains("elements") {
                            failures.push(format!("{what}: refused without naming it: {m}"));
                        }
                        continue;
                    }
                    Err(e) => {
                        failures.push(format!("{what}: an error of the wrong kind: {e}"));
                        continue;
                    }
                    Ok(plan) => plan,
                };
                let bytes = plan
                    .tensors()
                    .iter()
                    .try_fold(0usize, |acc, s| s.len.checked_mul(s.dtype.size())?.checked_add(acc));
                let elems: usize = match bytes {
                    Some(_) => plan.tensors().iter().map(|s| s.len).sum(),
                    None => {
                        failures.push(format!("{what}: accepted, with tensor sizes that overflow"));
                        continue;
                    }
                };
                if elems > RUN_LIMIT {
                    continue;
                }
                let Ok(inputs) = plan.inputs(&case.fixture, &mut mllm_kernels::harness::Rng::new(5)) else { continue };
                for b in &bs {
                    if let Err(e) = agrees(&*plan, b, &inputs) {
                        failures.push(format!("{what} on {}: accepted, then {e}", b.kind().name()));
                    }
                }
            }
        }
    }
    assert!(refused > 100, "only {refused} refusals");
    assert!(failures.is_empty(), "{}:\n{}", failures.len(), failures.join("\n"));
}

/// Rows "out-of-range, negative or repeated indices" and "lengths over capacity": one element
/// of every integer input (indices, slot ids, block tables, lengths, offsets) set to a hostile
/// value. Every backend does what the oracle says for exactly those inputs: clamps, skips or
/// routes around the bad element and raises the status bit the oracle raises, and where a bit
/// is raised `validate_inputs` names the element (what `Status::check` and `check` report).
#[test]
fn hostile_indices_raise_the_status_word() {
    let bs = backends();
    let mut failures = Vec::new();
    let mut raised = 0;
    let mut n = 0;
    for k in kernels() {
        let (_, plan, inputs) = smallest(k);
        let ints: Vec<String> = inputs.iter().filter(|(_, t)| t.dtype == DType::I32).map(|(n, _)| n.clone()).collect();
        for name in ints {
            let good = inputs[&name].to_i32();
            for (i, hostile) in [-1, i32::MIN, i32::MAX, 1 << 20, i32::MIN + 1].into_iter().enumerate() {
                let at = (i * 7919) % good.len().max(1);
                let mut v = good.clone();
                let Some(x) = v.get_mut(at) else { continue };
                *x = hostile;
                let mut bad = inputs.clone();
                bad.insert(name.clone(), HostTensor::from_i32(&[v.len()], &v));
                // A repeated entry: the element copied from its neighbour (a repeated slot id).
                let mut rep = inputs.clone();
                let mut r = good.clone();
                if r.len() > 1 {
                    r[at] = r[(at + 1) % r.len()];
                    rep.insert(name.clone(), HostTensor::from_i32(&[r.len()], &r));
                }
                for (label, input) in
                    [(format!("{name}[{at}] = {hostile}"), &bad), (format!("{name}[{at}] repeated"), &rep)]
                {
                    for b in &bs {
                        n += 1;
                        let what = format!("{} on {}: {label}", k.id(), b.kind().name());
                        match agrees(&*plan, b, input) {
                            Ok(0) => {}
                            Ok(bits) => {
                                raised += 1;
                                if plan.validate_inputs(input).is_ok() {
                                    failures.push(format!("{what}: raised 0x{bits:x}, validate_inputs names nothing"));
                                }
                            }
                            Err(e) if e.starts_with("run: invalid") => {}
                            Err(e) => failures.push(format!("{what}: {e}")),
                        }
                    }
                }
            }
        }
    }
    assert!(raised > 50, "only {raised} of {n} hostile runs raised the status word");
    assert!(failures.is_empty(), "{} of {n}:\n{}", failures.len(), failures.join("\n"));
}

/// Row "NaN and infinities": a NaN, +inf or -inf in one element of every float input. Float
/// data propagates them (no check costs a pass over the data); where a value steers control
/// flow (the router, selection, quantization scales) the kernel stays in bounds and raises
/// what the oracle raises. Every backend returns, with the oracle's status bits.
#[test]
fn non_finite_values_stay_in_bounds() {
    let bs = backends();
    let mut failures = Vec::new();
    let mut n = 0;
    for k in kernels() {
        let (_, plan, inputs) = smallest(k);
        let floats: Vec<String> = inputs.iter().filter(|(_, t)| t.dtype.is_float()).map(|(n, _)| n.clone()).collect();
        for name in floats {
            let good = inputs[&name].to_f64();
            for (i, x) in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY].into_iter().enumerate() {
                let at = (i * 104_729) % good.len().max(1);
                let mut v = good.clone();
                let Some(e) = v.get_mut(at) else { continue };
                *e = x;
                let mut bad = inputs.clone();
                let t = &inputs[&name];
                bad.insert(name.clone(), HostTensor::from_f64(t.dtype, &t.shape, &v));
                let Ok(expected) = plan.oracle(&bad) else { continue };
                for b in &bs {
                    n += 1;
                    let what = format!("{} on {}: {name}[{at}] = {x}", k.id(), b.kind().name());
                    match mllm_kernels::harness::execute(&*plan, b, &bad) {
                        Ok((_, bits)) if bits == expected.status => {}
                        Ok((_, bits)) => {
                            failures.push(format!("{what}: status 0x{bits:x}, the oracle says 0x{:x}", expected.status))
                        }
                        Err(e) => failures.push(format!("{what}: {e}")),
                    }
                }
            }
        }
    }
    assert!(n > 100, "only {n} runs");
    assert!(failures.is_empty(), "{} of {n}:\n{}", failures.len(), failures.join("\n"));
}

/// Row "device lost or driver error": a wgpu device destroyed under the crate (a driver reset,
/// an engine tearing down) turns every later run, upload, download and wait into an `Error`,
/// never a panic or a hang.
#[test]
fn a_lost_wgpu_device_is_an_error() {
    let Some(b) = crate::common::backend(BackendKind::Wgpu) else { return };
    let k = kernels().into_iter().find(|k| k.id() == "core.rmsnorm").unwrap();
    let (case, _, inputs) = smallest(k);
    mllm_kernels::harness::run_kernel(k, &b, &case.params, &inputs).unwrap();
    let Backend::Wgpu(w) = &b else { unreachable!() };
    w.device().destroy();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        mllm_kernels::harness::run_kernel(k, &b, &case.params, &inputs)
    }));
    match r {
        Ok(Err(Error::Wgpu(m))) => assert!(m.contains("lost"), "the error does not say the device was lost: {m}"),
        Ok(Err(e)) => panic!("an error of the wrong kind: {e}"),
        Ok(Ok(_)) => panic!("a run on a destroyed device passed"),
        Err(_) => panic!("a run on a destroyed device panicked"),
    }
}

/// Row "the tool": any bad command line or file ends with a non-zero exit and a message on
/// stderr, never a panic or a signal.
#[test]
fn the_tool_refuses_bad_invocations_readably() {
    let dir = std::env::temp_dir().join(format!("mllm-bad-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<_>>())
        .unwrap();
    let empty = dir.join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    let g = garbage.to_str().unwrap();
    let e = empty.to_str().unwrap();
    let runs: Vec<Vec<&str>> = vec![
        vec!["verfy"],
        vec!["verify", "-x"],
        vec!["verify", "--backend", "tpu"],
        vec!["verify", "--family", "nope"],
        vec!["verify", "--family", "core", "--seed", "-3"],
        vec!["verify", "--family", "core", "--backend", "cpu", "--proof", "/nonexistent/dir/p"],
        vec!["bench", "--iters", "x"],
        vec![
            "bench",
            "--kernel",
            "mom.route",
            "--params",
            r#"{"tokens":1,"memories":4,"topk":2,"dtype":"f32","fixture":"ties"}"#,
        ],
        vec!["bench", "--family", "core", "--json", "/nonexistent/dir/bench.json"],
        // 17 GB of f32 rows, refused before allocating (issue 24): an error naming the tensor.
        vec![
            "bench",
            "--kernel",
            "core.rmsnorm",
            "--params",
            r#"{"rows":46340,"cols":46340,"dtype":"f32"}"#,
            "--max-bytes",
            "1000000000",
        ],
        vec![
            "bench",
            "--backend",
            "cpu",
            "--kernel",
            "mla.mla_decode",
            "--max-bytes",
            "1000000",
            "--params",
            r#"{"batch":1,"sq":1,"heads":1,"latent":64,"rope":0,"page_size":1,"pages":1048576,"max_pages":1048576,"scale":1.0,"dtype":"f32","splits":1048576}"#,
        ],
        vec!["check"],
        vec!["check", "/nonexistent/file.safetensors"],
        vec!["check", g],
        vec!["check", e],
    ];
    for args in runs {
        let out = std::process::Command::new(crate::harness_tests::tool()).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code().is_some_and(|c| c != 0), "{args:?}: exit {:?}", out.status);
        assert!(!err.trim().is_empty(), "{args:?}: nothing on stderr");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        if args.contains(&"--max-bytes") {
            assert!(err.contains("over --max-bytes") && err.contains("` alone "), "{args:?}: {err}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Row "over the device's limits": a tensor larger than wgpu's `max_buffer_size` is an error
/// naming the limit (no wgpu validation panic); nothing is allocated on the device.
#[test]
fn a_tensor_over_the_wgpu_buffer_limit_is_an_error() {
    let Some(Backend::Wgpu(w)) = crate::common::backend(BackendKind::Wgpu) else { return };
    let limit = w.device().limits().max_buffer_size as usize;
    // Zeroed pages are not touched before the size check.
    let big = vec![0u8; limit + 4];
    match w.upload(&big) {
        Err(Error::Wgpu(m)) => assert!(m.contains("max_buffer_size"), "{m}"),
        other => panic!("a {}-byte upload: {:?}", big.len(), other.map(|b| b.size())),
    }
}

/// Issue 24: a plan whose tensors would not fit is refused before anything is allocated, naming
/// the largest tensor; twice the bytes must fit the host's available memory.
#[test]
fn a_plan_over_the_memory_budget_is_refused_before_allocation() {
    use mllm_kernels::harness::budget::within;
    use mllm_kernels::TensorSpec;
    let specs = [TensorSpec::input("x", DType::F32, 1 << 20), TensorSpec::output("y", DType::F32, 1 << 28)];
    let err = within("core.rmsnorm", &specs, 1 << 20, None).expect_err("over --max-bytes");
    assert!(err.to_string().contains("`y` alone 1073741824 bytes"), "{err}");
    let err = within("core.rmsnorm", &specs, 0, Some(2 << 30)).expect_err("twice 1 GiB over 2 GiB available");
    assert!(err.to_string().contains("available memory"), "{err}");
    within("core.rmsnorm", &specs, 0, Some(3 << 30)).expect("fits");
    // Every registered case of every kernel fits this machine (and the prepare path checks).
    for k in mllm_kernels::registry::kernels() {
        for c in k.cases() {
            k.prepare(&c.params).unwrap_or_else(|e| panic!("{} {}: {e}", k.id(), c.label));
        }
    }
}
