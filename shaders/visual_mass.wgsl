// Attention mass, pass 2: one invocation per (sequence b, candidate j) owns mass[b][*][j] and
// loops over the sequence's query rows (and heads), so the sums need no atomics and do not
// depend on scheduling. Params (binding 0) is MassUniform in src/visual/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<{{E}}>;
@group(0) @binding(2) var<storage, read> qpos: array<i32>;
@group(0) @binding(3) var<storage, read> qw: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<{{E}}>;
@group(0) @binding(5) var<storage, read> cu: array<i32>;
@group(0) @binding(6) var<storage, read> seg: array<i32>;
@group(0) @binding(7) var<storage, read> lse: array<f32>;
@group(0) @binding(8) var<storage, read_write> mass: array<f32>;
@group(0) @binding(9) var<storage, read_write> status: array<atomic<u32>>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let tiles = (p.n + 63u) / 64u;
    let id = wid.x + wid.y * nwg.x;
    if (id >= tiles * p.seqs) { return; }
    let b = id / tiles;
    let j = (id % tiles) * 64u + tid;
    if (j >= p.n) { return; }
    var ho_n = p.heads;
    if (p.reduce != 0u) { ho_n = 1u; }
    if (!offsets_ok()) {
        atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE);
        for (var ho = 0u; ho < ho_n; ho++) { mass[p.mass_off + (b * ho_n + ho) * p.n + j] = 0.0; }
        return;
    }
    let c0 = cu[p.cu_off + b];
    let c1 = cu[p.cu_off + b + 1u];
    let s0 = seg[p.seg_off + 2u * b];
    let len = seg[p.seg_off + 2u * b + 1u];
    let seg_ok = s0 >= 0 && len >= 0 && s0 <= c1 - c0 - len && u32(len) <= p.n;
    if (!seg_ok) { atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE); }
    if (tid == 0u) {
        for (var r = 0u; r < p.rows; r++) {
            let t = qpos[p.qpos_off + r];
            if (t < 0 || u32(t) >= p.tokens) { atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE); }
        }
    }
    let g = p.heads / p.kv_heads;
    for (var ho = 0u; ho < ho_n; ho++) {
        var acc = 0.0;
        if (seg_ok && i32(j) < len) {
            let key = u32(c0 + s0) + j;
            for (var r = 0u; r < p.rows; r++) {
                let t = qpos[p.qpos_off + r];
                if (t < 0 || u32(t) >= p.tokens || t < c0 || t >= c1 || key > u32(t)) { continue; }
                var h0 = ho;
                var h1 = ho + 1u;
                if (p.reduce != 0u) {
                    h0 = 0u;
                    h1 = p.heads;
                }
                for (var h = h0; h < h1; h++) {
                    var s = 0.0;
                    for (var d = 0u; d < p.dim; d++) {
                        s += ld_q(p.q_off + (r * p.heads + h) * p.dim + d) * ld_k(p.k_off + (key * p.kv_heads + h / g) * p.dim + d);
                    }
                    acc += qw[p.qw_off + r] * exp(s * p.scale - lse[p.lse_off + r * p.heads + h]);
                }
            }
        }
        mass[p.mass_off + (b * ho_n + ho) * p.n + j] = acc;
    }
}

//! include visual_common.wgsli
