//! A generator of bad `check` files, one class of fault at a time, for every registered kernel:
//! each must end in an `Error` or a failed comparison (the tool's non-zero exit), never a panic,
//! an abort, or a pass.

use mllm_kernels::harness::{check, random_inputs, run_kernel, Case, Comparison, HostTensor, Kernel, TensorMap};
use mllm_kernels::{Backend, DType, Error, Result, Role};
use serde_json::{json, Value};

use crate::common::backends;

fn kernels() -> Vec<&'static dyn Kernel> {
    mllm_kernels::registry::kernels()
}

/// A good file's parts: the first f32 (or first) case, its inputs and the CPU's outputs.
struct Good {
    k: &'static dyn Kernel,
    case: Case,
    inputs: TensorMap,
    outs: TensorMap,
}

impl Good {
    fn of(k: &'static dyn Kernel, case: Case) -> Good {
        let inputs = random_inputs(k, &case.params, &case.fixture, 11).unwrap();
        let (outs, _) = run_kernel(k, &Backend::Cpu, &case.params, &inputs).unwrap();
        Good { k, case, inputs, outs }
    }
    fn first(k: &'static dyn Kernel) -> Good {
        let cases = k.cases();
        let case = cases.iter().find(|c| c.dtype == DType::F32 && c.fixture.0.is_null()).unwrap_or(&cases[0]).clone();
        Good::of(k, case)
    }
    /// Expected outputs: the plan's outputs only (scratch is the tool's business).
    fn expected(&self) -> TensorMap {
        let plan = self.k.prepare(&self.case.params).unwrap();
        let outs: Vec<&str> =
            plan.tensors().iter().filter(|s| matches!(s.role, Role::Out | Role::InOut)).map(|s| s.name).collect();
        self.outs.iter().filter(|(n, _)| outs.contains(&n.as_str())).map(|(n, t)| (n.clone(), t.clone())).collect()
    }
    fn file(&self, params: &Value, inputs: &TensorMap, expected: &TensorMap, meta: &[(&str, &str)]) -> Vec<u8> {
        check::write_file(&self.k.id(), params, inputs, expected, meta).unwrap()
    }
}

fn run(bytes: &[u8], b: &Backend) -> Result<Vec<Comparison>> {
    check::run_check(&kernels(), &check::parse_file(bytes)?, b)
}

/// The file is refused with an error (before anything runs).
fn refused(bytes: &[u8], b: &Backend, what: &str) -> Error {
    match run(bytes, b) {
        Err(e) => e,
        Ok(c) => panic!("{what} on {}: accepted, {c:?}", b.describe()),
    }
}

/// The file runs but does not pass.
fn failed(bytes: &[u8], b: &Backend, what: &str) -> Vec<Comparison> {
    match run(bytes, b) {
        Ok(c) if c.iter().any(|c| !c.ok) => c,
        other => panic!("{what} on {}: expected a failed comparison, got {other:?}", b.describe()),
    }
}

#[test]
fn good_files_pass_and_bad_params_are_refused() {
    for b in backends() {
        for k in kernels() {
            let g = Good::first(k);
            let (p, i, e) = (&g.case.params, &g.inputs, g.expected());
            let id = k.id();
            let ok = run(&g.file(p, i, &e, &[]), &b).unwrap_or_else(|err| panic!("{id} good file: {err}"));
            assert!(ok.iter().all(|c| c.ok), "{id} good file on {}: {ok:?}", b.describe());

            // Unknown, misspelled and mistyped params, params that are not an object.
            let mut q = p.clone();
            q["epsilon"] = json!(1e-5);
            let err = refused(&g.file(&q, i, &e, &[]), &b, &format!("{id} unknown param"));
            assert!(err.to_string().contains("epsilon"), "{id}: {err}");
            let key = p.as_object().unwrap().iter().find(|(_, v)| v.is_u64()).map(|(k, _)| k.clone()).unwrap();
            let mut q = p.clone();
            q[&key] = json!("3");
            let err = refused(&g.file(&q, i, &e, &[]), &b, &format!("{id} string {key}"));
            assert!(err.to_string().contains(&key), "{id}: the error names `{key}`: {err}");
            for v in [json!([1, 2]), json!(5), json!("x"), json!(true)] {
                refused(&g.file(&v, i, &e, &[]), &b, &format!("{id} params {v}"));
            }

            // Every size param pushed to sizes nothing can hold, with the small inputs: an
            // error before any allocation (no abort), or a run on what the file holds.
            for (key, _) in p.as_object().unwrap().iter().filter(|(_, v)| v.is_u64()) {
                for big in [65535u64, 1 << 31, 1 << 32, u64::MAX / 3, u64::MAX] {
                    let mut q = p.clone();
                    q[key] = json!(big);
                    let _ = run(&g.file(&q, i, &e, &[]), &b);
                }
            }
        }
    }
}

