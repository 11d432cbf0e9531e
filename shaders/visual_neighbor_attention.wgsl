// YOPO's neighbour attention, one workgroup per (token i, head h): a visual query sees the
// tokens before its image and the (2r+1) x (2r+1) window around its cell (clipped; raster-causal
// with `causal`), a text query everything before it. head_mask bit 0 zeroes visual values after
// the softmax, bit 1 zeroes visual queries' outputs. An image that does not fit its sequence
// makes it all text. Params (binding 0) is NeighborUniform in src/visual/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<{{E}}>;
@group(0) @binding(2) var<storage, read> k: array<{{E}}>;
@group(0) @binding(3) var<storage, read> v: array<{{E}}>;
@group(0) @binding(4) var<storage, read> cu: array<i32>;
@group(0) @binding(5) var<storage, read> img: array<i32>;
@group(0) @binding(6) var<storage, read> head_mask: array<i32>;
@group(0) @binding(7) var<storage, read_write> o: array<{{E}}>;
@group(0) @binding(8) var<storage, read_write> lse: array<f32>;
@group(0) @binding(9) var<storage, read_write> status: array<atomic<u32>>;

var<workgroup> ok_w: u32;
var<workgroup> b_w: u32;
var<workgroup> s_w: u32;
var<workgroup> n_w: u32;
var<workgroup> wg_w: u32;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.tokens * p.heads) { return; }
    let i = id / p.heads;
    let h = id % p.heads;
    if (tid == 0u) {
        ok_w = select(0u, 1u, offsets_ok());
        b_w = 0u;
        s_w = 0u;
        n_w = 0u;
        wg_w = 1u;
        if (ok_w != 0u) {
            while (b_w + 1u < p.seqs && i32(i) >= cu[p.cu_off + b_w + 1u]) { b_w++; }
            let s = img[p.img_off + 3u * b_w];
            let hg = img[p.img_off + 3u * b_w + 1u];
            let wgr = img[p.img_off + 3u * b_w + 2u];
            let len = cu[p.cu_off + b_w + 1u] - cu[p.cu_off + b_w];
            // i64-free fit check: hg * wg <= len - s, with every factor non-negative.
            let fits = s >= 0 && hg >= 0 && wgr >= 0 && s <= len && (wgr == 0 || hg <= (len - s) / wgr);
            if (fits) {
                s_w = u32(cu[p.cu_off + b_w] + s);
                n_w = u32(hg) * u32(wgr);
                wg_w = u32(max(wgr, 1));
            } else {
                s_w = u32(cu[p.cu_off + b_w]);
                atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE);
            }
        } else {
            atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE);
        }
    }
    if (workgroupUniformLoad(&ok_w) == 0u) { return; }
    let b = workgroupUniformLoad(&b_w);
    let j_lo = u32(cu[p.cu_off + b]);
    let j_hi = u32(cu[p.cu_off + b + 1u]);
    let zero = (mask_of(h) & 2) != 0 && visual(i);
    attend(tid, i, h, j_lo, j_hi, zero);
}

fn mask_of(h: u32) -> i32 {
    if (p.has_mask == 0u) { return 0; }
    return head_mask[p.mask_off + h];
}

fn visual(j: u32) -> bool {
    return j >= s_w && j < s_w + n_w;
}

fn see(i: u32, j: u32) -> bool {
    if (!visual(i)) { return j <= i; }
    if (j < s_w) { return true; }
    if (!visual(j)) { return false; }
    let yi = i32((i - s_w) / wg_w);
    let xi = i32((i - s_w) % wg_w);
    let yj = i32((j - s_w) / wg_w);
    let xj = i32((j - s_w) % wg_w);
    return u32(abs(yi - yj)) <= p.radius && u32(abs(xi - xj)) <= p.radius && (p.causal == 0u || j <= i);
}

fn masked(h: u32, j: u32) -> bool {
    return (mask_of(h) & 1) != 0 && visual(j);
}

//! include visual_common.wgsli
//! include visual_attend.wgsli
