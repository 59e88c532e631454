//! Safe kernels shaped for auto-vectorisation: fixed-width inner loops over contiguous slices.
//! The `*_body` functions are `#[inline(always)]` so `x86.rs` can compile them again inside an
//! AVX2+FMA function, where the same loops vectorise eight lanes wide.

use std::ops::Range;

use super::{AddParams, Geometry, Requant};

/// Output columns per GEMM tile: 256 i32 accumulators stay in L1 across the depth loop.
const TILE: usize = 256;

/// i8 → i16 once, so the inner loop is a widening multiply-add (SMLAL on NEON).
pub fn pack_i16(x: &[i8], depth: usize, cols: usize) -> Vec<i16> {
    x[..depth * cols].iter().map(|&v| v as i16).collect()
}

/// Rows `rows` of the product into `out` (those rows only, `rows.len() × cols`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn gemm_rows(
    w: &[i8],
    depth: usize,
    rows: Range<usize>,
    x16: &[i16],
    cols: usize,
    bias: &[i32],
    requant: &Requant,
    out: &mut [i8],
) {
    let first = rows.start;
    let mut acc = [0i32; TILE];
    for start in (0..cols).step_by(TILE) {
        let n = TILE.min(cols - start);
        for r in rows.clone() {
            let acc = &mut acc[..n];
            acc.fill(bias[r]);
            let wr = &w[r * depth..(r + 1) * depth];
            for (k, &wk) in wr.iter().enumerate() {
                let wk = wk as i16 as i32;
                let xr = &x16[k * cols + start..k * cols + start + n];
                for (a, &xv) in acc.iter_mut().zip(xr) {
                    *a += wk * xv as i32;
                }
            }
            let o = &mut out[(r - first) * cols + start..(r - first) * cols + start + n];
            requant_row(acc, requant.multiplier[r], requant, o);
        }
    }
}

/// The whole product, for tests and single calls.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    w: &[i8],
    rows: usize,
    depth: usize,
    x: &[i8],
    cols: usize,
    bias: &[i32],
    requant: &Requant,
    out: &mut [i8],
) {
    let x16 = pack_i16(x, depth, cols);
    gemm_rows(w, depth, 0..rows, &x16, cols, bias, requant, out)
}

/// 1.5·2²³. For |v| < 2²², `v + ROUNDER` rounds v to the nearest integer, ties to even (the
/// FPU's default mode), and the low bits of the sum *are* that integer: `bits − ROUNDER_BITS`.
/// Rounding and conversion in one add and one integer subtract, which vectorise on every target
/// (MLAS does the same). Rust's `round_ties_even` and saturating `as i32` stay scalar here.
const ROUNDER: f32 = 12_582_912.0;
const ROUNDER_BITS: i32 = 0x4B40_0000;

/// `round_half_even(v)` as i32, for |v| < 2²².
#[inline(always)]
pub(super) fn round_to_i32(v: f32) -> i32 {
    (v + ROUNDER).to_bits() as i32 - ROUNDER_BITS
}

/// `v` clamped to `[lo, hi]` as one `maxps` and one `minps` (or NEON's fmax/fmin): `f32::clamp`
/// also orders NaNs, which costs a compare and a blend per bound. No NaN reaches it.
#[inline(always)]
fn clamp(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v > lo { v } else { lo };
    if v < hi { v } else { hi }
}

/// [`super::requantize`] over a row: bit-identical (the clamp to the i8 range comes first, so the
/// rounded value is within ±255), and vectorised.
#[inline(always)]
pub(super) fn requant_row(acc: &[i32], multiplier: f32, requant: &Requant, out: &mut [i8]) {
    let lo = (requant.lo - requant.zero_point) as f32;
    let hi = (requant.hi - requant.zero_point) as f32;
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = (round_to_i32(clamp(a as f32 * multiplier, lo, hi)) + requant.zero_point) as i8;
    }
}

/// im2col for channels `first..first + count` of `x`: a `(count·kh·kw) × (oh·ow)` matrix, taps in
/// the padding set to `pad` (the input zero point, so they cancel against the folded bias).
/// Each (tap, output row) is one run of output columns whose input columns are all inside the
/// row, found by arithmetic rather than tested per pixel: a copy at stride 1, every other byte
/// at stride 2 (the stem of every network we export).
pub fn im2col(g: &Geometry, x: &[i8], first: usize, count: usize, pad: i8, out: &mut Vec<i8>) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let (sw, pl) = (g.stride_w, g.pads[1]);
    out.clear();
    out.resize(count * g.kernel_h * g.kernel_w * oh * ow, pad);
    let mut row = 0;
    for c in first..first + count {
        let plane = &x[c * g.in_h * g.in_w..(c + 1) * g.in_h * g.in_w];
        for ky in 0..g.kernel_h {
            for kx in 0..g.kernel_w {
                // Output columns ox with 0 ≤ ox·sw + kx − pl < in_w.
                let ox_lo = pl.saturating_sub(kx).div_ceil(sw);
                let ox_hi = ((g.in_w + pl).saturating_sub(kx)).div_ceil(sw).min(ow);
                let dst = &mut out[row * oh * ow..(row + 1) * oh * ow];
                row += 1;
                if ox_lo >= ox_hi {
                    continue;
                }
                for oy in 0..oh {
                    let Some(iy) = (oy * g.stride_h + ky).checked_sub(g.pads[0]).filter(|&iy| iy < g.in_h) else {
                        continue;
                    };
                    let src = &plane[iy * g.in_w + ox_lo * sw + kx - pl..(iy + 1) * g.in_w];
                    let dst = &mut dst[oy * ow + ox_lo..oy * ow + ox_hi];
                    match sw {
                        1 => dst.copy_from_slice(&src[..dst.len()]),
                        2 => {
                            let whole = dst.len().min(src.len() / 2);
                            for (d, pair) in dst[..whole].iter_mut().zip(src.chunks_exact(2)) {
                                *d = pair[0];
                            }
                            if let (Some(d), Some(&v)) = (dst.get_mut(whole), src.get(2 * whole)) {
                                *d = v;
                            }
                        }
                        _ => {
                            for (d, &v) in dst.iter_mut().zip(src.iter().step_by(sw)) {
                                *d = v;
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn quantize(x: &[f32], scale: f32, zero: i32, out: &mut [i8]) {
    quantize_body(x, scale, zero, out)
}

/// Clamped to the int8 range before rounding (so `round_to_i32`'s range holds), which for integer
/// bounds equals rounding first. NaN goes to the low bound.
#[inline(always)]
pub(super) fn quantize_body(x: &[f32], scale: f32, zero: i32, out: &mut [i8]) {
    let (lo, hi) = ((-128 - zero) as f32, (127 - zero) as f32);
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (round_to_i32(clamp(v / scale, lo, hi)) + zero) as i8;
    }
}

pub fn add(p: &AddParams, a: &[i8], b: &[i8], out: &mut [i8]) {
    add_body(p, a, b, out)
}

#[inline(always)]
pub(super) fn add_body(p: &AddParams, a: &[i8], b: &[i8], out: &mut [i8]) {
    let lo = (p.lo - p.zero_point) as f32;
    let hi = (p.hi - p.zero_point) as f32;
    let (za, zb) = (p.a_zero as f32, p.b_zero as f32);
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        let v = p.a_mult * (a as f32 - za) + p.b_mult * (b as f32 - zb);
        *o = (round_to_i32(clamp(v, lo, hi)) + p.zero_point) as i8;
    }
}
