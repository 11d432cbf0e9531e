// MLGRU output gate per token: o = rmsnorm(g) * w * silu(h), one workgroup per token.
// Params (binding 0) is GateNormUniform in src/ternary/uniforms.rs; build.rs appends it.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> fcg: array<{{E}}>;
@group(0) @binding(2) var<storage, read> ws: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<{{E}}>;
@group(0) @binding(4) var<storage, read_write> o: array<{{E}}>;

var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let t = wid.x + wid.y * nwg.x;
    if (t >= p.tokens) { return; }
    let gb = p.fcg_off + t * p.fcg_stride + 2u * p.d;
    var ss = 0.0;
    for (var c = tid; c < p.d; c += 64u) {
        let g = ld_fcg(gb + c);
        ss += g * g;
    }
    red[tid] = ss;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (tid < s) { red[tid] += red[tid + s]; }
        workgroupBarrier();
    }
    let inv = 1.0 / sqrt(red[0] / f32(p.d) + p.eps);
    let ob = t * p.d;
    for (var wd = ob / EPW + tid; wd <= (ob + p.d - 1u) / EPW; wd += 64u) {
        var v = array<f32, 2>(0.0, 0.0);
        var m = 0u;
        for (var l = 0u; l < EPW; l++) {
            let e = wd * EPW + l;
            if (e >= ob && e < ob + p.d) {
                let c = e - ob;
                v[l] = ld_fcg(gb + c) * inv * ld_w(c) * silu_f(ws[e]);
                m |= 1u << l;
            }
        }
        stw_o(wd, m, v[0], v[1]);
    }
}

//! include ternary_common.wgsli
