//! Every CUDA family's PTX assembles with `ptxas -v` for sm_80 and sm_90 without spills, and
//! within the register budget its kernels' launch bounds allow: read from the reports the build
//! kept when it assembled the cubins (no second assembly), or assembled here for a build that
//! had no ptxas. Spills on the build's other architectures (sm_86, sm_89) are printed, not
//! failed. In CI missing PTX or ptxas fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use mllm_kernels::sources::CUDA_MODULES;

use crate::common::in_ci;

/// No kernel may use more registers than 65536 / 256 threads.
const REG_BUDGET: u32 = 255;

fn ptxas() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PTXAS") {
        return Some(PathBuf::from(p));
    }
    let wheel = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cuda/nvidia/cuda_nvcc/bin/ptxas");
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("ptxas")).find(|p| p.is_file()).or(Some(wheel).filter(|p| p.is_file()))
}

/// `ptxas -v`'s report for each architecture of a family: the build's own (it assembled every
/// cubin with `-v`), or, for a build that had no ptxas, a fresh assembly for sm_80 and sm_90.
fn reports(
    family: &str,
    ptx: &str,
    embedded: &[(u32, &'static str)],
    ptxas: Option<&PathBuf>,
    dir: &Path,
) -> Vec<(String, String)> {
    if !embedded.is_empty() {
        for (a, r) in embedded.iter().filter(|(a, _)| ![80, 90].contains(a)) {
            let mut kernel = "";
            for line in r.lines() {
                if let Some(rest) = line.split("Compiling entry function '").nth(1) {
                    kernel = rest.split('\'').next().unwrap_or("");
                }
                if line.contains("spill stores") && !line.contains(" 0 bytes spill stores") {
                    println!("note: {kernel} on sm_{a} (not a gated architecture): {}", line.trim());
                }
            }
        }
        let gated: Vec<_> = embedded.iter().filter(|(a, _)| [80, 90].contains(a)).collect();
        assert_eq!(gated.len(), 2, "the build of {family} kept no sm_80 or sm_90 report");
        return gated.into_iter().map(|(a, r)| (format!("sm_{a}"), r.to_string())).collect();
    }
    let Some(ptxas) = ptxas else {
        assert!(!in_ci(), "CI=true and no ptxas: scripts/test.sh installs the nvidia-cuda-nvcc-cu12 wheel");
        eprintln!("skipping `{family}`: no ptxas report from the build and no ptxas here (run scripts/env.sh)");
        return vec![];
    };
    let src = dir.join(format!("{family}.ptx"));
    std::fs::write(&src, ptx).unwrap();
    ["sm_80", "sm_90"]
        .into_iter()
        .map(|arch| {
            let out = Command::new(ptxas)
                .arg(format!("-arch={arch}"))
                .arg("-v")
                .arg("-o")
                .arg(dir.join(format!("{family}.{arch}.cubin")))
                .arg(&src)
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(out.status.success(), "ptxas {arch} failed on {family}:\n{log}");
            (arch.to_string(), log)
        })
        .collect()
}

#[test]
fn every_kernel_assembles_without_spills() {
    // Needed only for a family the build assembled without ptxas (a GPU bundle carries the
    // build's reports inside the test binary).
    let ptxas = ptxas();
    assert!(!CUDA_MODULES.is_empty());
    let dir = std::env::temp_dir().join(format!("mllm-ptx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut report: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for m in CUDA_MODULES {
        let Some(ptx) = m.ptx else {
            assert!(!in_ci(), "CI=true and family `{}` has no PTX: NVRTC was not found at build time", m.family);
            eprintln!("skipping `{}`: built without PTX (no nvcc or NVRTC at build time)", m.family);
            continue;
        };
        assert!(
            !in_ci() || m.ptxas_reports.iter().any(|(a, _)| *a == 90),
            "CI=true and family `{}` was built without sm_90 cubins: ptxas was not found at build time",
            m.family
        );
        for (arch, log) in reports(m.family, ptx, m.ptxas_reports, ptxas.as_ref(), &dir) {
            let mut kernel = String::new();
            let spill_lines = log.lines().filter(|l| l.contains("spill stores")).count();
            let used_lines = log.lines().filter(|l| l.contains("Used ")).count();
            assert!(used_lines > 0, "ptxas -v reported no kernel of {} on {arch}:\n{log}", m.family);
            assert_eq!(
                spill_lines, used_lines,
                "ptxas -v printed no spill line for some kernel of {}:\n{log}",
                m.family
            );
            let mut spill = String::new();
            for line in log.lines() {
                if line.contains("spill stores") {
                    spill = line.trim().to_string();
                }
                if let Some(rest) = line.split("Compiling entry function '").nth(1) {
                    kernel = rest.split('\'').next().unwrap_or("").to_string();
                }
                if line.contains("spill stores") {
                    assert!(
                        line.contains(" 0 bytes spill stores") && line.contains(" 0 bytes spill loads"),
                        "{kernel} spills on {arch}: {line}"
                    );
                }
                if let Some(rest) = line.split("Used ").nth(1) {
                    let regs: u32 = rest.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
                    assert!(regs <= REG_BUDGET, "{kernel} uses {regs} registers on {arch}");
                    let stack = spill.split(" bytes stack frame").next().unwrap_or("0").trim().to_string();
                    let e = report.entry(kernel.clone()).or_default();
                    e.push(if stack == "0" {
                        format!("{arch} {regs} regs")
                    } else {
                        format!("{arch} {regs} regs, {stack} B stack")
                    });
                }
            }
        }
    }
    // The CI log shows one line per kernel: registers (and any stack frame) per architecture;
    // spills fail the test above, so every line printed has none.
    for (kernel, arches) in &report {
        println!("ptxas {kernel}: {}; no spills", arches.join(", "));
    }
    assert!(!report.is_empty() || !in_ci(), "ptxas reported no kernel");
    let _ = std::fs::remove_dir_all(&dir);
}
