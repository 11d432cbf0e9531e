// Unpermute: one workgroup per token gathers its stream rows (weighted, plus the shared row
// unweighted), so no two workgroups write one location. 16-bit outputs are stored one lane at a
// time (atomic AND/OR on the word). Params (binding 0) is UnpermuteUniform in src/mom/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<{{E}}>;
@group(0) @binding(2) var<storage, read> inverse: array<i32>;
@group(0) @binding(3) var<storage, read> weights: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<{{E}}>;
@group(0) @binding(5) var<storage, read_write> status: array<atomic<u32>>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let t = wid.x + wid.y * nwg.x;
    if (t >= p.tokens) { return; }
    for (var c = tid; c < p.width; c += 64u) {
        var a = 0.0;
        for (var j = 0u; j < p.n; j++) {
            let r = inverse[p.inv_off + t * p.n + j];
            if (r == -1) { continue; }
            if (r < 0 || u32(r) >= p.rows) {
                atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE);
                continue;
            }
            var wt = 1.0;
            if (j < p.topk) { wt = weights[p.w_off + t * p.topk + j]; }
            a += wt * ld_y(p.y_off + u32(r) * p.width + c);
        }
        let e = p.out_off + t * p.width + c;
        stw_out(e / EPW, 1u << (e % EPW), a, a);
    }
}
