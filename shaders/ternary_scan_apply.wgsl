// MLGRU prefill, pass 3: h_t = local_t + exp(sum of log f up to t) * the chunk's incoming state.
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
    let carry = ws[p.h_off + (b * p.chunks + ch) * p.d + c];
    var loga = 0.0;
    for (var t = t0; t < t1; t++) {
        loga += log(gates(t, c).x);
        ws[t * p.d + c] += exp(loga) * carry;
    }
}

//! include ternary_common.wgsli
//! include ternary_scan.wgsli
