// Attention mass, pass 1: one workgroup per (query row r, head h) computes the natural-log LSE
// of the row over every key it sees (its sequence's keys up to its own position), GQA.
// Params (binding 0) is MassUniform in src/visual/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<{{E}}>;
@group(0) @binding(2) var<storage, read> qpos: array<i32>;
@group(0) @binding(3) var<storage, read> k: array<{{E}}>;
@group(0) @binding(4) var<storage, read> cu: array<i32>;
@group(0) @binding(5) var<storage, read_write> ws: array<f32>;

var<workgroup> qs: array<f32, 256>;
var<workgroup> rm: array<f32, 64>;
var<workgroup> rl: array<f32, 64>;
var<workgroup> ok_w: u32;
var<workgroup> b_w: u32;

const NEG_INF: f32 = -3.0e38;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.rows * p.heads) { return; }
    let r = id / p.heads;
    let h = id % p.heads;
    let g = p.heads / p.kv_heads;
    if (tid == 0u) {
        let t = qpos[p.qpos_off + r];
        ok_w = select(0u, 1u, t >= 0 && u32(t) < p.tokens && offsets_ok());
        b_w = 0u;
        if (ok_w != 0u) {
            while (b_w + 1u < p.seqs && t >= cu[p.cu_off + b_w + 1u]) { b_w++; }
        }
    }
    if (workgroupUniformLoad(&ok_w) == 0u) { return; }
    let b = workgroupUniformLoad(&b_w);
    let t = u32(qpos[p.qpos_off + r]);
    for (var d = tid; d < p.dim; d += 64u) { qs[d] = ld_q(p.q_off + (r * p.heads + h) * p.dim + d); }
    workgroupBarrier();
    var m = NEG_INF;
    var l = 0.0;
    for (var j = u32(cu[p.cu_off + b]) + tid; j <= t; j += 64u) {
        var s = 0.0;
        for (var d = 0u; d < p.dim; d++) { s += qs[d] * ld_k(p.k_off + (j * p.kv_heads + h / g) * p.dim + d); }
        s *= p.scale;
        let mn = max(m, s);
        l = l * exp(m - mn) + exp(s - mn);
        m = mn;
    }
    rm[tid] = m;
    rl[tid] = l;
    workgroupBarrier();
    for (var w = 32u; w > 0u; w >>= 1u) {
        if (tid < w) {
            let mn = max(rm[tid], rm[tid + w]);
            rl[tid] = rl[tid] * exp(rm[tid] - mn) + rl[tid + w] * exp(rm[tid + w] - mn);
            rm[tid] = mn;
        }
        workgroupBarrier();
    }
    if (tid == 0u) { ws[p.ws_off + r * p.heads + h] = rm[0] + log(rl[0]); }
}

//! include visual_common.wgsli
