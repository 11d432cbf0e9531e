// Merges each row's split-KV partials (f32, from mla_decode) into o (the storage dtype) and lse,
// written [B, H, Sq]; one workgroup per row. A split with no key has lse = -inf and weight 0; a
// row with none at all gets o = 0, lse = -inf. Params is CombineUniform in src/mla/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ws: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<{{E}}>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;

const WG: u32 = 64u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.total) { return; }
    let neg_inf = bitcast<f32>(0xff800000u | (p.total & 0u));
    let lb = p.ws_off + p.splits * p.total * p.latent;
    var m = neg_inf;
    // A NaN split makes the row NaN (the NaN policy, ARCHITECTURE.md), by the bits.
    var nan = false;
    for (var j = 0u; j < p.splits; j++) {
        let v = ws[lb + j * p.total + r];
        nan = nan || nan_bits(v);
        m = max(m, v);
    }
    let nan_v = make_nan(p.total & 0u);
    var sum = 0.0;
    for (var j = 0u; j < p.splits; j++) {
        let v = ws[lb + j * p.total + r];
        if (v != neg_inf) { sum += exp(v - m); }
    }
    // L is a multiple of 64, so a row never shares a 16-bit word with its neighbour.
    let e0 = p.o_off + r * p.latent;
    for (var wd = e0 / EPW + tid; wd < (e0 + p.latent) / EPW; wd += WG) {
        var v = array<f32, 2>(0.0, 0.0);
        var mask = 0u;
        for (var ln = 0u; ln < EPW; ln++) {
            let d = wd * EPW + ln - e0;
            var acc = 0.0;
            for (var j = 0u; j < p.splits; j++) {
                let lj = ws[lb + j * p.total + r];
                if (lj != neg_inf) { acc += exp(lj - m) * ws[p.ws_off + (j * p.total + r) * p.latent + d]; }
            }
            v[ln] = select(select(acc / sum, 0.0, m == neg_inf), nan_v, nan);
            mask |= 1u << ln;
        }
        stw_o(wd, mask, v[0], v[1]);
    }
    if (tid == 0u) {
        let nrows = p.sq * p.heads;
        let b = r / nrows;
        let i = (r % nrows) / p.heads;
        let h = r % p.heads;
        lse[p.lse_off + (b * p.heads + h) * p.sq + i] = select(select(m + log(sum), neg_inf, m == neg_inf), nan_v, nan);
    }
}
