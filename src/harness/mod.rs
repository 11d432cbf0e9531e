//! The `Kernel` trait every registered kernel implements, and what the tool and the tests do
//! with a list of them (`crate::registry::kernels()`; the harness itself knows no family):
//! `verify` (random inputs from a printed seed, poisoned outputs, compare with the oracle),
//! `bench` (fixed iterations, inputs rotated past the L2 size) and `check` (safetensors files
//! written by another implementation).

pub mod bench;
pub mod check;
#[cfg(feature = "cuda")]
pub mod counters;
pub mod proof;
pub mod tensor;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::backend::{Backend, Status};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::plan::{Plan, Role, TensorSpec};

pub use tensor::{get, host, take, DevMap, DevTensor, HostTensor, TensorMap};

/// One verify or bench case: the plan's params exactly (what a `check` file carries), the
/// fixture that shapes its random inputs, and a label for the table.
#[derive(Debug, Clone)]
pub struct Case {
    /// The shape as the report's table shows it.
    pub label: String,
    /// The case's dtype tag for the table (the params carry the dtype the plan uses).
    pub dtype: DType,
    /// The plan's params as JSON, without the fixture.
    pub params: Value,
    /// Knobs for the random inputs, taken out of the params by [`Case::new`].
    pub fixture: Fixture,
    /// A case at a size models use, there to hold the WGSL kernels to a CPU adapter's loop
    /// limit (issue "WGSL at realistic sizes"); its label starts with `realistic:`. `verify`
    /// runs it on every backend but the emulated CUDA device, where it would take minutes.
    pub realistic: bool,
}

impl Case {
    /// A case from a table row. A `"fixture"` member of `params` (an object of input knobs, or a
    /// string naming one flag) is moved out into [`Case::fixture`]: fixtures are declared beside
    /// the case but never reach the plan.
    pub fn new(label: impl Into<String>, dtype: DType, mut params: Value) -> Case {
        let fixture = match params.as_object_mut().and_then(|o| o.remove("fixture")) {
            Some(Value::String(flag)) => Fixture(serde_json::json!({ flag: true })),
            Some(v) => Fixture(v),
            None => Fixture::default(),
        };
        Case { label: label.into(), dtype, params, fixture, realistic: false }
    }

    /// A [`Case::realistic`] case (its label gets the `realistic:` prefix); `dtype` goes into
    /// `params` too when `with_dtype` (the kernels with a float dtype param).
    pub fn realistic(label: &str, dtype: DType, with_dtype: bool, mut params: Value) -> Case {
        if with_dtype {
            params["dtype"] = serde_json::json!(dtype);
        }
        Case { realistic: true, ..Case::new(format!("realistic: {label}"), dtype, params) }
    }
}

/// Knobs for a case's random inputs (bad slots, short `cu_seqlens`, sequence lengths): test
/// data, not kernel parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fixture(pub Value);

impl From<Value> for Fixture {
    fn from(v: Value) -> Self {
        Fixture(v)
    }
}

impl Fixture {
    /// Whether flag `name` is set.
    pub fn is(&self, name: &str) -> bool {
        self.0.get(name).and_then(Value::as_bool).unwrap_or(false)
    }
    /// The list of sizes `name` (empty when absent).
    pub fn sizes(&self, name: &str) -> Vec<usize> {
        self.0
            .get(name)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).map(|v| v as usize).collect())
            .unwrap_or_default()
    }
}

/// What the oracle says the outputs are. An output element that is `NaN` here is a gap in a
/// strided view: the kernel must leave it alone (it stays poisoned). `status` holds the bits
/// the kernel must raise.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Expected values by output name, one f64 per element of the output's span.
    pub outputs: BTreeMap<String, Vec<f64>>,
    /// The status bits the run must raise (0: none).
    pub status: u32,
    /// Per-output tolerance overrides (relative L2), e.g. for long reductions.
    pub rtol: BTreeMap<String, f64>,
    /// Per-output max-abs overrides (relative to `max(|reference|, 1)`), e.g. for an f32 output
    /// computed from intermediates rounded to a 16-bit dtype.
    pub atol: BTreeMap<String, f64>,
}

impl Expected {
    /// One expected output.
    pub fn with(name: &str, values: Vec<f64>) -> Self {
        Expected::default().and(name, values)
    }
    /// Another expected output.
    pub fn and(mut self, name: &str, values: Vec<f64>) -> Self {
        self.outputs.insert(name.into(), values);
        self
    }
}

/// Bytes moved and flops done by one launch, for GB/s, TFLOP/s and the roofline share.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    /// Bytes one launch moves (every tensor read or written once; scratch excluded).
    pub bytes: f64,
    /// Floating-point (or integer multiply-add) operations of one launch.
    pub flops: f64,
}

/// Where a launch goes: the backend, and for wgpu the encoder it is recorded into.
pub struct Launch<'a> {
    /// The backend to launch on.
    pub backend: &'a Backend,
    /// The encoder wgpu launches record into (`None` on the other backends).
    #[cfg(feature = "wgpu")]
    pub encoder: Option<&'a mut wgpu::CommandEncoder>,
}

impl Launch<'_> {
    /// The wgpu encoder, or `Error::InvalidParams` when the launch has none.
    #[cfg(feature = "wgpu")]
    pub fn encoder(&mut self) -> Result<&mut wgpu::CommandEncoder> {
        self.encoder.as_deref_mut().ok_or_else(|| Error::InvalidParams("wgpu launch without an encoder".into()))
    }
}

/// A kernel as the tool sees it: a name, its case tables, and a way to build its plan.
pub trait Kernel: Sync {
    /// The family (`core`, `ternary`, ...), as `verify --family` selects it.
    fn family(&self) -> &'static str;
    /// The kernel's name within its family: the plan's [`Plan::NAME`].
    fn name(&self) -> &'static str;
    /// `family.kernel`, the name `verify --family`, `check` files and reports use.
    fn id(&self) -> String {
        format!("{}.{}", self.family(), self.name())
    }
    /// Shapes and dtypes `verify` runs (odd lengths, strided views, edge cases).
    fn cases(&self) -> Vec<Case>;
    /// Shapes `bench` runs.
    fn bench_cases(&self) -> Vec<Case>;
    /// Shapes `bench --counters` runs on the emulated CUDA device: the bench shapes, or where
    /// one is too large to emulate in seconds, a scaled-down one that says so in its label.
    fn counter_cases(&self) -> Vec<Case> {
        self.bench_cases()
    }
    /// Validates `params` into the kernel's plan, once per case.
    fn prepare(&self, params: &Value) -> Result<Box<dyn Prepared>>;
}

