//! Build step: CUDA C++ -> PTX (+ cubins where ptxas exists), WGSL templates -> validated WGSL.
//!
//! Nothing here fails the build for lack of CUDA: the path taken is reported with
//! `cargo:warning`, and the worst case embeds the CUDA source for NVRTC at run time.
//! An invalid WGSL shader, on the other hand, always fails the build.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Cubin targets embedded beside the PTX; other devices JIT the PTX.
const CUBIN_ARCHS: [u32; 4] = [80, 86, 89, 90];
/// A CUDA 13.0 driver cannot load PTX newer than this.
const MAX_PTX_VERSION: (u32, u32) = (9, 0);
const DTYPES: [&str; 3] = ["f32", "f16", "bf16"];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for p in ["kernels", "shaders"] {
        println!("cargo:rerun-if-changed={}", manifest.join(p).display());
    }
    for v in ["NVCC", "PTXAS", "CUDA_HOME", "CUDA_PATH", "MLLM_CUDA_INCLUDE", "LD_LIBRARY_PATH", "MLLM_NO_CUDA_BUILD"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let mut gen = String::new();
    cuda(&manifest, &out, &mut gen);
    wgsl(&manifest, &out, &mut gen);
    fs::write(out.join("generated.rs"), gen).expect("write generated.rs");
}

// ---------------------------------------------------------------------------------------------
// CUDA

fn sorted_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    v.retain(|p| p.extension().and_then(|e| e.to_str()) == Some(ext));
    v.sort();
    v
}

/// Inline `#include "local.cuh"` so one self-contained source can go to NVRTC at run time.
fn expand_includes(path: &Path, depth: u32) -> String {
    assert!(depth < 8, "include depth too large at {}", path.display());
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let dir = path.parent().expect("kernel file has a parent");
    let mut outs = String::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("#include \"") {
            let name = rest.trim_end_matches('"');
            outs.push_str(&expand_includes(&dir.join(name), depth + 1));
            outs.push('\n');
        } else {
            outs.push_str(line);
            outs.push('\n');
        }
    }
    outs
}

fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

fn cuda_homes() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for k in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(h) = env::var(k) {
            v.push(PathBuf::from(h));
        }
    }
    v.push(PathBuf::from("/usr/local/cuda"));
    v
}

fn find_tool(var: &str, name: &str, wheel: &Path) -> Option<PathBuf> {
    if let Ok(p) = env::var(var) {
        return Some(PathBuf::from(p));
    }
    which(name)
        .or_else(|| cuda_homes().into_iter().map(|h| h.join("bin").join(name)).find(|p| p.is_file()))
        .or_else(|| Some(wheel.to_path_buf()).filter(|p| p.is_file()))
}

fn cuda_include(manifest: &Path) -> Option<PathBuf> {
    if let Ok(p) = env::var("MLLM_CUDA_INCLUDE") {
        return Some(PathBuf::from(p));
    }
    cuda_homes()
        .into_iter()
        .map(|h| h.join("include"))
        .chain([manifest.join(".cuda/nvidia/cuda_runtime/include")])
        .find(|p| p.join("cuda_fp16.h").is_file())
}

fn ptx_version(ptx: &str) -> Option<(u32, u32)> {
    let line = ptx.lines().find(|l| l.trim_start().starts_with(".version"))?;
    let v = line.split_whitespace().nth(1)?;
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn compile_nvcc(nvcc: &Path, src: &Path, dst: &Path) -> Result<String, String> {
    let o = Command::new(nvcc)
        .args(["-ptx", "-arch=compute_80", "-std=c++17", "-o"])
        .arg(dst)
        .arg(src)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", nvcc.display()))?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    fs::read_to_string(dst).map_err(|e| e.to_string())
}

/// NVRTC is loaded by name, so a wheel's copy is made visible by loading it by path first:
/// the dynamic loader then resolves the soname to the library already in the process.
fn preload_nvrtc(manifest: &Path) {
    let lib = manifest.join(".cuda/nvidia/cuda_nvrtc/lib");
    for name in ["libnvrtc-builtins.so.12.9", "libnvrtc.so.12"] {
        let p = lib.join(name);
        if p.is_file() {
            // SAFETY: loading NVRTC runs only its own initialisers; the handle is leaked on
            // purpose so the library stays loaded for the rest of this build script.
            if let Ok(l) = unsafe { libloading::Library::new(&p) } {
                std::mem::forget(l);
            }
        }
    }
}

fn compile_nvrtc(src: &str, include: Option<&Path>, name: &str) -> Result<String, String> {
    // SAFETY: probing for the library has no side effects beyond dlopen.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("libnvrtc not found".into());
    }
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some("compute_80"),
        include_paths: include.map(|p| vec![p.display().to_string()]).unwrap_or_default(),
        options: vec!["--std=c++17".into()],
        name: Some(format!("{name}.cu")),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(src, opts).map_err(|e| format!("{e:?}"))?;
    Ok(ptx.to_src())
}

