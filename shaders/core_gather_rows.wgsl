// out[i] = src[idx[i]], one workgroup per output row. An index outside [0, src_rows) writes a
// zero row and raises ST_INDEX_OUT_OF_RANGE in the plan's status word instead of reading out of bounds.
// Params (binding 0) is GatherUniform in src/core/uniforms.rs; build.rs appends it.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<{{E}}>;
@group(0) @binding(2) var<storage, read> idx: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<{{E}}>;
@group(0) @binding(4) var<storage, read_write> status: array<atomic<u32>>;

const WG: u32 = 64u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let i = wid.x + wid.y * nwg.x;
    if (i >= p.rows) { return; }
    let j = idx[p.idx_off + i];
    let ok = j >= 0 && u32(j) < p.src_rows;
    if (!ok && tid == 0u) { atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE); }
    let sb = p.src_off + select(0u, u32(j), ok) * p.src_stride;
    let e0 = p.out_off + i * p.out_stride;
    let e1 = e0 + p.cols;
    for (var wd = e0 / EPW + tid; wd <= (e1 - 1u) / EPW; wd += WG) {
        var v = array<f32, 2>(0.0, 0.0);
        var m = 0u;
        for (var l = 0u; l < EPW; l++) {
            let e = wd * EPW + l;
            if (e >= e0 && e < e1) {
                if (ok) { v[l] = ld_src(sb + e - e0); }
                m |= 1u << l;
            }
        }
        stw_out(wd, m, v[0], v[1]);
    }
}