/// A kernel's plan for one case, as the harness drives it.
pub trait Prepared {
    /// The plan's params with every default filled in (what a `check` file may carry).
    fn params(&self) -> Value;
    /// The plan's tensors: outputs and scratch are allocated and poisoned from this list.
    fn tensors(&self) -> Vec<TensorSpec>;
    /// Fresh random inputs (every `In` and `InOut` tensor).
    fn inputs(&self, fixture: &Fixture, rng: &mut Rng) -> Result<TensorMap>;
    /// The f64 oracle on the inputs exactly as the device saw them; it decides the expected
    /// status from the inputs too, so `check` files with bad inputs are judged the same way.
    fn oracle(&self, inputs: &TensorMap) -> Result<Expected>;
    /// Records or launches the kernel on the tensors in `t` (by name).
    fn launch(&self, l: &mut Launch, t: &mut DevMap, status: &mut Status) -> Result<()>;
    /// Bytes and flops of one launch, for the bench's GB/s, TFLOP/s and roofline share.
    fn cost(&self) -> Cost;
    /// Compares the device's outputs with the oracle (every expected output, elementwise).
    fn check(&self, inputs: &TensorMap, expected: &Expected, outputs: &TensorMap) -> Vec<Comparison>;
    /// Host-side checks of input contents (indices, lengths, codes) naming the first bad element:
    /// what `check` reports when a run raised the status word.
    fn validate_inputs(&self, inputs: &TensorMap) -> Result<()>;
}

/// A plan in the registry: everything a kernel adds besides its plan and `run_*` methods. The
/// harness gets the rest (parsing, allocation, poisoning, comparison) from [`Reg`].
pub trait Registered: Plan {
    /// The family the plan belongs to (`core`, ...): the `family` of `family.kernel`.
    const FAMILY: &'static str;
    /// The cases `verify` runs (see [`Kernel::cases`]).
    fn cases() -> Vec<Case>;
    /// The cases `bench` runs (none by default).
    fn bench_cases() -> Vec<Case> {
        vec![]
    }
    /// The cases `bench --counters` runs (see [`Kernel::counter_cases`]): the bench cases by default.
    fn counter_cases() -> Vec<Case> {
        Self::bench_cases()
    }
    /// Fresh random inputs for every `In` and `InOut` tensor (see [`Prepared::inputs`]).
    fn inputs(&self, fixture: &Fixture, rng: &mut Rng) -> Result<TensorMap>;
    /// The f64 oracle's expected outputs and status bits (see [`Prepared::oracle`]).
    fn oracle(&self, inputs: &TensorMap) -> Result<Expected>;
    /// The named-tensor adapter: usually one [`launch!`](crate::launch) line.
    fn launch(&self, l: &mut Launch, t: &mut DevMap, status: &mut Status) -> Result<()>;
    /// Floating-point (or integer multiply-add) operations of one launch; the bytes come from
    /// the tensor list.
    fn flops(&self) -> f64 {
        0.0
    }
    /// Kernels whose integer results hinge on rounding ties, or whose outputs must be checked
    /// against the device's own intermediates, override this.
    fn check(&self, _inputs: &TensorMap, expected: &Expected, outputs: &TensorMap) -> Vec<Comparison> {
        compare_all(expected, outputs)
    }
    /// Kernels that raise the status word name the bad input element here.
    fn validate_inputs(&self, _inputs: &TensorMap) -> Result<()> {
        Ok(())
    }
}

impl<P: Registered> Prepared for P {
    fn params(&self) -> Value {
        serde_json::to_value(Plan::params(self)).unwrap_or(Value::Null)
    }
    fn tensors(&self) -> Vec<TensorSpec> {
        Plan::tensors(self)
    }
    fn inputs(&self, fixture: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        Registered::inputs(self, fixture, rng)
    }
    fn oracle(&self, inputs: &TensorMap) -> Result<Expected> {
        Registered::oracle(self, inputs)
    }
    fn launch(&self, l: &mut Launch, t: &mut DevMap, status: &mut Status) -> Result<()> {
        Registered::launch(self, l, t, status)
    }
    /// Bytes: every tensor read once and written once (in-out tensors both), scratch excluded:
    /// the traffic a kernel that never re-reads would move, the roofline's denominator.
    fn cost(&self) -> Cost {
        let bytes: usize = Plan::tensors(self)
            .iter()
            .map(|s| match s.role {
                Role::In | Role::Out => s.len * s.dtype.size(),
                Role::InOut => 2 * s.len * s.dtype.size(),
                Role::Scratch => 0,
            })
            .sum();
        Cost { bytes: bytes as f64, flops: Registered::flops(self) }
    }
    fn check(&self, inputs: &TensorMap, expected: &Expected, outputs: &TensorMap) -> Vec<Comparison> {
        Registered::check(self, inputs, expected, outputs)
    }
    fn validate_inputs(&self, inputs: &TensorMap) -> Result<()> {
        // Sizes and dtypes first, so a kernel's own check never indexes a short tensor.
        for s in Plan::tensors(self).iter().filter(|s| matches!(s.role, Role::In | Role::InOut)) {
            if let Some(t) = inputs.get(s.name) {
                check_tensor(&format!("input `{}`", s.name), t, s, false)?;
            }
        }
        Registered::validate_inputs(self, inputs)
    }
}

/// The registry entry of plan `P`: `&Reg::<RmsNorm>::NEW` is a `&'static dyn Kernel`.
pub struct Reg<P>(std::marker::PhantomData<fn() -> P>);

impl<P> Reg<P> {
    /// The entry (a zero-sized value, so it can be borrowed as `&'static`).
    pub const NEW: Self = Reg(std::marker::PhantomData);
}

