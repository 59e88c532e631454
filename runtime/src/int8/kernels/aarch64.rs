//! aarch64: the GEMM's register tiles in NEON intrinsics, around the portable driver
//! (`portable::gemm_rows_with`). These are the Pi's pointwise-convolution kernels: NEON without
//! the dot-product extension, since a Pi 4 (Cortex-A72) has none.
//!
//! - [`mull_tile`] (the default): `SMULL` + `SMLAL2` multiply 16 i8 pairs along the depth into 8
//!   i16 sums of two products, `SADALP` adds those into 4 i32 lanes. 16 products per two
//!   multiply instructions, twice the lane form's 4 per instruction; a Cortex-A72 issues one
//!   multiply per cycle (its F0 pipe) and the `SADALP` on the other pipe, so this is the form
//!   that can keep up with its float FMA (MLAS and XNNPACK use it for the same reason). Two
//!   products fit an i16 only when no weight is −128 (2 · 127 · 128 < 2¹⁵): the symmetric
//!   weights every int8 exporter writes, ours and onnxruntime's. Weights with a −128 take
//! - [`lane_tile`]: i8 widened to i16 at packing, then `SMLAL`/`SMLAL2 .4s, .4h, .h[r]` by lane
//!   into sixteen accumulators, exact for any weights.
//!
//! Why `unsafe` (the workspace denies it elsewhere): vector loads and stores take raw pointers,
//! and LLVM does not find these forms: compiled for aarch64, the portable 8 × 8 tile became
//! scalar `madd`s with its accumulators on the stack (rustc 1.95, 2026-11-30). NEON is part of
//! the aarch64 base ISA, so there is no run-time check to make.
#![allow(unsafe_code)]

use std::arch::aarch64::*;

use super::portable::{MR, NR, Panels};

/// One `MR × NR` tile of the lane kernel: rows `r0..r0 + MR` of the packed weights × columns
/// `c0..c0 + NR` of the packed input, over the whole depth, bias included.
pub fn lane_tile(w: &Panels, r0: usize, x16: &[i16], padded: usize, c0: usize, bias: &[i32; MR]) -> [[i32; NR]; MR] {
    let depth = w.data.len() / w.rows_padded.max(1);
    assert!(r0 + MR <= w.rows_padded && c0 + NR <= padded && x16.len() >= depth * padded);
    // SAFETY: the asserts above keep every load in bounds: weights are read at
    // `k·rows_padded + r0 .. + MR` and inputs at `k·padded + c0 .. + NR` for `k < depth`, both
    // inside their slices.
    unsafe {
        lane_tile_neon(
            w.data.as_ptr().add(r0),
            w.rows_padded,
            depth,
            x16.as_ptr().add(c0),
            padded,
            bias,
        )
    }
}

/// `wp` and `xp` point at the tile's first weight and input; see [`lane_tile`].
#[target_feature(enable = "neon")]
unsafe fn lane_tile_neon(
    wp: *const i16,
    rows_padded: usize,
    depth: usize,
    xp: *const i16,
    padded: usize,
    bias: &[i32; MR],
) -> [[i32; NR]; MR] {
    // Sixteen named accumulators (row r: `ar` columns 0–3, `br` columns 4–7), so they live in
    // registers for the whole depth loop. Each macro below is given the same list.
    macro_rules! init {
        ($($a:ident $b:ident $i:literal),*) => { $(let mut $a = vdupq_n_s32(bias[$i]); let mut $b = $a;)* };
    }
    init!(a0 b0 0, a1 b1 1, a2 b2 2, a3 b3 3, a4 b4 4, a5 b5 5, a6 b6 6, a7 b7 7);
    for k in 0..depth {
        // SAFETY: `k < depth`: in bounds per `lane_tile`'s asserts.
        let (x, wv) = unsafe { (vld1q_s16(xp.add(k * padded)), vld1q_s16(wp.add(k * rows_padded))) };
        let xl = vget_low_s16(x);
        macro_rules! mac {
            ($($a:ident $b:ident $i:literal),*) => {
                $($a = vmlal_laneq_s16::<$i>($a, xl, wv); $b = vmlal_high_laneq_s16::<$i>($b, x, wv);)*
            };
        }
        mac!(a0 b0 0, a1 b1 1, a2 b2 2, a3 b3 3, a4 b4 4, a5 b5 5, a6 b6 6, a7 b7 7);
    }
    let mut out = [[0i32; NR]; MR];
    macro_rules! store {
        ($($a:ident $b:ident $i:literal),*) => {
            // SAFETY: each row of `out` holds NR = 8 i32: two 4-lane stores.
            $(unsafe { vst1q_s32(out[$i].as_mut_ptr(), $a); vst1q_s32(out[$i].as_mut_ptr().add(4), $b); })*
        };
    }
    store!(a0 b0 0, a1 b1 1, a2 b2 2, a3 b3 3, a4 b4 4, a5 b5 5, a6 b6 6, a7 b7 7);
    out
}

/// Depth step of the mull kernel: 16 i8 per row and per column.
const STEP: usize = 16;

/// Weights for [`mull_tile`]: row-major, the depth padded with zeros to a multiple of 16, `MR`
/// zero rows after the last (a tile may start at any row).
#[derive(Debug, Clone, PartialEq)]
pub struct MullWeights {
    pub data: Vec<i8>,
    pub depth16: usize,
}

