//! The core kernels in the registry: cases, random inputs, oracle call, named launch.

use serde_json::json;

use super::{GatherRows, MergeStates, RmsNorm};
use crate::backend::{Status, StatusBits};
use crate::dtype::DType;
use crate::error::Result;
use crate::harness::{
    float_cases, host, random_view, strided_expected, view_values, Case, DevMap, Expected, Fixture, HostTensor, Kernel,
    Launch, Reg, Registered, Rng, TensorMap,
};
use crate::launch;

pub(crate) fn kernels() -> Vec<&'static dyn Kernel> {
    vec![&Reg::<RmsNorm>::NEW, &Reg::<MergeStates>::NEW, &Reg::<GatherRows>::NEW]
}

/// Bench shapes for the 16-bit-and-f32 kernels: f16 moves the same bytes as bf16.
fn no_f16(cases: Vec<Case>) -> Vec<Case> {
    cases.into_iter().filter(|c| c.dtype != DType::F16).collect()
}

impl Registered for RmsNorm {
    const FAMILY: &'static str = "core";
    fn cases() -> Vec<Case> {
        float_cases(&[
            ("1x1", json!({"rows": 1, "cols": 1, "eps": 1e-6})),
            ("3x7", json!({"rows": 3, "cols": 7, "eps": 1e-5})),
            ("5x333 strided", json!({"rows": 5, "cols": 333, "eps": 1e-6, "x_stride": 341, "y_stride": 335})),
            ("64x4096", json!({"rows": 64, "cols": 4096, "eps": 1e-6})),
            ("2x5120 odd stride", json!({"rows": 2, "cols": 5120, "eps": 1e-8, "y_stride": 5121})),
            // CUDA: 16-byte pieces kept in registers (strides a multiple of 8 elements), and a row
            // longer than 256 threads x 8 pieces holds in f32, which takes the two-pass loop.
            (
                "3x1040 strided by 1056",
                json!({"rows": 3, "cols": 1040, "eps": 1e-6, "x_stride": 1056, "y_stride": 1048}),
            ),
            ("2x8200", json!({"rows": 2, "cols": 8200, "eps": 1e-6})),
        ])
    }
    fn bench_cases() -> Vec<Case> {
        no_f16(float_cases(&[
            ("1x7168", json!({"rows": 1, "cols": 7168})),
            ("4096x7168", json!({"rows": 4096, "cols": 7168})),
        ]))
    }
    fn counter_cases() -> Vec<Case> {
        no_f16(float_cases(&[
            ("1x7168", json!({"rows": 1, "cols": 7168})),
            ("256x7168 (bench 4096 rows)", json!({"rows": 256, "cols": 7168})),
        ]))
    }
    fn inputs(&self, _: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let dt = self.params.dtype;
        let w: Vec<f64> = (0..self.params.cols).map(|_| rng.range(0.5, 1.5)).collect();
        Ok([("x".into(), random_view(rng, dt, &self.x, 2.0)), ("w".into(), HostTensor::from_f64(dt, &[w.len()], &w))]
            .into())
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let x = view_values(&self.x, host(i, "x")?);
        let y = super::oracle::rmsnorm(&x, &host(i, "w")?.to_f64(), p.rows, p.cols, f64::from(p.eps));
        Ok(Expected::with("y", strided_expected(&self.y, &y)))
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype; x: ro T, w: ro T, y: rw T)
    }
    fn flops(&self) -> f64 {
        4.0 * (self.params.rows * self.params.cols) as f64
    }
}

/// LSEs with every edge: empty parts (-inf), both empty, far apart, close.
fn random_lse(rng: &mut Rng, n: usize) -> (Vec<f64>, Vec<f64>) {
    (0..n)
        .map(|i| match i % 7 {
            0 => (f64::NEG_INFINITY, rng.range(-5.0, 5.0)),
            1 => (rng.range(-5.0, 5.0), f64::NEG_INFINITY),
            2 => (f64::NEG_INFINITY, f64::NEG_INFINITY),
            3 => (rng.range(-5.0, 5.0), rng.range(60.0, 80.0)),
            _ => (rng.range(-8.0, 8.0), rng.range(-8.0, 8.0)),
        })
        .unzip()
}

