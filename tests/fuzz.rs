//! A bounded fuzz run (stable toolchain, the crate's own seeded generator, a fixed budget so it
//! fits CI): every plan's validation with mutated params, every plan's CPU path with corrupted
//! integer inputs, and `check`-file parsing with mutated bytes. Each must end in `Ok` or an
//! `Error`, never a panic. A failure prints the seed, kernel and input that broke it.

use std::panic::{catch_unwind, AssertUnwindSafe};

use mllm_kernels::harness::{check, random_inputs, run_kernel, HostTensor, Kernel, Rng, TensorMap};
use mllm_kernels::{Backend, DType, Role};
use serde_json::{json, Value};

/// Mutations per kernel (params and inputs each) and per check file: seconds in all.
const BUDGET: usize = 64;
/// The generator's seed: fixed in CI (`MLLM_FUZZ_SEED` explores others).
fn seed(default: u64) -> u64 {
    std::env::var("MLLM_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Plans whose tensors hold more elements than this are built but not run.
const RUN_LIMIT: usize = 1 << 20;

fn kernels() -> Vec<&'static dyn Kernel> {
    mllm_kernels::registry::kernels()
}

/// A hostile value for a param: zero, negative, huge, overflowing, non-integer, wrong type.
fn hostile(rng: &mut Rng) -> Value {
    let pool = [
        json!(0),
        json!(1),
        json!(-1),
        json!(3),
        json!(255),
        json!(i32::MAX),
        json!(1u64 << 31),
        json!(1u64 << 32),
        json!(1u64 << 62),
        json!(u64::MAX),
        json!(1e300),
        json!(-0.5),
        json!(f64::MIN_POSITIVE),
        json!("x"),
        json!(true),
        json!(null),
        json!([1, 2]),
        json!({}),
    ];
    pool[rng.below(pool.len() as u64) as usize].clone()
}

/// Random contents of a tensor: normals (with a NaN now and then) for floats, small and
/// sometimes hostile integers for indices, any bits for packed words.
fn garbage(dtype: DType, len: usize, rng: &mut Rng) -> HostTensor {
    match dtype {
        DType::I32 => {
            let v: Vec<i32> = (0..len)
                .map(|_| {
                    if rng.below(16) == 0 {
                        [i32::MIN, -1, i32::MAX][rng.below(3) as usize]
                    } else {
                        rng.below(40) as i32 - 2
                    }
                })
                .collect();
            HostTensor::from_i32(&[len], &v)
        }
        DType::U32 => HostTensor::from_u32(&[len], &(0..len).map(|_| rng.next_u64() as u32).collect::<Vec<_>>()),
        DType::I8 => HostTensor::from_i8(&(0..len).map(|_| rng.next_u64() as i8).collect::<Vec<_>>()),
        dt => {
            let mut v = rng.normals(len, 2.0);
            if len > 0 && rng.below(4) == 0 {
                v[rng.below(len as u64) as usize] = f64::NAN;
            }
            HostTensor::from_f64(dt, &[len], &v)
        }
    }
}

fn mutate_params(p: &Value, rng: &mut Rng) -> Value {
    let mut p = p.clone();
    let Some(obj) = p.as_object_mut() else { return p };
    let keys: Vec<String> = obj.keys().cloned().collect();
    match rng.below(10) {
        0 if !keys.is_empty() => {
            obj.remove(&keys[rng.below(keys.len() as u64) as usize]);
        }
        1 => {
            obj.insert("not_a_param".into(), json!(1));
        }
        _ if !keys.is_empty() => {
            let k = keys[rng.below(keys.len() as u64) as usize].clone();
            obj.insert(k, hostile(rng));
        }
        _ => {}
    }
    p
}

/// Runs `f`, turning a panic into a test failure that names what was being fuzzed.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(e) => {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!("{what}: panicked: {}", msg.unwrap_or_default())
        }
    }
}

#[test]
fn fuzz_params_and_cpu_paths() {
    let seed = seed(0x5eed_f00d);
    let mut rng = Rng::new(seed);
    for k in kernels() {
        let cases = k.cases();
        for it in 0..BUDGET {
            let case = &cases[it % cases.len()];
            let params = mutate_params(&case.params, &mut rng);
            let what = format!("seed {seed}: {} params {params}", k.id());
            let Some(Ok(plan)) = no_panic(&what, || k.prepare(&params)) else { continue };
            let elems: usize = plan.tensors().iter().map(|s| s.len).sum();
            if elems > RUN_LIMIT {
                continue;
            }
            // Garbage of the right sizes for every input the plan reads (the case's generator
            // and fixture describe the case's shapes, not the mutated ones).
            let mut inputs = TensorMap::new();
            for s in plan.tensors().iter().filter(|s| matches!(s.role, Role::In | Role::InOut)) {
                inputs.insert(s.name.into(), garbage(s.dtype, s.len, &mut rng));
            }
            no_panic(&what, || run_kernel(k, &Backend::Cpu, &params, &inputs));
        }
        // Valid params, corrupted integer inputs (indices, offsets, slots, counts).
        for it in 0..BUDGET {
            let case = &cases[it % cases.len()];
            let Ok(mut inputs) = random_inputs(k, &case.params, &case.fixture, it as u64) else { continue };
            let names: Vec<String> =
                inputs.iter().filter(|(_, t)| t.dtype == DType::I32).map(|(n, _)| n.clone()).collect();
            if names.is_empty() {
                break;
            }
            let name = &names[rng.below(names.len() as u64) as usize];
            let mut v = inputs[name].to_i32();
            let at = rng.below(v.len().max(1) as u64) as usize;
            if let Some(x) = v.get_mut(at) {
                *x = [i32::MIN, -1, 0, 1, i32::MAX, x.wrapping_add(1), x.wrapping_sub(1), 1 << 20]
                    [rng.below(8) as usize];
            }
            inputs.insert(name.clone(), HostTensor::from_i32(&[v.len()], &v));
            let what = format!("seed {seed}: {} case {:?}: {name}[{at}] = {:?}", k.id(), case.label, v.get(at));
            no_panic(&what, || run_kernel(k, &Backend::Cpu, &case.params, &inputs));
        }
    }
}

#[test]
fn fuzz_check_file_parsing() {
    let seed = seed(0xc4ec_f11e);
    let mut rng = Rng::new(seed);
    for k in kernels().into_iter().step_by(3) {
        let case = &k.cases()[0];
        let inputs = random_inputs(k, &case.params, &case.fixture, 3).unwrap();
        let (outs, _) = run_kernel(k, &Backend::Cpu, &case.params, &inputs).unwrap();
        let good: TensorMap = outs;
        let Ok(bytes) = check::write_file(&k.id(), &case.params, &inputs, &good, &[]) else { continue };
        for it in 0..BUDGET {
            let mut b = bytes.clone();
            match it % 3 {
                // Flip bytes anywhere, in the header most of the time (where parsing happens).
                0 | 1 => {
                    let span = if it % 3 == 0 { b.len().min(512) } else { b.len() };
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(span as u64) as usize;
                        b[at] = rng.below(256) as u8;
                    }
                }
                _ => b.truncate(rng.below(b.len() as u64) as usize),
            }
            let what = format!("seed {seed}: {} check file, mutation {it}", k.id());
            no_panic(&what, || check::parse_file(&b).and_then(|f| check::run_check(&kernels(), &f, &Backend::Cpu)));
        }
    }
}
