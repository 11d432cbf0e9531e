// One MLGRU decode step per workgroup (one sequence): h = f h + i in its pool slot, then
// o = rmsnorm(g) * w * silu(h). A slot id outside the pool, or one that another row of the
// step also names, zeroes the row, leaves the slot alone and raises its status bit: rows that
// share a slot are all skipped, so no two workgroups ever write one slot.
// Params (binding 0) is StepUniform in src/ternary/uniforms.rs; build.rs appends it.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> fcg: array<{{E}}>;
@group(0) @binding(2) var<storage, read_write> state: array<f32>;
@group(0) @binding(3) var<storage, read> slot_ids: array<i32>;
@group(0) @binding(4) var<storage, read> lb: array<f32>;
@group(0) @binding(5) var<storage, read> w: array<{{E}}>;
@group(0) @binding(6) var<storage, read_write> o: array<{{E}}>;
@group(0) @binding(7) var<storage, read_write> status: array<atomic<u32>>;

var<workgroup> red: array<f32, 64>;
var<workgroup> dup: atomic<u32>;
var<workgroup> fault_w: u32;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let b = wid.x + wid.y * nwg.x;
    if (b >= p.batch) { return; }
    let slot = slot_ids[b];
    for (var j = tid; j < p.batch; j += 64u) {
        if (j != b && slot_ids[j] == slot) { atomicOr(&dup, 1u); }
    }
    workgroupBarrier();
    if (tid == 0u) {
        fault_w = select(0u, ST_SLOT_REPEATED, atomicLoad(&dup) != 0u);
        if (slot < 0i || u32(slot) >= p.slots) { fault_w = ST_SLOT_OUT_OF_RANGE; }
    }
    let fault = workgroupUniformLoad(&fault_w);
    let ok = fault == 0u;
    let rb = p.fcg_off + b * p.fcg_stride;
    var ss = 0.0;
    for (var c = tid; c < p.d; c += 64u) {
        let g = ld_fcg(rb + 2u * p.d + c);
        ss += g * g;
    }
    red[tid] = ss;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (tid < s) { red[tid] += red[tid + s]; }
        workgroupBarrier();
    }
    let inv = 1.0 / sqrt(red[0] / f32(p.d) + p.eps);
    if (!ok && tid == 0u) { atomicOr(&status[0], fault); }
    let ob = b * p.d;
    let hb = select(0u, u32(slot), ok) * p.d;
    // Whole output words per invocation; a word shared with the next row uses atomics.
    for (var wd = ob / EPW + tid; wd <= (ob + p.d - 1u) / EPW; wd += 64u) {
        var v = array<f32, 2>(0.0, 0.0);
        var m = 0u;
        for (var l = 0u; l < EPW; l++) {
            let e = wd * EPW + l;
            if (e >= ob && e < ob + p.d) {
                m |= 1u << l;
                if (ok) {
                    let c = e - ob;
                    v[l] = step_channel(rb, hb, c, inv);
                }
            }
        }
        stw_o(wd, m, v[0], v[1]);
    }
}

// Updates channel c of the state and returns its gated output.
fn step_channel(rb: u32, hb: u32, c: u32, inv: f32) -> f32 {
    var f = sigmoid_f(ld_fcg(rb + c));
    if (p.has_lb != 0u) { f = lb[c] + (1.0 - lb[c]) * f; }
    let i = silu_f(ld_fcg(rb + p.d + c)) * (1.0 - f);
    let h = f * state[hb + c] + i;
    state[hb + c] = h;
    return ld_fcg(rb + 2u * p.d + c) * inv * ld_w(c) * silu_f(h);
}

//! include ternary_common.wgsli
