//! x86-64: the GEMM in intrinsics (AVX-512 VNNI, or AVX2), the depthwise blocks in intrinsics
//! (AVX-512, or AVX2+FMA) around the shared driver in `depthwise`, and the portable add
//! compiled again with AVX2+FMA enabled. Every function here is entered only after
//! [`available`], [`vnni_available`] or [`avx512_available`] said yes.
//!
//! Why `unsafe` (the workspace denies it elsewhere): calling a `#[target_feature]` function from
//! code compiled without that feature is unsafe by definition, vector loads and stores take raw
//! pointers, and the forms that make these kernels fast are not what LLVM finds on its own: the
//! portable GEMM, as compiled for baseline x86-64, measured 6–8× slower than `vpmaddwd` at depth
//! ≥ 144, and `vpdpbusd` is 3–5× faster again; the depthwise blocks written as plain arrays
//! compiled to scalar FMAs (`kernels::tests::timings`, Xeon with AVX-512, 2026-11-30).
#![allow(unsafe_code)]

use std::arch::x86_64::*;
use std::ops::Range;

use super::{AddParams, Requant, portable};

mod depthwise;
mod depthwise_avxvnni;
pub mod depthwise_vnni;
mod vnni;

pub use depthwise::{
    depthwise_channels, depthwise_channels_avx512, depthwise_f32_channels, depthwise_f32_channels_avx512,
};
pub use depthwise_avxvnni::{avxvnni_available, depthwise_channels_avxvnni};
pub use vnni::{
    Quads, gemm_f32_rows, gemm_rows_vnni, gemv_w8, pack_f32_weights, pack_input_quads, pack_weight_quads,
    vnni_available,
};

/// Output columns per register tile: two 8-lane accumulators per row.
const COLS: usize = 16;
/// Rows per register tile: 4 rows × 2 accumulators, plus 2 input vectors and a broadcast.
const ROWS: usize = 4;

pub fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Two i8 values as the (low, high) i16 halves of one i32: the operand layout of `vpmaddwd`.
#[inline(always)]
fn pair(lo: i8, hi: i8) -> i32 {
    ((lo as i16 as u16 as u32) | ((hi as i16 as u16 as u32) << 16)) as i32
}

/// Weights as `rows × ceil(depth/2)` pairs along the depth (an odd depth padded with 0).
pub fn pack_weight_pairs(w: &[i8], rows: usize, depth: usize) -> Vec<i32> {
    let depth2 = depth.div_ceil(2);
    let mut out = vec![0i32; rows * depth2];
    for r in 0..rows {
        let row = &w[r * depth..(r + 1) * depth];
        for k2 in 0..depth2 {
            let hi = row.get(2 * k2 + 1).copied().unwrap_or(0);
            out[r * depth2 + k2] = pair(row[2 * k2], hi);
        }
    }
    out
}

/// The input as pairs along the depth, columns padded to whole tiles with zeros; returns the
/// padded column count too.
pub fn pack_input_pairs(x: &[i8], depth: usize, cols: usize) -> (Vec<i32>, usize) {
    let depth2 = depth.div_ceil(2);
    let padded = cols.div_ceil(COLS) * COLS;
    let mut xp = vec![0i32; depth2 * padded];
    for k2 in 0..depth2 {
        let a = &x[2 * k2 * cols..(2 * k2 + 1) * cols];
        let dst = &mut xp[k2 * padded..k2 * padded + cols];
        if 2 * k2 + 1 < depth {
            let b = &x[(2 * k2 + 1) * cols..(2 * k2 + 2) * cols];
            for ((d, &a), &b) in dst.iter_mut().zip(a).zip(b) {
                *d = pair(a, b);
            }
        } else {
            for (d, &a) in dst.iter_mut().zip(a) {
                *d = pair(a, 0);
            }
        }
    }
    (xp, padded)
}

/// Rows `rows` of the product into `out` (those rows only).
#[allow(clippy::too_many_arguments)]
pub fn gemm_rows(
    pairs: &[i32],
    depth: usize,
    rows: Range<usize>,
    xp: &[i32],
    padded: usize,
    cols: usize,
    bias: &[i32],
    requant: &Requant,
    out: &mut [i8],
) {
    // SAFETY: the caller packed `pairs` only after `available()` returned true, so AVX2 and FMA
    // are present on this CPU.
    unsafe { gemm_rows_avx2(pairs, depth, rows, xp, padded, cols, bias, requant, out) }
}

