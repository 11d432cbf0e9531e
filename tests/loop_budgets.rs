//! Loop budgets (issue "WGSL at realistic sizes"): every WGSL dispatch declares the most loop
//! iterations one invocation runs, and on a CPU adapter a dispatch over llvmpipe's 65,535 is
//! refused. Here every registered case (but the f16 twins of bf16 ones that are not `realistic:`) runs with loop counting
//! on (each shader rewritten to count its invocations' loop iterations), and no dispatch may run
//! more than it declared.

use std::collections::BTreeMap;

use mllm_kernels::backend::wgpu::CPU_LOOP_LIMIT;
use mllm_kernels::harness::{fresh_seed, verify_case};
use mllm_kernels::{Backend, BackendKind};

use crate::common::backend;

/// The shader a module was expanded from: its name without the dtype suffix.
fn shader_of(module: &str) -> String {
    ["_f32", "_f16", "_bf16"].iter().fold(module.to_string(), |m, s| m.trim_end_matches(s).to_string())
}

#[test]
fn every_dispatch_runs_within_its_declared_loop_budget() {
    let Some(b) = backend(BackendKind::Wgpu) else { return };
    let Backend::Wgpu(gpu) = &b else { return };
    gpu.count_loops(true).expect("loop counting on");
    let seed = fresh_seed();
    eprintln!("loop budgets on {}: seed {seed}", b.describe());
    // Per shader (dtype suffix dropped): the most measured, and its declared budget then.
    let mut seen: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let (mut over, mut failed, mut dispatches) = (Vec::new(), Vec::new(), 0);
    for k in mllm_kernels::registry::kernels() {
        // f16 cases are left out (the realistic ones stay): an f16 module is its bf16 twin's
        // text with other conversions (no loop among them), so their loops and budgets are the
        // same.
        for (i, case) in
            k.cases().iter().enumerate().filter(|(_, c)| c.dtype != mllm_kernels::DType::F16 || c.realistic)
        {
            let r = verify_case(k, &b, case, seed.wrapping_add(i as u64));
            let counts = gpu.loop_counts().expect("loop counts");
            if !r.ok {
                // Counting must not change a result: the same seed without it decides whether
                // this is the counting's fault or the case's own (the family tests report those).
                gpu.count_loops(false).expect("loop counting off");
                let plain = verify_case(k, &b, case, r.seed);
                gpu.count_loops(true).expect("loop counting on");
                let line = format!("{} {} {} (seed {}): {}", r.kernel, r.dtype, r.shape, r.seed, r.note);
                if plain.ok {
                    failed.push(line);
                } else {
                    eprintln!("note: fails without loop counting too, left to the family tests: {line}");
                }
            }
            for c in counts {
                dispatches += 1;
                if c.measured > c.declared {
                    over.push(format!(
                        "{} ({} {}): ran {} loop iterations in one invocation, declared {}",
                        c.module, r.kernel, r.shape, c.measured, c.declared
                    ));
                }
                let e = seen.entry(shader_of(&c.module)).or_default();
                if c.measured >= e.0 {
                    *e = (c.measured, c.declared);
                }
            }
        }
    }
    gpu.count_loops(false).expect("loop counting off");
    for (m, (measured, declared)) in &seen {
        eprintln!("{m:32} most run {measured:>6}, declared then {declared:>6} (limit {CPU_LOOP_LIMIT})");
    }
    assert!(failed.is_empty(), "cases failed with counted shaders and passed without:\n{}", failed.join("\n"));
    assert!(over.is_empty(), "{} of {dispatches} dispatches ran past their budget:\n{}", over.len(), over.join("\n"));
    // Every shader but the bench's empty one ran at least once.
    let shaders: std::collections::BTreeSet<String> =
        mllm_kernels::sources::WGSL_MODULES.iter().map(|m| shader_of(m.name)).filter(|n| n != "core_noop").collect();
    let missing: Vec<_> = shaders.iter().filter(|s| !seen.contains_key(*s)).collect();
    assert!(missing.is_empty(), "no registered case dispatched {missing:?}");
}

/// On a CPU adapter, a dispatch whose budget is over llvmpipe's limit is an error that says why
/// and what to change, never a result: the 32k-token decode in one split.
#[test]
fn an_over_budget_dispatch_is_an_error_on_a_cpu_adapter() {
    let Some(b) = backend(BackendKind::Wgpu) else { return };
    let Backend::Wgpu(gpu) = &b else { return };
    if !gpu.is_cpu_adapter() {
        eprintln!("{} is not a CPU adapter: it runs every budget", b.describe());
        return;
    }
    let k = mllm_kernels::registry::kernels().into_iter().find(|k| k.id() == "mla.mla_decode").expect("mla_decode");
    let mut case = k.cases().into_iter().find(|c| c.realistic).expect("the realistic decode case");
    case.params["splits"] = serde_json::json!(1);
    let r = verify_case(k, &b, &case, fresh_seed());
    assert!(!r.ok, "a 32k-token split ran on a CPU adapter: {}", r.note);
    assert!(
        r.note.contains("loop iterations in one invocation") && r.note.contains("raise `splits` to 10"),
        "{}",
        r.note
    );
}

/// The counting rewrite ticks at the top of every loop body and nowhere else, and flushes the
/// count at every `return;` and at the end of `main`.
#[test]
fn every_loop_body_ticks_and_comments_are_left_alone() {
    let src = "// a for loop in a comment { }\n\
               fn f() { for (var i = 0u; i < (n + 1u); i++) { x += 1u; } \
               while (a < b) { loop { if c { break; } continuing { d++; } } } \
               /* while { /* nested */ } */ let format = 1u; }\n\
               fn g() -> u32 { return 1u; }\n\
               fn main() { if (q) { return ; } f(); /* } */ }";
    let out = mllm_kernels::backend::loops::instrument(src);
    assert_eq!(out.matches("mllm_iters += 1u;").count(), 3, "{out}");
    assert!(out.contains("i++) { mllm_iters += 1u; x += 1u;"), "{out}");
    assert!(out.contains("(a < b) { mllm_iters += 1u; loop { mllm_iters += 1u; if c"), "{out}");
    assert!(out.contains("continuing { d++; }"), "{out}");
    assert!(out.contains("// a for loop in a comment { }\n"), "{out}");
    assert!(out.contains("fn g() -> u32 { return 1u; }"), "{out}");
    assert!(out.contains("if (q) { { mllm_flush(); return; } } f(); /* } */  mllm_flush(); }"), "{out}");
}
