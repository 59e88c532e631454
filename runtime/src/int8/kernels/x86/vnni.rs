//! AVX-512: the int8 GEMM as VNNI `vpdpbusd` tiles, and the f32 GEMM of float pointwise
//! convolutions.

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::Requant;

/// Rows per VNNI register tile: 8 rows × 2 accumulators of 16 columns = 16 of the 32 registers.
const VROWS: usize = 8;
/// Columns per VNNI accumulator.
const VLANES: usize = 16;

pub fn vnni_available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// Weights for the VNNI GEMM: rows padded to whole tiles (zero rows), each row as `depth4` words
/// of 4 consecutive weights along the depth (a depth not divisible by 4 padded with zeros).
#[derive(Debug, Clone, PartialEq)]
pub struct Quads {
    words: Vec<i32>,
    depth4: usize,
    /// 128·Σw per row: what the +128 shift of the input adds to that row's accumulators.
    shift: Vec<i32>,
}

pub fn pack_weight_quads(w: &[i8], rows: usize, depth: usize) -> Quads {
    let depth4 = depth.div_ceil(4);
    // A whole zero tile past the last row: a tile may start at any row below `rows`.
    let mut words = vec![0i32; (rows + VROWS) * depth4];
    let mut shift = Vec::with_capacity(rows);
    for (r, row) in w.chunks_exact(depth.max(1)).take(rows).enumerate() {
        for (k4, quad) in row.chunks(4).enumerate() {
            let mut bytes = [0u8; 4];
            for (b, &v) in bytes.iter_mut().zip(quad) {
                *b = v as u8;
            }
            words[r * depth4 + k4] = i32::from_le_bytes(bytes);
        }
        shift.push(128 * row.iter().map(|&v| v as i32).sum::<i32>());
    }
    Quads { words, depth4, shift }
}

/// The input (`depth × cols` i8, row-major) as `depth4 × padded` words of 4 unsigned bytes
/// (x + 128) along the depth; columns padded to whole accumulators. Returns the padded column
/// count too. Padding bytes meet zero weights or land in columns nobody stores.
pub fn pack_input_quads(x: &[i8], depth: usize, cols: usize) -> (Vec<u8>, usize) {
    let padded = cols.next_multiple_of(VLANES);
    let mut out = vec![0u8; depth.div_ceil(4) * padded * 4];
    // SAFETY: SSE2 is part of x86-64; the function checks every bound it relies on.
    unsafe { pack_input_quads_sse2(x, depth, cols, padded, &mut out) };
    (out, padded)
}

/// Four input rows interleaved byte by byte, 16 columns per step (two rounds of unpacks).
#[target_feature(enable = "sse2")]
fn pack_input_quads_sse2(x: &[i8], depth: usize, cols: usize, padded: usize, out: &mut [u8]) {
    assert!(x.len() >= depth * cols && out.len() >= depth.div_ceil(4) * padded * 4);
    let flip = _mm_set1_epi8(-128);
    for k4 in 0..depth.div_ceil(4) {
        let dst = &mut out[k4 * padded * 4..(k4 + 1) * padded * 4];
        for c in (0..cols).step_by(VLANES) {
            let n = VLANES.min(cols - c);
            // The four rows' next 16 values, shifted to unsigned (a short tail or a row past the
            // depth: zeros, shifted too; their weights or their columns make them irrelevant).
            let [a, b, c2, d]: [__m128i; 4] = std::array::from_fn(|j| {
                let k = 4 * k4 + j;
                let mut staged = [0i8; VLANES];
                let src = if k >= depth {
                    &staged[..]
                } else if n == VLANES {
                    &x[k * cols + c..k * cols + c + VLANES]
                } else {
                    staged[..n].copy_from_slice(&x[k * cols + c..k * cols + c + n]);
                    &staged[..]
                };
                // SAFETY: `src` holds 16 bytes; unaligned load.
                _mm_xor_si128(unsafe { _mm_loadu_si128(src.as_ptr() as *const __m128i) }, flip)
            });
            // SAFETY: `dst` holds the 64 bytes at 4·c (c < cols ≤ padded, padded a multiple of
            // 16); unaligned stores.
            unsafe {
                let ab_lo = _mm_unpacklo_epi8(a, b);
                let ab_hi = _mm_unpackhi_epi8(a, b);
                let cd_lo = _mm_unpacklo_epi8(c2, d);
                let cd_hi = _mm_unpackhi_epi8(c2, d);
                let p = dst[4 * c..4 * c + 64].as_mut_ptr() as *mut __m128i;
                _mm_storeu_si128(p, _mm_unpacklo_epi16(ab_lo, cd_lo));
                _mm_storeu_si128(p.add(1), _mm_unpackhi_epi16(ab_lo, cd_lo));
                _mm_storeu_si128(p.add(2), _mm_unpacklo_epi16(ab_hi, cd_hi));
                _mm_storeu_si128(p.add(3), _mm_unpackhi_epi16(ab_hi, cd_hi));
            }
        }
    }
}