impl<P: Registered> Kernel for Reg<P> {
    fn family(&self) -> &'static str {
        P::FAMILY
    }
    fn name(&self) -> &'static str {
        P::NAME
    }
    fn cases(&self) -> Vec<Case> {
        P::cases()
    }
    fn bench_cases(&self) -> Vec<Case> {
        P::bench_cases()
    }
    fn counter_cases(&self) -> Vec<Case> {
        let c = P::counter_cases();
        if !c.is_empty() {
            return c;
        }
        // No bench shape: the largest verify case, preferring those without a fixture, then
        // those whose fixture only shapes lengths (the rest plant bad input).
        let size = |c: &Case| self.prepare(&c.params).map(|p| p.cost().bytes).unwrap_or(0.0);
        let planted = |c: &Case| {
            let f = c.fixture.0.to_string();
            ["bad", "repeat", "nonfinite", "short", "zeros", "ties", "over", "negative"].iter().any(|w| f.contains(w))
        };
        let rank = |c: &Case| {
            if c.fixture.0.is_null() {
                2
            } else if planted(c) {
                0
            } else {
                1
            }
        };
        P::cases()
            .into_iter()
            .max_by(|a, b| rank(a).cmp(&rank(b)).then(size(a).total_cmp(&size(b))))
            .map(|mut c| {
                c.label = format!("{} (largest verify case; no bench shape)", c.label);
                vec![c]
            })
            .unwrap_or_default()
    }
    fn prepare(&self, params: &Value) -> Result<Box<dyn Prepared>> {
        let plan = P::build(parse(params)?)?;
        budget::check(P::NAME, &Plan::tensors(&plan))?;
        Ok(Box::new(plan))
    }
}

/// The memory a plan's tensors may take on the host before the harness allocates any of them
/// (a params file can size a scratch buffer at gigabytes, and a failed allocation aborts the
/// process instead of returning an error).
pub mod budget {
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::error::{Error, Result};
    use crate::plan::TensorSpec;

    static MAX_BYTES: AtomicU64 = AtomicU64::new(0);

    /// A process-wide cap on one plan's tensor bytes (the tool's `--max-bytes`); 0 removes it.
    pub fn set_max_bytes(bytes: u64) {
        MAX_BYTES.store(bytes, Ordering::Relaxed);
    }

    /// `MemAvailable` from /proc/meminfo (Linux), bytes.
    fn host_available() -> Option<u64> {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb.saturating_mul(1024))
    }

    /// The harness holds each tensor about twice on the host (generated or read, then read back
    /// or compared), so twice the plan's bytes must fit the host's available memory and the
    /// bytes themselves `--max-bytes`. The error names the plan, the largest tensor and both
    /// sizes.
    pub fn check(plan: &str, tensors: &[TensorSpec]) -> Result<()> {
        within(plan, tensors, MAX_BYTES.load(Ordering::Relaxed), host_available())
    }

    /// [`check`] against a given cap (0: none) and available host memory.
    pub fn within(plan: &str, tensors: &[TensorSpec], max_bytes: u64, available: Option<u64>) -> Result<()> {
        let bytes = |t: &TensorSpec| (t.len as u64).saturating_mul(t.dtype.size() as u64);
        let total = tensors.iter().map(bytes).fold(0u64, u64::saturating_add);
        let Some(big) = tensors.iter().max_by_key(|t| bytes(t)) else { return Ok(()) };
        let over = |limit: u64, what: &str| {
            Error::InvalidParams(format!(
                "{plan}: its tensors take {total} bytes (`{}` alone {} bytes), over {what} of {limit} bytes",
                big.name,
                bytes(big)
            ))
        };
        if max_bytes > 0 && total > max_bytes {
            return Err(over(max_bytes, "--max-bytes"));
        }
        if let Some(av) = available.filter(|&av| total.saturating_mul(2) > av) {
            return Err(over(av / 2, "half the host's available memory (the harness keeps each tensor twice)"));
        }
        Ok(())
    }
}

/// Every expected output against the device's, elementwise.
pub fn compare_all(expected: &Expected, outputs: &TensorMap) -> Vec<Comparison> {
    expected
        .outputs
        .iter()
        .map(|(name, want)| match outputs.get(name) {
            Some(got) => compare(name, got, want, expected.rtol.get(name).copied(), expected.atol.get(name).copied()),
            None => Comparison::failed(name, format!("no output `{name}`")),
        })
        .collect()
}

/// A kernel's params and tensors for its first case, for `mllm-kernels list`.
pub fn describe(kernel: &dyn Kernel) -> String {
    let cases = kernel.cases();
    let mut dtypes: Vec<&str> = Vec::new();
    for c in &cases {
        if !dtypes.contains(&c.dtype.name()) {
            dtypes.push(c.dtype.name());
        }
    }
    // Every kernel has all three: the oracle, the WGSL and the CUDA (see GPU_VERIFIED.md for
    // which CUDA kernels have run on a GPU).
    let mut out =
        format!("{} ({} cases; dtypes {}; backends cpu, wgpu, cuda)", kernel.id(), cases.len(), dtypes.join(", "));
    let Some(case) = cases.first() else { return out };
    match kernel.prepare(&case.params) {
        Ok(plan) => {
            // Params as a check file or JSON case spells them, defaults filled in; f32 fields
            // print as f32 (1e-6, not 9.99999997e-7), absent options as `none`.
            let params = plan.params();
            let fields: Vec<String> = params
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| match v {
                            Value::Number(n) if !n.is_u64() && !n.is_i64() => {
                                format!("{k}={}", n.as_f64().unwrap_or(f64::NAN) as f32)
                            }
                            Value::Null => format!("{k}=none"),
                            Value::String(s) => format!("{k}={s}"),
                            other => format!("{k}={other}"),
                        })
                        .collect()
                })
                .unwrap_or_default();
            out += &format!("\n  params: {}", fields.join(" "));
            for s in plan.tensors() {
                out += &format!(
                    "\n  {:<8} {:<12} {:<5} {}",
                    format!("{:?}", s.role).to_lowercase(),
                    s.name,
                    s.dtype.name(),
                    s.len
                );
            }
            out += &format!("\n  (tensor lengths for case \"{}\")", case.label);
        }
        Err(e) => out += &format!("\n  first case does not build: {e}"),
    }
    out
}

