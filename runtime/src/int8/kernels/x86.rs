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

use super::depthwise::{self as dw, PhaseLayout};
use super::{AddParams, Depthwise, DepthwiseF32, Requant, portable};

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

pub fn depthwise_channels(d: &Depthwise, channels: Range<usize>, out: &mut [i8]) {
    // SAFETY: only called after `available()` returned true.
    unsafe { depthwise_avx2(d, channels, out) }
}

#[target_feature(enable = "avx2,fma")]
fn depthwise_avx2(d: &Depthwise, channels: Range<usize>, out: &mut [i8]) {
    let zx = d.zx as f32;
    // Closures inherit their function's target features: the calls in them need no `unsafe`.
    dw::blocks::<8, i8, i8>(
        d.g,
        d.x,
        channels,
        out,
        dw::int8_weights(d),
        |l, sw, plane, phases| l.fill(sw, plane, |v| v as f32 - zx, phases),
        |b, c, out| {
            let a = to_arrays(accumulate8(b));
            dw::epilogue_i8(&a, b, d.bias[c], d.requant.multiplier[c], d.requant, out)
        },
    )
}

pub fn depthwise_f32_channels(d: &DepthwiseF32, channels: Range<usize>, out: &mut [f32]) {
    // SAFETY: only called after `available()` returned true.
    unsafe { depthwise_f32_avx2(d, channels, out) }
}

#[target_feature(enable = "avx2,fma")]
fn depthwise_f32_avx2(d: &DepthwiseF32, channels: Range<usize>, out: &mut [f32]) {
    dw::blocks::<8, f32, f32>(
        d.g,
        d.x,
        channels,
        out,
        dw::f32_weights(d),
        |l, sw, plane, phases| l.fill(sw, plane, |v| v, phases),
        |b, c, out| dw::epilogue_f32(&to_arrays(accumulate8(b)), b, d.bias[c], d.clamp, out),
    )
}

#[target_feature(enable = "avx")]
fn to_arrays(acc: [__m256; dw::ROWS]) -> [[f32; 8]; dw::ROWS] {
    let mut a = [[0f32; 8]; dw::ROWS];
    for (a, v) in a.iter_mut().zip(acc) {
        // SAFETY: `a` is 8 f32s.
        unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) }
    }
    a
}

