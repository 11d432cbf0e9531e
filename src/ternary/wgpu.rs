//! wgpu dispatches for the ternary family (`shaders/ternary_*.wgsl`). i8 tensors travel as u32
//! words (four values each; rows are padded to multiples of 16, so no word is shared).

use super::uniforms::{
    CarryUniform, FusedUniform, GammaUniform, GateNormUniform, MatmulUniform, PackUniform, QuantPackUniform,
    QuantUniform, RowAbsSumUniform, ScanUniform, StepUniform,
};
use super::{
    padded_k, words_per_row, BitLinear, MlgruScan, MlgruStep, Pack, QuantizeWeights, RmsNormQuant, TernaryMatmul,
    Unpack,
};
use crate::backend::loops::{strided, tree, word_walk};
use crate::backend::wgpu::{WgpuBackend, WgpuTensor};
use crate::backend::Status;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::plan::Plan;

/// Workgroup bytes the fused BitLinear shader holds for quantized rows (3456 words).
pub const FUSED_WG_BYTES: usize = 3456 * 4;

fn n_u32(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::InvalidParams(format!("{what} = {v} exceeds u32")))
}

impl QuantizeWeights {
    /// Three dispatches: row |W| sums into `ws`, gammas, packing. Offsets must be 0 here.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        w: WgpuTensor,
        ws: WgpuTensor,
        packed: WgpuTensor,
        gamma: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let offs = [
            self.bind(&w, "w", mb)?,
            self.bind(&ws, "ws", mb)?,
            self.bind(&packed, "packed", mb)?,
            self.bind(&gamma, "gamma", mb)?,
        ];
        if offs.iter().any(|&o| o != 0) {
            return Err(Error::InvalidParams("quantize_weights takes whole buffers (offset 0) on wgpu".into()));
        }
        let st = status.wgpu_buffer("ternary")?;
        let (n, k, kw, rpp) =
            (n_u32("n", p.n)?, n_u32("k", p.k)?, words_per_row(p.k) as u32, (p.n / p.partitions) as u32);
        gpu.dispatch(
            enc,
            &format!("ternary_row_abs_sum_{}", p.dtype),
            bytemuck::bytes_of(&RowAbsSumUniform { n, k }),
            &[w.buffer, ws.buffer, st],
            n,
            strided(p.k as u64, 64) + tree(64),
        )?;
        gpu.dispatch(
            enc,
            "ternary_gamma",
            bytemuck::bytes_of(&GammaUniform { parts: p.partitions as u32, rows_per_part: rpp, k }),
            &[ws.buffer, gamma.buffer],
            p.partitions as u32,
            strided(u64::from(rpp), 64) + tree(64),
        )?;
        let u = QuantPackUniform { n, k, kw, rows_per_part: rpp };
        let groups = n_u32("words", self.packed_len().div_ceil(64))?;
        gpu.dispatch(
            enc,
            &format!("ternary_quant_pack_{}", p.dtype),
            bytemuck::bytes_of(&u),
            &[w.buffer, gamma.buffer, packed.buffer],
            groups,
            16,
        )
    }
}

