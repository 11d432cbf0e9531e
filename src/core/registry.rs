//! The core kernels in the registry: random cases, oracle, launch on each backend.

use serde_json::{json, Value};

use super::{GatherRows, MergeStates, RmsNorm};
use crate::backend::{Backend, Status, StatusBits};
use crate::dtype::DType;
use crate::error::Result;
use crate::harness::{
    float_cases, host, host_store, host_vec, parse, random_view, strided_expected, take, view_values, Case, Cost,
    DevMap, Expected, HostTensor, Kernel, Launch, Rng, TensorMap,
};
use crate::with_float;

pub(crate) fn kernels() -> Vec<&'static dyn Kernel> {
    vec![&RmsNormKernel, &MergeStatesKernel, &GatherRowsKernel]
}

// ---------------------------------------------------------------------------------------------

pub(crate) struct RmsNormKernel;

impl Kernel for RmsNormKernel {
    fn family(&self) -> &'static str {
        "core"
    }
    fn name(&self) -> &'static str {
        "rmsnorm"
    }
    fn cases(&self) -> Vec<Case> {
        float_cases(&[
            ("1x1", json!({"rows": 1, "cols": 1, "eps": 1e-6})),
            ("3x7", json!({"rows": 3, "cols": 7, "eps": 1e-5})),
            ("5x333 strided", json!({"rows": 5, "cols": 333, "eps": 1e-6, "x_stride": 341, "y_stride": 335})),
            ("64x4096", json!({"rows": 64, "cols": 4096, "eps": 1e-6})),
            ("2x5120 odd stride", json!({"rows": 2, "cols": 5120, "eps": 1e-8, "y_stride": 5121})),
        ])
    }
    fn bench_cases(&self) -> Vec<Case> {
        float_cases(&[("1x7168", json!({"rows": 1, "cols": 7168})), ("4096x7168", json!({"rows": 4096, "cols": 7168}))])
            .into_iter()
            .filter(|c| c.dtype != DType::F16)
            .collect()
    }
    fn inputs(&self, params: &Value, rng: &mut Rng) -> Result<TensorMap> {
        let plan = RmsNorm::new(parse(params)?)?;
        let dt = plan.params.dtype;
        let mut m = TensorMap::new();
        m.insert("x".into(), random_view(rng, dt, &plan.x, 2.0));
        let w: Vec<f64> = (0..plan.params.cols).map(|_| rng.range(0.5, 1.5)).collect();
        m.insert("w".into(), HostTensor::from_f64(dt, &[w.len()], &w));
        Ok(m)
    }
    fn outputs(&self, params: &Value) -> Result<Vec<(String, DType, Vec<usize>)>> {
        let plan = RmsNorm::new(parse(params)?)?;
        Ok(vec![("y".into(), plan.params.dtype, vec![plan.y.span()])])
    }
    fn oracle(&self, params: &Value, inputs: &TensorMap) -> Result<Expected> {
        let plan = RmsNorm::new(parse(params)?)?;
        let p = &plan.params;
        let x = view_values(&plan.x, host(inputs, "x")?);
        let y = super::oracle::rmsnorm(&x, &host(inputs, "w")?.to_f64(), p.rows, p.cols, f64::from(p.eps));
        let mut e = Expected::default();
        e.outputs.insert("y".into(), strided_expected(&plan.y, &y));
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, params: &Value, t: &mut DevMap, _status: &mut Status) -> Result<()> {
        let plan = RmsNorm::new(parse(params)?)?;
        match l.backend {
            Backend::Cpu => with_float!(plan.params.dtype, T => {
                let mut y = host_vec::<T>(t, "y")?;
                plan.run_cpu::<T>(&host_vec(t, "x")?, &host_vec(t, "w")?, &mut y)?;
                host_store(t, "y", &y)
            }),
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => with_float!(plan.params.dtype, T => {
                use crate::harness::{cuda_slice, cuda_slice_mut};
                let mut y = take(t, "y")?;
                let r = plan.run_cuda::<T>(c, c.stream(), cuda_slice::<T>(t, "x")?, cuda_slice::<T>(t, "w")?, cuda_slice_mut::<T>(&mut y, "y")?);
                t.insert("y".into(), y);
                r
            }),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(w) => {
                use crate::harness::wgpu_view;
                let enc = l.encoder.as_deref_mut().ok_or_else(|| crate::Error::InvalidParams("no encoder".into()))?;
                plan.run_wgpu(w, enc, wgpu_view(t, "x")?, wgpu_view(t, "w")?, wgpu_view(t, "y")?)
            }
        }
    }
    fn cost(&self, params: &Value) -> Result<Cost> {
        let plan = RmsNorm::new(parse(params)?)?;
        let p = &plan.params;
        let n = (p.rows * p.cols) as f64;
        Ok(Cost { bytes: (2.0 * n + p.cols as f64) * p.dtype.size() as f64, flops: 4.0 * n })
    }
}