/// With AVX-512, 16 lanes per register, except for output rows of 8 or fewer (EfficientNet's
/// 7×7 stage), where 8 lanes waste less. Requantised in registers, stored with masks.
pub fn depthwise_channels_avx512(d: &Depthwise, channels: Range<usize>, out: &mut [i8]) {
    // SAFETY: only called after `avx512_available()` returned true.
    unsafe { depthwise_avx512(d, channels, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn depthwise_avx512(d: &Depthwise, channels: Range<usize>, out: &mut [i8]) {
    let zx = d.zx as f32;
    let fill = |l: &PhaseLayout, sw, plane: &[i8], phases: &mut [f32]| fill_i8_avx512(l, sw, plane, zx, phases);
    let q = |b: &dw::Block, c: usize| Requant512::new(b, d.bias[c], d.requant.multiplier[c], d.requant);
    if d.g.out_w() <= 8 {
        dw::blocks::<8, i8, i8>(d.g, d.x, channels, out, dw::int8_weights(d), fill, |b, c, out| {
            let q = q(b, c);
            check_out(b, out);
            for (r, &a) in accumulate8(b).iter().enumerate().take(b.rows) {
                let bytes = _mm512_cvtsepi32_epi8(q.apply(_mm512_zextps256_ps512(a)));
                // SAFETY: row r's `lanes` bytes are in `out` (`check_out`); the mask writes no more.
                unsafe { _mm_mask_storeu_epi8(out.as_mut_ptr().add(r * b.out_stride), q.mask, bytes) };
            }
        })
    } else {
        dw::blocks::<16, i8, i8>(d.g, d.x, channels, out, dw::int8_weights(d), fill, |b, c, out| {
            let q = q(b, c);
            check_out(b, out);
            for (r, &a) in accumulate16(b).iter().enumerate().take(b.rows) {
                let bytes = _mm512_cvtsepi32_epi8(q.apply(a));
                // SAFETY: as above.
                unsafe { _mm_mask_storeu_epi8(out.as_mut_ptr().add(r * b.out_stride), q.mask, bytes) };
            }
        })
    }
}

pub fn depthwise_f32_channels_avx512(d: &DepthwiseF32, channels: Range<usize>, out: &mut [f32]) {
    // SAFETY: only called after `avx512_available()` returned true.
    unsafe { depthwise_f32_avx512(d, channels, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn depthwise_f32_avx512(d: &DepthwiseF32, channels: Range<usize>, out: &mut [f32]) {
    let fill = |l: &PhaseLayout, sw, plane: &[f32], phases: &mut [f32]| l.fill(sw, plane, |v| v, phases);
    if d.g.out_w() <= 8 {
        dw::blocks::<8, f32, f32>(d.g, d.x, channels, out, dw::f32_weights(d), fill, |b, c, out| {
            store_f32(
                b,
                d.bias[c],
                d.clamp,
                accumulate8(b).map(|a| _mm512_zextps256_ps512(a)),
                out,
            )
        })
    } else {
        dw::blocks::<16, f32, f32>(d.g, d.x, channels, out, dw::f32_weights(d), fill, |b, c, out| {
            store_f32(b, d.bias[c], d.clamp, accumulate16(b), out)
        })
    }
}

/// Bias added, clamped to `[lo, hi]` (a folded Relu/Clip), each row's `lanes` values stored with
/// a mask.
#[target_feature(enable = "avx512f")]
fn store_f32(b: &dw::Block, bias: f32, (lo, hi): (f32, f32), acc: [__m512; dw::ROWS], out: &mut [f32]) {
    assert!(b.rows == 0 || (b.rows - 1) * b.out_stride + b.lanes <= out.len());
    assert!(b.lanes <= 16);
    let (bias, lo, hi) = (_mm512_set1_ps(bias), _mm512_set1_ps(lo), _mm512_set1_ps(hi));
    let mask = ((1u32 << b.lanes) - 1) as __mmask16;
    for (r, &a) in acc.iter().enumerate().take(b.rows) {
        let v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(a, bias), lo), hi);
        // SAFETY: row r's `lanes` values are in `out` (asserted); the mask writes no more.
        unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(r * b.out_stride), mask, v) };
    }
}

/// One channel's int8 interior into the phase buffer (see `PhaseLayout`) with masked loads and
/// stores: a row of any width is whole vectors, no scalar tail. Strides 1 and 2; others take
/// the portable fill.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn fill_i8_avx512(l: &PhaseLayout, sw: usize, plane: &[i8], zx: f32, phases: &mut [f32]) {
    let in_w = l.in_w;
    let in_h = plane.len() / in_w.max(1);
    if !(sw == 1 || sw == 2) || in_w == 0 {
        return l.fill(sw, plane, |v| v as f32 - zx, phases);
    }
    // Every column written is a padded column below pad_left + in_w, inside each phase's rows.
    assert!((l.pad_left + in_w).div_ceil(sw) <= l.width && l.pad_top + in_h <= l.rows);
    assert!(phases.len() >= sw * l.rows * l.width && plane.len() >= in_h * in_w);
    let zx = _mm512_set1_ps(zx);
    let mask = |n: usize| if n >= 32 { u32::MAX } else { (1u32 << n) - 1 };
    for iy in 0..in_h {
        let src = &plane[iy * in_w..(iy + 1) * in_w];
        let row = (l.pad_top + iy) * l.width;
        if sw == 1 {
            let dst = &mut phases[row + l.pad_left..row + l.pad_left + in_w];
            for c in (0..in_w).step_by(16) {
                let m = mask(in_w - c) as __mmask16;
                // SAFETY: the masks touch only columns c..min(c + 16, in_w) of `src` and `dst`.
                unsafe {
                    let v = _mm_maskz_loadu_epi8(m, src.as_ptr().add(c));
                    let f = _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v)), zx);
                    _mm512_mask_storeu_ps(dst.as_mut_ptr().add(c), m, f);
                }
            }
            continue;
        }
        // Stride 2: input column i is padded column i + pad_left, in phase (i + pad_left) % 2 at
        // index (i + pad_left) / 2. Thirty-two columns per step, split into even and odd ones
        // as the low and high bytes of sixteen i16 lanes.
        for c in (0..in_w).step_by(32) {
            let n = (in_w - c).min(32);
            // SAFETY: the mask touches only columns c..c + n of `src`.
            let v = unsafe { _mm256_maskz_loadu_epi8(mask(n), src.as_ptr().add(c)) };
            let even = _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(v));
            let odd = _mm256_srai_epi16::<8>(v);
            for (first, count, half) in [(c, n.div_ceil(2), even), (c + 1, n / 2, odd)] {
                if count == 0 {
                    continue;
                }
                let padded = first + l.pad_left;
                let start = (padded % 2) * l.rows * l.width + row + padded / 2;
                let dst = &mut phases[start..start + count];
                let f = _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(half)), zx);
                // SAFETY: the mask writes the first `count` (≤ 16) values of `dst`.
                unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask(count) as __mmask16, f) };
            }
        }
    }
}

