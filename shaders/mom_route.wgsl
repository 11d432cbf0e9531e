// The MoM router, one invocation per token: top-k of the logits by repeated selection of the
// largest remaining one (strictly larger wins, so ties go to the lower index), weights the
// softmax over the kept logits (= the renormalized top-k of the full softmax). A row with a
// non-finite logit routes to memories 0..k with equal weights and raises VALUE_OUT_OF_RANGE.
// Params (binding 0) is RouteUniform in src/mom/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<{{E}}>;
@group(0) @binding(2) var<storage, read_write> idx: array<i32>;
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;
@group(0) @binding(4) var<storage, read_write> status: array<atomic<u32>>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let t = (wid.x + wid.y * nwg.x) * 64u + tid;
    if (t >= p.tokens) { return; }
    let base = p.logits_off + t * p.memories;
    let o = t * p.topk;
    var ok = true;
    for (var m = 0u; m < p.memories; m++) {
        if (!finite_bits(ld_logits(base + m))) { ok = false; }
    }
    if (!ok) {
        atomicOr(&status[0], ST_VALUE_OUT_OF_RANGE);
        for (var j = 0u; j < p.topk; j++) {
            idx[p.idx_off + o + j] = i32(j);
            weights[p.w_off + o + j] = 1.0 / f32(p.topk);
        }
        return;
    }
    var taken = array<u32, 2>(0u, 0u);
    var top = 0.0;
    var sum = 0.0;
    for (var j = 0u; j < p.topk; j++) {
        var best = 0u;
        var bv = 0.0;
        var found = false;
        for (var m = 0u; m < p.memories; m++) {
            let v = ld_logits(base + m);
            let free = ((taken[m / 32u] >> (m % 32u)) & 1u) == 0u;
            if (free && (!found || v > bv)) {
                best = m;
                bv = v;
                found = true;
            }
        }
        taken[best / 32u] |= 1u << (best % 32u);
        if (j == 0u) { top = bv; }
        let e = exp(bv - top);
        idx[p.idx_off + o + j] = i32(best);
        weights[p.w_off + o + j] = e;
        sum += e;
    }
    for (var j = 0u; j < p.topk; j++) {
        weights[p.w_off + o + j] = weights[p.w_off + o + j] / sum;
    }
}