fn cuda(manifest: &Path, out: &Path, gen: &mut String) {
    let sources = sorted_files(&manifest.join("kernels"), "cu");
    let no_build = env::var_os("MLLM_NO_CUDA_BUILD").is_some();
    let nvcc = find_tool("NVCC", "nvcc", Path::new("/nonexistent"));
    let ptxas = find_tool("PTXAS", "ptxas", &manifest.join(".cuda/nvidia/cuda_nvcc/bin/ptxas"));
    let include = cuda_include(manifest);
    preload_nvrtc(manifest);

    let mut path_taken = "source";
    gen.push_str("/// Every CUDA family: expanded source, PTX and cubins where the build produced them.\n");
    gen.push_str("pub static CUDA_MODULES: &[CudaModuleSource] = &[\n");
    for src_path in &sources {
        let family = src_path.file_stem().and_then(|s| s.to_str()).expect("utf-8 kernel name").to_string();
        let expanded = expand_includes(src_path, 0);
        let exp_path = out.join(format!("{family}.cu"));
        fs::write(&exp_path, &expanded).expect("write expanded source");

        let mut ptx: Option<String> = None;
        let mut why = Vec::new();
        if !no_build {
            if let Some(nvcc) = &nvcc {
                match compile_nvcc(nvcc, &exp_path, &out.join(format!("{family}.ptx"))) {
                    Ok(p) => {
                        ptx = Some(p);
                        path_taken = "nvcc";
                    }
                    Err(e) => why.push(format!("nvcc: {e}")),
                }
            }
            if ptx.as_ref().is_some_and(|p| ptx_version(p).is_some_and(|v| v > MAX_PTX_VERSION)) {
                why.push(format!("nvcc emitted PTX newer than {MAX_PTX_VERSION:?}; trying NVRTC"));
                ptx = None;
            }
            if ptx.is_none() {
                match compile_nvrtc(&expanded, include.as_deref(), &family) {
                    Ok(p) => {
                        ptx = Some(p);
                        path_taken = "nvrtc";
                    }
                    Err(e) => why.push(format!("nvrtc: {e}")),
                }
            }
            if ptx.as_ref().is_some_and(|p| ptx_version(p).is_some_and(|v| v > MAX_PTX_VERSION)) {
                why.push(format!("PTX newer than {MAX_PTX_VERSION:?} rejected"));
                ptx = None;
            }
        }
        let mut cubins = Vec::new();
        match &ptx {
            Some(p) => {
                let ptx_path = out.join(format!("{family}.ptx"));
                fs::write(&ptx_path, p).expect("write ptx");
                if let Some(ptxas) = &ptxas {
                    for arch in CUBIN_ARCHS {
                        let cubin = out.join(format!("{family}.sm_{arch}.cubin"));
                        let r = Command::new(ptxas)
                            .arg(format!("-arch=sm_{arch}"))
                            .arg("-o")
                            .arg(&cubin)
                            .arg(&ptx_path)
                            .output();
                        match r {
                            Ok(o) if o.status.success() => cubins.push((arch, cubin)),
                            Ok(o) => println!(
                                "cargo:warning=ptxas sm_{arch} failed for {family}: {}",
                                String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or("")
                            ),
                            Err(e) => println!("cargo:warning=cannot run ptxas: {e}"),
                        }
                    }
                }
            }
            None => {
                let reason = if no_build { "MLLM_NO_CUDA_BUILD is set".to_string() } else { why.join("; ") };
                println!(
                    "cargo:warning=CUDA family `{family}` embedded as source only ({reason}); \
                     it is compiled with NVRTC at first use"
                );
            }
        }
        let ptx_expr = match &ptx {
            Some(_) => format!("Some(include_str!({:?}))", out.join(format!("{family}.ptx")).display().to_string()),
            None => "None".to_string(),
        };
        let cubin_expr: Vec<String> =
            cubins.iter().map(|(a, p)| format!("({a}, include_bytes!({:?}))", p.display().to_string())).collect();
        let _ = writeln!(
            gen,
            "    CudaModuleSource {{ family: {family:?}, source: include_str!({:?}), ptx: {ptx_expr}, cubins: &[{}] }},",
            exp_path.display().to_string(),
            cubin_expr.join(", ")
        );
    }
    gen.push_str("];\n");
    if ptxas.is_none() {
        println!("cargo:warning=ptxas not found: no cubins embedded (PTX is JIT-compiled by the driver)");
    }
    println!("cargo:warning=CUDA kernels: {path_taken} path");
    let _ = writeln!(gen, "/// How `build.rs` produced the CUDA modules: `nvcc`, `nvrtc` or `source`.");
    let _ = writeln!(gen, "pub const CUDA_BUILD_PATH: &str = {path_taken:?};");
}