impl Pack {
    /// One dispatch recorded into `enc`: packs `t` (i8 `[n, padded_k(k)]`) into `packed`; values
    /// outside {-1, 0, 1} clamp and raise `VALUE_OUT_OF_RANGE`. Both start at offset 0 (else
    /// `Error::InvalidParams`); a short buffer is `Error::Shape`.
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        t: WgpuTensor,
        packed: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        self.pair(
            gpu,
            enc,
            "ternary_pack",
            (t, DType::I8, self.values_len()),
            (packed, DType::U32, self.packed_len()),
            status,
        )
    }

    fn unpack_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        packed: WgpuTensor,
        t: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        self.pair(
            gpu,
            enc,
            "ternary_unpack",
            (packed, DType::U32, self.packed_len()),
            (t, DType::I8, self.values_len()),
            status,
        )
    }

    fn pair(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        module: &str,
        a: (WgpuTensor, DType, usize),
        b: (WgpuTensor, DType, usize),
        status: &Status,
    ) -> Result<()> {
        let mb = gpu.max_binding();
        if a.0.check(module, a.1, a.2, mb)? != 0 || b.0.check(module, b.1, b.2, mb)? != 0 {
            return Err(Error::InvalidParams(format!("{module} takes whole buffers (offset 0) on wgpu")));
        }
        let p = &self.params;
        let u = PackUniform { n: n_u32("n", p.n)?, k: n_u32("k", p.k)?, kw: words_per_row(p.k) as u32 };
        let groups = n_u32("words", self.packed_len().div_ceil(64))?;
        gpu.dispatch(
            enc,
            module,
            bytemuck::bytes_of(&u),
            &[a.0.buffer, b.0.buffer, status.wgpu_buffer("ternary")?],
            groups,
            // A word's 16 codes, and unpack's four output words.
            16 + 4,
        )
    }
}

impl Unpack {
    /// Unpacks to padded i8 rows; code 3 reads as 0 and raises `BAD_TERNARY_CODE`.
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        packed: WgpuTensor,
        t: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        self.pack.unpack_wgpu(gpu, enc, packed, t, status)
    }
}

impl RmsNormQuant {
    /// One dispatch recorded into `enc`; tensors as [`RmsNormQuant::run_cpu`]. `x` may start at an
    /// offset; `w`, `q` and `s` must start at 0 (else `Error::InvalidParams`). A short buffer is
    /// `Error::Shape`.
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        x: WgpuTensor,
        w: WgpuTensor,
        q: WgpuTensor,
        s: WgpuTensor,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let x_off = self.bind(&x, "x", mb)?;
        if self.bind(&w, "norm_w", mb)? != 0 || self.bind(&q, "q", mb)? != 0 || self.bind(&s, "s", mb)? != 0 {
            return Err(Error::InvalidParams("rmsnorm_quant: w, q and s must start at offset 0 on wgpu".into()));
        }
        let u = QuantUniform {
            m: p.m as u32,
            k: p.k as u32,
            kp: padded_k(p.k) as u32,
            projections: p.projections as u32,
            x_off,
            x_stride: self.x.stride as u32,
            eps: p.eps,
            glu: u32::from(p.glu),
        };
        let groups = n_u32("rows", p.m * p.projections)?;
        gpu.dispatch(
            enc,
            &format!("ternary_rmsnorm_quant_{}", p.dtype),
            bytemuck::bytes_of(&u),
            &[x.buffer, w.buffer, q.buffer, s.buffer],
            groups,
            norm_quant_loops(p.k),
        )
    }
}

impl TernaryMatmul {
    /// GEMV for M <= 8, tiled GEMM otherwise. `acc_out` only with `write_acc`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        q: WgpuTensor,
        s: WgpuTensor,
        packed: WgpuTensor,
        gamma: WgpuTensor,
        out: WgpuTensor,
        acc_out: Option<WgpuTensor>,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let out_off = self.bind(&out, "out", mb)?;
        let zero = [
            self.bind(&q, "q", mb)?,
            self.bind(&s, "s", mb)?,
            self.bind(&packed, "packed", mb)?,
            self.bind(&gamma, "gamma", mb)?,
        ];
        if zero.iter().any(|&o| o != 0) {
            return Err(Error::InvalidParams(
                "ternary_matmul: q, s, packed and gamma must start at offset 0 on wgpu".into(),
            ));
        }
        let dummy = gpu.dummy()?;
        let acc_buf = match (p.write_acc, acc_out) {
            (false, _) => &dummy,
            (true, Some(a)) => {
                if self.bind(&a, "acc", mb)? != 0 {
                    return Err(Error::InvalidParams("ternary_matmul acc must start at offset 0".into()));
                }
                a.buffer
            }
            (true, None) => {
                return Err(Error::InvalidParams("write_acc is set but no accumulator buffer was given".into()))
            }
        };
        // The GEMM's tiles are 64 x 64 (shaders/ternary_gemm.wgsl); the GEMV ignores them.
        let (nt, mt) = (p.n.div_ceil(64), p.m.div_ceil(64));
        let u = MatmulUniform {
            m: p.m as u32,
            n: p.n as u32,
            kw: words_per_row(p.k) as u32,
            projections: p.projections as u32,
            parts: p.partitions as u32,
            out_off,
            out_stride: self.out.stride as u32,
            accumulate: u32::from(p.accumulate),
            write_acc: u32::from(p.write_acc),
            n_tiles: nt as u32,
            m_tiles: mt as u32,
        };
        let (module, groups) = if self.uses_gemv() {
            (format!("ternary_gemv_{}", p.dtype), n_u32("rows", self.total_n())?)
        } else {
            (format!("ternary_gemm_{}", p.dtype), n_u32("tiles", nt * mt * p.projections)?)
        };
        gpu.dispatch(
            enc,
            &module,
            bytemuck::bytes_of(&u),
            &[q.buffer, s.buffer, packed.buffer, gamma.buffer, out.buffer, acc_buf],
            groups,
            self.wgpu_loops(),
        )
    }
}

