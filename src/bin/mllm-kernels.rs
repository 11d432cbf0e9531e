//! `mllm-kernels`: list devices, verify every kernel against its oracle, bench, check files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use mllm_kernels::harness::{bench, check, fresh_seed, proof, verify_each, Case, CaseReport, Kernel};
use mllm_kernels::registry::{families, kernels};
use mllm_kernels::{devices, Backend, BackendKind};

/// Verify, bench and check the crate's GPU kernels on every backend present.
#[derive(Parser)]
#[command(name = "mllm-kernels", version, after_help = "families: see `mllm-kernels list`")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// The most bytes one kernel case's tensors may take; a case over it is an error before
    /// anything is allocated (always: twice the bytes must fit the host's available memory).
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    max_bytes: Option<u64>,
}

#[derive(Subcommand)]
enum Cmd {
    /// What this machine has of each backend, and why not.
    Devices,
    /// Every kernel case against its oracle (default: every backend present).
    Verify(VerifyArgs),
    /// Time, GB/s, TFLOP/s and share of measured copy bandwidth for the bench cases.
    Bench(BenchArgs),
    /// Run a kernel on a safetensors file's inputs and compare with the outputs it holds.
    Check(CheckArgs),
    /// Every registered kernel with its params and tensors.
    List,
}

/// Which backends and kernels.
#[derive(Args)]
struct Select {
    /// cpu, wgpu or cuda (absent: every backend present).
    #[arg(long, value_parser = parse_backend)]
    backend: Option<BackendKind>,
    /// Only this family's kernels.
    #[arg(long, value_parser = parse_family)]
    family: Option<String>,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    sel: Select,
    /// Seed of the random inputs (printed on every run; default from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Only the cases of these dtype tags, comma-separated (e.g. `f32,bf16`).
    #[arg(long, value_delimiter = ',', value_parser = parse_dtype)]
    dtype: Vec<mllm_kernels::DType>,
    /// Write GPU_VERIFIED.md lines for the families whose every case passed on CUDA.
    #[arg(long, requires = "commit", conflicts_with = "dtype")]
    proof: Option<PathBuf>,
    /// The commit the proof lines name.
    #[arg(long)]
    commit: Option<String>,
    /// The card the proof lines name (default: the backend's description).
    #[arg(long)]
    card: Option<String>,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    sel: Select,
    /// Timed launches per case.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    iters: u32,
    /// Also write the rows as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Only this kernel (`family.kernel`, see `list`): its bench cases, or with `--params` a
    /// shape of your own.
    #[arg(long, value_parser = parse_kernel, conflicts_with = "family")]
    kernel: Option<String>,
    /// The kernel's params as a JSON object; defaults fill in what it leaves out, e.g.
    /// '{"m":1,"n":4096,"k":4096,"dtype":"bf16"}' for ternary.matmul.
    #[arg(long, requires = "kernel")]
    params: Option<String>,
    /// A JSON file of your own cases: [{"kernel": "ternary.matmul", "params": {...}}, ...].
    #[arg(long, conflicts_with_all = ["kernel", "family"])]
    cases: Option<PathBuf>,
    /// Count instead of time, on the emulated CUDA device's counters build
    /// (`scripts/cuda-cpu.sh --counters -- mllm-kernels bench --backend cuda --counters`): memory
    /// traffic, coalescing, bank conflicts, occupancy and waves of one launch per case.
    #[arg(long)]
    counters: bool,
}

#[derive(Args)]
struct CheckArgs {
    /// A safetensors file: metadata `kernel`, `params` (, `rtol`, `atol`, `status`), tensors
    /// `in.<name>` and `out.<name>`.
    file: PathBuf,
    /// cpu, wgpu or cuda (absent: every backend present).
    #[arg(long, value_parser = parse_backend)]
    backend: Option<BackendKind>,
}

/// `println!` for the tool's output: when stdout is closed early (`mllm-kernels list | head`)
/// the process ends as a shell expects after a broken pipe (status 141), not with a panic.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(141);
        }
    }};
}

fn parse_backend(s: &str) -> Result<BackendKind, String> {
    BackendKind::parse(s).ok_or_else(|| format!("unknown backend `{s}` (cpu, wgpu, cuda)"))
}

fn parse_dtype(s: &str) -> Result<mllm_kernels::DType, String> {
    mllm_kernels::DType::parse(s).ok_or_else(|| format!("unknown dtype `{s}` (f32, f16, bf16, i8, i32, u32)"))
}

fn parse_family(s: &str) -> Result<String, String> {
    if families().contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!("unknown family `{s}` (registered: {})", families().join(", ")))
    }
}

