// Pack padded i8 rows (four to a u32) of {-1, 0, 1}; out-of-range values clamp and raise ST_VALUE_OUT_OF_RANGE.
// Params (binding 0) is PackUniform in src/ternary/uniforms.rs; build.rs appends it.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> t: array<u32>;
@group(0) @binding(2) var<storage, read_write> packed: array<u32>;
@group(0) @binding(3) var<storage, read_write> status: array<atomic<u32>>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 64u + tid;
    if (i >= p.n * p.kw) { return; }
    let c0 = (i % p.kw) * 16u;
    var word = 0u;
    var bad = false;
    for (var j = 0u; j < 16u; j++) {
        var v = 0i;
        if (c0 + j < p.k) { v = extractBits(bitcast<i32>(t[i * 4u + (j >> 2u)]), (j & 3u) * 8u, 8u); }
        bad = bad || v < -1i || v > 1i;
        word |= u32(clamp(v, -1i, 1i) + 1i) << (2u * j);
    }
    if (bad) { atomicOr(&status[0], ST_VALUE_OUT_OF_RANGE); }
    packed[i] = word;
}
