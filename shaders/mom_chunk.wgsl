// The chunked gated delta rule, one workgroup per (64 state columns, head h, stream s), an
// invocation per column c. Rows go in tiles of n <= 32 (16 KiB of workgroup memory; the CUDA
// kernel takes 64): with G_i the cumulative log decay in the tile, the pseudo-values solve
//   u_i = beta_i (v_i - e^{G_i} k_i.S0 - sum_{j<i} e^{G_i - G_j} (k_i.k_j) u_j),
// o_i = e^{G_i} q_i.S0 + sum_{j<=i} e^{G_i - G_j} (q_i.k_j) u_j, and the state becomes
// e^{G_n} S0 + sum_j e^{G_n - G_j} k_j u_j^T. Only G_i - G_j with j <= i are exponentiated.
// A dispatch takes tiles t0..t1 of every stream (the host splits long streams over dispatches,
// the state carrying over through the pool, so no invocation loops past its budget: a CPU
// adapter stops loops at 65,535 iterations). Params (binding 0) is ChunkUniform in
// src/mom/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<{{E}}>;
@group(0) @binding(2) var<storage, read> gb: array<f32>;
@group(0) @binding(3) var<storage, read> cu: array<i32>;
@group(0) @binding(4) var<storage, read> slot_ids: array<i32>;
@group(0) @binding(5) var<storage, read_write> state: array<f32>;
@group(0) @binding(6) var<storage, read_write> o: array<{{E}}>;
@group(0) @binding(7) var<storage, read_write> status: array<atomic<u32>>;

const CT: u32 = 32u;
const KT: u32 = 16u;