// ---------------------------------------------------------------------------------------------
// WGSL

/// Per-dtype helpers: 16-bit values live two to a `u32` word (element i in half i % 2).
fn dtype_prelude(dt: &str) -> &'static str {
    match dt {
        "f32" => "const EPW: u32 = 1u;\n",
        // Bit-exact conversions: unpack2x16float needs a capability some devices lack, and its
        // rounding is implementation-defined; these round to nearest even everywhere.
        "f16" => concat!(
            "const EPW: u32 = 2u;\n",
            "fn f16_bits_to_f32(h: u32) -> f32 {\n",
            "    let s = (h & 0x8000u) << 16u;\n",
            "    let e = (h >> 10u) & 0x1fu;\n",
            "    let m = h & 0x3ffu;\n",
            "    if (e == 0u) { let v = f32(m) * 5.9604645e-8; return select(v, -v, s != 0u); }\n",
            "    if (e == 31u) { return bitcast<f32>(s | 0x7f800000u | (m << 13u)); }\n",
            "    return bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));\n",
            "}\n",
            "fn unpack_e(w: u32, lane: u32) -> f32 { return f16_bits_to_f32(select(w & 0xffffu, w >> 16u, lane == 1u)); }\n",
            "fn pack_e1(v: f32) -> u32 {\n",
            "    let b = bitcast<u32>(v);\n",
            "    let s = (b >> 16u) & 0x8000u;\n",
            "    let a = b & 0x7fffffffu;\n",
            "    if (a > 0x7f800000u) { return s | 0x7e00u; }\n",
            "    if (a >= 0x477ff000u) { return s | 0x7c00u; }\n",
            "    if (a >= 0x38800000u) { let r = a - 0x38000000u; return s | ((r + 0xfffu + ((r >> 13u) & 1u)) >> 13u); }\n",
            "    return s | u32(round(bitcast<f32>(a) * 16777216.0));\n",
            "}\n",
        ),
        _ => concat!(
            "const EPW: u32 = 2u;\n",
            "fn unpack_e(w: u32, lane: u32) -> f32 { return bitcast<f32>(select(w << 16u, w & 0xffff0000u, lane == 1u)); }\n",
            "// Round to nearest even; NaN stays a quiet NaN.\n",
            "fn pack_e1(v: f32) -> u32 {\n",
            "    let b = bitcast<u32>(v);\n",
            "    if ((b & 0x7fffffffu) > 0x7f800000u) { return 0x7fc0u; }\n",
            "    return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;\n",
            "}\n",
        ),
    }
}

/// Accessors for a templated binding `NAME: array<{{E}}>`: `ld_NAME(i)` reads element i as f32;
/// read_write bindings also get `stw_NAME(w, mask, a, b)`, which writes the lanes of word w
/// named by mask. A whole 16-bit word is stored at once; a half word (a row boundary shared
/// with a neighbour) is updated with atomic AND/OR so neighbours never race.
fn accessors(dt: &str, name: &str, rw: bool) -> String {
    match (dt, rw) {
        ("f32", false) => format!("fn ld_{name}(i: u32) -> f32 {{ return {name}[i]; }}\n"),
        ("f32", true) => format!(
            "fn ld_{name}(i: u32) -> f32 {{ return {name}[i]; }}\n\
             fn stw_{name}(w: u32, m: u32, a: f32, b: f32) {{ if (m != 0u) {{ {name}[w] = a; }} }}\n"
        ),
        (_, false) => format!("fn ld_{name}(i: u32) -> f32 {{ return unpack_e({name}[i >> 1u], i & 1u); }}\n"),
        (_, true) => format!(
            "fn ld_{name}(i: u32) -> f32 {{ return unpack_e(atomicLoad(&{name}[i >> 1u]), i & 1u); }}\n\
             fn stw_{name}(w: u32, m: u32, a: f32, b: f32) {{\n\
             \x20   if (m == 3u) {{ atomicStore(&{name}[w], pack_e1(a) | (pack_e1(b) << 16u)); return; }}\n\
             \x20   if (m == 1u) {{ atomicAnd(&{name}[w], 0xffff0000u); atomicOr(&{name}[w], pack_e1(a)); }}\n\
             \x20   if (m == 2u) {{ atomicAnd(&{name}[w], 0x0000ffffu); atomicOr(&{name}[w], pack_e1(b) << 16u); }}\n\
             }}\n"
        ),
    }
}

