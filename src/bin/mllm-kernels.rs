//! `mllm-kernels`: list devices, verify every kernel against its oracle, bench, check files.

use std::process::ExitCode;

use mllm_kernels::harness::{bench, check, fresh_seed, proof, verify, CaseReport};
use mllm_kernels::registry::{families, kernels};
use mllm_kernels::{devices, Backend, BackendKind};

const USAGE: &str = "\
usage: mllm-kernels <command> [options]
  devices                          what this machine has of each backend, and why not
  verify [--backend cpu|wgpu|cuda] [--family NAME] [--seed N] [--proof FILE --commit C --card NAME]
                                   every kernel case against its oracle (default: every backend present);
                                   --proof writes GPU_VERIFIED.md lines for families that all passed on CUDA
  bench  [--backend ..] [--family NAME] [--iters N] [--json FILE]
                                   time, GB/s, TFLOP/s, share of measured copy bandwidth
  check FILE.safetensors [--backend ..]
                                   run a kernel on a file's inputs, compare with its outputs
  list                             registered kernels
families: core, ternary (mla, mom, visual to come)";

struct Opts {
    backend: Option<BackendKind>,
    family: Option<String>,
    seed: Option<u64>,
    iters: usize,
    json: Option<String>,
    proof: Option<String>,
    commit: String,
    card: Option<String>,
    positional: Vec<String>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        backend: None,
        family: None,
        seed: None,
        iters: 50,
        json: None,
        proof: None,
        commit: "unknown".into(),
        card: None,
        positional: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--backend" => {
                let v = val("--backend")?;
                o.backend = Some(BackendKind::parse(&v).ok_or_else(|| format!("unknown backend `{v}`"))?);
            }
            "--family" => {
                let v = val("--family")?;
                if !families().contains(&v.as_str()) {
                    return Err(format!("unknown family `{v}` (registered: {})", families().join(", ")));
                }
                o.family = Some(v);
            }
            "--seed" => o.seed = Some(val("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?),
            "--iters" => o.iters = val("--iters")?.parse().map_err(|e| format!("--iters: {e}"))?,
            "--json" => o.json = Some(val("--json")?),
            "--proof" => o.proof = Some(val("--proof")?),
            "--commit" => o.commit = val("--commit")?,
            "--card" => o.card = Some(val("--card")?),
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with("--") => return Err(format!("unknown option `{s}`")),
            s => o.positional.push(s.to_string()),
        }
    }
    Ok(o)
}

/// The backends to run: the one asked for (absent is an error), or every one present.
fn backends(o: &Opts) -> Result<Vec<Backend>, String> {
    if let Some(k) = o.backend {
        return Backend::open(k).map(|b| vec![b]).map_err(|e| format!("{} backend: {e}", k.name()));
    }
    let mut v = Vec::new();
    for k in [BackendKind::Cpu, BackendKind::Wgpu, BackendKind::Cuda] {
        match Backend::open(k) {
            Ok(b) => v.push(b),
            Err(e) => println!("skipping {}: {e}", k.name()),
        }
    }
    Ok(v)
}

fn cmd_devices() -> ExitCode {
    for d in devices() {
        println!("{:5} {:9} {}", d.backend.name(), if d.available { "present" } else { "absent" }, d.detail);
    }
    ExitCode::SUCCESS
}

fn print_row(r: &CaseReport) {
    println!(
        "{:26} {:5} {:5} {:30} {:>10.2e} {:>10.2e}  {}{}",
        r.kernel,
        r.backend,
        r.dtype.name(),
        r.shape,
        r.rel_l2,
        r.max_abs,
        if r.ok { "PASS" } else { "FAIL" },
        if r.note.is_empty() { String::new() } else { format!("  {} (seed {})", r.note, r.seed) }
    );
}