/// The families of `kernels`, in order.
pub fn families(kernels: &[&'static dyn Kernel]) -> Vec<&'static str> {
    let mut f: Vec<&'static str> = kernels.iter().map(|k| k.family()).collect();
    f.dedup();
    f
}

/// A plan's params from JSON; errors name the field (`params.d: invalid type ...`), unknown
/// fields are errors (every params struct denies them), and so is anything but an object.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(params: &Value) -> Result<T> {
    if !params.is_object() {
        return Err(Error::InvalidParams(format!("params must be a JSON object, got {params}")));
    }
    serde_path_to_error::deserialize(params.clone()).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!(".{path}") };
        Error::InvalidParams(format!("params{at}: {}", e.inner()))
    })
}

// ---------------------------------------------------------------------------------------------
// Random inputs

/// SplitMix64: small, fast, reproducible from a printed seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole stream is determined by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// Uniform in [0, n) (modulo, slightly biased for huge `n`); 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// `n` standard normals times `scale`.
    pub fn normals(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| self.normal() * scale).collect()
    }
}

/// A seed from the clock, for fresh inputs on every run (printed so a failure can be replayed).
pub fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    (t as u64) ^ ((t >> 64) as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

// ---------------------------------------------------------------------------------------------
// Running and comparing

/// Uploads the inputs, poisons every output and scratch tensor the plan lists, launches,
/// waits, and reads back everything the kernel may have written, with the status.
pub fn execute(plan: &dyn Prepared, backend: &Backend, inputs: &TensorMap) -> Result<(TensorMap, u32)> {
    let specs = plan.tensors();
    let mut dev = stage(plan, backend, inputs)?;
    let mut status = Status::new(backend)?;
    launch_once(plan, backend, &mut dev, &mut status)?;
    backend.synchronize()?;
    let bits = status.take_bits(backend)?;
    let mut out = TensorMap::new();
    for s in specs.iter().filter(|s| s.role != Role::In) {
        out.insert(s.name.to_string(), get(&dev, s.name)?.download(backend)?);
    }
    Ok((out, bits))
}

/// `kernel`'s plan for `params`, run once on `backend` on `inputs` (see [`execute`]).
pub fn run_kernel(
    kernel: &dyn Kernel,
    backend: &Backend,
    params: &Value,
    inputs: &TensorMap,
) -> Result<(TensorMap, u32)> {
    execute(&*kernel.prepare(params)?, backend, inputs)
}

/// Random inputs of `kernel` for `params` and `fixture`, from `seed`.
pub fn random_inputs(kernel: &dyn Kernel, params: &Value, fixture: &Fixture, seed: u64) -> Result<TensorMap> {
    kernel.prepare(params)?.inputs(fixture, &mut Rng::new(seed))
}

/// The inputs on `backend`, with every output and scratch tensor the plan lists (and the inputs
/// do not hold) allocated and poisoned.
pub fn stage(plan: &dyn Prepared, backend: &Backend, inputs: &TensorMap) -> Result<DevMap> {
    let specs = plan.tensors();
    let read = |s: &&TensorSpec| matches!(s.role, Role::In | Role::InOut);
    if let Some(name) = inputs.keys().find(|n| !specs.iter().filter(read).any(|s| s.name == n.as_str())) {
        let known: Vec<&str> = specs.iter().filter(read).map(|s| s.name).collect();
        return Err(Error::InvalidParams(format!("no input tensor `{name}` (inputs: {})", known.join(", "))));
    }
    for s in specs.iter().filter(read) {
        let t =
            inputs.get(s.name).ok_or_else(|| Error::InvalidParams(format!("input tensor `{}` is missing", s.name)))?;
        check_tensor(&format!("input `{}`", s.name), t, s, false)?;
    }
    let mut dev = DevMap::new();
    for (name, t) in inputs {
        dev.insert(name.clone(), DevTensor::upload(backend, t)?);
    }
    for s in specs {
        if matches!(s.role, Role::Out | Role::Scratch) && !inputs.contains_key(s.name) {
            dev.insert(s.name.to_string(), DevTensor::upload(backend, &HostTensor::poison(s.dtype, &[s.len]))?);
        }
    }
    Ok(dev)
}

/// `t` is of the spec's dtype and holds at least (or with `exact`, exactly) its elements.
pub fn check_tensor(what: &str, t: &HostTensor, spec: &TensorSpec, exact: bool) -> Result<()> {
    if t.dtype != spec.dtype {
        return Err(Error::DType(format!("{what} is {}, the kernel takes {}", t.dtype, spec.dtype)));
    }
    let n = t.bytes.len() / t.dtype.size();
    if !t.bytes.len().is_multiple_of(t.dtype.size()) || (if exact { n != spec.len } else { n < spec.len }) {
        let rule = if exact { "exactly" } else { "at least" };
        return Err(Error::Shape { what: format!("{what} (elements, {rule})"), expected: spec.len, got: n });
    }
    Ok(())
}

/// One launch, with a wgpu encoder submitted at once.
pub fn launch_once(plan: &dyn Prepared, backend: &Backend, dev: &mut DevMap, status: &mut Status) -> Result<()> {
    match backend {
        #[cfg(feature = "wgpu")]
        Backend::Wgpu(w) => w.run_blocking(|enc| {
            let mut l = Launch { backend, encoder: Some(enc) };
            plan.launch(&mut l, dev, status)
        }),
        _ => {
            let mut l = Launch {
                backend,
                #[cfg(feature = "wgpu")]
                encoder: None,
            };
            plan.launch(&mut l, dev, status)
        }
    }
}

/// Tolerances per storage dtype (DESIGN.md, Numerics): relative L2 and max-abs (scaled by the
/// largest reference magnitude).
pub fn tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (1e-5, 1e-4),
        DType::F16 => (1e-3, 2e-3),
        DType::BF16 => (5e-3, 1.6e-2),
        _ => (0.0, 0.0),
    }
}

/// How one output compared.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The output's name (or `status` for the status word in `check`).
    pub name: String,
    /// `||got - want|| / ||want||` over the finite reference elements (0 when not measured).
    pub rel_l2: f64,
    /// Largest `|got - want|` over the finite reference elements (0 when not measured).
    pub max_abs: f64,
    /// Whether the output passed.
    pub ok: bool,
    /// Why it failed (the first bad element or the criteria missed), or a remark; may be empty.
    pub note: String,
}

