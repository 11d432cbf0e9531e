//! The tile of the tensor-core attention core (`kernels/attention_tc.cuh`) that the MLA decode
//! and prefill and the visual sparse and neighbour attention share: how many query rows a block
//! takes, how many keys a tile holds, and the shared memory that layout needs. Decided on the
//! host from the widths and the device's opt-in shared memory, so each family's launch and the
//! tests agree with the kernel's layout.

/// One block's tile: `rows` query rows, `keys` keys per tile (double-buffered), `shared` bytes of
/// dynamic shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcTile {
    /// G: query rows per block (16, 32 or 64); keys and values are read once per group of G.
    pub rows: usize,
    /// TK: keys per tile.
    pub keys: usize,
    /// Dynamic shared memory per block, bytes.
    pub shared: usize,
}

/// The warps of a 16-row strip: 8 warps over G / 16 strips.
fn warps_per_strip(g: usize) -> usize {
    8 / (g / 16)
}

/// Bytes of the core's layout: Q `[G][W + 8]`, K `[2][TK][W + 8]`, V `[2][TK][V + 8]` when
/// values are a separate tensor (`v_width`), P `[G][TK + 8]` (16-bit), the row reductions
/// `[8 / (G / 16)][G]` (f32), the key rows `[2][TK]` (i64) and their mask data `[2][TK]` (i32).
pub fn shared_bytes(g: usize, tk: usize, w: usize, v_width: Option<usize>) -> usize {
    let v = v_width.map_or(0, |v| 2 * tk * (v + 8));
    2 * (g * (w + 8) + 2 * tk * (w + 8) + v + g * (tk + 8)) + 4 * warps_per_strip(g) * g + 12 * 2 * tk
}

/// The same layout with fp8 keys (values shared with them): one decoded K `[TK][W + 8]` instead
/// of two, then the keys' scales `[2][TK]` (f32) and their bytes `[2][TK][W]`.
pub fn shared_bytes_fp8(g: usize, tk: usize, w: usize) -> usize {
    shared_bytes(g, tk, w, None) - 2 * tk * (w + 8) + 4 * 2 * tk + 2 * tk * w
}

/// The tile for `rows_wanted` query rows per sequence, `qk_width` wide products, values either a
/// separate tensor `v_width` wide or (None) the first `out_width` columns of the key tile, and
/// `out_width` output columns: the smallest group holding the rows, among those whose output fits
/// a warp's registers (G * out_width <= 32768) and splits evenly over a strip's warps (out_width
/// a multiple of 8 warps-per-strip), else the largest such; then the first of `keys` whose layout
/// fits `shared_optin` bytes, trying smaller groups if none does. None when nothing fits. `fp8`:
/// the keys are E4M3 bytes (values shared with them; [`shared_bytes_fp8`]).
pub fn attention_tile(
    qk_width: usize,
    v_width: Option<usize>,
    out_width: usize,
    rows_wanted: usize,
    fp8: bool,
    shared_optin: usize,
    keys: &[usize],
) -> Option<TcTile> {
    let usable = |g: usize| g * out_width <= 32768 && out_width.is_multiple_of(8 * warps_per_strip(g));
    let first = [16, 32, 64].into_iter().filter(|&g| usable(g)).find(|&g| g >= rows_wanted);
    let largest = [64, 32, 16].into_iter().find(|&g| usable(g))?;
    let start = first.unwrap_or(largest);
    [64, 32, 16].into_iter().filter(|&g| g <= start && usable(g)).find_map(|g| {
        keys.iter()
            .map(|&tk| {
                let shared =
                    if fp8 { shared_bytes_fp8(g, tk, qk_width) } else { shared_bytes(g, tk, qk_width, v_width) };
                TcTile { rows: g, keys: tk, shared }
            })
            .find(|t| t.shared <= shared_optin)
    })
}