impl Registered for MergeStates {
    const FAMILY: &'static str = "core";
    fn cases() -> Vec<Case> {
        float_cases(&[
            ("1x1", json!({"states": 1, "dim": 1})),
            ("7x5", json!({"states": 7, "dim": 5})),
            ("33x129 strided", json!({"states": 33, "dim": 129, "o1_stride": 131, "o2_stride": 129, "o_stride": 133})),
            ("256x512", json!({"states": 256, "dim": 512})),
            // The NaN policy (ARCHITECTURE.md): a NaN part makes its state NaN.
            ("5x8 NaN lse1 in state 0", json!({"states": 5, "dim": 8, "fixture": "nan_lse"})),
        ])
    }
    fn bench_cases() -> Vec<Case> {
        no_f16(float_cases(&[("4096x512", json!({"states": 4096, "dim": 512}))]))
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let (dt, n) = (self.params.dtype, self.params.states);
        let (o1, o2) = (random_view(rng, dt, &self.o1, 1.0), random_view(rng, dt, &self.o2, 1.0));
        let (mut a, b) = random_lse(rng, n);
        if fx.is("nan_lse") {
            a[0] = f64::NAN;
        }
        let lse = |v: &[f64]| HostTensor::from_f64(DType::F32, &[n], v);
        Ok([("o1".into(), o1), ("o2".into(), o2), ("lse1".into(), lse(&a)), ("lse2".into(), lse(&b))].into())
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let (o, l) = super::oracle::merge_states(
            &view_values(&self.o1, host(i, "o1")?),
            &host(i, "lse1")?.to_f64(),
            &view_values(&self.o2, host(i, "o2")?),
            &host(i, "lse2")?.to_f64(),
            self.params.dim,
        );
        Ok(Expected::with("o", strided_expected(&self.o, &o)).and("lse", l))
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            o1: ro T, lse1: ro f32, o2: ro T, lse2: ro f32, o: rw T, lse: rw f32)
    }
    fn flops(&self) -> f64 {
        3.0 * (self.params.states * self.params.dim) as f64
    }
}

impl Registered for GatherRows {
    const FAMILY: &'static str = "core";
    fn cases() -> Vec<Case> {
        float_cases(&[
            ("1<-1x1", json!({"rows": 1, "src_rows": 1, "cols": 1})),
            ("9<-20x33", json!({"rows": 9, "src_rows": 20, "cols": 33})),
            // Rows long enough for several CUDA blocks (128 16-byte pieces each), whole pieces
            // and not.
            ("5<-9x2104 in parts", json!({"rows": 5, "src_rows": 9, "cols": 2104})),
            ("3<-7x1501 in parts, odd", json!({"rows": 3, "src_rows": 7, "cols": 1501})),
            (
                "17<-40x65 strided, bad idx",
                json!({"rows": 17, "src_rows": 40, "cols": 65, "src_stride": 67, "out_stride": 69, "fixture": "bad"}),
            ),
            // CUDA: 16-byte copies (widths and strides multiples of 8 elements), with a bad index.
            (
                "12<-30x96 strided by 104, bad idx",
                json!({"rows": 12, "src_rows": 30, "cols": 96, "src_stride": 104, "out_stride": 112, "fixture": "bad"}),
            ),
        ])
    }
    fn bench_cases() -> Vec<Case> {
        float_cases(&[("2048<-8192x4096", json!({"rows": 2048, "src_rows": 8192, "cols": 4096}))])
            .into_iter()
            .filter(|c| c.dtype == DType::BF16)
            .collect()
    }
    fn counter_cases() -> Vec<Case> {
        float_cases(&[("256<-8192x4096 (bench 2048 rows)", json!({"rows": 256, "src_rows": 8192, "cols": 4096}))])
            .into_iter()
            .filter(|c| c.dtype == DType::BF16)
            .collect()
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let idx: Vec<i32> = (0..p.rows)
            .map(|i| match (fx.is("bad"), i % 5) {
                (true, 1) => -1 - rng.below(3) as i32,
                (true, 3) => (p.src_rows + rng.below(4) as usize) as i32,
                _ => rng.below(p.src_rows as u64) as i32,
            })
            .collect();
        let src = random_view(rng, p.dtype, &self.src, 1.0);
        Ok([("src".into(), src), ("idx".into(), HostTensor::from_i32(&[p.rows], &idx))].into())
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let src = view_values(&self.src, host(i, "src")?);
        let (o, bad) = super::oracle::gather_rows(&src, &host(i, "idx")?.to_i32(), p.src_rows, p.cols);
        let mut e = Expected::with("out", strided_expected(&self.out, &o));
        e.status = if bad { StatusBits::INDEX_OUT_OF_RANGE } else { 0 };
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype; src: ro T, idx: ro i32, out: rw T; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.validate_indices(&host(i, "idx")?.to_i32())
    }
}