impl Comparison {
    /// A failed comparison of `name` that measured nothing.
    pub fn failed(name: &str, note: impl Into<String>) -> Self {
        Comparison { name: name.into(), rel_l2: 0.0, max_abs: 0.0, ok: false, note: note.into() }
    }
    /// A passed comparison of `name` that measured nothing (exact integer checks).
    pub fn passed(name: &str) -> Self {
        Comparison { name: name.into(), rel_l2: 0.0, max_abs: 0.0, ok: true, note: String::new() }
    }
}

/// Whether `v` sits within 1e-4 (relative) of a round-half boundary, where f32 on a device and
/// f64 in the oracle may round apart.
pub fn near_tie(v: f64) -> bool {
    (v.abs().fract() - 0.5).abs() < 1e-4 * v.abs().max(1.0)
}

/// Integer outputs (quantized values, selected indices) equal, except by one where `tie[i]`.
pub fn compare_ints_with_ties(name: &str, got: &[i64], want: &[i64], tie: &[bool]) -> Comparison {
    if got.len() < want.len() {
        return Comparison::failed(name, format!("{name}: {} values, expected {}", got.len(), want.len()));
    }
    let mut ties = 0;
    for i in 0..want.len() {
        match (got[i] - want[i]).abs() {
            0 => {}
            1 if tie[i] => ties += 1,
            _ => {
                return Comparison::failed(name, format!("{name}[{i}] = {}, expected {} (not a tie)", got[i], want[i]))
            }
        }
    }
    let mut c = Comparison::passed(name);
    if ties > 0 {
        c.note = format!("{ties} rounding ties");
    }
    c
}

/// Compares a device output with the oracle. Integer outputs must be exact. Float outputs must
/// be finite where the reference is, equal where it is infinite, poisoned (NaN) in gaps, and
/// within the relative-L2 and max-abs tolerances.
pub fn compare(name: &str, got: &HostTensor, want: &[f64], rtol: Option<f64>, atol: Option<f64>) -> Comparison {
    let g = got.to_f64();
    let mut c = Comparison { name: name.into(), rel_l2: 0.0, max_abs: 0.0, ok: true, note: String::new() };
    if g.len() < want.len() {
        c.ok = false;
        c.note = format!("{name}: {} elements, expected {}", g.len(), want.len());
        return c;
    }
    let (dr, da) = tolerance(got.dtype);
    let (rtol, atol_rel) = (rtol.unwrap_or(dr), atol.unwrap_or(da));
    if !(rtol.is_finite() && rtol >= 0.0 && atol_rel.is_finite() && atol_rel >= 0.0) {
        c.ok = false;
        c.note = format!("{name}: tolerances must be finite and >= 0 (rtol {rtol}, atol {atol_rel})");
        return c;
    }
    let (mut num, mut den, mut max_ref) = (0.0f64, 0.0f64, 0.0f64);
    let mut bad = None;
    for (i, (&gv, &wv)) in g.iter().zip(want).enumerate() {
        if wv.is_nan() {
            if !gv.is_nan() && bad.is_none() {
                bad = Some(format!(
                    "{name}[{i}] = {gv}, expected NaN (a gap of a strided output, which must stay poisoned, \
                     or an element the NaN policy makes NaN)"
                ));
            }
            continue;
        }
        if wv.is_infinite() {
            if gv != wv && bad.is_none() {
                bad = Some(format!("{name}[{i}] = {gv}, expected {wv}"));
            }
            continue;
        }
        if !gv.is_finite() {
            if bad.is_none() {
                bad = Some(format!("{name}[{i}] = {gv} (unwritten or non-finite), expected {wv}"));
            }
            continue;
        }
        let d = gv - wv;
        num += d * d;
        den += wv * wv;
        max_ref = max_ref.max(wv.abs());
        c.max_abs = c.max_abs.max(d.abs());
        if !got.dtype.is_float() && d != 0.0 && bad.is_none() {
            bad = Some(format!("{name}[{i}] = {gv}, expected exactly {wv}"));
        }
    }
    c.rel_l2 = if den > 0.0 { (num / den).sqrt() } else { num.sqrt() };
    if let Some(b) = bad {
        c.ok = false;
        c.note = b;
    } else if got.dtype.is_float() {
        // The note names each criterion that failed, with its limit.
        let abs_limit = atol_rel * max_ref.max(1.0);
        let mut failed = Vec::new();
        if c.rel_l2 > rtol {
            failed.push(format!("rel L2 {:.3e} > {rtol:.1e}", c.rel_l2));
        }
        if c.max_abs > abs_limit {
            failed.push(format!(
                "max abs {:.3e} > {abs_limit:.3e} (= atol {atol_rel:.1e} x max(|ref|, 1), max |ref| {max_ref:.3})",
                c.max_abs
            ));
        }
        if !failed.is_empty() {
            c.ok = false;
            c.note = format!("{name}: {}", failed.join(", "));
        }
    }
    c
}

/// One verify row.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// `family.kernel`.
    pub kernel: String,
    /// `cpu`, `cuda`, `wgpu`, or `cuda-cpu` for the emulated CUDA device ([`Backend::label`]).
    pub backend: &'static str,
    /// The case's dtype tag.
    pub dtype: DType,
    /// The case's label.
    pub shape: String,
    /// The seed this case's inputs were drawn from (replays the case).
    pub seed: u64,
    /// Worst relative L2 error over the case's outputs.
    pub rel_l2: f64,
    /// Worst max-abs error over the case's outputs.
    pub max_abs: f64,
    /// Every output passed and the status bits were as expected.
    pub ok: bool,
    /// What failed (outputs, status, or the error that stopped the case), `; `-joined.
    pub note: String,
}

/// Runs one case on one backend against the oracle.
pub fn verify_case(kernel: &dyn Kernel, backend: &Backend, case: &Case, seed: u64) -> CaseReport {
    let mut r = CaseReport {
        kernel: kernel.id(),
        backend: backend.label(),
        dtype: case.dtype,
        shape: case.label.clone(),
        seed,
        rel_l2: 0.0,
        max_abs: 0.0,
        ok: false,
        note: String::new(),
    };
    let mut rng = Rng::new(seed);
    let res = kernel.prepare(&case.params).and_then(|plan| {
        let inputs = plan.inputs(&case.fixture, &mut rng)?;
        let expected = plan.oracle(&inputs)?;
        let (outs, bits) = execute(&*plan, backend, &inputs)?;
        Ok((plan, inputs, expected, outs, bits))
    });
    match res {
        Err(e) => r.note = format!("error: {e}"),
        Ok((plan, inputs, expected, outs, bits)) => {
            r.ok = true;
            let mut notes = Vec::new();
            if bits != expected.status {
                r.ok = false;
                notes.push(format!("status 0x{bits:x}, expected 0x{:x}", expected.status));
            }
            for c in plan.check(&inputs, &expected, &outs) {
                r.rel_l2 = r.rel_l2.max(c.rel_l2);
                r.max_abs = r.max_abs.max(c.max_abs);
                if !c.ok {
                    r.ok = false;
                    notes.push(c.note);
                }
            }
            r.note = notes.join("; ");
        }
    }
    r
}

