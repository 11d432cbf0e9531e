// Unpack to padded i8 rows (four to a u32); code 3 reads as 0 and raises ST_BAD_TERNARY_CODE.
// Params (binding 0) is PackUniform in src/ternary/uniforms.rs; build.rs appends it.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> packed: array<u32>;
@group(0) @binding(2) var<storage, read_write> t: array<u32>;
@group(0) @binding(3) var<storage, read_write> status: array<atomic<u32>>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 64u + tid;
    if (i >= p.n * p.kw) { return; }
    let c0 = (i % p.kw) * 16u;
    let word = packed[i];
    var out = array<u32, 4>(0u, 0u, 0u, 0u);
    var bad = false;
    for (var j = 0u; j < 16u; j++) {
        let code = (word >> (2u * j)) & 3u;
        var v = 0i;
        if (c0 + j < p.k) {
            bad = bad || code == 3u;
            v = select(i32(code) - 1i, 0i, code == 3u);
        }
        out[j >> 2u] |= (bitcast<u32>(v) & 0xffu) << (8u * (j & 3u));
    }
    if (bad) { atomicOr(&status[0], ST_BAD_TERNARY_CODE); }
    for (var l = 0u; l < 4u; l++) { t[i * 4u + l] = out[l]; }
}
