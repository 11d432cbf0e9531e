// MLGRU prefill, pass 2: chain the chunks of each sequence from its pool state; each chunk's
// summary slot becomes its incoming state and the pool slot gets the final state. A sequence
// whose slot is outside the pool or named by another sequence runs from zero and leaves the
// pool alone.
// Params (binding 0) is CarryUniform in src/ternary/uniforms.rs; build.rs appends it.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> cu: array<i32>;
@group(0) @binding(2) var<storage, read> slot_ids: array<i32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read_write> ws: array<f32>;
@group(0) @binding(5) var<storage, read_write> status: array<atomic<u32>>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let nb = (p.d + 63u) / 64u;
    let g = wid.x + wid.y * nwg.x;
    if (g >= nb * p.seqs) { return; }
    let c = (g % nb) * 64u + tid;
    let b = g / nb;
    let t0 = cu[b];
    let t1 = cu[b + 1u];
    if (cu[0] != 0i || u32(cu[p.seqs]) != p.tokens || t0 < 0i || t1 < t0 || u32(t1) > p.tokens || u32(t1 - t0) > p.max_len) {
        atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE);
        return;
    }
    if (c >= p.d) { return; }
    let slot = slot_ids[b];
    var repeated = false;
    for (var j = 0u; j < p.seqs; j++) {
        if (j != b && slot_ids[j] == slot) { repeated = true; }
    }
    let in_pool = slot >= 0i && u32(slot) < p.slots;
    let ok = in_pool && !repeated;
    if (!in_pool) { atomicOr(&status[0], ST_SLOT_OUT_OF_RANGE); } else if (repeated) { atomicOr(&status[0], ST_SLOT_REPEATED); }
    var carry = 0.0;
    if (ok) { carry = state[u32(slot) * p.d + c]; }
    for (var ch = 0u; ch < p.chunks; ch++) {
        let si = (b * p.chunks + ch) * p.d + c;
        let hloc = ws[p.h_off + si];
        ws[p.h_off + si] = carry;
        carry = exp(ws[p.a_off + si]) * carry + hloc;
    }
    if (ok) { state[u32(slot) * p.d + c] = carry; }
}
