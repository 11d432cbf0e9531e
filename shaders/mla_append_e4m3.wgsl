// Appends new tokens to an fp8 (E4M3) paged latent cache, one workgroup per token: the slot is
// checked as `mla_append.wgsl` checks it, then the token's scale is set from the largest
// magnitude of its latent and rope values (the smallest power of two s with amax / s <= 448;
// NaN, with zero bytes, for a row holding a non-finite value) and each value is stored as
// x / s rounded to E4M3, whole words of four bytes at a time (rows start on whole words: L, R
// and the views' offsets are multiples of 4). The encoding is src/dtype.rs's e4m3_from_f32.
// Params (binding 0) is AppendUniform in src/mla/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> kv_new: array<{{E}}>;
@group(0) @binding(2) var<storage, read> pe_new: array<{{E}}>;
@group(0) @binding(3) var<storage, read> slots: array<i32>;
@group(0) @binding(4) var<storage, read_write> cache: array<u32>;
@group(0) @binding(5) var<storage, read_write> pe_cache: array<u32>;
@group(0) @binding(6) var<storage, read_write> status: array<atomic<u32>>;
@group(0) @binding(7) var<storage, read_write> cscale: array<f32>;

const WG: u32 = 64u;

var<workgroup> dup: atomic<u32>;
var<workgroup> bad: atomic<u32>;
var<workgroup> fault_w: u32;
var<workgroup> red: array<f32, 64>;

fn e4m3_bits(v: f32) -> u32 {
    if (nan_bits(v)) { return 0x7fu; }
    let sign = (bitcast<u32>(v) >> 24u) & 0x80u;
    let a = min(abs(v), 448.0);
    if (a < 0.015625) { return sign | u32(round(a * 512.0)); }
    let bits = bitcast<u32>(a);
    let e = i32((bits >> 23u) & 0xffu) - 127;
    let q = u32(round(f32(bits & 0x7fffffu) * (8.0 / 8388608.0)));
    return sign | min((u32(e + 7) << 3u) + q, 0x7eu);
}

// amax finite and >= 0.
fn e4m3_scale(amax: f32) -> f32 {
    if (amax == 0.0) { return 1.0; }
    let e = i32((bitcast<u32>(amax) >> 23u) & 0xffu) - 127;
    let s = bitcast<f32>(u32(max(e - 8, -126) + 127) << 23u);
    return select(s, 2.0 * s, amax > 448.0 * s);
}

// Element d of token t's row: latent, then rope.
fn value(t: u32, d: u32) -> f32 {
    if (d < p.latent) { return ld_kv_new(p.kv_off + t * p.latent + d); }
    return ld_pe_new(p.pe_off + t * p.rope + d - p.latent);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let t = wid.x + wid.y * nwg.x;
    if (t >= p.tokens) { return; }
    let id = slots[p.slots_off + t];
    if (slot_fault(t, id, tid) != 0u) { return; }
    let slot = u32(id);
    let w = p.latent + p.rope;
    var amax = 0.0;
    for (var d = tid; d < w; d += WG) {
        let x = value(t, d);
        if (!finite_bits(x)) { atomicOr(&bad, 1u); }
        amax = max(amax, abs(x));
    }
    red[tid] = amax;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (tid < s) { red[tid] = max(red[tid], red[tid + s]); }
        workgroupBarrier();
    }
    let nonfinite = atomicLoad(&bad) != 0u;
    let sc = select(e4m3_scale(red[0]), make_nan(t & 0u), nonfinite);
    let inv = select(1.0 / sc, 0.0, nonfinite);  // exact: sc is a power of two
    if (tid == 0u) { cscale[p.cs_off + slot] = sc; }
    // Four values a word; a non-finite row stores zeros (x * 0 would keep its NaN).
    for (var k = tid; k < w / 4u; k += WG) {
        var word = 0u;
        if (!nonfinite) {
            for (var e = 0u; e < 4u; e++) { word |= e4m3_bits(value(t, 4u * k + e) * inv) << (8u * e); }
        }
        let d = 4u * k;
        if (p.unified != 0u) {
            cache[(p.cache_off + slot * w + d) / 4u] = word;
        } else if (d < p.latent) {
            cache[(p.cache_off + slot * p.latent + d) / 4u] = word;
        } else {
            pe_cache[(p.pe_cache_off + slot * p.rope + d - p.latent) / 4u] = word;
        }
    }
}

//! include mla_slot.wgsli