/// Every case of every kernel in `kernels` (of `family`, if given) on `backend`. Seeds derive
/// from `seed`.
pub fn verify(kernels: &[&'static dyn Kernel], backend: &Backend, family: Option<&str>, seed: u64) -> Vec<CaseReport> {
    let mut out = Vec::new();
    verify_each(kernels, backend, family, &[], seed, |r| out.push(r.clone()));
    out
}

/// As [`verify`], handing each row to `on_row` as soon as its case has run (the tool prints
/// them as they come, so a long run on a CPU adapter shows its progress); only cases of
/// `dtypes`' tags where it is not empty. Returns how many [`Case::realistic`] cases it left
/// out: all of them on the emulated CUDA device, none elsewhere.
pub fn verify_each(
    kernels: &[&'static dyn Kernel],
    backend: &Backend,
    family: Option<&str>,
    dtypes: &[DType],
    seed: u64,
    mut on_row: impl FnMut(&CaseReport),
) -> usize {
    let (mut n, mut left_out) = (0u64, 0);
    for &k in kernels {
        if family.is_some_and(|f| f != k.family()) {
            continue;
        }
        for case in k.cases() {
            n += 1;
            if !dtypes.is_empty() && !dtypes.contains(&case.dtype) {
                continue;
            }
            if case.realistic && backend.is_emulated() {
                left_out += 1;
                continue;
            }
            on_row(&verify_case(k, backend, &case, seed.wrapping_add(n.wrapping_mul(0x9e37_79b9))));
        }
    }
    left_out
}

// ---------------------------------------------------------------------------------------------
// Helpers for families' registry code

/// The same shapes for each float dtype: `params` gets its `dtype` filled in.
pub fn float_cases(shapes: &[(&str, Value)]) -> Vec<Case> {
    let mut v = Vec::new();
    for dt in DType::FLOATS {
        for (label, p) in shapes {
            let mut p = p.clone();
            p["dtype"] = serde_json::json!(dt);
            v.push(Case::new(*label, dt, p));
        }
    }
    v
}

/// Adds `extra` to a case row's params: a key `fixture.NAME` sets fixture knob NAME, any other
/// key a param (the case builders of several families share this).
pub fn with_extra(mut params: Value, extra: &Value) -> Value {
    for (k, v) in extra.as_object().into_iter().flatten() {
        match k.strip_prefix("fixture.") {
            Some(f) => params["fixture"][f] = v.clone(),
            None => params[k] = v.clone(),
        }
    }
    params
}

/// Cases of a kernel with no float tensor, under one dtype tag for the table.
pub fn tagged_cases(dtype: DType, rows: &[(&str, Value)]) -> Vec<Case> {
    rows.iter().map(|(l, p)| Case::new(*l, dtype, p.clone())).collect()
}

/// bf16 cases (the bench's dtype): `params` gets its `dtype` filled in.
pub fn bf16_cases(rows: impl IntoIterator<Item = (String, Value)>) -> Vec<Case> {
    rows.into_iter()
        .map(|(l, mut p)| {
            p["dtype"] = serde_json::json!(DType::BF16);
            Case::new(l, DType::BF16, p)
        })
        .collect()
}

/// Integers (codes, indices, accumulators) as the f64 an [`Expected`] output holds.
pub fn as_f64(v: impl IntoIterator<Item = impl Into<f64>>) -> Vec<f64> {
    v.into_iter().map(Into::into).collect()
}

/// Expected output over a strided view: values at the view's elements, NaN (must stay
/// poisoned) in the gaps.
pub fn strided_expected(view: &crate::layout::Rows, dense: &[f64]) -> Vec<f64> {
    let mut v = vec![f64::NAN; view.span()];
    view.scatter(dense, &mut v);
    v
}

/// Expected output over a strided view that was also an input (updated in place): the view's
/// elements are `dense`, the gaps keep the input's values.
pub fn strided_expected_in_place(view: &crate::layout::Rows, dense: &[f64], original: &HostTensor) -> Vec<f64> {
    let mut v = original.to_f64();
    v.truncate(view.span());
    view.scatter(dense, &mut v);
    v
}

/// Random values rounded to `dtype` in a strided view; the gaps hold values too, which a
/// kernel that reads them would pick up.
pub fn random_view(rng: &mut Rng, dtype: DType, view: &crate::layout::Rows, scale: f64) -> HostTensor {
    let v = rng.normals(view.span(), scale);
    HostTensor::from_f64(dtype, &[view.span()], &v)
}

/// The dense `[rows, cols]` values of a view, as f64.
pub fn view_values(view: &crate::layout::Rows, t: &HostTensor) -> Vec<f64> {
    view.gather(&t.to_f64())
}

/// Runs `f` with `T` bound to the Rust type of a float dtype.
#[macro_export]
#[doc(hidden)]
macro_rules! with_float {
    ($dt:expr, $T:ident => $body:expr) => {
        match $dt {
            $crate::DType::F32 => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            $crate::DType::F16 => {
                #[allow(dead_code)]
                type $T = half::f16;
                $body
            }
            $crate::DType::BF16 => {
                #[allow(dead_code)]
                type $T = half::bf16;
                $body
            }
            other => Err($crate::Error::DType(format!("{other} is not a float dtype"))),
        }
    };
}

/// The named-tensor adapter of a registered plan: binds tensors of the map `$dev` by name to
/// the typed arguments of the plan's `run_cpu`, `run_cuda` and `run_wgpu`, in order, and calls
/// the one for `$l`'s backend. Each argument is `name: kind Type`, where kind is `ro` (read),
/// `rw` (written or updated), `opt` (optional read) or `opt_rw` (optional output); `T` is the
/// Rust type of `float $dt`. A trailing `; status` passes the status word last.
///
/// `launch!(self, l, dev, status; float self.params.dtype; x: ro T, w: ro T, y: rw T)`
#[macro_export]
macro_rules! launch {
    ($plan:expr, $l:expr, $dev:expr, $status:expr; float $dt:expr; $($args:tt)*) => {{
        let _ = &$status;
        match $l.backend {
            $crate::Backend::Cpu => $crate::with_float!($dt, T => $crate::launch!(@cpu $plan, $dev, $status; $($args)*)),
            #[cfg(feature = "cuda")]
            $crate::Backend::Cuda(c) => $crate::with_float!($dt, T => $crate::launch!(@cuda c, $plan, $dev, $status; $($args)*)),
            #[cfg(feature = "wgpu")]
            $crate::Backend::Wgpu(w) => {
                let enc = $l.encoder()?;
                $crate::launch!(@wgpu w, enc, $plan, $dev, $status; $($args)*)
            }
        }
    }};
    ($plan:expr, $l:expr, $dev:expr, $status:expr; any; $($args:tt)*) => {{
        let _ = &$status;
        match $l.backend {
            $crate::Backend::Cpu => $crate::launch!(@cpu $plan, $dev, $status; $($args)*),
            #[cfg(feature = "cuda")]
            $crate::Backend::Cuda(c) => $crate::launch!(@cuda c, $plan, $dev, $status; $($args)*),
            #[cfg(feature = "wgpu")]
            $crate::Backend::Wgpu(w) => {
                let enc = $l.encoder()?;
                $crate::launch!(@wgpu w, enc, $plan, $dev, $status; $($args)*)
            }
        }
    }};
    (@cpu $plan:expr, $dev:expr, $status:expr; $($arg:ident : $kind:ident $ty:ty),* $(; $st:ident)?) => {{
        $( $crate::launch!(@cpu_pre $kind $arg $ty, $dev); )*
        $plan.run_cpu($( $crate::launch!(@cpu_arg $kind $arg $ty, $dev) ),* $(, $crate::launch!(@ref $st $status))?)?;
        $( $crate::launch!(@cpu_post $kind $arg, $dev); )*
        Ok(())
    }};
    (@cpu_pre ro $arg:ident $ty:ty, $dev:expr) => {};
    (@cpu_pre opt $arg:ident $ty:ty, $dev:expr) => {};
    (@cpu_pre rw $arg:ident $ty:ty, $dev:expr) => {
        let mut $arg = $crate::harness::host_vec::<$ty>($dev, stringify!($arg))?;
    };
    (@cpu_pre opt_rw $arg:ident $ty:ty, $dev:expr) => {
        let mut $arg = $crate::harness::host_opt::<$ty>($dev, stringify!($arg))?;
    };
    (@cpu_arg ro $arg:ident $ty:ty, $dev:expr) => { &$crate::harness::host_vec::<$ty>($dev, stringify!($arg))? };
    (@cpu_arg opt $arg:ident $ty:ty, $dev:expr) => {
        $crate::harness::host_opt::<$ty>($dev, stringify!($arg))?.as_deref()
    };
    (@cpu_arg rw $arg:ident $ty:ty, $dev:expr) => { &mut $arg };
    (@cpu_arg opt_rw $arg:ident $ty:ty, $dev:expr) => { $arg.as_deref_mut() };
    (@cpu_post ro $arg:ident, $dev:expr) => {};
    (@cpu_post opt $arg:ident, $dev:expr) => {};
    (@cpu_post rw $arg:ident, $dev:expr) => { $crate::harness::host_store($dev, stringify!($arg), &$arg)? };
    (@cpu_post opt_rw $arg:ident, $dev:expr) => {
        if let Some(v) = &$arg {
            $crate::harness::host_store($dev, stringify!($arg), v)?
        }
    };
    (@cuda $c:ident, $plan:expr, $dev:expr, $status:expr; $($arg:ident : $kind:ident $ty:ty),* $(; $st:ident)?) => {{
        $( $crate::launch!(@cuda_pre $kind $arg, $dev); )*
        let shared: &$crate::harness::DevMap = &*$dev;
        let r = (|| -> $crate::Result<()> {
            $plan.run_cuda($c, $c.stream(), $( $crate::launch!(@cuda_arg $kind $arg $ty, shared) ),* $(, $crate::launch!(@mut $st $status))?)
        })();
        $( $crate::launch!(@cuda_post $kind $arg, $dev); )*
        r
    }};
    (@cuda_pre ro $arg:ident, $dev:expr) => {};
    (@cuda_pre opt $arg:ident, $dev:expr) => {};
    (@cuda_pre rw $arg:ident, $dev:expr) => { let mut $arg = $crate::harness::take($dev, stringify!($arg))?; };
    (@cuda_pre opt_rw $arg:ident, $dev:expr) => { let mut $arg = $dev.remove(stringify!($arg)); };
    (@cuda_arg ro $arg:ident $ty:ty, $m:expr) => { $crate::harness::cuda_slice::<$ty>($m, stringify!($arg))? };
    (@cuda_arg opt $arg:ident $ty:ty, $m:expr) => { $crate::harness::cuda_opt::<$ty>($m, stringify!($arg))? };
    (@cuda_arg rw $arg:ident $ty:ty, $m:expr) => { $crate::harness::cuda_slice_mut::<$ty>(&mut $arg, stringify!($arg))? };
    (@cuda_arg opt_rw $arg:ident $ty:ty, $m:expr) => {
        match $arg.as_mut() {
            Some(a) => Some($crate::harness::cuda_slice_mut::<$ty>(a, stringify!($arg))?),
            None => None,
        }
    };
    (@cuda_post ro $arg:ident, $dev:expr) => {};
    (@cuda_post opt $arg:ident, $dev:expr) => {};
    (@cuda_post rw $arg:ident, $dev:expr) => { $dev.insert(stringify!($arg).into(), $arg); };
    (@cuda_post opt_rw $arg:ident, $dev:expr) => {
        if let Some(v) = $arg {
            $dev.insert(stringify!($arg).into(), v);
        }
    };
    (@wgpu $w:ident, $enc:ident, $plan:expr, $dev:expr, $status:expr; $($arg:ident : $kind:ident $ty:ty),* $(; $st:ident)?) => {
        $plan.run_wgpu($w, $enc, $( $crate::launch!(@wgpu_arg $kind $arg, $dev) ),* $(, $crate::launch!(@ref $st $status))?)
    };
    (@wgpu_arg ro $arg:ident, $dev:expr) => { $crate::harness::wgpu_view($dev, stringify!($arg))? };
    (@wgpu_arg rw $arg:ident, $dev:expr) => { $crate::harness::wgpu_view($dev, stringify!($arg))? };
    (@wgpu_arg opt $arg:ident, $dev:expr) => { $crate::harness::wgpu_opt($dev, stringify!($arg))? };
    (@wgpu_arg opt_rw $arg:ident, $dev:expr) => { $crate::harness::wgpu_opt($dev, stringify!($arg))? };
    (@ref status $status:expr) => { &*$status };
    (@mut status $status:expr) => { &mut *$status };
}

/// Host tensor contents as `T`, for CPU launches.
pub fn host_vec<T: bytemuck::Pod>(t: &DevMap, name: &str) -> Result<Vec<T>> {
    match get(t, name)? {
        DevTensor::Host(h) => h.to_vec::<T>(),
        #[allow(unreachable_patterns)]
        _ => Err(Error::InvalidParams(format!("`{name}` is not a host tensor"))),
    }
}

/// Host tensor contents as `T` if the map holds `name`.
pub fn host_opt<T: bytemuck::Pod>(t: &DevMap, name: &str) -> Result<Option<Vec<T>>> {
    if t.contains_key(name) {
        host_vec(t, name).map(Some)
    } else {
        Ok(None)
    }
}

/// Stores `v` into the host tensor `name`.
pub fn host_store<T: bytemuck::Pod>(t: &mut DevMap, name: &str, v: &[T]) -> Result<()> {
    match t.get_mut(name) {
        Some(DevTensor::Host(h)) => {
            h.bytes = bytemuck::cast_slice(v).to_vec();
            Ok(())
        }
        _ => Err(Error::InvalidParams(format!("`{name}` is not a host tensor"))),
    }
}

/// The wgpu view of a device tensor.
#[cfg(feature = "wgpu")]
pub fn wgpu_view<'a>(t: &'a DevMap, name: &str) -> Result<crate::backend::wgpu::WgpuTensor<'a>> {
    match get(t, name)? {
        DevTensor::Wgpu { buffer, .. } => Ok(buffer.into()),
        _ => Err(Error::InvalidParams(format!("`{name}` is not a wgpu tensor"))),
    }
}