fn cmd_verify(o: &Opts) -> ExitCode {
    let bks = match backends(o) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Only the oracle checking itself proves nothing: that run counts as a failure.
    let no_gpu = !bks.iter().any(|b| b.kind() != BackendKind::Cpu) && o.backend.is_none();
    if no_gpu {
        println!("no GPU backend present: only the CPU oracle runs, which verifies no kernel. For wgpu on a");
        println!("machine without a GPU, install Mesa's lavapipe (apt-get install mesa-vulkan-drivers); for CUDA,");
        println!("an NVIDIA driver. `--backend cpu` runs the oracle path alone on purpose.");
    }
    let seed = o.seed.unwrap_or_else(fresh_seed);
    println!("seed {seed}");
    println!("{:26} {:5} {:5} {:30} {:>10} {:>10}  verdict", "kernel", "bknd", "dtype", "shape", "rel L2", "max abs");
    let (mut pass, mut fail) = (0usize, 0usize);
    let mut cuda_rows = Vec::new();
    for b in &bks {
        println!("-- {}: {}", b.kind().name(), b.describe());
        for r in verify(&kernels(), b, o.family.as_deref(), seed) {
            print_row(&r);
            if b.kind() == BackendKind::Cuda {
                cuda_rows.push((r.kernel.clone(), r.ok));
            }
            if r.ok {
                pass += 1;
            } else {
                fail += 1;
            }
        }
    }
    let (unproven, total, fams) = proof::unproven(&kernels());
    println!(
        "{unproven} of {total} registered CUDA kernels are unproven on a GPU (families changed since GPU_VERIFIED.md: {})",
        if fams.is_empty() { "none".to_string() } else { fams.join(", ") }
    );
    if let Some(path) = &o.proof {
        // A family is proven when every one of its cases passed on CUDA in this run.
        let fams: Vec<&str> = families()
            .into_iter()
            .filter(|f| {
                let rows: Vec<_> = cuda_rows.iter().filter(|(k, _)| k.split('.').next() == Some(*f)).collect();
                !rows.is_empty() && rows.iter().all(|(_, ok)| *ok)
            })
            .collect();
        let card = o.card.clone().unwrap_or_else(|| bks.last().map(|b| b.describe()).unwrap_or_default());
        let date = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if let Err(e) = std::fs::write(path, proof::lines_for(&fams, &o.commit, &date, &card)) {
            eprintln!("cannot write {path}: {e}");
        }
    }
    if pass + fail == 0 {
        println!("no case ran");
        fail = 1;
    }
    if no_gpu {
        println!("FAIL: no GPU backend was verified (see above)");
        fail += 1;
    }
    println!("{pass} passed, {fail} failed");
    if fail == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn cmd_bench(o: &Opts) -> ExitCode {
    // The CPU oracle is f64 reference code: timing it only when asked.
    let bks = match backends(o).map(|v| {
        if o.backend.is_none() {
            v.into_iter().filter(|b| b.kind() != BackendKind::Cpu).collect::<Vec<_>>()
        } else {
            v
        }
    }) {
        Ok(b) if b.is_empty() => {
            eprintln!("no GPU backend present to bench (see `mllm-kernels devices`); --backend cpu times the oracle");
            return ExitCode::FAILURE;
        }
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut all = Vec::new();
    let mut failed = false;
    for b in &bks {
        match bench::bench(&kernels(), b, o.family.as_deref(), o.iters.max(1)) {
            Err(e) => {
                eprintln!("{}: {e}", b.kind().name());
                failed = true;
            }
            Ok((ceil, rows)) => {
                println!(
                    "-- {}: {} | copy {:.1} GB/s | launch floor {:.2} us | rotation past {} MiB | timed with {}",
                    b.kind().name(),
                    ceil.device,
                    ceil.copy_gbps,
                    ceil.launch_floor_us,
                    (2 * ceil.l2_bytes) >> 20,
                    ceil.timing.describe()
                );
                println!(
                    "{:26} {:5} {:18} {:>6} {:>10} {:>9} {:>9} {:>7}",
                    "kernel", "dtype", "shape", "copies", "time us", "GB/s", "TFLOP/s", "%copy"
                );
                for r in &rows {
                    match &r.error {
                        Some(e) => {
                            failed = true;
                            println!("{:26} {:5} {:18} error: {e}", r.kernel, r.dtype, r.shape);
                        }
                        None => println!(
                            "{:26} {:5} {:18} {:>6} {:>10.2} {:>9.1} {:>9.3} {:>6.1}%{}",
                            r.kernel,
                            r.dtype,
                            r.shape,
                            r.copies,
                            r.time_us,
                            r.gbps,
                            r.tflops,
                            100.0 * r.bw_share,
                            if r.latency_bound && ceil.launch_floor_us > 0.0 {
                                format!(
                                    "  latency-bound ({:.1}x the launch floor)",
                                    r.time_us / ceil.launch_floor_us.max(1e-9)
                                )
                            } else {
                                String::new()
                            }
                        ),
                    }
                }
                all.push(serde_json::json!({"backend": b.kind().name(), "ceilings": ceil, "rows": rows}));
            }
        }
    }
    if let Some(path) = &o.json {
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&all).unwrap_or_default()) {
            eprintln!("cannot write {path}: {e}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn cmd_check(o: &Opts) -> ExitCode {
    let Some(path) = o.positional.first() else {
        eprintln!("check needs a FILE.safetensors");
        return ExitCode::FAILURE;
    };
    let file = match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| check::parse_file(&b).map_err(|e| e.to_string()))
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bks = match backends(o) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{} with params {}", file.kernel, file.params);
    let (mut pass, mut fail) = (0, 0);
    for b in &bks {
        match check::run_check(&kernels(), &file, b) {
            Err(e) => {
                println!("{:5} ERROR {e}", b.kind().name());
                fail += 1;
            }
            Ok(cmps) => {
                for c in cmps {
                    println!(
                        "{:5} {:10} rel L2 {:.2e} max abs {:.2e} {} {}",
                        b.kind().name(),
                        c.name,
                        c.rel_l2,
                        c.max_abs,
                        if c.ok { "PASS" } else { "FAIL" },
                        c.note
                    );
                    if c.ok {
                        pass += 1;
                    } else {
                        fail += 1;
                    }
                }
            }
        }
    }
    println!("{pass} passed, {fail} failed");
    if fail == 0 && pass > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let o = match parse(rest) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    match cmd.as_str() {
        "devices" => cmd_devices(),
        "verify" => cmd_verify(&o),
        "bench" => cmd_bench(&o),
        "check" => cmd_check(&o),
        "list" => {
            for k in kernels() {
                println!("{}", mllm_kernels::harness::describe(k));
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::FAILURE
        }
    }
}