// ---------------------------------------------------------------------------------------------

pub(crate) struct MergeStatesKernel;

/// LSEs with every edge: empty parts (-inf), both empty, far apart, close.
fn random_lse(rng: &mut Rng, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = Vec::with_capacity(n);
    let mut b = Vec::with_capacity(n);
    for i in 0..n {
        let (x, y) = match i % 7 {
            0 => (f64::NEG_INFINITY, rng.range(-5.0, 5.0)),
            1 => (rng.range(-5.0, 5.0), f64::NEG_INFINITY),
            2 => (f64::NEG_INFINITY, f64::NEG_INFINITY),
            3 => (rng.range(-5.0, 5.0), rng.range(60.0, 80.0)),
            _ => (rng.range(-8.0, 8.0), rng.range(-8.0, 8.0)),
        };
        a.push(x);
        b.push(y);
    }
    (a, b)
}

impl Kernel for MergeStatesKernel {
    fn family(&self) -> &'static str {
        "core"
    }
    fn name(&self) -> &'static str {
        "merge_states"
    }
    fn cases(&self) -> Vec<Case> {
        float_cases(&[
            ("1x1", json!({"states": 1, "dim": 1})),
            ("7x5", json!({"states": 7, "dim": 5})),
            ("33x129 strided", json!({"states": 33, "dim": 129, "o1_stride": 131, "o2_stride": 129, "o_stride": 133})),
            ("256x512", json!({"states": 256, "dim": 512})),
        ])
    }
    fn bench_cases(&self) -> Vec<Case> {
        float_cases(&[("4096x512", json!({"states": 4096, "dim": 512}))])
            .into_iter()
            .filter(|c| c.dtype != DType::F16)
            .collect()
    }
    fn inputs(&self, params: &Value, rng: &mut Rng) -> Result<TensorMap> {
        let plan = MergeStates::new(parse(params)?)?;
        let (dt, n) = (plan.params.dtype, plan.params.states);
        let mut m = TensorMap::new();
        m.insert("o1".into(), random_view(rng, dt, &plan.o1, 1.0));
        m.insert("o2".into(), random_view(rng, dt, &plan.o2, 1.0));
        let (a, b) = random_lse(rng, n);
        m.insert("lse1".into(), HostTensor::from_f64(DType::F32, &[n], &a));
        m.insert("lse2".into(), HostTensor::from_f64(DType::F32, &[n], &b));
        Ok(m)
    }
    fn outputs(&self, params: &Value) -> Result<Vec<(String, DType, Vec<usize>)>> {
        let plan = MergeStates::new(parse(params)?)?;
        Ok(vec![
            ("o".into(), plan.params.dtype, vec![plan.o.span()]),
            ("lse".into(), DType::F32, vec![plan.params.states]),
        ])
    }
    fn oracle(&self, params: &Value, inputs: &TensorMap) -> Result<Expected> {
        let plan = MergeStates::new(parse(params)?)?;
        let (o, l) = super::oracle::merge_states(
            &view_values(&plan.o1, host(inputs, "o1")?),
            &host(inputs, "lse1")?.to_f64(),
            &view_values(&plan.o2, host(inputs, "o2")?),
            &host(inputs, "lse2")?.to_f64(),
            plan.params.dim,
        );
        let mut e = Expected::default();
        e.outputs.insert("o".into(), strided_expected(&plan.o, &o));
        e.outputs.insert("lse".into(), l);
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, params: &Value, t: &mut DevMap, _status: &mut Status) -> Result<()> {
        let plan = MergeStates::new(parse(params)?)?;
        match l.backend {
            Backend::Cpu => with_float!(plan.params.dtype, T => {
                let mut o = host_vec::<T>(t, "o")?;
                let mut lse = host_vec::<f32>(t, "lse")?;
                plan.run_cpu::<T>(&host_vec(t, "o1")?, &host_vec(t, "lse1")?, &host_vec(t, "o2")?, &host_vec(t, "lse2")?, &mut o, &mut lse)?;
                host_store(t, "o", &o)?;
                host_store(t, "lse", &lse)
            }),
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => with_float!(plan.params.dtype, T => {
                use crate::harness::{cuda_slice, cuda_slice_mut};
                let mut o = take(t, "o")?;
                let mut lse = take(t, "lse")?;
                let r = plan.run_cuda::<T>(
                    c,
                    c.stream(),
                    cuda_slice::<T>(t, "o1")?,
                    cuda_slice::<f32>(t, "lse1")?,
                    cuda_slice::<T>(t, "o2")?,
                    cuda_slice::<f32>(t, "lse2")?,
                    cuda_slice_mut::<T>(&mut o, "o")?,
                    cuda_slice_mut::<f32>(&mut lse, "lse")?,
                );
                t.insert("o".into(), o);
                t.insert("lse".into(), lse);
                r
            }),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(w) => {
                use crate::harness::wgpu_view;
                let enc = l.encoder()?;
                plan.run_wgpu(
                    w,
                    enc,
                    wgpu_view(t, "o1")?,
                    wgpu_view(t, "lse1")?,
                    wgpu_view(t, "o2")?,
                    wgpu_view(t, "lse2")?,
                    wgpu_view(t, "o")?,
                    wgpu_view(t, "lse")?,
                )
            }
        }
    }
    fn cost(&self, params: &Value) -> Result<Cost> {
        let plan = MergeStates::new(parse(params)?)?;
        let p = &plan.params;
        let n = (p.states * p.dim) as f64;
        Ok(Cost { bytes: 3.0 * n * p.dtype.size() as f64 + 12.0 * p.states as f64, flops: 3.0 * n })
    }
}

