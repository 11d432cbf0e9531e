// Merge, pass 2: one workgroup per (kept slot e, sequence b), invocations over the hidden size:
// the mean of the candidates assigned to e, summed in index order (one owner per output, so the
// mean is exact whatever the order of work); zeros past the kept count. 16-bit stores one lane
// at a time. Params (binding 0) is MergeUniform in src/visual/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<{{E}}>;
@group(0) @binding(2) var<storage, read> cu: array<i32>;
@group(0) @binding(3) var<storage, read> seg: array<i32>;
@group(0) @binding(4) var<storage, read> idx: array<i32>;
@group(0) @binding(5) var<storage, read> count: array<i32>;
@group(0) @binding(6) var<storage, read> assign: array<i32>;
@group(0) @binding(7) var<storage, read_write> merged: array<{{E}}>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.n * p.seqs) { return; }
    let b = id / p.n;
    let e = id % p.n;
    let ob = p.merged_off + (b * p.n + e) * p.dim;
    var c = -1;
    if (offsets_ok()) { c = kept(b); }
    if (c <= 0 || i32(e) >= c) {
        for (var d = tid; d < p.dim; d += 64u) { put(ob + d, 0.0); }
        return;
    }
    let len = u32(seg[p.seg_off + 2u * b + 1u]);
    let base = u32(cu[p.cu_off + b] + seg[p.seg_off + 2u * b]);
    for (var d = tid; d < p.dim; d += 64u) {
        var sum = 0.0;
        var cnt = 0.0;
        for (var j = 0u; j < len; j++) {
            if (assign[p.assign_off + b * p.n + j] == i32(e)) {
                sum += ld_x(p.x_off + (base + j) * p.dim + d);
                cnt += 1.0;
            }
        }
        put(ob + d, sum / cnt);
    }
}

fn put(i: u32, v: f32) {
    stw_merged(i / EPW, 1u << (i % EPW), v, v);
}

//! include visual_common.wgsli
//! include visual_kept.wgsli
