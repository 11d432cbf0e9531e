//! Strided 2-D views: engines pass rows of larger buffers without copies.

use crate::error::{invalid, Result};

/// The most elements any tensor may hold: kernels index with 32-bit signed integers (CUDA `int`,
/// WGSL `i32`/`u32` offsets), so every length a plan computes stays at or below 2^31 - 1.
pub const MAX_ELEMENTS: usize = i32::MAX as usize;

/// A size parameter: at least 1 and at most [`MAX_ELEMENTS`].
pub fn dim(what: &str, v: usize) -> Result<usize> {
    match v {
        0 => Err(invalid(format!("{what} must be >= 1"))),
        v if v > MAX_ELEMENTS => Err(invalid(format!("{what} = {v} exceeds {MAX_ELEMENTS} (32-bit indexing)"))),
        v => Ok(v),
    }
}

/// The product of `factors` as an element count, or an error naming `what` when it overflows or
/// exceeds [`MAX_ELEMENTS`]: plans call this for every tensor length before computing it plainly.
pub fn elements(what: &str, factors: &[usize]) -> Result<usize> {
    factors.iter().try_fold(1usize, |acc, &f| acc.checked_mul(f)).filter(|&n| n <= MAX_ELEMENTS).ok_or_else(|| {
        invalid(format!("{what} ({factors:?} multiplied) exceeds {MAX_ELEMENTS} elements (32-bit indexing)"))
    })
}

/// `v` as a u32 shader uniform, or an error naming `what` (WGSL indexes with u32).
pub fn u32_of(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| invalid(format!("{what} = {v} exceeds u32 (WGSL indexing)")))
}

/// Each of `rows` sequences owns a distinct pool slot, so a pool of fewer `slots` cannot serve
/// them: no valid `slot_ids` exist, and the plan is refused rather than every run flagged.
pub fn pool_fits(what: &str, rows: usize, row_noun: &str, slots: usize) -> Result<()> {
    if rows > slots {
        return Err(invalid(format!(
            "{what} slots = {slots} is fewer than {row_noun} = {rows}: each needs its own slot"
        )));
    }
    Ok(())
}

/// Checks offsets `cu [n + 1]` (`cu_seqlens`, stream offsets): from 0, never decreasing, ending
/// at `end` (`exact`) or at most `end`; the error names `what` and the entry that broke it.
pub fn check_offsets(what: &str, cu: &[i32], n: usize, end: usize, exact: bool) -> Result<Vec<usize>> {
    if cu.len() < n + 1 {
        return Err(crate::error::Error::Shape {
            what: format!("{what} (elements, at least)"),
            expected: n + 1,
            got: cu.len(),
        });
    }
    let bad = |m: String| Err(crate::error::Error::InvalidInput(m));
    if cu[0] != 0 {
        return bad(format!("{what}[0] = {}, must be 0", cu[0]));
    }
    if let Some(i) = (0..n).find(|&i| cu[i + 1] < cu[i]) {
        return bad(format!("{what}[{}] = {} < {what}[{i}] = {}", i + 1, cu[i + 1], cu[i]));
    }
    let last = i64::from(cu[n]);
    if last > end as i64 || (exact && last != end as i64) {
        return bad(format!("{what}[{n}] = {last} must {} {end}", if exact { "equal" } else { "be at most" }));
    }
    Ok(cu[..=n].iter().map(|&v| v as usize).collect())
}

/// The offsets as the kernels read them, or `None` where they raise `INDEX_OUT_OF_RANGE`.
pub fn offsets(cu: &[i32], n: usize, end: usize, exact: bool) -> Option<Vec<usize>> {
    check_offsets("cu", cu, n, end, exact).ok()
}

/// Row b's pool slot, or the status bit that keeps it away from the pool: the id is outside
/// `[0, slots)`, or another row names the same slot. Every row of a shared slot is skipped, so
/// the result never depends on which row a GPU would have run last.
pub fn slot_of(slot_ids: &[i32], b: usize, slots: usize) -> std::result::Result<usize, u32> {
    let id = slot_ids[b];
    let slot = usize::try_from(id).ok().filter(|&s| s < slots).ok_or(crate::backend::StatusBits::SLOT_OUT_OF_RANGE)?;
    if slot_ids.iter().enumerate().any(|(j, &o)| j != b && o == id) {
        return Err(crate::backend::StatusBits::SLOT_REPEATED);
    }
    Ok(slot)
}

/// Host-side check of `rows` slot ids: each in `[0, slots)` and no two equal. The error names
/// the first bad entry; `noun` is what an id belongs to ("row", "sequence"). The kernels skip
/// such rows and raise the status instead.
pub fn check_slot_ids(ids: &[i32], rows: usize, slots: usize, noun: &str) -> Result<()> {
    if ids.len() < rows {
        return Err(crate::error::Error::Shape {
            what: "slot_ids (elements, at least)".into(),
            expected: rows,
            got: ids.len(),
        });
    }
    for b in 0..rows {
        if let Err(bit) = slot_of(&ids[..rows], b, slots) {
            let why = if bit == crate::backend::StatusBits::SLOT_REPEATED {
                format!("is named by another {noun} too")
            } else {
                format!("is outside the pool [0, {slots})")
            };
            return Err(crate::error::Error::InvalidInput(format!("slot_ids[{b}] = {} {why}", ids[b])));
        }
    }
    Ok(())
}

/// `rows` rows of `cols` elements, `stride` elements apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rows {
    /// Number of rows.
    pub rows: usize,
    /// Elements per row (contiguous).
    pub cols: usize,
    /// Elements from the start of one row to the start of the next; at least `cols`.
    pub stride: usize,
}

impl Rows {
    /// A view; `stride` defaults to `cols` (dense). The span must fit [`MAX_ELEMENTS`] (32-bit
    /// indexing in every kernel).
    pub fn new(what: &str, rows: usize, cols: usize, stride: Option<usize>) -> Result<Rows> {
        let stride = stride.unwrap_or(cols);
        if stride < cols {
            return Err(invalid(format!("{what}: row stride {stride} is smaller than the row length {cols}")));
        }
        let r = Rows { rows, cols, stride };
        let span =
            rows.checked_sub(1).and_then(|n| n.checked_mul(stride)).and_then(|n| n.checked_add(cols)).unwrap_or(0);
        if rows > 0 && (span == 0 && cols > 0 || span > MAX_ELEMENTS) {
            return Err(invalid(format!("{what}: {rows} rows of stride {stride} overflow 32-bit indexing")));
        }
        Ok(r)
    }

    /// Elements from the first to one past the last element of the view.
    pub fn span(&self) -> usize {
        if self.rows == 0 {
            0
        } else {
            (self.rows - 1) * self.stride + self.cols
        }
    }

    /// The view's elements as a dense `[rows, cols]` vector.
    pub fn gather<T: Copy>(&self, data: &[T]) -> Vec<T> {
        let mut v = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            v.extend_from_slice(&data[r * self.stride..r * self.stride + self.cols]);
        }
        v
    }

    /// Writes a dense `[rows, cols]` vector into the view, leaving the gaps alone.
    pub fn scatter<T: Copy>(&self, dense: &[T], data: &mut [T]) {
        for r in 0..self.rows {
            data[r * self.stride..r * self.stride + self.cols]
                .copy_from_slice(&dense[r * self.cols..(r + 1) * self.cols]);
        }
    }
}