fn expand_template(text: &str, dt: &str) -> String {
    let storage = if dt == "f32" { "f32" } else { "u32" };
    let mut body = String::new();
    let mut helpers = String::from(dtype_prelude(dt));
    for line in text.lines() {
        let mut l = line.to_string();
        if l.contains("array<{{E}}>") {
            let rw = l.contains("read_write");
            let name = l
                .split("var<")
                .nth(1)
                .and_then(|r| r.split_once('>'))
                .and_then(|(_, r)| r.split(':').next())
                .map(|n| n.trim().to_string())
                .unwrap_or_else(|| panic!("cannot read the binding name in `{line}`"));
            helpers.push_str(&accessors(dt, &name, rw));
            let ty = if rw && dt != "f32" { "atomic<u32>".to_string() } else { storage.to_string() };
            l = l.replace("{{E}}", &ty);
        }
        body.push_str(&l.replace("{{E}}", storage));
        body.push('\n');
    }
    // Helpers go after the body so naga's line numbers match the template file.
    format!("{body}\n// Generated for dtype {dt}.\n{helpers}")
}

/// Appends `shaders/include/NAME` for each `//! include NAME` line. WGSL declarations may come
/// in any order, so appending keeps naga's line numbers true to the shader file.
fn with_includes(path: &Path, dir: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut tail = String::new();
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix("//! include ") {
            let inc = dir.join(name.trim());
            tail.push_str(&format!("\n// ---- {} ----\n", name.trim()));
            tail.push_str(
                &fs::read_to_string(&inc)
                    .unwrap_or_else(|e| panic!("{}: include {}: {e}", path.display(), inc.display())),
            );
        }
    }
    text + &tail
}

fn validate_wgsl(path: &Path, name: &str, src: &str) {
    let module = match naga::front::wgsl::parse_str(src) {
        Ok(m) => m,
        Err(e) => panic!(
            "WGSL parse error in {} ({name}):\n{}",
            path.display(),
            e.emit_to_string_with_path(src, &path.display().to_string())
        ),
    };
    // The backend requests no optional capability for these shaders: they must validate bare.
    let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty());
    if let Err(e) = v.validate(&module) {
        panic!(
            "WGSL validation error in {} ({name}):\n{}",
            path.display(),
            e.emit_to_string_with_path(src, &path.display().to_string())
        );
    }
}

fn wgsl(manifest: &Path, out: &Path, gen: &mut String) {
    let mut entries = Vec::new();
    for path in sorted_files(&manifest.join("shaders"), "wgsl") {
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("utf-8 shader name").to_string();
        let text = with_includes(&path, &manifest.join("shaders/include"));
        let variants: Vec<(String, String)> = if text.contains("{{E}}") {
            DTYPES.iter().map(|dt| (format!("{stem}_{dt}"), expand_template(&text, dt))).collect()
        } else {
            vec![(stem.clone(), text.clone())]
        };
        for (name, src) in variants {
            validate_wgsl(&path, &name, &src);
            let dst = out.join(format!("{name}.wgsl"));
            fs::write(&dst, &src).expect("write wgsl");
            entries.push((name, dst));
        }
    }
    gen.push_str("/// Every WGSL module after per-dtype expansion, validated by naga at build time.\n");
    gen.push_str("pub static WGSL_MODULES: &[WgslModuleSource] = &[\n");
    for (name, dst) in entries {
        let _ = writeln!(
            gen,
            "    WgslModuleSource {{ name: {name:?}, source: include_str!({:?}) }},",
            dst.display().to_string()
        );
    }
    gen.push_str("];\n");
}