impl BitLinear {
    /// One fused dispatch for M <= 8 when the quantized rows fit in workgroup memory, else two.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        x: WgpuTensor,
        norm_w: WgpuTensor,
        packed: WgpuTensor,
        gamma: WgpuTensor,
        q: WgpuTensor,
        s: WgpuTensor,
        out: WgpuTensor,
    ) -> Result<()> {
        if !self.fused(FUSED_WG_BYTES, false) {
            self.quant.run_wgpu(gpu, enc, x, norm_w, q, s)?;
            return self.matmul.run_wgpu(gpu, enc, q, s, packed, gamma, out, None);
        }
        let (p, mb, mm) = (&self.params, gpu.max_binding(), &self.matmul);
        let x_off = self.bind(&x, "x", mb)?;
        let out_off = self.bind(&out, "out", mb)?;
        let zero = [
            self.bind(&norm_w, "norm_w", mb)?,
            self.bind(&packed, "packed", mb)?,
            self.bind(&gamma, "gamma", mb)?,
            self.bind(&q, "q", mb)?,
            self.bind(&s, "s", mb)?,
        ];
        if zero.iter().any(|&o| o != 0) {
            return Err(Error::InvalidParams("bitlinear: weights, q and s must start at offset 0 on wgpu".into()));
        }
        let row_groups = p.n.div_ceil(16);
        let u = FusedUniform {
            m: p.m as u32,
            n: p.n as u32,
            k: p.k as u32,
            kw: words_per_row(p.k) as u32,
            projections: p.projections as u32,
            parts: p.partitions as u32,
            x_off,
            x_stride: self.quant.x.stride as u32,
            out_off,
            out_stride: mm.out.stride as u32,
            accumulate: u32::from(p.accumulate),
            eps: p.eps,
            row_groups: row_groups as u32,
        };
        gpu.dispatch(
            enc,
            &format!("ternary_bitlinear_gemv_{}", p.dtype),
            bytemuck::bytes_of(&u),
            &[x.buffer, norm_w.buffer, packed.buffer, gamma.buffer, out.buffer, q.buffer, s.buffer],
            n_u32("groups", row_groups * p.projections)?,
            // Per input row its norm and quantization into workgroup memory, the copy out,
            // then 16 output rows, each a GEMV row.
            p.m as u64 * (1 + norm_quant_loops(p.k))
                + strided((p.m * words_per_row(p.k) * 4) as u64, 64)
                + 16 * (1 + gemv_loops(p.m, p.k)),
        )
    }
}

