// The fused decode step, one workgroup per (head h, sequence b): for each of b's routed
// memories and the shared one, the conv step of head h's q, k, v channels (conv state of
// (memory, slot), kept in f32), L2 norms, gates, then the gated delta rule on every state
// column of head h in place, summing weight * S^T q. Only this workgroup touches those channels
// and columns of b's pool entries; a bad or shared slot skips the sequence (output 0).
// Params (binding 0) is StepUniform in src/mom/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<{{E}}>;
@group(0) @binding(2) var<storage, read> conv_w: array<{{E}}>;
@group(0) @binding(3) var<storage, read> gp: array<f32>;
@group(0) @binding(4) var<storage, read> idx: array<i32>;
@group(0) @binding(5) var<storage, read> weights: array<f32>;
@group(0) @binding(6) var<storage, read> slot_ids: array<i32>;
@group(0) @binding(7) var<storage, read_write> state: array<f32>;
@group(0) @binding(8) var<storage, read_write> conv_state: array<f32>;
@group(0) @binding(9) var<storage, read_write> o: array<{{E}}>;
@group(0) @binding(10) var<storage, read_write> status: array<atomic<u32>>;

var<workgroup> qs: array<f32, 256>;
var<workgroup> ks: array<f32, 256>;
var<workgroup> vs: array<f32, 256>;
var<workgroup> red: array<f32, 64>;
var<workgroup> fault_w: u32;
var<workgroup> m_w: i32;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.heads * p.batch) { return; }
    let h = id % p.heads;
    let b = id / p.heads;
    let hk = p.heads * p.head_k;
    let hv = p.heads * p.head_v;
    let chan = 2u * hk + hv;
    let mems = p.memories + p.has_shared;
    let ob = p.o_off + b * hv + h * p.head_v;
    if (tid == 0u) { fault_w = slot_fault(b); }
    let fault = workgroupUniformLoad(&fault_w);
    if (fault != 0u) {
        if (tid == 0u) { atomicOr(&status[0], fault); }
        for (var c = tid; c < p.head_v; c += 64u) { put_o(ob + c, 0.0); }
        return;
    }
    let slot = u32(slot_ids[p.slot_off + b]);
    let xb = p.x_off + b * p.pw;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var j = 0u; j < p.topk + p.has_shared; j++) {
        if (tid == 0u) {
            m_w = i32(p.memories);
            if (j < p.topk) { m_w = choice(b, j); }
        }
        let mi = workgroupUniformLoad(&m_w);
        if (mi < 0) {
            if (tid == 0u) { atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE); }
            continue;
        }
        let m = u32(mi);
        var wt = 1.0;
        if (j < p.topk) { wt = weights[p.w_off + b * p.topk + j]; }
        let e = m * p.slots + slot;
        for (var i = tid; i < 2u * p.head_k + p.head_v; i += 64u) {
            var c = h * p.head_k + i;
            var col = c;
            if (i >= 2u * p.head_k) {
                c = 2u * hk + h * p.head_v + (i - 2u * p.head_k);
                col = hk + mems * hk + m * hv + (c - 2u * hk);
            } else if (i >= p.head_k) {
                c = hk + h * p.head_k + (i - p.head_k);
                col = hk + m * hk + (c - hk);
            }
            let sb = p.cs_off + (e * chan + c) * p.conv;
            let xin = ld_x(xb + col);
            var a = 0.0;
            for (var t = 0u; t < p.conv; t++) {
                var v = xin;
                if (t + 1u < p.conv) { v = conv_state[sb + t + 1u]; }
                conv_state[sb + t] = v;
                a += ld_conv_w(p.cw_off + c * p.conv + t) * v;
            }
            let y = a / (1.0 + exp(-a));
            if (i < p.head_k) { qs[i] = y; }
            else if (i < 2u * p.head_k) { ks[i - p.head_k] = y; }
            else { vs[i - 2u * p.head_k] = y; }
        }
        workgroupBarrier();
        let rq = p.scale * inverseSqrt(block_sum(tid, 0u) + 1e-6);
        let rk = inverseSqrt(block_sum(tid, 1u) + 1e-6);
        let gcol = hk + mems * (hk + hv) + m * p.heads + h;
        let g = -exp(gp[p.gp_off + h]) * softplus(ld_x(xb + gcol) + gp[p.gp_off + p.heads + h]);
        let beta = 1.0 / (1.0 + exp(-ld_x(xb + gcol + mems * p.heads)));
        let eg = exp(g);
        let sbase = p.st_off + (e * p.heads + h) * p.head_k * p.head_v;
        for (var n = 0u; n < 4u; n++) {
            let c = tid + 64u * n;
            if (c >= p.head_v) { break; }
            var u = vs[c];
            if (p.rule == 0u) {
                var kv = 0.0;
                for (var i = 0u; i < p.head_k; i++) { kv += ks[i] * state[sbase + sidx(i, c)]; }
                u = beta * (vs[c] - eg * rk * kv);
            }
            var oc = 0.0;
            for (var i = 0u; i < p.head_k; i++) {
                let si = sbase + sidx(i, c);
                let sn = eg * state[si] + ks[i] * rk * u;
                state[si] = sn;
                oc += sn * qs[i] * rq;
            }
            acc[n] += wt * oc;
        }
        workgroupBarrier();
    }
    for (var n = 0u; n < 4u; n++) {
        let c = tid + 64u * n;
        if (c < p.head_v) { put_o(ob + c, acc[n]); }
    }
}

// The sum over the workgroup of q^2 (which = 0) or k^2 (which = 1).
fn block_sum(tid: u32, which: u32) -> f32 {
    var s = 0.0;
    for (var i = tid; i < p.head_k; i += 64u) {
        var v = qs[i];
        if (which == 1u) { v = ks[i]; }
        s += v * v;
    }
    red[tid] = s;
    workgroupBarrier();
    for (var w = 32u; w > 0u; w >>= 1u) {
        if (tid < w) { red[tid] += red[tid + w]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn put_o(e: u32, v: f32) {
    stw_o(e / EPW, 1u << (e % EPW), v, v);
}

fn sidx(i: u32, c: u32) -> u32 {
    if (p.v_first != 0u) { return c * p.head_k + i; }
    return i * p.head_v + c;
}

fn softplus(v: f32) -> f32 {
    if (v > 20.0) { return v; }
    return log(1.0 + exp(v));
}

fn choice(b: u32, j: u32) -> i32 {
    let m = idx[p.idx_off + b * p.topk + j];
    if (m < 0 || u32(m) >= p.memories) { return -1; }
    for (var i = 0u; i < j; i++) {
        if (idx[p.idx_off + b * p.topk + i] == m) { return -1; }
    }
    return m;
}

fn slot_fault(b: u32) -> u32 {
    let s = slot_ids[p.slot_off + b];
    if (s < 0 || u32(s) >= p.slots) { return ST_SLOT_OUT_OF_RANGE; }
    for (var j = 0u; j < p.batch; j++) {
        if (j != b && slot_ids[p.slot_off + j] == s) { return ST_SLOT_REPEATED; }
    }
    return 0u;
}
