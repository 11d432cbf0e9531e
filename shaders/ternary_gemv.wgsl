// GEMV for M <= 8: one workgroup per stacked output row j, 64 invocations split K, exact i32
// sums reduced in workgroup memory. out = acc * gamma / s (+ out when accumulating).
// Params (binding 0) is MatmulUniform in src/ternary/uniforms.rs; build.rs appends it.

@group(0) @binding(0) var<uniform> p: Params;
// Four words (the 16 int8 activations of one packed weight word) per load.
@group(0) @binding(1) var<storage, read> q: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> s: array<f32>;
@group(0) @binding(3) var<storage, read> packed: array<u32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<{{E}}>;
@group(0) @binding(6) var<storage, read_write> acc_out: array<i32>;

var<workgroup> ired: array<i32, 512>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let total_n = p.projections * p.n;
    let j = wid.x + wid.y * nwg.x;
    if (j >= total_n) { return; }
    let pr = j / p.n;
    var acc = array<i32, 8>(0i, 0i, 0i, 0i, 0i, 0i, 0i, 0i);
    for (var w = tid; w < p.kw; w += 64u) {
        let word = packed[j * p.kw + w];
        for (var mm = 0u; mm < p.m; mm++) {
            let a = q[(pr * p.m + mm) * p.kw + w];
            acc[mm] += dot16(word, a.x, a.y, a.z, a.w);
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
        let mm = tid;
        let total = ired[mm * 64u];
        let g = gamma[pr * p.parts + (j % p.n) / (p.n / p.parts)];
        var v = f32(total) * g / s[pr * p.m + mm];
        let e = p.out_off + mm * p.out_stride + j;
        if (p.accumulate != 0u) { v += ld_out(e); }
        stw_out(e / EPW, 1u << (e % EPW), v, v);
        if (p.write_acc != 0u) { acc_out[mm * total_n + j] = total; }
    }
}

//! include ternary_common.wgsli
