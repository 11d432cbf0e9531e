//! Layers made of the family's kernels: the GLU channel mixer and a whole MatMul-free block
//! (MLGRU token mixer + GLU channel mixer, pre-norm residual, as the reference HGRNBit block).
//!
//! They run on any backend over named tensors (`harness::DevMap`), launching the same kernels
//! the registry verifies one by one, so the composition itself is what is tested here.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::padded_k;
use crate::backend::Status;
use crate::dtype::DType;
use crate::error::{invalid, Error, Result};
use crate::harness::{take, DevMap, Kernel, Launch};

fn by_id(id: &str) -> Result<&'static dyn Kernel> {
    super::registry::kernels()
        .into_iter()
        .chain(crate::core::registry::kernels())
        .find(|k| k.id() == id)
        .ok_or_else(|| Error::InvalidParams(format!("no kernel {id}")))
}

/// Launches kernel `id` with its tensor names bound to the map's names (`(kernel's, ours)`),
/// moving the tensors in and back out so nothing is copied.
fn launch_as(
    id: &str,
    l: &mut Launch,
    params: Value,
    t: &mut DevMap,
    names: &[(&str, &str)],
    status: &mut Status,
) -> Result<()> {
    let k = by_id(id)?;
    let mut sub = DevMap::new();
    for (theirs, ours) in names {
        sub.insert(theirs.to_string(), take(t, ours)?);
    }
    let r = k.launch(l, &params, &mut sub, status);
    for (theirs, ours) in names {
        if let Some(v) = sub.remove(*theirs) {
            t.insert(ours.to_string(), v);
        }
    }
    r
}

// ---------------------------------------------------------------------------------------------

/// `y = down(silu(g) * u)` with `[g, u] = gate_up(x)`, both BitLinear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GluMlpParams {
    pub m: usize,
    pub d: usize,
    pub inner: usize,
    pub dtype: DType,
    /// The BitLinears' norm epsilon (the model's `FusedBitLinear`: 1e-6).
    #[serde(default = "super::model_eps")]
    pub bitlinear_eps: f32,
}

#[derive(Debug, Clone)]
pub struct GluMlp {
    pub params: GluMlpParams,
}

impl GluMlp {
    pub fn new(p: GluMlpParams) -> Result<Self> {
        if p.m == 0 || p.d == 0 || p.inner == 0 {
            return Err(invalid("glu_mlp needs m, d, inner >= 1"));
        }
        if !p.dtype.is_float() {
            return Err(Error::DType(format!("{} is not a float dtype", p.dtype)));
        }
        check_eps("glu_mlp bitlinear_eps", p.bitlinear_eps)?;
        Ok(Self { params: p })
    }

    /// Tensors: `x [m, d]`, `up_norm [d]`, `up_packed`, `up_gamma [1]`, `down_norm [inner]`,
    /// `down_packed`, `down_gamma [1]`; out `y [m, d]`; scratch `gu [m, 2 inner]`, `q1`, `s1`,
    /// `q2`, `s2` (sizes from [`GluMlp::scratch`]).
    pub fn run(&self, l: &mut Launch, t: &mut DevMap, status: &mut Status) -> Result<()> {
        self.run_named(l, t, status, "x", "y", false)
    }

    /// As [`GluMlp::run`] with the input and output tensors named; `accumulate` adds the result
    /// to the output (a residual stream) instead of overwriting it.
    pub fn run_named(
        &self,
        l: &mut Launch,
        t: &mut DevMap,
        status: &mut Status,
        input: &str,
        output: &str,
        accumulate: bool,
    ) -> Result<()> {
        let p = &self.params;
        let dt = p.dtype;
        launch_as(
            "ternary.bitlinear",
            l,
            json!({"m": p.m, "n": 2 * p.inner, "k": p.d, "dtype": dt, "eps": p.bitlinear_eps}),
            t,
            &[
                ("x", input),
                ("norm_w", "up_norm"),
                ("packed", "up_packed"),
                ("gamma", "up_gamma"),
                ("q", "q1"),
                ("s", "s1"),
                ("out", "gu"),
            ],
            status,
        )?;
        launch_as(
            "ternary.bitlinear",
            l,
            json!({"m": p.m, "n": p.d, "k": p.inner, "dtype": dt, "eps": p.bitlinear_eps, "glu": true, "accumulate": accumulate}),
            t,
            &[
                ("x", "gu"),
                ("norm_w", "down_norm"),
                ("packed", "down_packed"),
                ("gamma", "down_gamma"),
                ("q", "q2"),
                ("s", "s2"),
                ("out", output),
            ],
            status,
        )
    }

    /// Scratch tensors: name, dtype, length.
    pub fn scratch(&self) -> Vec<(&'static str, DType, usize)> {
        let p = &self.params;
        vec![
            ("gu", p.dtype, p.m * 2 * p.inner),
            ("q1", DType::I8, p.m * padded_k(p.d)),
            ("s1", DType::F32, p.m),
            ("q2", DType::I8, p.m * padded_k(p.inner)),
            ("s2", DType::F32, p.m),
        ]
    }
}

// ---------------------------------------------------------------------------------------------

