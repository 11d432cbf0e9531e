// Rotary embedding in place, one workgroup per token: an invocation rotates pairs (a, b) to
// (a cos - b sin, a sin + b cos), pairs (2i, 2i+1) when interleaved, else (i, i + dim/2). Each
// element is stored on its own (a one-lane word update), so pairs that share a 16-bit word with
// another invocation's never race. Params (binding 0) is RopeUniform in src/mla/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<{{E}}>;
@group(0) @binding(2) var<storage, read> cos_t: array<f32>;
@group(0) @binding(3) var<storage, read> sin_t: array<f32>;

const WG: u32 = 64u;

fn store(e: u32, v: f32) {
    let lane = e % EPW;
    stw_x(e / EPW, 1u << lane, v, v);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let t = wid.x + wid.y * nwg.x;
    if (t >= p.tokens) { return; }
    let half = p.dim / 2u;
    for (var k = tid; k < p.heads * half; k += WG) {
        let h = k / half;
        let i = k % half;
        let base = p.x_off + t * p.token_stride + h * p.head_stride;
        let ia = base + select(i, 2u * i, p.interleaved != 0u);
        let ib = base + select(i + half, 2u * i + 1u, p.interleaved != 0u);
        let a = ld_x(ia);
        let b = ld_x(ib);
        let c = cos_t[p.cos_off + t * half + i];
        let s = sin_t[p.sin_off + t * half + i];
        store(ia, a * c - b * s);
        store(ib, a * s + b * c);
    }
}
