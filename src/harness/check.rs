//! `check FILE.safetensors`: run a kernel on inputs written by another implementation and
//! compare with the outputs it wrote.
//!
//! Convention: metadata `kernel` (`family.kernel`), `params` (JSON of the plan's params),
//! optional `rtol` / `atol` (finite, >= 0) and `status` (the status bits the run must raise, as a
//! number or names joined by `|`; default none); tensors `in.<name>` (every input the plan
//! reads, of its dtype and at least its length) and `out.<name>` (outputs of the plan, of their
//! dtype and exactly their length).

use safetensors::{Dtype as StDtype, SafeTensors};

use super::{check_tensor, compare, execute, Comparison, HostTensor, Kernel, TensorMap};
use crate::backend::{Backend, StatusBits};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::plan::Role;

/// A parsed check file.
#[derive(Debug, Clone)]
pub struct CheckFile {
    /// The kernel's id, `family.kernel` (metadata `kernel`).
    pub kernel: String,
    /// The plan's params (metadata `params`; `{}` when absent).
    pub params: serde_json::Value,
    /// The `in.<name>` tensors, by name without the prefix.
    pub inputs: TensorMap,
    /// The `out.<name>` tensors, by name without the prefix.
    pub expected: TensorMap,
    /// Relative-L2 tolerance for every output (metadata `rtol`; default: the dtype's).
    pub rtol: Option<f64>,
    /// Max-abs tolerance, scaled by `max(|reference|, 1)` (metadata `atol`; default: the
    /// dtype's).
    pub atol: Option<f64>,
    /// The status bits the run must raise (0: none).
    pub status: u32,
}

fn dtype_of(name: &str, d: StDtype) -> Result<DType> {
    Ok(match d {
        StDtype::F32 => DType::F32,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::I8 => DType::I8,
        StDtype::I32 => DType::I32,
        StDtype::U32 => DType::U32,
        StDtype::F8_E4M3 => DType::F8E4M3,
        other => {
            return Err(Error::DType(format!(
                "tensor `{name}`: safetensors dtype {other:?} is not used by any kernel (F32, F16, BF16, I8, I32, U32, F8_E4M3)"
            )))
        }
    })
}

/// Which tensor of a safetensors header has a shape and dtype its data offsets do not hold (the
/// safetensors crate reports that without the name): the first such entry, described.
fn bad_tensor_info(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    header.iter().filter(|(k, _)| k.as_str() != "__metadata__").find_map(|(name, v)| {
        let dtype = v.get("dtype")?.as_str()?;
        let size: u128 = match dtype {
            "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
            "I16" | "U16" | "F16" | "BF16" => 2,
            "I32" | "U32" | "F32" => 4,
            "I64" | "U64" | "F64" => 8,
            _ => return Some(format!("tensor `{name}`: unknown dtype {dtype}")),
        };
        let shape: Vec<u128> =
            v.get("shape")?.as_array()?.iter().map(|d| d.as_u64().map(u128::from)).collect::<Option<_>>()?;
        let offs: Vec<u128> =
            v.get("data_offsets")?.as_array()?.iter().map(|d| d.as_u64().map(u128::from)).collect::<Option<_>>()?;
        let need = shape.iter().try_fold(size, |a, &d| a.checked_mul(d))?;
        let have = match offs[..] {
            [a, b] if b >= a => b - a,
            _ => return Some(format!("tensor `{name}`: data_offsets {offs:?} are not [start, end]")),
        };
        (need != have).then(|| {
            format!(
                "tensor `{name}`: shape {shape:?} of {dtype} needs {need} bytes, its data_offsets {offs:?} hold {have}"
            )
        })
    })
}

fn st_dtype(d: DType) -> StDtype {
    match d {
        DType::F32 => StDtype::F32,
        DType::F16 => StDtype::F16,
        DType::BF16 => StDtype::BF16,
        DType::I8 => StDtype::I8,
        DType::I32 => StDtype::I32,
        DType::U32 => StDtype::U32,
        DType::F8E4M3 => StDtype::F8_E4M3,
    }
}