/// One MatMul-free block, decode step: for each of `m` sequences (pool slot per row),
/// `x += o_proj(mlgru(fcg_proj(rmsnorm(x))))`, then `x += down(glu(gate_up(rmsnorm(x))))`.
/// `x` (the residual stream) and the state pool are updated in place.
/// Epsilons default to the model's (`HGRNBitConfig.rms_norm_eps` and `FusedBitLinear`: 1e-6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatmulFreeBlockParams {
    pub m: usize,
    pub d: usize,
    pub inner: usize,
    pub slots: usize,
    pub dtype: DType,
    /// The block's pre-norms (`attn_norm`, `mlp_norm`).
    #[serde(default = "super::model_eps")]
    pub norm_eps: f32,
    /// The MLGRU's output gate norm (`g_norm`).
    #[serde(default = "super::model_eps")]
    pub gate_eps: f32,
    /// The norm inside every BitLinear.
    #[serde(default = "super::model_eps")]
    pub bitlinear_eps: f32,
    /// Apply the layer's forget-gate lower bound `lb` (the model skips it in layer 0).
    #[serde(default = "yes")]
    pub lower_bound: bool,
}

fn yes() -> bool {
    true
}

fn check_eps(what: &str, eps: f32) -> Result<()> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(invalid(format!("{what} must be finite and >= 0, got {eps}")))
    }
}

#[derive(Debug, Clone)]
pub struct MatmulFreeBlock {
    pub params: MatmulFreeBlockParams,
    pub mlp: GluMlp,
}

impl MatmulFreeBlock {
    pub fn new(p: MatmulFreeBlockParams) -> Result<Self> {
        if p.slots == 0 {
            return Err(invalid("block needs slots >= 1"));
        }
        check_eps("block norm_eps", p.norm_eps)?;
        check_eps("block gate_eps", p.gate_eps)?;
        let mlp = GluMlp::new(GluMlpParams {
            m: p.m,
            d: p.d,
            inner: p.inner,
            dtype: p.dtype,
            bitlinear_eps: p.bitlinear_eps,
        })?;
        Ok(Self { params: p, mlp })
    }

    /// Scratch tensors: name, dtype, length.
    pub fn scratch(&self) -> Vec<(&'static str, DType, usize)> {
        let p = &self.params;
        let mut v = vec![
            ("a", p.dtype, p.m * p.d),
            ("fcg", p.dtype, p.m * 3 * p.d),
            ("o", p.dtype, p.m * p.d),
            ("qa", DType::I8, 3 * p.m * padded_k(p.d)),
            ("sa", DType::F32, 3 * p.m),
        ];
        v.extend(self.mlp.scratch());
        v
    }

    /// Tensors: `x [m, d]` (in place), `attn_norm [d]`, `fcg_norm [3d]`, `fcg_packed`,
    /// `fcg_gamma [3]`, `state [slots, d]` f32 (in place), `slot_ids [m]`, `lb [d]` f32,
    /// `g_norm [d]`, `o_norm [d]`, `o_packed`, `o_gamma [1]`, `mlp_norm [d]`, then the
    /// [`GluMlp`] weights; plus the scratch tensors.
    pub fn run(&self, l: &mut Launch, t: &mut DevMap, status: &mut Status) -> Result<()> {
        let p = &self.params;
        let (dt, m, d) = (p.dtype, p.m, p.d);
        launch_as(
            "core.rmsnorm",
            l,
            json!({"rows": m, "cols": d, "dtype": dt, "eps": p.norm_eps}),
            t,
            &[("x", "x"), ("w", "attn_norm"), ("y", "a")],
            status,
        )?;
        launch_as(
            "ternary.bitlinear",
            l,
            json!({"m": m, "n": d, "k": d, "projections": 3, "dtype": dt, "eps": p.bitlinear_eps}),
            t,
            &[
                ("x", "a"),
                ("norm_w", "fcg_norm"),
                ("packed", "fcg_packed"),
                ("gamma", "fcg_gamma"),
                ("q", "qa"),
                ("s", "sa"),
                ("out", "fcg"),
            ],
            status,
        )?;
        launch_as(
            "ternary.mlgru_step",
            l,
            json!({"batch": m, "d": d, "slots": p.slots, "dtype": dt, "lower_bound": p.lower_bound, "eps": p.gate_eps}),
            t,
            &[("fcg", "fcg"), ("state", "state"), ("slot_ids", "slot_ids"), ("lb", "lb"), ("w", "g_norm"), ("o", "o")],
            status,
        )?;
        launch_as(
            "ternary.bitlinear",
            l,
            json!({"m": m, "n": d, "k": d, "dtype": dt, "eps": p.bitlinear_eps, "accumulate": true}),
            t,
            &[
                ("x", "o"),
                ("norm_w", "o_norm"),
                ("packed", "o_packed"),
                ("gamma", "o_gamma"),
                ("q", "q1"),
                ("s", "s1"),
                ("out", "x"),
            ],
            status,
        )?;
        launch_as(
            "core.rmsnorm",
            l,
            json!({"rows": m, "cols": d, "dtype": dt, "eps": p.norm_eps}),
            t,
            &[("x", "x"), ("w", "mlp_norm"), ("y", "a")],
            status,
        )?;
        self.mlp.run_named(l, t, status, "a", "x", true)
    }
}