var<workgroup> kk_m: array<f32, 1024>;
var<workgroup> qk_m: array<f32, 1024>;
var<workgroup> kt: array<f32, 512>;
var<workgroup> qt: array<f32, 512>;
var<workgroup> gam: array<f32, 32>;
var<workgroup> bet: array<f32, 32>;
var<workgroup> rq: array<f32, 32>;
var<workgroup> rk: array<f32, 32>;
var<workgroup> dec: array<f32, 32>;
var<workgroup> fault_w: u32;
var<workgroup> r0_w: u32;
var<workgroup> r1_w: u32;
var<workgroup> e_w: u32;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.vtiles * p.heads * p.streams) { return; }
    let vt = id % p.vtiles;
    let h = (id / p.vtiles) % p.heads;
    let s = id / (p.vtiles * p.heads);
    let c = vt * 64u + tid;
    let live = c < p.head_v;
    let hk = p.heads * p.head_k;
    let w = 2u * hk + p.heads * p.head_v;
    if (tid == 0u) {
        fault_w = 0u;
        r0_w = 0u;
        r1_w = 0u;
        if (!offsets_ok()) {
            fault_w = ST_INDEX_OUT_OF_RANGE;
        } else {
            fault_w = slot_fault(s % p.seqs);
            r0_w = u32(cu[p.cu_off + s]);
            r1_w = u32(cu[p.cu_off + s + 1u]);
            e_w = (s / p.seqs) * p.slots + u32(slot_ids[p.slot_off + s % p.seqs]);
        }
        if (fault_w != 0u) { atomicOr(&status[0], fault_w); }
    }
    let fault = workgroupUniformLoad(&fault_w);
    let re_all = workgroupUniformLoad(&r1_w);
    let ch = min(p.chunk, CT);
    let rs = min(workgroupUniformLoad(&r0_w) + p.t0 * ch, re_all);
    let re = min(workgroupUniformLoad(&r0_w) + p.t1 * ch, re_all);
    if (fault != 0u) {
        // A bad or shared slot: the stream's outputs are 0, its pool entry untouched (rows
        // are 0..0 when cu itself is bad).
        if (live) {
            for (var r = rs; r < re; r++) {
                let oe = p.o_off + r * p.heads * p.head_v + h * p.head_v + c;
                stw_o(oe / EPW, 1u << (oe % EPW), 0.0, 0.0);
            }
        }
        return;
    }
    let e = workgroupUniformLoad(&e_w);
    let sbase = p.st_off + (e * p.heads + h) * p.head_k * p.head_v;
    var u: array<f32, 32>;
    var qs: array<f32, 32>;
    for (var r0 = rs; r0 < re; r0 += ch) {
        let n = min(ch, re - r0);
        if (tid < n) {
            let rb = p.qkv_off + (r0 + tid) * w;
            var sq = 0.0;
            var sk = 0.0;
            for (var i = 0u; i < p.head_k; i++) {
                let a = ld_qkv(rb + h * p.head_k + i);
                let bk = ld_qkv(rb + hk + h * p.head_k + i);
                sq += a * a;
                sk += bk * bk;
            }
            rq[tid] = p.scale * inverseSqrt(sq + 1e-6);
            rk[tid] = inverseSqrt(sk + 1e-6);
            gam[tid] = gb[p.gb_off + (r0 + tid) * 2u * p.heads + h];
            bet[tid] = gb[p.gb_off + (r0 + tid) * 2u * p.heads + p.heads + h];
        }
        for (var i = tid; i < n * n; i += 64u) {
            kk_m[i] = 0.0;
            qk_m[i] = 0.0;
        }
        workgroupBarrier();
        if (tid == 0u) {
            for (var i = 1u; i < n; i++) { gam[i] += gam[i - 1u]; }
        }
        workgroupBarrier();
        if (tid < n) { dec[tid] = exp(gam[n - 1u] - gam[tid]); }
        for (var i = 0u; i < CT; i++) {
            u[i] = 0.0;
            qs[i] = 0.0;
        }
        for (var k0 = 0u; k0 < p.head_k; k0 += KT) {
            for (var i = tid; i < n * KT; i += 64u) {
                let r = i / KT;
                let kk = i % KT;
                let rb = p.qkv_off + (r0 + r) * w;
                // K is a multiple of 8, the tile 16 wide: columns past K read as 0.
                kt[i] = 0.0;
                qt[i] = 0.0;
                if (k0 + kk < p.head_k) {
                    kt[i] = ld_qkv(rb + hk + h * p.head_k + k0 + kk) * rk[r];
                    qt[i] = ld_qkv(rb + h * p.head_k + k0 + kk) * rq[r];
                }
            }
            workgroupBarrier();
            for (var i = tid; i < n * n; i += 64u) {
                let a = i / n;
                let bj = i % n;
                if (bj <= a) {
                    var dk = 0.0;
                    var dq = 0.0;
                    for (var kk = 0u; kk < KT; kk++) {
                        dk += kt[a * KT + kk] * kt[bj * KT + kk];
                        dq += qt[a * KT + kk] * kt[bj * KT + kk];
                    }
                    kk_m[i] += dk;
                    qk_m[i] += dq;
                }
            }
            if (live) {
                for (var kk = 0u; kk < min(KT, p.head_k - k0); kk++) {
                    let sv = state[sbase + sidx(k0 + kk, c)];
                    for (var i = 0u; i < n; i++) {
                        u[i] += kt[i * KT + kk] * sv;
                        qs[i] += qt[i * KT + kk] * sv;
                    }
                }
            }
            workgroupBarrier();
        }
        if (live) {
            for (var i = 0u; i < n; i++) {
                let v = ld_qkv(p.qkv_off + (r0 + i) * w + 2u * hk + h * p.head_v + c);
                var ui = v;
                if (p.rule == 0u) {
                    ui = v - exp(gam[i]) * u[i];
                    for (var j = 0u; j < i; j++) { ui -= exp(gam[i] - gam[j]) * kk_m[i * n + j] * u[j]; }
                    ui *= bet[i];
                }
                u[i] = ui;
                var oi = exp(gam[i]) * qs[i];
                for (var j = 0u; j <= i; j++) { oi += exp(gam[i] - gam[j]) * qk_m[i * n + j] * u[j]; }
                let oe = p.o_off + (r0 + i) * p.heads * p.head_v + h * p.head_v + c;
                stw_o(oe / EPW, 1u << (oe % EPW), oi, oi);
            }
        }
        let last = exp(gam[n - 1u]);
        for (var k0 = 0u; k0 < p.head_k; k0 += KT) {
            workgroupBarrier();
            for (var i = tid; i < n * KT; i += 64u) {
                let r = i / KT;
                kt[i] = 0.0;
                if (k0 + i % KT < p.head_k) {
                    kt[i] = ld_qkv(p.qkv_off + (r0 + r) * w + hk + h * p.head_k + k0 + i % KT) * rk[r];
                }
            }
            workgroupBarrier();
            if (live) {
                for (var kk = 0u; kk < min(KT, p.head_k - k0); kk++) {
                    let si = sbase + sidx(k0 + kk, c);
                    var sv = last * state[si];
                    for (var j = 0u; j < n; j++) { sv += dec[j] * kt[j * KT + kk] * u[j]; }
                    state[si] = sv;
                }
            }
        }
        workgroupBarrier();
    }
}

fn sidx(i: u32, c: u32) -> u32 {
    if (p.v_first != 0u) { return c * p.head_k + i; }
    return i * p.head_v + c;
}

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