/// `None` when a weight is −128 (see the module doc): those weights take the lane kernel.
pub fn pack_mull_weights(w: &[i8], rows: usize, depth: usize) -> Option<MullWeights> {
    if w.contains(&i8::MIN) {
        return None;
    }
    let depth16 = depth.div_ceil(STEP) * STEP;
    let mut data = vec![0i8; (rows + MR) * depth16];
    for (dst, src) in data
        .chunks_exact_mut(depth16.max(1))
        .zip(w.chunks_exact(depth.max(1)))
        .take(rows)
    {
        dst[..depth].copy_from_slice(src);
    }
    Some(MullWeights { data, depth16 })
}

/// `x` (`depth × cols`) transposed to columns of `depth16` (zero-padded), the column count
/// padded with zero columns to a multiple of `NR`: column `c` is `data[c·depth16..]`.
pub fn pack_mull_input(x: &[i8], depth: usize, cols: usize) -> Vec<i8> {
    let depth16 = depth.div_ceil(STEP) * STEP;
    let padded = cols.div_ceil(NR) * NR;
    let mut data = vec![0i8; padded * depth16];
    for (k, row) in x.chunks_exact(cols.max(1)).take(depth).enumerate() {
        for (column, &v) in data.chunks_exact_mut(depth16.max(1)).zip(row) {
            column[k] = v;
        }
    }
    data
}

/// One `MR × NR` tile of the mull kernel (bias included), as four 4 × 4 blocks: sixteen i32x4
/// accumulators per block, each finished by a horizontal add.
pub fn mull_tile(w: &MullWeights, r0: usize, xt: &[i8], c0: usize, bias: &[i32; MR]) -> [[i32; NR]; MR] {
    let d = w.depth16;
    assert!((r0 + MR) * d <= w.data.len() && (c0 + NR) * d <= xt.len());
    let mut out = [[0i32; NR]; MR];
    for (bi, rows) in out.chunks_exact_mut(4).enumerate() {
        for bj in 0..NR / 4 {
            // SAFETY: rows `r0 + 4·bi ..+4` and columns `c0 + 4·bj ..+4` lie inside the tile,
            // whose `d`-long rows and columns are in bounds per the assert above.
            let block = unsafe {
                mull_block(
                    w.data.as_ptr().add((r0 + 4 * bi) * d),
                    xt.as_ptr().add((c0 + 4 * bj) * d),
                    d,
                )
            };
            for (row, (sums, b)) in rows.iter_mut().zip(block.iter().zip(&bias[4 * bi..])) {
                for (o, s) in row[4 * bj..4 * bj + 4].iter_mut().zip(sums) {
                    *o = s + b;
                }
            }
        }
    }
    out
}

/// Σ over `d` (a multiple of 16) of 4 weight rows at `wp` (row stride `d`) × 4 input columns at
/// `xp` (column stride `d`).
#[target_feature(enable = "neon")]
unsafe fn mull_block(wp: *const i8, xp: *const i8, d: usize) -> [[i32; 4]; 4] {
    macro_rules! zero {
        ($($a:ident)*) => { $(let mut $a = vdupq_n_s32(0);)* };
    }
    zero!(a00 a01 a02 a03 a10 a11 a12 a13 a20 a21 a22 a23 a30 a31 a32 a33);
    for k in (0..d).step_by(STEP) {
        // SAFETY: `k + 16 ≤ d`: each load reads 16 bytes of one row or column.
        let (w0, w1, w2, w3, x0, x1, x2, x3) = unsafe {
            (
                vld1q_s8(wp.add(k)),
                vld1q_s8(wp.add(d + k)),
                vld1q_s8(wp.add(2 * d + k)),
                vld1q_s8(wp.add(3 * d + k)),
                vld1q_s8(xp.add(k)),
                vld1q_s8(xp.add(d + k)),
                vld1q_s8(xp.add(2 * d + k)),
                vld1q_s8(xp.add(3 * d + k)),
            )
        };
        macro_rules! mac {
            ($($a:ident $w:ident $x:ident),*) => {
                $($a = vpadalq_s16($a, vmlal_high_s8(vmull_s8(vget_low_s8($w), vget_low_s8($x)), $w, $x));)*
            };
        }
        mac!(a00 w0 x0, a01 w0 x1, a02 w0 x2, a03 w0 x3, a10 w1 x0, a11 w1 x1, a12 w1 x2, a13 w1 x3,
             a20 w2 x0, a21 w2 x1, a22 w2 x2, a23 w2 x3, a30 w3 x0, a31 w3 x1, a32 w3 x2, a33 w3 x3);
    }
    [
        [vaddvq_s32(a00), vaddvq_s32(a01), vaddvq_s32(a02), vaddvq_s32(a03)],
        [vaddvq_s32(a10), vaddvq_s32(a11), vaddvq_s32(a12), vaddvq_s32(a13)],
        [vaddvq_s32(a20), vaddvq_s32(a21), vaddvq_s32(a22), vaddvq_s32(a23)],
        [vaddvq_s32(a30), vaddvq_s32(a31), vaddvq_s32(a32), vaddvq_s32(a33)],
    ]
}
