// Merge two partial softmax states over disjoint key sets, one workgroup per state.
// An empty part has lse = -inf; both empty gives o = 0, lse = -inf (never NaN).
// Params (binding 0) is MergeUniform in src/core/uniforms.rs; build.rs appends it.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> o1: array<{{E}}>;
@group(0) @binding(2) var<storage, read> l1: array<f32>;
@group(0) @binding(3) var<storage, read> o2: array<{{E}}>;
@group(0) @binding(4) var<storage, read> l2: array<f32>;
@group(0) @binding(5) var<storage, read_write> o: array<{{E}}>;
@group(0) @binding(6) var<storage, read_write> l: array<f32>;

const WG: u32 = 64u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let s = wid.x + wid.y * nwg.x;
    if (s >= p.states) { return; }
    let a = l1[p.l1_off + s];
    let b = l2[p.l2_off + s];
    let mx = max(a, b);
    var w1 = 0.0;
    var w2 = 0.0;
    // -inf built at run time: a constant infinity is a WGSL creation error.
    let neg_inf = bitcast<f32>(0xff800000u | (p.states & 0u));
    var lse = neg_inf;
    // A NaN or +inf part makes the state NaN (the NaN policy, ARCHITECTURE.md), by the bits.
    let pos_inf = 0x7f800000u;
    let bad = nan_bits(a) || nan_bits(b) || bitcast<u32>(a) == pos_inf || bitcast<u32>(b) == pos_inf;
    if (bad) {
        lse = make_nan(p.states & 0u);
    } else if (mx != neg_inf) {
        w1 = exp(a - mx);
        w2 = exp(b - mx);
        let sum = w1 + w2;
        lse = mx + log(sum);
        w1 = w1 / sum;
        w2 = w2 / sum;
    }
    let b1 = p.o1_off + s * p.o1_stride;
    let b2 = p.o2_off + s * p.o2_stride;
    let e0 = p.o_off + s * p.o_stride;
    let e1 = e0 + p.dim;
    for (var wd = e0 / EPW + tid; wd <= (e1 - 1u) / EPW; wd += WG) {
        var v = array<f32, 2>(0.0, 0.0);
        var m = 0u;
        for (var ln = 0u; ln < EPW; ln++) {
            let e = wd * EPW + ln;
            if (e >= e0 && e < e1) {
                let c = e - e0;
                var acc = 0.0;
                if (w1 != 0.0) { acc += w1 * ld_o1(b1 + c); }
                if (w2 != 0.0) { acc += w2 * ld_o2(b2 + c); }
                v[ln] = select(acc, lse, bad);
                m |= 1u << ln;
            }
        }
        stw_o(wd, m, v[0], v[1]);
    }
    if (tid == 0u) { l[p.l_off + s] = lse; }
}