fn parse_kernel(s: &str) -> Result<String, String> {
    match mllm_kernels::registry::find(s) {
        Some(_) => Ok(s.to_string()),
        None => Err(format!("unknown kernel `{s}` (see `mllm-kernels list`)")),
    }
}

/// The cases `bench` times: a file of the user's, one shape of the user's, one kernel's bench
/// cases, or every bench case (of `--family`).
fn bench_selection(o: &BenchArgs) -> Result<Vec<(&'static dyn Kernel, Case)>, String> {
    let find = |id: &str| mllm_kernels::registry::find(id).ok_or_else(|| format!("unknown kernel `{id}`"));
    let parse = |text: &str, what: &str| -> Result<serde_json::Value, String> {
        serde_json::from_str(text).map_err(|e| format!("{what}: not JSON: {e}"))
    };
    if let Some(path) = &o.cases {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let list = parse(&text, &path.display().to_string())?;
        let items = list.as_array().ok_or_else(|| format!("{}: expected a JSON array of cases", path.display()))?;
        return items
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let id = c.get("kernel").and_then(|v| v.as_str()).ok_or(format!("case {i}: no \"kernel\" string"))?;
                let params = c.get("params").cloned().ok_or(format!("case {i}: no \"params\" object"))?;
                Ok((find(id)?, bench::user_case(params).map_err(|e| format!("case {i}: {e}"))?))
            })
            .collect();
    }
    if let Some(id) = &o.kernel {
        let k = find(id)?;
        return match &o.params {
            Some(p) => Ok(vec![(k, bench::user_case(parse(p, "--params")?).map_err(|e| e.to_string())?)]),
            None if o.counters => Ok(k.counter_cases().into_iter().map(|c| (k, c)).collect()),
            None => Ok(k.bench_cases().into_iter().map(|c| (k, c)).collect()),
        };
    }
    Ok(kernels()
        .into_iter()
        .filter(|k| o.sel.family.as_deref().is_none_or(|f| f == k.family()))
        .flat_map(|k| if o.counters { k.counter_cases() } else { k.bench_cases() }.into_iter().map(move |c| (k, c)))
        .collect())
}

/// The backends to run: the one asked for (absent is an error), or every one present.
fn backends(backend: Option<BackendKind>) -> Result<Vec<Backend>, String> {
    if let Some(k) = backend {
        return Backend::open(k).map(|b| vec![b]).map_err(|e| format!("{} backend: {e}", k.name()));
    }
    let mut v = Vec::new();
    for k in [BackendKind::Cpu, BackendKind::Wgpu, BackendKind::Cuda] {
        match Backend::open(k) {
            Ok(b) => v.push(b),
            Err(e) => say!("skipping {}: {e}", k.name()),
        }
    }
    Ok(v)
}

fn cmd_devices() -> ExitCode {
    for d in devices() {
        say!("{:5} {:9} {}", d.backend.name(), if d.available { "present" } else { "absent" }, d.detail);
    }
    ExitCode::SUCCESS
}