/// The int8 requantisation of one block in registers: `requantize` lane by lane.
struct Requant512 {
    bias: __m512i,
    multiplier: __m512,
    lo: __m512,
    hi: __m512,
    zero_point: __m512i,
    mask: __mmask16,
}

impl Requant512 {
    #[target_feature(enable = "avx512f")]
    fn new(b: &dw::Block, bias: i32, multiplier: f32, rq: &Requant) -> Self {
        Requant512 {
            bias: _mm512_set1_epi32(bias),
            multiplier: _mm512_set1_ps(multiplier),
            lo: _mm512_set1_ps((rq.lo - rq.zero_point) as f32),
            hi: _mm512_set1_ps((rq.hi - rq.zero_point) as f32),
            zero_point: _mm512_set1_epi32(rq.zero_point),
            mask: ((1u32 << b.lanes) - 1) as __mmask16,
        }
    }

    /// The exact f32 sums to i32 plus bias, then f32 product, clamp, round half to even, zero
    /// point (lanes past the block's are junk).
    #[target_feature(enable = "avx512f")]
    fn apply(&self, sums: __m512) -> __m512i {
        // Exact integers: the conversion rounds nothing.
        let acc = _mm512_add_epi32(_mm512_cvtps_epi32(sums), self.bias);
        let v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), self.multiplier);
        let v = _mm512_min_ps(_mm512_max_ps(v, self.lo), self.hi);
        let q = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
        _mm512_add_epi32(q, self.zero_point)
    }
}

/// Every row a block stores is inside `out`.
fn check_out(b: &dw::Block, out: &[i8]) {
    assert!(b.rows == 0 || (b.rows - 1) * b.out_stride + b.lanes <= out.len());
    assert!(b.lanes <= 16);
}

/// The reads a depthwise block makes stay inside `src` (checked once per block, not per load).
fn check_block(b: &dw::Block, lanes: usize) {
    let last = b
        .offsets
        .iter()
        .max()
        .map_or(0, |&o| o + (dw::ROWS - 1) * b.row_stride + lanes);
    assert!(last <= b.src.len(), "depthwise block reads past its buffer");
}

/// Eight rows × 8 lanes: eight independent FMA chains per tap, one weight broadcast for all.
#[target_feature(enable = "avx2,fma")]
fn accumulate8(b: &dw::Block) -> [__m256; dw::ROWS] {
    check_block(b, 8);
    let mut acc = [_mm256_setzero_ps(); dw::ROWS];
    for (&wv, &off) in b.w.iter().zip(b.offsets) {
        let wv = _mm256_set1_ps(wv);
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: off + r·row_stride + 8 ≤ src.len() by `check_block`.
            let v = unsafe { _mm256_loadu_ps(b.src.as_ptr().add(off + r * b.row_stride)) };
            *a = _mm256_fmadd_ps(wv, v, *a);
        }
    }
    acc
}

/// Eight rows × 16 lanes.
#[target_feature(enable = "avx512f")]
fn accumulate16(b: &dw::Block) -> [__m512; dw::ROWS] {
    check_block(b, 16);
    let mut acc = [_mm512_setzero_ps(); dw::ROWS];
    for (&wv, &off) in b.w.iter().zip(b.offsets) {
        let wv = _mm512_set1_ps(wv);
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: off + r·row_stride + 16 ≤ src.len() by `check_block`.
            let v = unsafe { _mm512_loadu_ps(b.src.as_ptr().add(off + r * b.row_stride)) };
            *a = _mm512_fmadd_ps(wv, v, *a);
        }
    }
    acc
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
