// Transport for sequence pieces, one workgroup per (64 columns of P, head h, stream s):
// invocation c keeps column c of P in the stream's `trans` entry, starting from I; per row:
// kp = k.P[:,c], P[:,c] = e^g (P[:,c] - beta k kp) (no beta term for the linear rule), and
// qt = q.P[:,c] (q, k normalized, q scaled). Params (binding 0) is PieceUniform in
// src/mom/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<{{E}}>;
@group(0) @binding(2) var<storage, read> gb: array<f32>;
@group(0) @binding(3) var<storage, read> cu: array<i32>;
@group(0) @binding(4) var<storage, read> slot_ids: array<i32>;
@group(0) @binding(5) var<storage, read_write> trans: array<f32>;
@group(0) @binding(6) var<storage, read_write> qt: array<{{E}}>;
@group(0) @binding(7) var<storage, read_write> status: array<atomic<u32>>;

var<workgroup> qs: array<f32, 256>;
var<workgroup> ks: array<f32, 256>;
var<workgroup> red: array<f32, 64>;
var<workgroup> fault_w: u32;
var<workgroup> r0_w: u32;
var<workgroup> r1_w: u32;
var<workgroup> e_w: u32;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let id = wid.x + wid.y * nwg.x;
    let ktiles = (p.head_k + 63u) / 64u;
    if (id >= ktiles * p.heads * p.streams) { return; }
    let h = (id / ktiles) % p.heads;
    let s = id / (ktiles * p.heads);
    let c = (id % ktiles) * 64u + tid;
    let live = c < p.head_k;
    let hk = p.heads * p.head_k;
    let w = 2u * hk + p.heads * p.head_v;
    stream_setup(tid, s);
    let fault = workgroupUniformLoad(&fault_w);
    let rs = workgroupUniformLoad(&r0_w);
    let re = workgroupUniformLoad(&r1_w);
    let e = workgroupUniformLoad(&e_w);
    if (fault != 0u) { return; }
    let pb = p.tr_off + (e * p.heads + h) * p.head_k * p.head_k;
    // A dispatch walks rows w0..w1 of the stream (the host splits long streams over
    // dispatches, the product carrying over in `trans`); the first starts from the identity.
    if (live && p.w0 == 0u) {
        for (var i = 0u; i < p.head_k; i++) { trans[pb + i * p.head_k + c] = select(0.0, 1.0, i == c); }
    }
    for (var r = min(rs + p.w0, re); r < min(rs + p.w1, re); r++) {
        let rb = p.qkv_off + r * w;
        var sq = 0.0;
        var sk = 0.0;
        for (var i = tid; i < p.head_k; i += 64u) {
            let a = ld_qkv(rb + h * p.head_k + i);
            let b = ld_qkv(rb + hk + h * p.head_k + i);
            qs[i] = a;
            ks[i] = b;
            sq += a * a;
            sk += b * b;
        }
        let rq = p.scale * inverseSqrt(wg_sum(tid, sq) + 1e-6);
        let rk = inverseSqrt(wg_sum(tid, sk) + 1e-6);
        let eg = exp(gb[p.gb_off + r * 2u * p.heads + h]);
        let beta = gb[p.gb_off + r * 2u * p.heads + p.heads + h];
        if (live) {
            var kp = 0.0;
            for (var i = 0u; i < p.head_k; i++) { kp += ks[i] * rk * trans[pb + i * p.head_k + c]; }
            var acc = 0.0;
            for (var i = 0u; i < p.head_k; i++) {
                var d = 0.0;
                if (p.rule == 0u) { d = beta * ks[i] * rk * kp; }
                let v = eg * (trans[pb + i * p.head_k + c] - d);
                trans[pb + i * p.head_k + c] = v;
                acc += qs[i] * rq * v;
            }
            let q = p.qt_off + r * hk + h * p.head_k + c;
            stw_qt(q / EPW, 1u << (q % EPW), acc, acc);
        }
        workgroupBarrier();
    }
}

// Sums v over the workgroup (its barriers also publish qs and ks).
fn wg_sum(tid: u32, v: f32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var w = 32u; w > 0u; w >>= 1u) {
        if (tid < w) { red[tid] += red[tid + w]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

//! include mom_piece.wgsli