#[test]
fn bad_tensors_and_metadata_are_refused() {
    for b in backends() {
        for k in kernels() {
            let g = Good::first(k);
            let (p, i, e) = (&g.case.params, &g.inputs, g.expected());
            let id = k.id();
            for (name, t) in i {
                // One to three elements short (i8 words on wgpu hide up to three).
                let n = t.bytes.len() / t.dtype.size();
                for short in 1..=3.min(n) {
                    let mut j = i.clone();
                    let t = j.get_mut(name).unwrap();
                    t.bytes.truncate((n - short) * t.dtype.size());
                    t.shape = vec![n - short];
                    let err = refused(&g.file(p, &j, &e, &[]), &b, &format!("{id} in.{name} short by {short}"));
                    assert!(matches!(err, Error::Shape { .. }), "{id} in.{name}: {err}");
                }
                // The same bytes under another dtype tag.
                let other = match t.dtype {
                    DType::F32 => DType::I32,
                    DType::I32 | DType::U32 => DType::F32,
                    DType::F16 => DType::BF16,
                    DType::BF16 => DType::F16,
                    DType::I8 => DType::F16,
                    DType::F8E4M3 => DType::I8,
                };
                let mut j = i.clone();
                let t = j.get_mut(name).unwrap();
                t.shape = vec![t.bytes.len() / other.size()];
                t.bytes.truncate(t.shape[0] * other.size());
                t.dtype = other;
                let err = refused(&g.file(p, &j, &e, &[]), &b, &format!("{id} in.{name} tagged {other}"));
                assert!(matches!(err, Error::DType(_) | Error::Shape { .. }), "{id} in.{name}: {err}");
            }
            // A tensor the kernel does not read, and a missing one.
            let mut j = i.clone();
            j.insert("bogus".into(), HostTensor::from_i32(&[1], &[0]));
            refused(&g.file(p, &j, &e, &[]), &b, &format!("{id} extra input"));
            let mut j = i.clone();
            let first = j.keys().next().unwrap().clone();
            j.remove(&first);
            refused(&g.file(p, &j, &e, &[]), &b, &format!("{id} without in.{first}"));
            // Expected outputs of 0 or 1 elements, of another dtype, or named wrongly.
            for (name, t) in &e {
                for keep in [0, 1].into_iter().filter(|&n| n < t.bytes.len() / t.dtype.size()) {
                    let mut f = e.clone();
                    f.get_mut(name).unwrap().bytes.truncate(keep * t.dtype.size());
                    f.get_mut(name).unwrap().shape = vec![keep];
                    refused(&g.file(p, i, &f, &[]), &b, &format!("{id} out.{name} of {keep} elements"));
                }
            }
            let mut f = e.clone();
            f.insert("nothing".into(), HostTensor::from_i32(&[1], &[0]));
            refused(&g.file(p, i, &f, &[]), &b, &format!("{id} out.nothing"));
            refused(&g.file(p, i, &TensorMap::new(), &[]), &b, &format!("{id} no outputs"));
            // Tolerances that would pass anything, and a status that is not one.
            for (key, v) in [("rtol", "NaN"), ("atol", "inf"), ("rtol", "-1"), ("status", "SLOT_MAYBE")] {
                assert!(check::parse_file(&g.file(p, i, &e, &[(key, v)])).is_err(), "{id}: {key} = {v} accepted");
            }
        }
    }
}

/// Bad contents (indices, slots, `cu_seqlens`, codes, non-finite weights) raise the status: a file
/// whose outputs match the clamped result fails unless it says that status is expected, and the
/// failure names the bad element.
#[test]
fn a_raised_status_fails_unless_the_file_expects_it() {
    let mut seen = 0;
    for b in backends() {
        for k in kernels() {
            for case in k.cases().into_iter().filter(|c| !c.fixture.0.is_null() && c.dtype != DType::F16) {
                let g = Good::of(k, case);
                let (_, bits) = run_kernel(k, &Backend::Cpu, &g.case.params, &g.inputs).unwrap();
                if bits == 0 {
                    continue;
                }
                seen += 1;
                // Only what the oracle defines (outputs under some bad inputs are unspecified).
                let defined = k.prepare(&g.case.params).unwrap().oracle(&g.inputs).unwrap().outputs;
                let e: TensorMap = g.expected().into_iter().filter(|(n, _)| defined.contains_key(n)).collect();
                let (p, i) = (&g.case.params, &g.inputs);
                let what = format!("{} {}", k.id(), g.case.label);
                if e.is_empty() {
                    // Nothing defined but the status: without it the file checks nothing.
                    refused(&g.file(p, i, &e, &[]), &b, &what);
                } else {
                    let c = failed(&g.file(p, i, &e, &[]), &b, &what);
                    let st = c.iter().find(|c| c.name == "status" && !c.ok).unwrap_or_else(|| panic!("{what}: {c:?}"));
                    assert!(st.note.contains('['), "{what}: the note names the bad element: {}", st.note);
                }
                let bits = bits.to_string();
                let ok = run(&g.file(p, i, &e, &[("status", &bits)]), &b).unwrap();
                assert!(ok.iter().all(|c| c.ok), "{what} with status {bits} on {}: {ok:?}", b.describe());
            }
        }
    }
    assert!(seen > 0);
}

/// What the safetensors crate reports without a name (a shape its offsets do not hold, a dtype
/// no kernel uses) comes back naming the tensor.
#[test]
fn malformed_tensors_are_named() {
    // A header by hand: `in.x` claims 4 f32 (16 bytes) over 12 bytes of data.
    let header = br#"{"__metadata__":{"kernel":"core.rmsnorm","params":"{}"},"in.x":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 12]);
    let err = check::parse_file(&bytes).expect_err("a shape its offsets do not hold");
    let msg = err.to_string();
    assert!(msg.contains("`in.x`") && msg.contains("needs 16 bytes") && msg.contains("hold 12"), "{msg}");
    // An F64 tensor.
    let header = br#"{"__metadata__":{"kernel":"core.rmsnorm","params":"{}"},"in.w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 8]);
    let msg = check::parse_file(&bytes).expect_err("an F64 tensor").to_string();
    assert!(msg.contains("`in.w`") && msg.contains("F64"), "{msg}");
}