/// Rows `rows` of the product into `out` (those rows only), requantised in registers.
#[allow(clippy::too_many_arguments)]
pub fn gemm_rows_vnni(
    w: &Quads,
    rows: Range<usize>,
    xq: &[u8],
    padded: usize,
    cols: usize,
    bias: &[i32],
    requant: &Requant,
    out: &mut [i8],
) {
    // SAFETY: `Quads` are packed only after `vnni_available()` returned true.
    unsafe { gemm_rows_vnni_avx512(w, rows, xq, padded, cols, bias, requant, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
fn gemm_rows_vnni_avx512(
    w: &Quads,
    rows: Range<usize>,
    xq: &[u8],
    padded: usize,
    cols: usize,
    bias: &[i32],
    requant: &Requant,
    out: &mut [i8],
) {
    let depth4 = w.depth4;
    assert!(xq.len() >= depth4 * padded * 4 && padded >= cols && out.len() >= rows.len() * cols);
    assert!(w.words.len() >= (rows.end + VROWS) * depth4);
    let first = rows.start;
    for r0 in rows.clone().step_by(VROWS) {
        let m = VROWS.min(rows.end - r0);
        // Per-row constants of this tile; rows past `m` are computed on zero weights, not stored.
        let mut tile = Tile {
            bias: [0; VROWS],
            multiplier: [0.0; VROWS],
            rows: m,
        };
        for i in 0..m {
            tile.bias[i] = bias[r0 + i].wrapping_sub(w.shift[r0 + i]);
            tile.multiplier[i] = requant.multiplier[r0 + i];
        }
        let wq = &w.words[r0 * depth4..(r0 + VROWS) * depth4];
        let o = &mut out[(r0 - first) * cols..];
        let mut c0 = 0;
        while c0 < cols {
            if cols - c0 > VLANES {
                tile_vnni::<2>(xq, padded, depth4, wq, c0, cols, &tile, requant, o);
                c0 += 2 * VLANES;
            } else {
                tile_vnni::<1>(xq, padded, depth4, wq, c0, cols, &tile, requant, o);
                c0 += VLANES;
            }
        }
    }
}

struct Tile {
    bias: [i32; VROWS],
    multiplier: [f32; VROWS],
    rows: usize,
}

/// `VROWS` rows × `N`·16 columns from column `c0`: the depth loop in registers, then each row
/// requantised and stored (masked past `cols`). `out` starts at the tile's first row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
#[allow(clippy::too_many_arguments)]
fn tile_vnni<const N: usize>(
    xq: &[u8],
    padded: usize,
    depth4: usize,
    wq: &[i32],
    c0: usize,
    cols: usize,
    tile: &Tile,
    requant: &Requant,
    out: &mut [i8],
) {
    // The loads below read 64·N bytes at 4·(k4·padded + c0): inside `xq` when the columns
    // c0..c0 + 16·N are inside the padding (the caller takes N = 2 only when more than 16
    // columns remain, and `padded` is `cols` rounded up to 16).
    assert!(c0 + N * VLANES <= padded.next_multiple_of(N * VLANES) && c0 + (N - 1) * VLANES < padded);
    assert!(depth4 == 0 || 4 * ((depth4 - 1) * padded + c0) + 64 * N <= xq.len());
    assert!(wq.len() >= VROWS * depth4);
    let mut acc = [[_mm512_setzero_si512(); N]; VROWS];
    let rows: [&[i32]; VROWS] = std::array::from_fn(|i| &wq[i * depth4..(i + 1) * depth4]);
    for k4 in 0..depth4 {
        // SAFETY: in bounds by the asserts above.
        let x: [__m512i; N] = std::array::from_fn(|j| unsafe {
            _mm512_loadu_si512(xq.as_ptr().add(4 * (k4 * padded + c0) + 64 * j) as *const _)
        });
        for (acc, row) in acc.iter_mut().zip(&rows) {
            let w = _mm512_set1_epi32(row[k4]);
            for (a, &x) in acc.iter_mut().zip(&x) {
                *a = _mm512_dpbusd_epi32(*a, x, w);
            }
        }
    }
    let lo = _mm512_set1_ps((requant.lo - requant.zero_point) as f32);
    let hi = _mm512_set1_ps((requant.hi - requant.zero_point) as f32);
    let zp = _mm512_set1_epi32(requant.zero_point);
    for (i, acc) in acc.iter().enumerate().take(tile.rows) {
        let b = _mm512_set1_epi32(tile.bias[i]);
        let m = _mm512_set1_ps(tile.multiplier[i]);
        for (j, &a) in acc.iter().enumerate() {
            let start = c0 + j * VLANES;
            if start >= cols {
                break;
            }
            let n = VLANES.min(cols - start);
            // Same arithmetic as `requantize`: f32 product, clamp, round half to even.
            let v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(a, b)), m);
            let v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
            let q = _mm512_add_epi32(
                _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v),
                zp,
            );
            let bytes = _mm512_cvtsepi32_epi8(q);
            let dst = &mut out[i * cols + start..i * cols + start + n];
            // SAFETY: `dst` holds `n` ≤ 16 bytes and the mask writes only the first `n`.
            unsafe { _mm_mask_storeu_epi8(dst.as_mut_ptr(), (1u32 << n).wrapping_sub(1) as u16, bytes) };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// f32 GEMM for float pointwise convolutions (NCHW: the input rows are contiguous channel planes,
// so the input needs no packing): 8 rows × 32 columns of accumulators, one weight broadcast per
// row and depth step, masked loads and stores at the column tail.

/// Rows per f32 tile.
const FROWS: usize = 8;

/// Weights as tiles of 8 rows, depth-major inside a tile (`[tile][k][8]`): the 8 broadcasts of a
/// depth step are adjacent. Rows past `rows` are zero.
pub fn pack_f32_weights(w: &[f32], rows: usize, depth: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows.div_ceil(FROWS) * depth * FROWS];
    for (r, row) in w.chunks_exact(depth.max(1)).take(rows).enumerate() {
        for (k, &v) in row.iter().enumerate() {
            out[((r / FROWS) * depth + k) * FROWS + r % FROWS] = v;
        }
    }
    out
}

/// Rows `rows` (starting at a multiple of 8) of `out = clamp(w · x + bias)` into `out` (those
/// rows).
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32_rows(
    packed: &[f32],
    depth: usize,
    rows: Range<usize>,
    x: &[f32],
    cols: usize,
    bias: &[f32],
    clamp: (f32, f32),
    out: &mut [f32],
) {
    // SAFETY: the packed weights exist only where `avx512_available()` said yes.
    unsafe { gemm_f32_avx512(packed, depth, rows, x, cols, bias, clamp, out) }
}

#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
fn gemm_f32_avx512(
    packed: &[f32],
    depth: usize,
    rows: Range<usize>,
    x: &[f32],
    cols: usize,
    bias: &[f32],
    clamp: (f32, f32),
    out: &mut [f32],
) {
    assert!(rows.start.is_multiple_of(FROWS) && rows.end <= bias.len());
    assert!(packed.len() >= rows.end.div_ceil(FROWS) * depth * FROWS);
    assert!(x.len() >= depth * cols && out.len() >= rows.len() * cols);
    let first = rows.start;
    for r0 in rows.clone().step_by(FROWS) {
        let m = FROWS.min(rows.end - r0);
        let w = &packed[(r0 / FROWS) * depth * FROWS..(r0 / FROWS + 1) * depth * FROWS];
        let mut c0 = 0;
        while c0 < cols {
            let o = &mut out[(r0 - first) * cols..];
            if cols - c0 > 16 {
                tile_f32::<2>(w, depth, x, cols, c0, &bias[r0..r0 + m], clamp, o);
                c0 += 32;
            } else {
                tile_f32::<1>(w, depth, x, cols, c0, &bias[r0..r0 + m], clamp, o);
                c0 += 16;
            }
        }
    }
}

/// Column mask of the `lanes` (≤ 16) first lanes.
fn lane_mask(lanes: usize) -> __mmask16 {
    ((1u32 << lanes.min(16)) - 1) as __mmask16
}

/// 8 rows × 16·N columns from column `c0` (N = 2 only when more than 16 columns remain): the
/// depth loop in registers, then bias, clamp and masked stores of the `bias.len()` rows that
/// exist.
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
fn tile_f32<const N: usize>(
    w: &[f32],
    depth: usize,
    x: &[f32],
    cols: usize,
    c0: usize,
    bias: &[f32],
    (lo, hi): (f32, f32),
    out: &mut [f32],
) {
    // Every load starts inside `x` (c0 + 16·j < cols) and its mask stops at the row's end.
    assert!(c0 + 16 * (N - 1) < cols && w.len() >= depth * FROWS && x.len() >= depth * cols);
    assert!(bias.len() <= FROWS && bias.len() * cols <= out.len());
    let masks: [__mmask16; N] = std::array::from_fn(|j| lane_mask(cols - c0 - 16 * j));
    let mut acc = [[_mm512_setzero_ps(); N]; FROWS];
    for k in 0..depth {
        // SAFETY: row k of `x` holds `cols` values from k·cols; each load starts before its end
        // and the mask reads no lane past it.
        let xs: [__m512; N] =
            std::array::from_fn(|j| unsafe { _mm512_maskz_loadu_ps(masks[j], x.as_ptr().add(k * cols + c0 + 16 * j)) });
        let wk = &w[k * FROWS..(k + 1) * FROWS];
        for (acc, &wv) in acc.iter_mut().zip(wk) {
            let wv = _mm512_set1_ps(wv);
            for (a, &xv) in acc.iter_mut().zip(&xs) {
                *a = _mm512_fmadd_ps(wv, xv, *a);
            }
        }
    }
    let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    for (i, (acc, &b)) in acc.iter().zip(bias).enumerate() {
        let b = _mm512_set1_ps(b);
        for (j, &a) in acc.iter().enumerate() {
            let v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(a, b), lo), hi);
            // SAFETY: row i of the tile is out[i·cols..][..cols] (asserted); the store starts
            // inside it and the mask writes no lane past its end.
            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(i * cols + c0 + 16 * j), masks[j], v) };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// f32 × int8-weights matrix-vector product (`kernels::gemv_w8`): four rows at a time, sixteen
// depth values per step, the weights widened in registers.

pub fn gemv_w8(w: &super::super::gemv_w8::WeightsI8, a: &[f32], bias: &[f32], out: &mut [f32]) {
    // SAFETY: only called after `avx512_available()` returned true.
    unsafe { gemv_w8_avx512(w, a, bias, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn gemv_w8_avx512(w: &super::super::gemv_w8::WeightsI8, a: &[f32], bias: &[f32], out: &mut [f32]) {
    const R: usize = 4;
    let depth = w.depth;
    assert!(a.len() == depth && w.w.len() == w.rows * depth && out.len() == w.rows);
    assert!(bias.len() == w.rows && w.scales.len() == w.rows);
    let mask = |k: usize| ((1u32 << (depth - k).min(16)) - 1) as __mmask16;
    for r0 in (0..w.rows).step_by(R) {
        let m = R.min(w.rows - r0);
        let mut acc = [_mm512_setzero_ps(); R];
        for k in (0..depth).step_by(16) {
            let km = mask(k);
            // SAFETY: the mask reads only indices k..min(k + 16, depth) of `a`.
            let av = unsafe { _mm512_maskz_loadu_ps(km, a.as_ptr().add(k)) };
            for (i, acc) in acc.iter_mut().enumerate().take(m) {
                let row = &w.w[(r0 + i) * depth..(r0 + i + 1) * depth];
                // SAFETY: the mask reads only indices k..min(k + 16, depth) of `row`.
                let wv = unsafe { _mm_maskz_loadu_epi8(km, row.as_ptr().add(k)) };
                let wf = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(wv));
                *acc = _mm512_fmadd_ps(wf, av, *acc);
            }
        }
        for (i, &acc) in acc.iter().enumerate().take(m) {
            let n = r0 + i;
            out[n] = w.scales[n] * _mm512_reduce_add_ps(acc) + bias[n];
        }
    }
}
