// Applying an incoming state to a piece, one workgroup per (64 state columns, head h, stream s):
// invocation c owns column c of the stream's entry: S[:,c] += P S_in[:,c], then every row r of
// the stream gains o[r, c] += qt_r . S_in[:,c] (16-bit outputs one lane at a time).
// Params (binding 0) is PieceUniform in src/mom/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> s_in: array<f32>;
@group(0) @binding(2) var<storage, read> trans: array<f32>;
@group(0) @binding(3) var<storage, read> qt: array<{{E}}>;
@group(0) @binding(4) var<storage, read> cu: array<i32>;
@group(0) @binding(5) var<storage, read> slot_ids: array<i32>;
@group(0) @binding(6) var<storage, read_write> state: array<f32>;
@group(0) @binding(7) var<storage, read_write> o: array<{{E}}>;
@group(0) @binding(8) var<storage, read_write> status: array<atomic<u32>>;

var<workgroup> fault_w: u32;
var<workgroup> r0_w: u32;
var<workgroup> r1_w: u32;
var<workgroup> e_w: u32;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let id = wid.x + wid.y * nwg.x;
    let vtiles = (p.head_v + 63u) / 64u;
    if (id >= vtiles * p.heads * p.streams) { return; }
    let h = (id / vtiles) % p.heads;
    let s = id / (vtiles * p.heads);
    let c = (id % vtiles) * 64u + tid;
    stream_setup(tid, s);
    let fault = workgroupUniformLoad(&fault_w);
    let rs = workgroupUniformLoad(&r0_w);
    let re = workgroupUniformLoad(&r1_w);
    let e = workgroupUniformLoad(&e_w);
    if (fault != 0u || c >= p.head_v) { return; }
    let kv = p.head_k * p.head_v;
    let ib = p.sin_off + (s * p.heads + h) * kv;
    let pb = p.tr_off + (e * p.heads + h) * p.head_k * p.head_k;
    let sb = p.st_off + (e * p.heads + h) * kv;
    // The first dispatch updates the state; each takes rows w0..w1 of the stream (the host
    // splits long streams over dispatches).
    for (var i = 0u; i < select(0u, p.head_k, p.w0 == 0u); i++) {
        var acc = state[sb + sidx(i, c)];
        for (var j = 0u; j < p.head_k; j++) { acc += trans[pb + i * p.head_k + j] * s_in[ib + sidx(j, c)]; }
        state[sb + sidx(i, c)] = acc;
    }
    let hk = p.heads * p.head_k;
    for (var r = min(rs + p.w0, re); r < min(rs + p.w1, re); r++) {
        var acc = 0.0;
        for (var j = 0u; j < p.head_k; j++) { acc += ld_qt(p.qt_off + r * hk + h * p.head_k + j) * s_in[ib + sidx(j, c)]; }
        let oe = p.o_off + r * p.heads * p.head_v + h * p.head_v + c;
        let v = ld_o(oe) + acc;
        stw_o(oe / EPW, 1u << (oe % EPW), v, v);
    }
}

fn sidx(i: u32, c: u32) -> u32 {
    if (p.v_first != 0u) { return c * p.head_k + i; }
    return i * p.head_v + c;
}

//! include mom_piece.wgsli
