// Merge, pass 1: one invocation per (sequence b, candidate j) finds j's kept slot: its own when
// kept (binary search of the ascending selection), else the kept candidate of highest cosine
// similarity (ties to the lower slot; a zero vector has similarity 0); -1 past the segment,
// when nothing is kept, or for a bad sequence. Params (binding 0) is MergeUniform in
// src/visual/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<{{E}}>;
@group(0) @binding(2) var<storage, read> cu: array<i32>;
@group(0) @binding(3) var<storage, read> seg: array<i32>;
@group(0) @binding(4) var<storage, read> idx: array<i32>;
@group(0) @binding(5) var<storage, read> count: array<i32>;
@group(0) @binding(6) var<storage, read_write> assign: array<i32>;
@group(0) @binding(7) var<storage, read_write> status: array<atomic<u32>>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let tiles = (p.n + 63u) / 64u;
    let id = wid.x + wid.y * nwg.x;
    if (id >= tiles * p.seqs) { return; }
    let b = id / tiles;
    let j = (id % tiles) * 64u + tid;
    if (j >= p.n) { return; }
    let a = p.assign_off + b * p.n;
    var c = -1;
    if (offsets_ok()) { c = kept(b); }
    if (c < 0) {
        atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE);
        assign[a + j] = -1;
        return;
    }
    if (i32(j) >= seg[p.seg_off + 2u * b + 1u] || c == 0) {
        assign[a + j] = -1;
        return;
    }
    let kb = p.idx_off + b * p.n;
    var lo = 0u;
    var hi = u32(c);
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (idx[kb + mid] < i32(j)) { lo = mid + 1u; } else { hi = mid; }
    }
    if (lo < u32(c) && idx[kb + lo] == i32(j)) {
        assign[a + j] = i32(lo);
        return;
    }
    let base = u32(cu[p.cu_off + b] + seg[p.seg_off + 2u * b]);
    let xj = p.x_off + (base + j) * p.dim;
    var nj = 0.0;
    for (var d = 0u; d < p.dim; d++) { nj += ld_x(xj + d) * ld_x(xj + d); }
    var best = 0;
    var bv = 0.0;
    for (var e = 0u; e < u32(c); e++) {
        let xe = p.x_off + (base + u32(idx[kb + e])) * p.dim;
        var dot = 0.0;
        var ne = 0.0;
        for (var d = 0u; d < p.dim; d++) {
            let u = ld_x(xe + d);
            dot += ld_x(xj + d) * u;
            ne += u * u;
        }
        var cs = 0.0;
        if (nj != 0.0 && ne != 0.0) { cs = dot / sqrt(nj * ne); }
        if (e == 0u || cs > bv) {
            best = i32(e);
            bv = cs;
        }
    }
    assign[a + j] = best;
}

//! include visual_common.wgsli
//! include visual_kept.wgsli