#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn gemm_rows_avx2(
    pairs: &[i32],
    depth: usize,
    rows: Range<usize>,
    xp: &[i32],
    padded: usize,
    cols: usize,
    bias: &[i32],
    requant: &Requant,
    out: &mut [i8],
) {
    let depth2 = depth.div_ceil(2);
    let first = rows.start;
    let mut tile = [[0i32; COLS]; ROWS];
    for c0 in (0..cols).step_by(COLS) {
        let n = COLS.min(cols - c0);
        for r0 in rows.clone().step_by(ROWS) {
            let m = ROWS.min(rows.end - r0);
            tile_4x16(&xp[c0..], padded, depth2, &pairs[r0 * depth2..], depth2, m, &mut tile);
            for (i, acc) in tile.iter_mut().enumerate().take(m) {
                let r = r0 + i;
                for a in acc[..n].iter_mut() {
                    *a += bias[r];
                }
                let o = &mut out[(r - first) * cols + c0..(r - first) * cols + c0 + n];
                portable::requant_row(&acc[..n], requant.multiplier[r], requant, o);
            }
        }
    }
}

/// `tile[i][j] = Σ_k2 madd(x[k2][j], w[i][k2])` for `m ≤ 4` rows and 16 columns.
#[target_feature(enable = "avx2,fma")]
fn tile_4x16(
    xp: &[i32],
    x_stride: usize,
    depth2: usize,
    wp: &[i32],
    w_stride: usize,
    m: usize,
    tile: &mut [[i32; COLS]; ROWS],
) {
    assert!(depth2 == 0 || xp.len() >= (depth2 - 1) * x_stride + COLS);
    assert!(wp.len() >= (m - 1) * w_stride + depth2 && m <= ROWS);
    let zero = _mm256_setzero_si256();
    let mut acc = [[zero; 2]; ROWS];
    for k2 in 0..depth2 {
        // SAFETY: the asserts above keep `k2 * x_stride + 16 ≤ xp.len()`; unaligned loads.
        let (x0, x1) = unsafe {
            let p = xp.as_ptr().add(k2 * x_stride) as *const __m256i;
            (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1)))
        };
        for (i, acc) in acc.iter_mut().enumerate().take(m) {
            let w = _mm256_set1_epi32(wp[i * w_stride + k2]);
            acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(x0, w));
            acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(x1, w));
        }
    }
    for (dst, acc) in tile.iter_mut().zip(&acc).take(m) {
        // SAFETY: `dst` is 16 i32s, two unaligned 256-bit stores.
        unsafe {
            let p = dst.as_mut_ptr() as *mut __m256i;
            _mm256_storeu_si256(p, acc[0]);
            _mm256_storeu_si256(p.add(1), acc[1]);
        }
    }
}

pub fn avx512_available() -> bool {
    available()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
}

pub fn quantize(x: &[f32], scale: f32, zero: i32, out: &mut [i8]) {
    // SAFETY: only called after `available()` returned true.
    unsafe { quantize_avx2(x, scale, zero, out) }
}

#[target_feature(enable = "avx2,fma")]
fn quantize_avx2(x: &[f32], scale: f32, zero: i32, out: &mut [i8]) {
    portable::quantize_body(x, scale, zero, out)
}

pub fn add(p: &AddParams, a: &[i8], b: &[i8], out: &mut [i8]) {
    // SAFETY: only called after `available()` returned true.
    unsafe { add_avx2(p, a, b, out) }
}

#[target_feature(enable = "avx2,fma")]
fn add_avx2(p: &AddParams, a: &[i8], b: &[i8], out: &mut [i8]) {
    portable::add_body(p, a, b, out)
}

// ---------------------------------------------------------------------------------------------
// AVX-512 VNNI: `vpdpbusd` multiplies 4 unsigned bytes by 4 signed bytes and adds the four
// products to an i32 lane, 64 products per instruction with no intermediate saturation (unlike
// `vpmaddubsw`). Activations are signed, so the input is shifted to unsigned (x + 128, an XOR
// with 0x80) and each row's accumulator is corrected by 128·Σw, folded into its bias.