/// The wgpu view of `name` if the map holds it.
#[cfg(feature = "wgpu")]
pub fn wgpu_opt<'a>(t: &'a DevMap, name: &str) -> Result<Option<crate::backend::wgpu::WgpuTensor<'a>>> {
    if t.contains_key(name) {
        wgpu_view(t, name).map(Some)
    } else {
        Ok(None)
    }
}

/// Typed access to CUDA tensors, for generic launches.
#[cfg(feature = "cuda")]
pub trait CudaElem: cudarc::driver::DeviceRepr + Sized {
    /// The slice if `t` holds elements of `Self`, else `None`.
    fn slice(t: &tensor::CudaTensor) -> Option<&cudarc::driver::CudaSlice<Self>>;
    /// The slice, mutable, if `t` holds elements of `Self`, else `None`.
    fn slice_mut(t: &mut tensor::CudaTensor) -> Option<&mut cudarc::driver::CudaSlice<Self>>;
}

#[cfg(feature = "cuda")]
macro_rules! cuda_elem {
    ($t:ty, $v:ident) => {
        impl CudaElem for $t {
            fn slice(t: &tensor::CudaTensor) -> Option<&cudarc::driver::CudaSlice<Self>> {
                match t {
                    tensor::CudaTensor::$v(s) => Some(s),
                    _ => None,
                }
            }
            fn slice_mut(t: &mut tensor::CudaTensor) -> Option<&mut cudarc::driver::CudaSlice<Self>> {
                match t {
                    tensor::CudaTensor::$v(s) => Some(s),
                    _ => None,
                }
            }
        }
    };
}