fn lb_buffer<'a>(
    wanted: bool,
    lb: Option<WgpuTensor<'a>>,
    plan: &impl Plan,
    mb: u64,
    dummy: &'a wgpu::Buffer,
) -> Result<&'a wgpu::Buffer> {
    match (wanted, lb) {
        (false, None) => Ok(dummy),
        (false, Some(_)) => Err(Error::InvalidParams("lb was given but the plan has no lower bound".into())),
        (true, Some(l)) => {
            if plan.bind(&l, "lb", mb)? != 0 {
                return Err(Error::InvalidParams("mlgru lower bound must start at offset 0".into()));
            }
            Ok(l.buffer)
        }
        (true, None) => Err(Error::InvalidParams("lower_bound is set but no lb buffer was given".into())),
    }
}

impl MlgruStep {
    /// One dispatch recorded into `enc`; the tensors [`MlgruStep`] lists. `fcg` may start at an
    /// offset, the others at 0; `lb` exactly when `lower_bound` (else `Error::InvalidParams`).
    /// Bad slot ids raise their bit in `status` (a wgpu one).
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        fcg: WgpuTensor,
        state: WgpuTensor,
        slot_ids: WgpuTensor,
        lb: Option<WgpuTensor>,
        w: WgpuTensor,
        o: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let fcg_off = self.bind(&fcg, "fcg", mb)?;
        let zero = [
            self.bind(&state, "state", mb)?,
            self.bind(&slot_ids, "slot_ids", mb)?,
            self.bind(&w, "w", mb)?,
            self.bind(&o, "o", mb)?,
        ];
        if zero.iter().any(|&v| v != 0) {
            return Err(Error::InvalidParams(
                "mlgru_step: state, slot_ids, w and o must start at offset 0 on wgpu".into(),
            ));
        }
        let dummy = gpu.dummy()?;
        let lbb = lb_buffer(p.lower_bound, lb, self, mb, &dummy)?;
        let u = StepUniform {
            batch: p.batch as u32,
            d: p.d as u32,
            slots: p.slots as u32,
            fcg_off,
            fcg_stride: self.fcg.stride as u32,
            has_lb: u32::from(p.lower_bound),
            eps: p.eps,
        };
        gpu.dispatch(
            enc,
            &format!("ternary_mlgru_step_{}", p.dtype),
            bytemuck::bytes_of(&u),
            &[fcg.buffer, state.buffer, slot_ids.buffer, lbb, w.buffer, o.buffer, status.wgpu_buffer("ternary")?],
            n_u32("batch", p.batch)?,
            // The repeated-slot scan, the gate norm, the channel walk.
            strided(p.batch as u64, 64) + strided(p.d as u64, 64) + tree(64) + word_walk(p.d as u64, p.dtype, 64),
        )
    }
}

