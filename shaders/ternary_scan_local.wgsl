// MLGRU prefill, pass 1: each (channel block, chunk, sequence) scans its chunk from a zero
// state, writing local h per token and the chunk's (summed log decay, end state).
// Parameters and bindings: include/ternary_scan.wgsli.

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let nb = (p.d + 63u) / 64u;
    let g = wid.x + wid.y * nwg.x;
    if (g >= nb * p.chunks * p.seqs) { return; }
    let c = (g % nb) * 64u + tid;
    let ch = (g / nb) % p.chunks;
    let b = g / (nb * p.chunks);
    let r = seq_range(b);
    if (c >= p.d) { return; }
    let t0 = r.x + ch * p.chunk;
    let t1 = min(t0 + p.chunk, r.y);
    var h = 0.0;
    var loga = 0.0;
    for (var t = t0; t < t1; t++) {
        let fi = gates(t, c);
        h = fi.x * h + fi.y;
        loga += log(fi.x);
        ws[t * p.d + c] = h;
    }
    let si = (b * p.chunks + ch) * p.d + c;
    ws[p.a_off + si] = loga;
    ws[p.h_off + si] = h;
}

//! include ternary_common.wgsli
//! include ternary_scan.wgsli