#[cfg(feature = "cuda")]
cuda_elem!(f32, F32);
#[cfg(feature = "cuda")]
cuda_elem!(half::f16, F16);
#[cfg(feature = "cuda")]
cuda_elem!(half::bf16, BF16);
#[cfg(feature = "cuda")]
cuda_elem!(i8, I8);
#[cfg(feature = "cuda")]
cuda_elem!(i32, I32);
#[cfg(feature = "cuda")]
cuda_elem!(u32, U32);
#[cfg(feature = "cuda")]
cuda_elem!(crate::dtype::E4M3, F8);

/// The CUDA slice behind `name`, typed.
#[cfg(feature = "cuda")]
pub fn cuda_slice<'a, T: CudaElem>(t: &'a DevMap, name: &str) -> Result<&'a cudarc::driver::CudaSlice<T>> {
    match get(t, name)? {
        DevTensor::Cuda(c) => T::slice(c).ok_or_else(|| Error::DType(format!("`{name}` has another dtype"))),
        _ => Err(Error::InvalidParams(format!("`{name}` is not a CUDA tensor"))),
    }
}

/// The CUDA slice behind `name` if the map holds it.
#[cfg(feature = "cuda")]
pub fn cuda_opt<'a, T: CudaElem>(t: &'a DevMap, name: &str) -> Result<Option<&'a cudarc::driver::CudaSlice<T>>> {
    if t.contains_key(name) {
        cuda_slice(t, name).map(Some)
    } else {
        Ok(None)
    }
}

/// The CUDA slice inside a taken tensor, typed and mutable.
#[cfg(feature = "cuda")]
pub fn cuda_slice_mut<'a, T: CudaElem>(
    t: &'a mut DevTensor,
    name: &str,
) -> Result<&'a mut cudarc::driver::CudaSlice<T>> {
    match t {
        DevTensor::Cuda(c) => T::slice_mut(c).ok_or_else(|| Error::DType(format!("`{name}` has another dtype"))),
        _ => Err(Error::InvalidParams(format!("`{name}` is not a CUDA tensor"))),
    }
}