/// Parses a check file's bytes.
pub fn parse_file(bytes: &[u8]) -> Result<CheckFile> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| match bad_tensor_info(bytes) {
        Some(why) => Error::Io(format!("safetensors header: {why}")),
        None => Error::Io(format!("safetensors header: {e}")),
    })?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Io(format!("safetensors: {e}")))?;
    let md = meta.metadata().clone().unwrap_or_default();
    let kernel = md.get("kernel").cloned().ok_or_else(|| Error::Io("metadata has no `kernel`".into()))?;
    let params: serde_json::Value = serde_json::from_str(md.get("params").map(String::as_str).unwrap_or("{}"))
        .map_err(|e| Error::Io(format!("metadata `params` is not JSON: {e}")))?;
    let num = |k: &str| -> Result<Option<f64>> {
        md.get(k).map(|v| v.parse::<f64>().map_err(|e| Error::Io(format!("metadata `{k}`: {e}")))).transpose()
    };
    let (rtol, atol) = (num("rtol")?, num("atol")?);
    for (k, v) in [("rtol", rtol), ("atol", atol)] {
        if let Some(v) = v.filter(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(Error::Io(format!("metadata `{k}` = {v}: tolerances must be finite and >= 0")));
        }
    }
    let status = match md.get("status") {
        None => 0,
        Some(s) => StatusBits::parse(s)
            .ok_or_else(|| Error::Io(format!("metadata `status` = `{s}`: a number or status names joined by `|`")))?,
    };
    let mut inputs = TensorMap::new();
    let mut expected = TensorMap::new();
    for (name, view) in st.tensors() {
        let t = HostTensor {
            dtype: dtype_of(&name, view.dtype())?,
            shape: view.shape().to_vec(),
            bytes: view.data().to_vec(),
        };
        if let Some(n) = name.strip_prefix("in.") {
            inputs.insert(n.to_string(), t);
        } else if let Some(n) = name.strip_prefix("out.") {
            expected.insert(n.to_string(), t);
        } else {
            return Err(Error::Io(format!("tensor `{name}` is neither `in.*` nor `out.*`")));
        }
    }
    Ok(CheckFile { kernel, params, inputs, expected, rtol, atol, status })
}

/// Writes a check file: inputs, expected outputs and metadata (`kernel`, `params`, plus `meta`
/// pairs such as `rtol` or `status`). The tests write their own, good and bad.
pub fn write_file(
    kernel: &str,
    params: &serde_json::Value,
    inputs: &TensorMap,
    expected: &TensorMap,
    meta: &[(&str, &str)],
) -> Result<Vec<u8>> {
    let mut views = Vec::new();
    for (prefix, map) in [("in.", inputs), ("out.", expected)] {
        for (name, t) in map {
            let v = safetensors::tensor::TensorView::new(st_dtype(t.dtype), t.shape.clone(), &t.bytes)
                .map_err(|e| Error::Io(format!("{name}: {e}")))?;
            views.push((format!("{prefix}{name}"), v));
        }
    }
    let mut md = std::collections::HashMap::new();
    md.insert("kernel".to_string(), kernel.to_string());
    md.insert("params".to_string(), params.to_string());
    for (k, v) in meta {
        md.insert(k.to_string(), v.to_string());
    }
    safetensors::serialize(views, Some(md)).map_err(|e| Error::Io(format!("serialize: {e}")))
}

/// Runs the file's kernel (found in `kernels`) on `backend` and compares every expected output
/// and the status word. Every tensor is checked against the plan's list (names, dtypes, lengths)
/// before anything is allocated.
pub fn run_check(kernels: &[&'static dyn Kernel], file: &CheckFile, backend: &Backend) -> Result<Vec<Comparison>> {
    let kernel = kernels
        .iter()
        .find(|k| k.id() == file.kernel)
        .ok_or_else(|| Error::InvalidParams(format!("no kernel `{}` (see `mllm-kernels list`)", file.kernel)))?;
    let plan = kernel.prepare(&file.params)?;
    let specs = plan.tensors();
    for (name, want) in &file.expected {
        let spec = specs.iter().find(|s| s.name == name.as_str() && s.role != Role::In).ok_or_else(|| {
            let outs: Vec<&str> = specs.iter().filter(|s| s.role != Role::In).map(|s| s.name).collect();
            Error::InvalidParams(format!("out.{name}: the kernel has no such output (outputs: {})", outs.join(", ")))
        })?;
        check_tensor(&format!("out.{name}"), want, spec, true)?;
    }
    if file.expected.is_empty() && file.status == 0 {
        return Err(Error::InvalidParams(
            "the file has no `out.*` tensor and expects no status: nothing to check".into(),
        ));
    }
    let (outs, bits) = execute(&*plan, backend, &file.inputs)?;
    let mut res = Vec::new();
    for (name, want) in &file.expected {
        let got = outs.get(name).ok_or_else(|| Error::InvalidParams(format!("kernel has no output `{name}`")))?;
        res.push(compare(name, got, &want.to_f64(), file.rtol, file.atol));
    }
    if bits != file.status {
        let why = plan.validate_inputs(&file.inputs).err().map(|e| format!("; {e}")).unwrap_or_default();
        let expected = if file.status == 0 { "none".to_string() } else { StatusBits::describe(file.status) };
        res.push(Comparison::failed(
            "status",
            format!(
                "raised {}, the file expects {expected}{why}",
                if bits == 0 { "none".into() } else { StatusBits::describe(bits) }
            ),
        ));
    } else {
        res.push(Comparison::passed("status"));
    }
    Ok(res)
}
