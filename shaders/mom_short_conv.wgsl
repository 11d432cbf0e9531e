// Short conv + gates for prefill. One workgroup per (64 columns, stream g = m * seqs + b):
// invocation c walks the stream's rows in order for conv channel c (< chan: conv from and back
// into the (m, slot) conv state, SiLU, into qkv) or gate column c - chan (g or beta into gb).
// Bad cu_mem skips everything, a bad or shared slot skips the stream; both raise their bit.
// Params (binding 0) is ShortConvUniform in src/mom/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<{{E}}>;
@group(0) @binding(2) var<storage, read> order: array<i32>;
@group(0) @binding(3) var<storage, read> cu: array<i32>;
@group(0) @binding(4) var<storage, read> slot_ids: array<i32>;
@group(0) @binding(5) var<storage, read> conv_w: array<{{E}}>;
@group(0) @binding(6) var<storage, read> gp: array<f32>;
@group(0) @binding(7) var<storage, read_write> conv_state: array<f32>;
@group(0) @binding(8) var<storage, read_write> qkv: array<{{E}}>;
@group(0) @binding(9) var<storage, read_write> gb: array<f32>;
@group(0) @binding(10) var<storage, read_write> status: array<atomic<u32>>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let cols = p.chan + 2u * p.heads;
    let cblocks = (cols + 63u) / 64u;
    let id = wid.x + wid.y * nwg.x;
    if (id >= cblocks * p.streams) { return; }
    let g = id / cblocks;
    let c = (id % cblocks) * 64u + tid;
    let m = g / p.seqs;
    let b = g % p.seqs;
    if (!offsets_ok()) {
        if (c == 0u) { atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE); }
        return;
    }
    let fault = slot_fault(b);
    if (fault != 0u) {
        if (c == 0u) { atomicOr(&status[0], fault); }
        return;
    }
    if (c >= cols) { return; }
    let e = m * p.slots + u32(slot_ids[p.slot_off + b]);
    // This dispatch's window of the stream's rows: the host splits long streams over dispatches
    // (the conv window carries over in conv_state), so no invocation loops past its budget.
    let s0 = u32(cu[p.cu_off + g]);
    let s1 = u32(cu[p.cu_off + g + 1u]);
    let r0 = min(s0 + p.w0, s1);
    let r1 = min(s0 + p.w1, s1);
    let hk = p.heads * p.head_k;
    let hv = p.heads * p.head_v;
    if (c < p.chan) {
        var win: array<f32, 8>;
        var taps: array<f32, 8>;
        let sb = p.cs_off + (e * p.chan + c) * p.conv;
        for (var i = 0u; i < p.conv; i++) {
            win[i] = conv_state[sb + i];
            taps[i] = ld_conv_w(p.cw_off + c * p.conv + i);
        }
        var col = c;
        if (c >= 2u * hk) { col = hk + p.mems * hk + m * hv + (c - 2u * hk); }
        else if (c >= hk) { col = hk + m * hk + (c - hk); }
        for (var r = r0; r < r1; r++) {
            let xin = x_at(r, col);
            var a = 0.0;
            for (var i = 0u; i < p.conv; i++) {
                if (i + 1u < p.conv) { win[i] = win[i + 1u]; } else { win[i] = xin; }
                a += taps[i] * win[i];
            }
            let y = a / (1.0 + exp(-a));
            let q = p.qkv_off + r * p.chan + c;
            stw_qkv(q / EPW, 1u << (q % EPW), y, y);
        }
        for (var i = 0u; i < p.conv; i++) { conv_state[sb + i] = win[i]; }
    } else {
        let gi = c - p.chan;
        let h = gi % p.heads;
        let beta = gi / p.heads;
        let col = hk + p.mems * (hk + hv) + beta * p.mems * p.heads + m * p.heads + h;
        for (var r = r0; r < r1; r++) {
            let a = x_at(r, col);
            var v = 1.0 / (1.0 + exp(-a));
            if (beta == 0u) { v = -exp(gp[p.gp_off + h]) * softplus(a + gp[p.gp_off + p.heads + h]); }
            gb[p.gb_off + r * 2u * p.heads + gi] = v;
        }
    }
}

// Row r's token's projection column `col`; zero (and the status) for a bad token id.
fn x_at(r: u32, col: u32) -> f32 {
    let t = order[p.order_off + r];
    if (t < 0 || u32(t) >= p.tokens) {
        atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE);
        return 0.0;
    }
    return ld_x(p.x_off + u32(t) * p.pw + col);
}

fn softplus(v: f32) -> f32 {
    if (v > 20.0) { return v; }
    return log(1.0 + exp(v));
}

// cu_mem runs from 0 without decreasing and ends within the rows.
fn offsets_ok() -> bool {
    if (cu[p.cu_off] != 0) { return false; }
    for (var i = 0u; i < p.streams; i++) {
        if (cu[p.cu_off + i + 1u] < cu[p.cu_off + i]) { return false; }
    }
    return u32(cu[p.cu_off + p.streams]) <= p.rows;
}

fn slot_fault(b: u32) -> u32 {
    let s = slot_ids[p.slot_off + b];
    if (s < 0 || u32(s) >= p.slots) { return ST_SLOT_OUT_OF_RANGE; }
    for (var j = 0u; j < p.seqs; j++) {
        if (j != b && slot_ids[p.slot_off + j] == s) { return ST_SLOT_REPEATED; }
    }
    return 0u;
}
