//! Which CUDA kernels have run on a GPU since they last changed, per `GPU_VERIFIED.md`.
//!
//! Each line of its table is `| family | source hash | commit | date | card |`. A family whose
//! current source hash has no line is unproven: it has only been compiled and assembled.

use super::Kernel;
use crate::sources::{cuda_source_hash, CUDA_MODULES};

/// The file as built into this binary.
pub const GPU_VERIFIED: &str = include_str!("../../GPU_VERIFIED.md");

/// `(family, hash)` pairs recorded as passing on a GPU.
pub fn proven_hashes(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
            (cells.len() >= 2 && cells[1].len() == 16 && cells[1].chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| (cells[0].to_string(), cells[1].to_string()))
        })
        .collect()
}

/// `(unproven, total)` kernels of `kernels`, and the unproven CUDA families.
pub fn unproven(kernels: &[&'static dyn Kernel]) -> (usize, usize, Vec<&'static str>) {
    let proven = proven_hashes(GPU_VERIFIED);
    let mut bad = Vec::new();
    for m in CUDA_MODULES {
        let h = cuda_source_hash(m.family).unwrap_or_default();
        if !proven.iter().any(|(f, ph)| f == m.family && *ph == h) {
            bad.push(m.family);
        }
    }
    let n = kernels.iter().filter(|k| bad.contains(&k.family())).count();
    (n, kernels.len(), bad)
}

/// The lines to add to `GPU_VERIFIED.md` for families that all passed on `card`.
pub fn lines_for(families: &[&str], commit: &str, date: &str, card: &str) -> String {
    families
        .iter()
        .map(|f| format!("| {f} | {} | {commit} | {date} | {card} |\n", cuda_source_hash(f).unwrap_or_default()))
        .collect()
}
