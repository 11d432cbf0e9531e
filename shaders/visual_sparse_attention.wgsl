// Attention over the kept tokens, one workgroup per (token i, head h): the keys of i's sequence
// in tiles of 64 with an online softmax; key j is visible iff pos[j] <= pos[i]. A row that sees
// nothing gets o = 0, lse = -inf. Params (binding 0) is SparseUniform in src/visual/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<{{E}}>;
@group(0) @binding(2) var<storage, read> k: array<{{E}}>;
@group(0) @binding(3) var<storage, read> v: array<{{E}}>;
@group(0) @binding(4) var<storage, read> cu: array<i32>;
@group(0) @binding(5) var<storage, read> pos: array<i32>;
@group(0) @binding(6) var<storage, read_write> o: array<{{E}}>;
@group(0) @binding(7) var<storage, read_write> lse: array<f32>;
@group(0) @binding(8) var<storage, read_write> status: array<atomic<u32>>;

const NEG: f32 = -3.0e38;

var<workgroup> qs: array<f32, 256>;
var<workgroup> pw: array<f32, 64>;
var<workgroup> red: array<f32, 64>;
var<workgroup> ok_w: u32;
var<workgroup> b_w: u32;

fn wg_max(tid: u32, x: f32) -> f32 {
    red[tid] = x;
    workgroupBarrier();
    for (var w = 32u; w > 0u; w >>= 1u) {
        if (tid < w) { red[tid] = max(red[tid], red[tid + w]); }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn wg_sum(tid: u32, x: f32) -> f32 {
    red[tid] = x;
    workgroupBarrier();
    for (var w = 32u; w > 0u; w >>= 1u) {
        if (tid < w) { red[tid] += red[tid + w]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.tokens * p.heads) { return; }
    let i = id / p.heads;
    let h = id % p.heads;
    let g = p.heads / p.kv_heads;
    if (tid == 0u) {
        ok_w = select(0u, 1u, offsets_ok());
        b_w = 0u;
        if (ok_w != 0u) {
            while (b_w + 1u < p.seqs && i32(i) >= cu[p.cu_off + b_w + 1u]) { b_w++; }
        } else {
            atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE);
        }
    }
    if (workgroupUniformLoad(&ok_w) == 0u) { return; }
    let b = workgroupUniformLoad(&b_w);
    let j_lo = u32(cu[p.cu_off + b]);
    let j_hi = u32(cu[p.cu_off + b + 1u]);
    for (var d = tid; d < p.dim; d += 64u) { qs[d] = ld_q(p.q_off + (i * p.heads + h) * p.dim + d); }
    workgroupBarrier();
    let pi = pos[p.pos_off + i];
    var m = NEG;
    var l = 0.0;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var j0 = j_lo; j0 < j_hi; j0 += 64u) {
        let j = j0 + tid;
        var s = NEG;
        if (j < j_hi && pos[p.pos_off + j] <= pi) {
            var dot = 0.0;
            for (var d = 0u; d < p.dim; d++) { dot += qs[d] * ld_k(p.k_off + (j * p.kv_heads + h / g) * p.dim + d); }
            s = dot * p.scale;
        }
        let mn = max(m, wg_max(tid, s));
        var pj = 0.0;
        if (s > NEG) { pj = exp(s - mn); }
        var corr = 0.0;
        if (m > NEG) { corr = exp(m - mn); }
        pw[tid] = pj;
        l = l * corr + wg_sum(tid, pj);
        m = mn;
        let nt = min(64u, j_hi - j0);
        for (var e = 0u; e < 4u; e++) {
            let d = tid + e * 64u;
            if (d < p.dim) {
                var a = acc[e] * corr;
                for (var t = 0u; t < nt; t++) { a += pw[t] * ld_v(p.v_off + ((j0 + t) * p.kv_heads + h / g) * p.dim + d); }
                acc[e] = a;
            }
        }
        workgroupBarrier();
    }
    for (var e = 0u; e < 4u; e++) {
        let d = tid + e * 64u;
        if (d < p.dim) {
            var val = 0.0;
            if (l > 0.0) { val = acc[e] / l; }
            let oe = p.o_off + (i * p.heads + h) * p.dim + d;
            stw_o(oe / EPW, 1u << (oe % EPW), val, val);
        }
    }
    if (tid == 0u) {
        var x = bitcast<f32>(0xff800000u);
        if (l > 0.0) { x = m + log(l); }
        lse[p.lse_off + i * p.heads + h] = x;
    }
}

//! include visual_common.wgsli
