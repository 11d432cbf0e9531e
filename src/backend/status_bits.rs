// The status bits, declared once. The crate includes this file as `backend::status` does, and
// build.rs includes it too, emitting every bit as a CUDA `#define ST_<NAME> <value>u` and a WGSL
// `const ST_<NAME>: u32 = <value>u;` so kernels never write a bit's value by hand.

/// An index list held a value outside its range (`core.gather_rows` `idx`, bad `cu_seqlens`).
pub const INDEX_OUT_OF_RANGE: u32 = 1;
/// Packed ternary weights held the invalid code 3 (read as 0).
pub const BAD_TERNARY_CODE: u32 = 2;
/// A slot id outside the state pool (recurrent states).
pub const SLOT_OUT_OF_RANGE: u32 = 4;
/// A value was non-finite or outside its range (weights to ternarize, ternary values to pack).
pub const VALUE_OUT_OF_RANGE: u32 = 8;
/// Two rows of one step or scan named the same state slot.
pub const SLOT_REPEATED: u32 = 16;

/// Every bit: its name (the generated constant is `ST_<name>`), value and what it means.
pub const STATUS_TABLE: &[(&str, u32, &str)] = &[
    ("INDEX_OUT_OF_RANGE", INDEX_OUT_OF_RANGE, "an index was out of range (row zeroed)"),
    ("BAD_TERNARY_CODE", BAD_TERNARY_CODE, "packed ternary data held code 3 (read as weight 0)"),
    ("SLOT_OUT_OF_RANGE", SLOT_OUT_OF_RANGE, "a slot id was outside the state pool (row skipped)"),
    ("VALUE_OUT_OF_RANGE", VALUE_OUT_OF_RANGE, "a value was non-finite or outside its range (clamped)"),
    (
        "SLOT_REPEATED",
        SLOT_REPEATED,
        "a slot id appeared in more than one row of a step or scan (those rows skipped, their slot untouched)",
    ),
];
