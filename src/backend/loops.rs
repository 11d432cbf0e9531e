//! Loop budgets: how many loop iterations one WGSL invocation may run.
//!
//! Mesa's llvmpipe (the driver behind lavapipe, wgpu's CPU adapter) gives each shader
//! invocation one loop counter, shared by every loop it enters, and ends *every* loop once that
//! counter reaches 65,535 iterations (`LP_MAX_TGSI_LOOP_ITERATIONS` in gallivm). Nothing reports
//! it: the shader simply carries on with whatever its loops had computed so far. So every WGSL
//! dispatch declares its budget, the most loop iterations (all loops, nested ones counted per
//! inner iteration) one invocation runs for its params, and [`super::wgpu::WgpuBackend`]
//! refuses a dispatch over [`CPU_LOOP_LIMIT`] on a CPU adapter with an `Error` instead of
//! recording a wrong answer. llvmpipe runs 8 or 16 invocations as one SIMD vector with one
//! counter, so a budget counts the loops on both sides of a branch that lanes may take apart.
//!
//! [`instrument`] rewrites a module so each invocation counts its own loop iterations into an
//! atomic maximum; `WgpuBackend::count_loops` uses it to check every declared budget against
//! what the shader really runs (tests/loop_budgets.rs, on every registered case).

/// The most loop iterations one invocation may run on a CPU adapter: llvmpipe stops every loop
/// at 65,535 back edges in all, so a budget must stay below it.
pub const CPU_LOOP_LIMIT: u64 = 65_535;

/// What a kernel that splits its work over dispatches aims each dispatch's budget at, on every
/// adapter (so a CPU adapter runs what a GPU runs): half of llvmpipe's limit.
pub(crate) const TARGET_LOOPS: u64 = CPU_LOOP_LIMIT / 2;

/// Iterations of `for (i = tid; i < n; i += wg)` for its busiest invocation.
pub(crate) fn strided(n: u64, wg: u64) -> u64 {
    n.div_ceil(wg.max(1))
}

/// Elements of `dtype` in one 4-byte storage word (`EPW` in the shaders).
pub(crate) fn epw(dtype: crate::DType) -> u64 {
    (4 / dtype.size().max(1)) as u64
}

/// Iterations of the outer loop of a word walk over a row of `n` elements of `dtype`: the 4-byte
/// words the row touches (one more where it starts mid-word), strided over `wg` lanes.
pub(crate) fn words(n: u64, dtype: crate::DType, wg: u64) -> u64 {
    strided(n.div_ceil(epw(dtype)) + 1, wg)
}

/// Iterations of the word walk that stores a row of `n` elements of `dtype` (`stw_*`: the outer
/// loop over words, and an inner one over the word's elements).
pub(crate) fn word_walk(n: u64, dtype: crate::DType, wg: u64) -> u64 {
    words(n, dtype, wg).saturating_mul(1 + epw(dtype))
}

/// Iterations of a tree reduction over `wg` lanes (`for (s = wg / 2; s > 0; s >>= 1)`).
pub(crate) fn tree(wg: u64) -> u64 {
    u64::from(wg.max(1).ilog2())
}

/// The binding group the counter takes in an instrumented module (group 0 is the kernel's own).
pub const COUNTER_GROUP: u32 = 1;

/// `src` with a tick at the top of every loop body (`for`, `while`, `loop`) that adds one to the
/// invocation's private count, and a flush that raises the atomic maximum at
/// `@group(1) @binding(0)` (an `atomic<u32>` storage buffer the caller binds) at every `return;`
/// and at the end of `fn main`. Comments are skipped; the module must be valid WGSL. Public so
/// an engine can measure its own shaders against llvmpipe's limit.
pub fn instrument(src: &str) -> String {
    let b = src.as_bytes();
    // (at, bytes replaced, text)
    let mut edits: Vec<(usize, usize, &str)> = Vec::new();
    let mut i = 0;
    let mut prev = "";
    while i < b.len() {
        if b[i..].starts_with(b"//") || b[i..].starts_with(b"/*") {
            i = skip_comment(b, i);
            continue;
        }
        if is_ident(b[i]) {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            let word = &src[start..i];
            if matches!(word, "for" | "while" | "loop") {
                if let Some(brace) = body_brace(b, i, word == "for") {
                    edits.push((brace + 1, 0, " mllm_iters += 1u;"));
                    // The header is done; the body is scanned like any code (nested loops).
                    i = brace + 1;
                }
            } else if word == "return" {
                let semi = i + b[i..].iter().take_while(|c| c.is_ascii_whitespace()).count();
                if b.get(semi) == Some(&b';') {
                    edits.push((start, semi + 1 - start, "{ mllm_flush(); return; }"));
                }
            } else if word == "main" && prev == "fn" {
                if let Some(close) = b[i..].iter().position(|&c| c == b'{').and_then(|o| matching_brace(b, i + o)) {
                    edits.push((close, 0, " mllm_flush(); "));
                }
            }
            prev = word;
            continue;
        }
        i += 1;
    }
    edits.sort_by_key(|e| e.0);
    let mut out = String::with_capacity(src.len() + edits.len() * 28 + 256);
    let mut last = 0;
    for (at, len, text) in edits {
        out.push_str(&src[last..at]);
        out.push_str(text);
        last = at + len;
    }
    out.push_str(&src[last..]);
    out.push_str(&format!(
        "\n@group({COUNTER_GROUP}) @binding(0) var<storage, read_write> mllm_loops: atomic<u32>;\n\
         var<private> mllm_iters: u32;\n\
         fn mllm_flush() {{ atomicMax(&mllm_loops, mllm_iters); }}\n"
    ));
    out
}

/// The `}` that closes the `{` at `open`, comments skipped.
fn matching_brace(b: &[u8], open: usize) -> Option<usize> {
    let (mut depth, mut i) = (0usize, open);
    while i < b.len() {
        if b[i..].starts_with(b"//") || b[i..].starts_with(b"/*") {
            i = skip_comment(b, i);
            continue;
        }
        match b[i] {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Past the comment at `i` (`//` to the end of the line, or a nested block comment).
fn skip_comment(b: &[u8], i: usize) -> usize {
    if b[i..].starts_with(b"//") {
        return b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p);
    }
    skip_block_comment(b, i)
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    // WGSL block comments nest.
    let mut depth = 0;
    while i < b.len() {
        if b[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if b[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// Where the body of the loop whose keyword ends at `i` opens: after the parenthesised header of
/// a `for`, else the next `{` (a `while` condition or `loop` has none before its body).
fn body_brace(b: &[u8], mut i: usize, paren_header: bool) -> Option<usize> {
    if paren_header {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b.get(i) != Some(&b'(') {
            return None;
        }
        let mut depth = 0usize;
        while i < b.len() {
            match b[i] {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
    b[i..].iter().position(|&c| c == b'{').map(|p| i + p)
}
