//! The depthwise blocks in AVX2+FMA and AVX-512 around the shared driver in `kernels::depthwise`.

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::depthwise::{self as dw, PhaseLayout};
use super::super::{Depthwise, DepthwiseF32, Requant};

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
    let q = |b: &dw::Block, c: usize| Requant512::new(b.lanes, d.bias[c], d.requant.multiplier[c], d.requant);
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

/// The int8 requantisation of one channel's sums in registers: `requantize` lane by lane (here
/// and in the integer depthwise of `depthwise_vnni`).
pub(super) struct Requant512 {
    bias: __m512i,
    multiplier: __m512,
    lo: __m512,
    hi: __m512,
    zero_point: __m512i,
    mask: __mmask16,
}

impl Requant512 {
    /// `mask` covers the first `lanes` (≤ 16) lanes.
    #[target_feature(enable = "avx512f")]
    pub(super) fn new(lanes: usize, bias: i32, multiplier: f32, rq: &Requant) -> Self {
        Requant512 {
            bias: _mm512_set1_epi32(bias),
            multiplier: _mm512_set1_ps(multiplier),
            lo: _mm512_set1_ps((rq.lo - rq.zero_point) as f32),
            hi: _mm512_set1_ps((rq.hi - rq.zero_point) as f32),
            zero_point: _mm512_set1_epi32(rq.zero_point),
            mask: ((1u32 << lanes) - 1) as __mmask16,
        }
    }

    /// The exact f32 sums to i32, then as [`Self::apply_i32`].
    #[target_feature(enable = "avx512f")]
    fn apply(&self, sums: __m512) -> __m512i {
        // Exact integers: the conversion rounds nothing.
        self.apply_i32(_mm512_cvtps_epi32(sums))
    }

    /// i32 sums plus bias, then f32 product, clamp, round half to even, zero point (lanes past
    /// the block's are junk).
    #[target_feature(enable = "avx512f")]
    pub(super) fn apply_i32(&self, sums: __m512i) -> __m512i {
        let acc = _mm512_add_epi32(sums, self.bias);
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
