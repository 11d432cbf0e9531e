// rowsum[r] = sum_k |w[r, k]|, one workgroup per row; a non-finite weight raises ST_VALUE_OUT_OF_RANGE.
// Params (binding 0) is RowAbsSumUniform in src/ternary/uniforms.rs; build.rs appends it.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<{{E}}>;
@group(0) @binding(2) var<storage, read_write> rowsum: array<f32>;
@group(0) @binding(3) var<storage, read_write> status: array<atomic<u32>>;

var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.n) { return; }
    var acc = 0.0;
    var bad = false;
    for (var c = tid; c < p.k; c += 64u) {
        let v = ld_w(r * p.k + c);
        // Exponent all ones: inf or NaN (comparisons with NaN may be optimized away).
        bad = bad || (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u;
        acc += abs(v);
    }
    if (bad) { atomicOr(&status[0], ST_VALUE_OUT_OF_RANGE); }
    red[tid] = acc;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (tid < s) { red[tid] += red[tid + s]; }
        workgroupBarrier();
    }
    if (tid == 0u) { rowsum[r] = red[0]; }
}
