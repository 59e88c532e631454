//! Safe kernels shaped for auto-vectorisation: fixed-width inner loops over contiguous slices
//! (on aarch64 these are the product's kernels: NEON is always there, no runtime check).
//! The `*_body` functions are `#[inline(always)]` so `x86` can compile them again inside an
//! AVX2+FMA function, where the same loops vectorise eight lanes wide.

use std::ops::Range;

use super::{AddParams, Geometry, Requant};

/// The GEMM's register tile: `MR` output rows × `NR` output columns of i32 accumulators, 64 in
/// all: sixteen 128-bit registers on NEON (of 32), so the depth loop runs with every
/// accumulator in a register. Per step of the depth loop it loads one vector of `NR` inputs and
/// one of `MR` weights (both widened to i16 at packing) and issues `MR` × 2 widening
/// multiply-adds by a lane (`SMLAL`/`SMLAL2 .4s, .4h, .h[r]`): 64 MACs for 2 loads. 8 × 8
/// rather than 4 × 16 because Lite0's last stages have 7 × 7 = 49 columns: padded to 56, not 64.
pub const MR: usize = 8;
pub const NR: usize = 8;

/// Weights transposed to `depth × rows_padded` i16 (`rows_padded = rows + MR`, the extra rows
/// zero): the `MR` weights of any row `r0` at depth `k` are one contiguous load, so a tile can
/// start at any row (threads split rows anywhere).
#[derive(Debug, Clone, PartialEq)]
pub struct Panels {
    pub data: Vec<i16>,
    pub rows_padded: usize,
}

pub fn pack_weights(w: &[i8], rows: usize, depth: usize) -> Panels {
    let rows_padded = rows + MR;
    let mut data = vec![0i16; depth * rows_padded];
    for (r, row) in w.chunks_exact(depth.max(1)).take(rows).enumerate() {
        for (k, &v) in row.iter().enumerate() {
            data[k * rows_padded + r] = v as i16;
        }
    }
    Panels { data, rows_padded }
}

/// `x` (`depth × cols` i8) widened to i16, columns padded with zeros to a multiple of `NR`.
/// Returns the data and the padded width.
pub fn pack_input(x: &[i8], depth: usize, cols: usize) -> (Vec<i16>, usize) {
    let padded = cols.div_ceil(NR) * NR;
    let mut data = vec![0i16; depth * padded];
    for (dst, src) in data
        .chunks_exact_mut(padded.max(1))
        .zip(x.chunks_exact(cols.max(1)))
        .take(depth)
    {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = v as i16;
        }
    }
    (data, padded)
}

/// One `MR × NR` tile: rows `r0..r0 + MR` (weights) × columns `c0..c0 + NR` (inputs), bias
/// included, in plain loops: what any CPU runs. (LLVM does not vectorise it well: on aarch64 it
/// became scalar code, which is why `aarch64.rs` has its own tiles.)
#[inline(always)]
pub fn tile(w: &Panels, r0: usize, x16: &[i16], padded: usize, c0: usize, bias: &[i32; MR]) -> [[i32; NR]; MR] {
    let mut acc = [[0i32; NR]; MR];
    for (a, &b) in acc.iter_mut().zip(bias) {
        *a = [b; NR];
    }
    for (wk, xk) in w.data.chunks_exact(w.rows_padded).zip(x16.chunks_exact(padded)) {
        let wv: [i16; MR] = std::array::from_fn(|i| wk[r0 + i]);
        let xv: [i16; NR] = std::array::from_fn(|i| xk[c0 + i]);
        for (a, &wr) in acc.iter_mut().zip(&wv) {
            for (al, &xl) in a.iter_mut().zip(&xv) {
                *al += wr as i32 * xl as i32;
            }
        }
    }
    acc
}

/// Rows `rows` of the product into `out` (those rows only, `rows.len() × cols`).
#[allow(clippy::too_many_arguments)]
pub fn gemm_rows(
    w: &Panels,
    rows: Range<usize>,
    x16: &[i16],
    padded: usize,
    cols: usize,
    bias: &[i32],
    requant: &Requant,
    out: &mut [i8],
) {
    let block = |r0, c0, b: &[i32; MR]| tile(w, r0, x16, padded, c0, b);
    gemm_rows_with(block, rows, cols, bias, requant, out)
}

/// [`gemm_rows`] around any register tile: `tile(r0, c0, bias)` is the `MR × NR` block of
/// accumulators at rows `r0..`, columns `c0..` (its packing lets it read past the last row and
/// column). The tiling, the padding rows and the requantisation are the same for every tile.
#[inline(always)]
pub fn gemm_rows_with(
    tile: impl Fn(usize, usize, &[i32; MR]) -> [[i32; NR]; MR],
    rows: Range<usize>,
    cols: usize,
    bias: &[i32],
    requant: &Requant,
    out: &mut [i8],
) {
    let first = rows.start;
    for r0 in rows.clone().step_by(MR) {
        let m = MR.min(rows.end - r0);
        // Rows past `m` are computed on the zero rows of the padding and not stored.
        let tile_bias: [i32; MR] = std::array::from_fn(|i| if i < m { bias[r0 + i] } else { 0 });
        for c0 in (0..cols).step_by(NR) {
            let n = NR.min(cols - c0);
            let acc = tile(r0, c0, &tile_bias);
            for (i, row) in acc.iter().enumerate().take(m) {
                let o = &mut out[(r0 + i - first) * cols + c0..(r0 + i - first) * cols + c0 + n];
                requant_row(&row[..n], requant.multiplier[r0 + i], requant, o);
            }
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
    let (x16, padded) = pack_input(x, depth, cols);
    gemm_rows(
        &pack_weights(w, rows, depth),
        0..rows,
        &x16,
        padded,
        cols,
        bias,
        requant,
        out,
    )
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