// ---------------------------------------------------------------------------------------------

pub(crate) struct GatherRowsKernel;

impl Kernel for GatherRowsKernel {
    fn family(&self) -> &'static str {
        "core"
    }
    fn name(&self) -> &'static str {
        "gather_rows"
    }
    fn cases(&self) -> Vec<Case> {
        float_cases(&[
            ("1<-1x1", json!({"rows": 1, "src_rows": 1, "cols": 1})),
            ("9<-20x33", json!({"rows": 9, "src_rows": 20, "cols": 33})),
            (
                "17<-40x65 strided, bad idx",
                json!({"rows": 17, "src_rows": 40, "cols": 65, "src_stride": 67, "out_stride": 69, "bad": true}),
            ),
        ])
    }
    fn bench_cases(&self) -> Vec<Case> {
        float_cases(&[("2048<-8192x4096", json!({"rows": 2048, "src_rows": 8192, "cols": 4096}))])
            .into_iter()
            .filter(|c| c.dtype == DType::BF16)
            .collect()
    }
    fn inputs(&self, params: &Value, rng: &mut Rng) -> Result<TensorMap> {
        let plan = GatherRows::new(parse(params)?)?;
        let p = &plan.params;
        let mut m = TensorMap::new();
        m.insert("src".into(), random_view(rng, p.dtype, &plan.src, 1.0));
        let bad = params.get("bad").and_then(Value::as_bool).unwrap_or(false);
        let idx: Vec<i32> = (0..p.rows)
            .map(|i| match (bad, i % 5) {
                (true, 1) => -1 - rng.below(3) as i32,
                (true, 3) => (p.src_rows + rng.below(4) as usize) as i32,
                _ => rng.below(p.src_rows as u64) as i32,
            })
            .collect();
        m.insert("idx".into(), HostTensor::from_i32(&[p.rows], &idx));
        Ok(m)
    }
    fn outputs(&self, params: &Value) -> Result<Vec<(String, DType, Vec<usize>)>> {
        let plan = GatherRows::new(parse(params)?)?;
        Ok(vec![("out".into(), plan.params.dtype, vec![plan.out.span()])])
    }
    fn oracle(&self, params: &Value, inputs: &TensorMap) -> Result<Expected> {
        let plan = GatherRows::new(parse(params)?)?;
        let p = &plan.params;
        let (o, bad) = super::oracle::gather_rows(
            &view_values(&plan.src, host(inputs, "src")?),
            &host(inputs, "idx")?.to_i32(),
            p.src_rows,
            p.cols,
        );
        let mut e = Expected::default();
        e.outputs.insert("out".into(), strided_expected(&plan.out, &o));
        e.status = if bad { StatusBits::INDEX_OUT_OF_RANGE } else { 0 };
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, params: &Value, t: &mut DevMap, status: &mut Status) -> Result<()> {
        let plan = GatherRows::new(parse(params)?)?;
        match l.backend {
            Backend::Cpu => with_float!(plan.params.dtype, T => {
                let mut o = host_vec::<T>(t, "out")?;
                plan.run_cpu::<T>(&host_vec(t, "src")?, &host_vec(t, "idx")?, &mut o, status)?;
                host_store(t, "out", &o)
            }),
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => with_float!(plan.params.dtype, T => {
                use crate::harness::{cuda_slice, cuda_slice_mut};
                let mut o = take(t, "out")?;
                let r = plan.run_cuda::<T>(c, c.stream(), cuda_slice::<T>(t, "src")?, cuda_slice::<i32>(t, "idx")?, cuda_slice_mut::<T>(&mut o, "out")?, status);
                t.insert("out".into(), o);
                r
            }),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(w) => {
                use crate::harness::wgpu_view;
                let enc = l.encoder()?;
                plan.run_wgpu(w, enc, wgpu_view(t, "src")?, wgpu_view(t, "idx")?, wgpu_view(t, "out")?, status)
            }
        }
    }
    fn cost(&self, params: &Value) -> Result<Cost> {
        let plan = GatherRows::new(parse(params)?)?;
        let p = &plan.params;
        Ok(Cost { bytes: (2 * p.rows * p.cols * p.dtype.size() + 4 * p.rows) as f64, flops: 0.0 })
    }
}
