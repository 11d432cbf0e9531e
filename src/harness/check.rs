//! `check FILE.safetensors`: run a kernel on inputs written by another implementation and
//! compare with the outputs it wrote.
//!
//! Convention: metadata `kernel` (`family.kernel`), `params` (JSON of the plan's params),
//! optional `rtol` / `atol`; tensors `in.<name>` and `out.<name>`.

use std::collections::BTreeMap;

use safetensors::{Dtype as StDtype, SafeTensors};

use super::{compare, execute, Comparison, HostTensor, Kernel, TensorMap};
use crate::backend::Backend;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// A parsed check file.
#[derive(Debug, Clone)]
pub struct CheckFile {
    pub kernel: String,
    pub params: serde_json::Value,
    pub inputs: TensorMap,
    pub expected: TensorMap,
    pub rtol: Option<f64>,
    pub atol: Option<f64>,
}

fn dtype_of(d: StDtype) -> Result<DType> {
    Ok(match d {
        StDtype::F32 => DType::F32,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::I8 => DType::I8,
        StDtype::I32 => DType::I32,
        StDtype::U32 => DType::U32,
        other => return Err(Error::DType(format!("safetensors dtype {other:?} is not used by any kernel"))),
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
    }
}

/// Parses a check file's bytes.
pub fn parse_file(bytes: &[u8]) -> Result<CheckFile> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| Error::Io(format!("safetensors header: {e}")))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Io(format!("safetensors: {e}")))?;
    let md = meta.metadata().clone().unwrap_or_default();
    let kernel = md.get("kernel").cloned().ok_or_else(|| Error::Io("metadata has no `kernel`".into()))?;
    let params: serde_json::Value = serde_json::from_str(md.get("params").map(String::as_str).unwrap_or("{}"))
        .map_err(|e| Error::Io(format!("metadata `params` is not JSON: {e}")))?;
    let num = |k: &str| -> Result<Option<f64>> {
        md.get(k).map(|v| v.parse::<f64>().map_err(|e| Error::Io(format!("metadata `{k}`: {e}")))).transpose()
    };
    let (rtol, atol) = (num("rtol")?, num("atol")?);
    let mut inputs = TensorMap::new();
    let mut expected = TensorMap::new();
    for (name, view) in st.tensors() {
        let t =
            HostTensor { dtype: dtype_of(view.dtype())?, shape: view.shape().to_vec(), bytes: view.data().to_vec() };
        if let Some(n) = name.strip_prefix("in.") {
            inputs.insert(n.to_string(), t);
        } else if let Some(n) = name.strip_prefix("out.") {
            expected.insert(n.to_string(), t);
        } else {
            return Err(Error::Io(format!("tensor `{name}` is neither `in.*` nor `out.*`")));
        }
    }
    Ok(CheckFile { kernel, params, inputs, expected, rtol, atol })
}

/// Writes a check file: inputs, expected outputs and metadata (the tests write their own).
pub fn write_file(
    kernel: &str,
    params: &serde_json::Value,
    inputs: &TensorMap,
    expected: &TensorMap,
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
    safetensors::serialize(views, Some(md)).map_err(|e| Error::Io(format!("serialize: {e}")))
}

/// Runs the file's kernel (found in `kernels`) on `backend` and compares every expected output.
pub fn run_check(kernels: &[&'static dyn Kernel], file: &CheckFile, backend: &Backend) -> Result<Vec<Comparison>> {
    let kernel = kernels
        .iter()
        .find(|k| k.id() == file.kernel)
        .ok_or_else(|| Error::InvalidParams(format!("no kernel `{}` (see `mllm-kernels verify`)", file.kernel)))?;
    let plan = kernel.prepare(&file.params)?;
    let (outs, _status) = execute(&*plan, backend, &file.inputs)?;
    let mut res = Vec::new();
    let by_name: BTreeMap<_, _> = outs.iter().collect();
    for (name, want) in &file.expected {
        let got = by_name.get(name).ok_or_else(|| Error::InvalidParams(format!("kernel has no output `{name}`")))?;
        res.push(compare(name, got, &want.to_f64(), file.rtol, file.atol));
    }
    Ok(res)
}