fn print_row(r: &CaseReport) {
    say!(
        "{:26} {:5} {:5} {:44} {:>10.2e} {:>10.2e}  {}{}",
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

fn cmd_verify(o: &VerifyArgs) -> ExitCode {
    let bks = match backends(o.sel.backend) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Only a real GPU proves a CUDA kernel: the CPU oracle and the emulated device never do.
    if let Some(path) = &o.proof {
        if !bks.iter().any(|b| b.kind() == BackendKind::Cuda && !b.is_emulated()) {
            eprintln!(
                "--proof {}: no CUDA GPU among the backends to verify (the CPU oracle and the emulated \
                 device prove no kernel); nothing written",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    }
    // Only the oracle checking itself proves nothing: that run counts as a failure.
    let no_gpu = !bks.iter().any(|b| b.kind() != BackendKind::Cpu) && o.sel.backend.is_none();
    if no_gpu {
        say!("no GPU backend present: only the CPU oracle runs, which verifies no kernel. For wgpu on a");
        say!("machine without a GPU, install Mesa's lavapipe (apt-get install mesa-vulkan-drivers); for CUDA,");
        say!("an NVIDIA driver. `--backend cpu` runs the oracle path alone on purpose.");
    }
    let seed = o.seed.unwrap_or_else(fresh_seed);
    say!("seed {seed}");
    say!("{:26} {:5} {:5} {:44} {:>10} {:>10}  verdict", "kernel", "bknd", "dtype", "shape", "rel L2", "max abs");
    let (mut pass, mut fail) = (0usize, 0usize);
    let mut cuda_rows = Vec::new();
    // (family, backend) -> (passed, failed), for the closing table.
    let mut table: Vec<(String, &'static str, usize, usize)> = Vec::new();
    for b in &bks {
        say!("-- {}: {}", b.label(), b.describe());
        let left_out = verify_each(&kernels(), b, o.sel.family.as_deref(), &o.dtype, seed, |r| {
            print_row(r);
            // Each row as it completes: a long run on a CPU adapter shows its progress.
            let _ = std::io::Write::flush(&mut std::io::stdout());
            if b.kind() == BackendKind::Cuda && !b.is_emulated() {
                cuda_rows.push((r.kernel.clone(), r.ok));
            }
            let fam = r.kernel.split('.').next().unwrap_or_default().to_string();
            let i = match table.iter().position(|(f, k, _, _)| *f == fam && *k == r.backend) {
                Some(i) => i,
                None => {
                    table.push((fam, r.backend, 0, 0));
                    table.len() - 1
                }
            };
            if r.ok {
                pass += 1;
                table[i].2 += 1;
            } else {
                fail += 1;
                table[i].3 += 1;
            }
        });
        if left_out > 0 {
            say!(
                "-- {}: {left_out} `realistic:` cases not run here (sizes models use, there for the WGSL \
                 loop limit; minutes each on the emulated device; cpu, wgpu and a real GPU run them)",
                b.label()
            );
        }
    }
    // The closing table: family x backend, what no GPU has run yet, and what the emulated CUDA
    // device (scripts/cuda-cpu.sh) ran in this run, which is never GPU proof.
    let (_, _, unproven) = proof::unproven(&kernels());
    let emulated = |fam: &str| match table.iter().find(|r| r.0 == fam && r.1 == "cuda-cpu") {
        Some((_, _, _, 0)) => "passed here",
        Some(_) => "FAILED here",
        None => "not run",
    };
    say!("\n| family | backend | passed | failed | CUDA on a GPU | CUDA emulated (cuda-cpu) |");
    say!("|---|---|---|---|---|---|");
    for (fam, backend, p, f) in &table {
        let proven = if unproven.contains(&fam.as_str()) { "unproven" } else { "proven (GPU_VERIFIED.md)" };
        say!("| {fam} | {backend} | {p} | {f} | {proven} | {} |", emulated(fam));
    }
    let cuda_asked = o.sel.backend.is_none_or(|k| k == BackendKind::Cuda);
    let fams_asked: Vec<&str> =
        unproven.iter().copied().filter(|f| o.sel.family.as_deref().is_none_or(|x| x == *f)).collect();
    if cuda_asked && !fams_asked.is_empty() {
        let ran = if fams_asked.iter().all(|f| emulated(f) == "passed here") {
            "compiled, assembled and run on the emulated device"
        } else {
            "compiled and assembled"
        };
        say!(
            "CUDA kernels of {} have changed since their last GPU run (GPU_VERIFIED.md): {ran}, not proven on a GPU",
            fams_asked.join(", ")
        );
    }
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
        let commit = o.commit.as_deref().unwrap_or("unknown");
        if fams.is_empty() {
            say!("no family passed every case on the GPU: {} left as it was", path.display());
        } else {
            // Through a temporary file and a rename: an existing file is replaced whole or kept.
            let tmp = path.with_extension("tmp");
            let written = std::fs::write(&tmp, proof::lines_for(&fams, commit, &date, &card))
                .and_then(|_| std::fs::rename(&tmp, path));
            if let Err(e) = written {
                eprintln!("cannot write {}: {e}", path.display());
                let _ = std::fs::remove_file(&tmp);
                fail += 1;
            }
        }
    }
    if pass + fail == 0 {
        say!("no case ran");
        fail = 1;
    }
    if no_gpu {
        say!("FAIL: no GPU backend was verified (see above)");
        fail += 1;
    }
    let oracle_only = table.iter().filter(|r| r.1 == "cpu").map(|r| r.2).sum::<usize>();
    say!("{pass} passed ({oracle_only} of them the CPU oracle against itself), {fail} failed");
    if fail == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One row of `bench --counters`.
#[cfg(feature = "cuda")]
fn print_counter_row(b: &Backend, r: &mllm_kernels::harness::counters::CounterRow) {
    if let Some(e) = &r.error {
        say!("{:26} {:5} {:40} error: {e}", r.kernel, r.dtype, r.shape);
        return;
    }
    if !b.is_emulated() {
        say!("{:26} {:5} {:40} launched once, not counted (a profiler counts it here)", r.kernel, r.dtype, r.shape);
        return;
    }
    let regs: Vec<String> = r.launches.iter().map(|l| l.registers.to_string()).collect();
    let occ: Vec<String> = r.launches.iter().map(|l| l.blocks_per_sm.to_string()).collect();
    let waves = if (r.waves.1 - r.waves.0).abs() < 0.0005 {
        format!("{:.3}", r.waves.0)
    } else {
        format!("{:.3}-{:.3}", r.waves.0, r.waves.1)
    };
    say!(
        "{:26} {:5} {:40} {:>6.3} {:>6.3} {:>6.2} {:>4} {:>6} {:>11} {:>4.0}% {:>8.2} {:>7.2} {:>9.2}",
        r.kernel,
        r.dtype,
        r.shape,
        r.load_efficiency,
        r.store_efficiency,
        r.bank_conflict_factor,
        regs.join("/"),
        occ.join("/"),
        waves,
        100.0 * r.mma_share,
        r.requested_amplification,
        r.traffic_amplification,
        r.floor_us
    );
}

/// `bench --counters`: one counted launch per case on the emulated CUDA device.
#[cfg(feature = "cuda")]
fn bench_counters(o: &BenchArgs, bks: &[Backend], cases: &[(&'static dyn Kernel, Case)]) -> ExitCode {
    use mllm_kernels::harness::counters;
    let cases: Vec<(&dyn Kernel, Case)> = cases.iter().map(|(k, c)| (*k as &dyn Kernel, c.clone())).collect();
    let mut failed = false;
    let mut all = Vec::new();
    for b in bks {
        if b.is_emulated() {
            say!(
                "-- {}: {} | counters of one launch per case, counted on the emulated device, not timed | floor = \
                 compulsory bytes at {} GB/s (H100 copy)",
                b.label(),
                b.describe(),
                counters::H100_COPY_GBPS
            );
        } else {
            say!("-- {}: {} | one untimed launch per counter case, for a profiler (ncu)", b.label(), b.describe());
        }
        say!(
            "{:26} {:5} {:40} {:>6} {:>6} {:>6} {:>4} {:>6} {:>11} {:>5} {:>8} {:>7} {:>9}",
            "kernel",
            "dtype",
            "shape",
            "ld eff",
            "st eff",
            "banks",
            "regs",
            "blk/SM",
            "waves",
            "mma",
            "req amp",
            "DRAM x",
            "floor us"
        );
        let mut rows = Vec::new();
        let counted = counters::count_each(&cases, b, |r| {
            rows.push(r.clone());
            print_counter_row(b, r);
            let _ = std::io::Write::flush(&mut std::io::stdout());
        });
        if let Err(e) = counted {
            eprintln!("{}: {e}", b.label());
            failed = true;
            continue;
        }
        failed |= rows.iter().any(|r| r.error.is_some());
        all.push(serde_json::json!({
            "backend": b.label(), "device": b.describe(), "counters": rows,
        }));
    }
    finish_bench(o, all, failed)
}

#[cfg(not(feature = "cuda"))]
fn bench_counters(_: &BenchArgs, _: &[Backend], _: &[(&'static dyn Kernel, Case)]) -> ExitCode {
    eprintln!("--counters needs the `cuda` feature (the emulated CUDA device)");
    ExitCode::FAILURE
}

fn cmd_bench(o: &BenchArgs) -> ExitCode {
    // The CPU oracle is f64 reference code: timing it only when asked.
    let bks = match backends(o.sel.backend).map(|v| {
        if o.sel.backend.is_none() {
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
    let cases = match bench_selection(o) {
        Ok(c) if c.is_empty() => {
            eprintln!("no bench case selected");
            return ExitCode::FAILURE;
        }
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // A JSON path that cannot be written fails now, not after the whole run.
    if let Some(path) = &o.json {
        if let Err(e) = std::fs::write(path, "") {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if o.counters {
        return bench_counters(o, &bks, &cases);
    }
    let mut all = Vec::new();
    let mut failed = false;
    for b in &bks {
        let ceil = match bench::ceilings(b) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}: {e}", b.label());
                failed = true;
                continue;
            }
        };
        let rotation = if ceil.l2_bytes == 0 {
            "no input rotation (no GPU cache to defeat)".to_string()
        } else {
            format!("inputs rotated past {} MiB (twice the L2)", (2 * ceil.l2_bytes) >> 20)
        };
        say!(
            "-- {}: {} | copy {:.1} GB/s | launch floor {:.2} us | {rotation} | timed with {}",
            b.kind().name(),
            ceil.device,
            ceil.copy_gbps,
            ceil.launch_floor_us,
            ceil.timing.describe()
        );
        if b.kind() == BackendKind::Cpu || b.describe().contains("Cpu") {
            say!("   a CPU runs these kernels: the times show the bench works, not how fast a GPU is");
        }
        say!(
            "{:26} {:5} {:18} {:>6} {:>10} {:>9} {:>9} {:>7}",
            "kernel",
            "dtype",
            "shape",
            "copies",
            "time us",
            "GB/s",
            "TFLOP/s",
            "%copy"
        );
        // Each row as it is timed, so a long run shows its progress.
        let mut rows = Vec::with_capacity(cases.len());
        for (k, case) in &cases {
            let r = bench::bench_case(*k, b, case, o.iters as usize, &ceil);
            match &r.error {
                Some(e) => {
                    failed = true;
                    say!("{:26} {:5} {:18} error: {e}", r.kernel, r.dtype, r.shape);
                    // The table stays on stdout; a failed case is also an error on stderr.
                    eprintln!("{} {} {}: {e}", r.kernel, r.dtype, r.shape);
                }
                None => say!(
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
                        format!("  latency-bound ({:.1}x the launch floor)", r.time_us / ceil.launch_floor_us.max(1e-9))
                    } else {
                        String::new()
                    }
                ),
            }
            let _ = std::io::Write::flush(&mut std::io::stdout());
            rows.push(r);
        }
        all.push(serde_json::json!({
            "backend": b.kind().name(), "device": b.describe(), "driver": driver_of(b),
            "ceilings": ceil, "rows": rows,
        }));
    }
    finish_bench(o, all, failed)
}

/// Writes `--json` (the command, version, commit and every backend's run) and gives the exit code.
fn finish_bench(o: &BenchArgs, all: Vec<serde_json::Value>, mut failed: bool) -> ExitCode {
    if let Some(path) = &o.json {
        let doc = serde_json::json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "crate_version": env!("CARGO_PKG_VERSION"),
            "commit": git_commit(),
            "runs": all,
        });
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap_or_default()) {
            eprintln!("cannot write {}: {e}", path.display());
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The driver behind a backend, for the bench record.
fn driver_of(b: &Backend) -> String {
    match b {
        #[cfg(feature = "wgpu")]
        Backend::Wgpu(w) => format!("{} {}", w.info().driver, w.info().driver_info),
        _ => String::new(),
    }
}

/// The checkout's commit (with `-dirty` for uncommitted changes), or "unknown" outside a git
/// checkout: a benchmark record names the code it measured.
fn git_commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(c) if !c.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}-dirty")
            } else {
                c
            }
        }
        _ => "unknown".into(),
    }
}

fn cmd_check(o: &CheckArgs) -> ExitCode {
    let path = o.file.display();
    let file = match std::fs::read(&o.file)
        .map_err(|e| e.to_string())
        .and_then(|b| check::parse_file(&b).map_err(|e| e.to_string()))
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bks = match backends(o.backend) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    say!("{} with params {}", file.kernel, file.params);
    let (mut pass, mut fail) = (0, 0);
    for b in &bks {
        match check::run_check(&kernels(), &file, b) {
            Err(e) => {
                say!("{:5} ERROR {e}", b.kind().name());
                fail += 1;
            }
            Ok(cmps) => {
                for c in cmps {
                    say!(
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
    say!("{pass} passed, {fail} failed");
    if fail == 0 && pass > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Mesa's Vulkan drivers (lavapipe included) print `error: XDG_RUNTIME_DIR is invalid or not
/// set` at instance creation when the variable is unset, though compute needs no display. A
/// successful run must not print an error line, so point it at the temp directory, as
/// `scripts/env.sh` does.
fn quiet_vulkan_wsi() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
}

fn main() -> ExitCode {
    // First, while the process has one thread: nothing else reads the environment meanwhile.
    quiet_vulkan_wsi();
    let cli = Cli::parse();
    if let Some(b) = cli.max_bytes {
        mllm_kernels::harness::budget::set_max_bytes(b);
    }
    match cli.cmd {
        Cmd::Devices => cmd_devices(),
        Cmd::Verify(a) => cmd_verify(&a),
        Cmd::Bench(a) => cmd_bench(&a),
        Cmd::Check(a) => cmd_check(&a),
        Cmd::List => {
            for k in kernels() {
                say!("{}", mllm_kernels::harness::describe(k));
            }
            ExitCode::SUCCESS
        }
    }
}
