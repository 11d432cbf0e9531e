// Fused BitLinear for decode (M <= 8): each workgroup normalizes and quantizes the M input
// rows for its projection into workgroup memory, then computes 16 of that projection's output
// rows. Workgroup 0 of each projection also writes q and s out.
// Params (binding 0) is FusedUniform in src/ternary/uniforms.rs; build.rs appends it.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<{{E}}>;
@group(0) @binding(2) var<storage, read> nw: array<{{E}}>;
@group(0) @binding(3) var<storage, read> packed: array<u32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<{{E}}>;
@group(0) @binding(6) var<storage, read_write> q_out: array<u32>;
@group(0) @binding(7) var<storage, read_write> s_out: array<f32>;

const QS_WORDS: u32 = 3456u;
const ROWS: u32 = 16u;
var<workgroup> red: array<f32, 64>;
var<workgroup> qs: array<u32, QS_WORDS>;
var<workgroup> ss: array<f32, 8>;
var<workgroup> ired: array<i32, 512>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.row_groups * p.projections) { return; }
    let pr = g / p.row_groups;
    let rg = g % p.row_groups;
    let qrow = p.kw * 4u;
    let nwb = pr * p.k;
    for (var mm = 0u; mm < p.m; mm++) {
        let xb = p.x_off + mm * p.x_stride;
        let sc = norm_scales(xb, nwb, p.k, p.eps, false, tid);
        for (var wd = tid; wd < qrow; wd += 64u) { qs[mm * qrow + wd] = quant_word(xb, nwb, p.k, false, sc, wd); }
        if (tid == 0u) { ss[mm] = sc.y; }
    }
    workgroupBarrier();
    if (rg == 0u) {
        for (var i = tid; i < p.m * qrow; i += 64u) { q_out[pr * p.m * qrow + i] = qs[i]; }
        if (tid < p.m) { s_out[pr * p.m + tid] = ss[tid]; }
    }
    for (var r = 0u; r < ROWS; r++) {
        let jl = rg * ROWS + r;
        if (jl >= p.n) { break; }
        let j = pr * p.n + jl;
        var acc = array<i32, 8>(0i, 0i, 0i, 0i, 0i, 0i, 0i, 0i);
        for (var w = tid; w < p.kw; w += 64u) {
            let word = packed[j * p.kw + w];
            for (var mm = 0u; mm < p.m; mm++) {
                let a = mm * qrow + w * 4u;
                acc[mm] += dot16(word, qs[a], qs[a + 1u], qs[a + 2u], qs[a + 3u]);
            }
        }
        for (var mm = 0u; mm < 8u; mm++) { ired[mm * 64u + tid] = acc[mm]; }
        workgroupBarrier();
        for (var st = 32u; st > 0u; st >>= 1u) {
            if (tid < st) {
                for (var mm = 0u; mm < 8u; mm++) { ired[mm * 64u + tid] += ired[mm * 64u + tid + st]; }
            }
            workgroupBarrier();
        }
        if (tid < p.m) {
            let gm = gamma[pr * p.parts + jl / (p.n / p.parts)];
            var v = f32(ired[tid * 64u]) * gm / ss[tid];
            let e = p.out_off + tid * p.out_stride + j;
            if (p.accumulate != 0u) { v += ld_out(e); }
            stw_out(e / EPW, 1u << (e % EPW), v, v);
        }
        workgroupBarrier();
    }
}

//! include ternary_common.wgsli
//! include ternary_normquant.wgsli
