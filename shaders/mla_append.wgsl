// Appends new tokens to the paged latent cache, one workgroup per token: the token's slot is
// checked against every other token's (all tokens on a shared slot are skipped, so no two
// workgroups write one row) and against the cache, then its latent row and rope key are copied.
// Rows start on whole words (L, R and the views are even), so 16-bit stores never share a word.
// Params (binding 0) is AppendUniform in src/mla/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> kv_new: array<{{E}}>;
@group(0) @binding(2) var<storage, read> pe_new: array<{{E}}>;
@group(0) @binding(3) var<storage, read> slots: array<i32>;
@group(0) @binding(4) var<storage, read_write> cache: array<{{E}}>;
@group(0) @binding(5) var<storage, read_write> pe_cache: array<{{E}}>;
@group(0) @binding(6) var<storage, read_write> status: array<atomic<u32>>;

const WG: u32 = 64u;

var<workgroup> dup: atomic<u32>;
var<workgroup> fault_w: u32;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let t = wid.x + wid.y * nwg.x;
    if (t >= p.tokens) { return; }
    let id = slots[p.slots_off + t];
    if (slot_fault(t, id, tid) != 0u) { return; }
    let slot = u32(id);
    let lanes = select(1u, 3u, EPW == 2u);
    let w = select(p.latent, p.latent + p.rope, p.unified != 0u);
    let kv0 = p.cache_off + slot * w;
    for (var e = tid * EPW; e < p.latent; e += WG * EPW) {
        let s = p.kv_off + t * p.latent + e;
        stw_cache((kv0 + e) / EPW, lanes, ld_kv_new(s), select(0.0, ld_kv_new(s + 1u), EPW == 2u));
    }
    for (var e = tid * EPW; e < p.rope; e += WG * EPW) {
        let s = p.pe_off + t * p.rope + e;
        let a = ld_pe_new(s);
        let b = select(0.0, ld_pe_new(s + 1u), EPW == 2u);
        if (p.unified != 0u) {
            stw_cache((kv0 + p.latent + e) / EPW, lanes, a, b);
        } else {
            stw_pe_cache((p.pe_cache_off + slot * p.rope + e) / EPW, lanes, a, b);
        }
    }
}

//! include mla_slot.wgsli