impl MlgruScan {
    /// Four dispatches, as the CUDA path: local scans, carry (updates the pool), apply, gate.
    #[allow(clippy::too_many_arguments)]
    pub fn run_wgpu(
        &self,
        gpu: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        fcg: WgpuTensor,
        cu: WgpuTensor,
        state: WgpuTensor,
        slot_ids: WgpuTensor,
        lb: Option<WgpuTensor>,
        w: WgpuTensor,
        ws: WgpuTensor,
        o: WgpuTensor,
        status: &Status,
    ) -> Result<()> {
        let (p, mb) = (&self.params, gpu.max_binding());
        let fcg_off = self.bind(&fcg, "fcg", mb)?;
        let zero = [
            self.bind(&cu, "cu_seqlens", mb)?,
            self.bind(&state, "state", mb)?,
            self.bind(&slot_ids, "slot_ids", mb)?,
            self.bind(&w, "w", mb)?,
            self.bind(&ws, "ws", mb)?,
            self.bind(&o, "o", mb)?,
        ];
        if zero.iter().any(|&v| v != 0) {
            return Err(Error::InvalidParams("mlgru_scan: every tensor but fcg must start at offset 0 on wgpu".into()));
        }
        let st = status.wgpu_buffer("ternary")?;
        let dummy = gpu.dummy()?;
        let lbb = lb_buffer(p.lower_bound, lb, self, mb, &dummy)?;
        let chunks = self.chunks();
        let a_off = (p.tokens * p.d) as u32;
        let h_off = a_off + (p.seqs * chunks * p.d) as u32;
        let u = ScanUniform {
            d: p.d as u32,
            tokens: p.tokens as u32,
            max_len: p.max_len as u32,
            chunk: p.chunk as u32,
            chunks: chunks as u32,
            seqs: p.seqs as u32,
            fcg_off,
            fcg_stride: self.fcg.stride as u32,
            has_lb: u32::from(p.lower_bound),
            a_off,
            h_off,
        };
        let nb = p.d.div_ceil(64);
        let dt = p.dtype;
        // The local and apply passes walk one chunk of a channel; the carry walks the chunks.
        let scan_budget = p.chunk as u64;
        gpu.refuse_loops(&format!("ternary_scan_local_{dt}"), scan_budget, || "use a smaller `chunk`".into())?;
        let carry_budget = (p.seqs + chunks) as u64;
        gpu.refuse_loops("ternary_scan_carry", carry_budget, || "use a larger `chunk` (fewer chunks)".into())?;
        let groups = n_u32("scan groups", nb * chunks * p.seqs)?;
        gpu.dispatch(
            enc,
            &format!("ternary_scan_local_{dt}"),
            bytemuck::bytes_of(&u),
            &[fcg.buffer, cu.buffer, lbb, ws.buffer, st],
            groups,
            scan_budget,
        )?;
        let c = CarryUniform {
            d: u.d,
            tokens: u.tokens,
            max_len: u.max_len,
            chunks: u.chunks,
            seqs: u.seqs,
            slots: p.slots as u32,
            a_off,
            h_off,
        };
        gpu.dispatch(
            enc,
            "ternary_scan_carry",
            bytemuck::bytes_of(&c),
            &[cu.buffer, slot_ids.buffer, state.buffer, ws.buffer, st],
            n_u32("carry groups", nb * p.seqs)?,
            carry_budget,
        )?;
        gpu.dispatch(
            enc,
            &format!("ternary_scan_apply_{dt}"),
            bytemuck::bytes_of(&u),
            &[fcg.buffer, cu.buffer, lbb, ws.buffer, st],
            groups,
            scan_budget,
        )?;
        let g = GateNormUniform {
            tokens: p.tokens as u32,
            d: p.d as u32,
            fcg_off,
            fcg_stride: self.fcg.stride as u32,
            eps: p.eps,
        };
        gpu.dispatch(
            enc,
            &format!("ternary_gate_norm_{dt}"),
            bytemuck::bytes_of(&g),
            &[fcg.buffer, ws.buffer, w.buffer, o.buffer],
            n_u32("tokens", p.tokens)?,
            strided(p.d as u64, 64) + tree(64) + word_walk(p.d as u64, dt, 64),
        )
    }
}

/// Loop budget of `norm_scales` and the quantized row's word loop (ternary_normquant.wgsli):
/// the sum of squares and the absolute maximum over K, three 64-lane reductions (the sum, the
/// maximum, the non-finite flag), four values a word.
fn norm_quant_loops(k: usize) -> u64 {
    let k = k as u64;
    2 * strided(k, 64) + 3 * tree(64) + strided(padded_k(k as usize) as u64 / 4, 64) * (1 + 4)
}

/// Loop budget of one GEMV output row (ternary_gemv.wgsl): per packed word the M activation
/// rows, then the eight-row reduction.
fn gemv_loops(m: usize, k: usize) -> u64 {
    strided(words_per_row(k) as u64, 64) * (1 + m as u64) + 8 + tree(64) * (1 + 8)
}

impl TernaryMatmul {
    /// The loop budget of the GEMV or GEMM dispatch (ternary_gemm.wgsl: per K step of 2 packed
    /// words, the two staging loads and the 8 staged u32; the 4 x 4 epilogue).
    fn wgpu_loops(&self) -> u64 {
        let p = &self.params;
        if self.uses_gemv() {
            return gemv_loops(p.m, p.k);
        }
        let step = 1 + 2 + 8;
        4 + 16 + strided(words_per_row(p.k) as u64, 2) * step
    }
}
