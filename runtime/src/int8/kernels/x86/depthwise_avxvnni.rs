//! The integer depthwise convolution of `depthwise_vnni` (whose doc gives the quad layout and
//! why the sums are exact) for CPUs with AVX-VNNI but no AVX-512 (Intel Alder Lake and later):
//! `vpdpbusd` on 256-bit registers, eight output columns × four taps per instruction. Without
//! VBMI's byte permutes and masked loads, rows are first copied into a padded byte plane and
//! the quads made with `vpshufb`, in one buffer for all groups of taps: quad `j` of a row holds
//! padded bytes `s·j .. s·j + 4`, so taps `4g ..` of output column `ox` are quad `ox + 4g / s`.
//! On Lite0's shapes it ran 1.15–2.1× faster than the AVX2 f32-exact blocks here (two runs of
//! `kernels::tests::timings`; 2.46 against 3.50–3.53 ms for the 16 layers).
//!
//! Blocks are [`ROWS`] output rows × [`LANES`] columns, one accumulator each; rows and columns
//! past the output read quads the buffer holds (padding) and are dropped.

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::{Depthwise, Geometry};

/// Output rows per block: eight independent accumulators (`vpdpbusd` has a latency of about 5
/// cycles and two issue ports for 256-bit registers).
const ROWS: usize = 8;
/// Output columns per block: one 256-bit register of i32 sums.
const LANES: usize = 8;

/// Whether the AVX-VNNI form (the same instruction without AVX-512: Alder Lake and later) runs here.
pub fn avxvnni_available() -> bool {
    super::available() && is_x86_feature_detected!("avxvnni")
}

/// With AVX-VNNI: channels `channels` of `d` into `out`.
pub fn depthwise_channels_avxvnni(d: &Depthwise, channels: Range<usize>, out: &mut [i8]) {
    if !super::depthwise_vnni::takes(d.g) {
        return super::depthwise_channels(d, channels, out);
    }
    // SAFETY: only called after `avxvnni_available()` returned true.
    unsafe { depthwise_avxvnni(d, channels, out) }
}

#[target_feature(enable = "avx2,avxvnni")]
fn depthwise_avxvnni(d: &Depthwise, channels: Range<usize>, out: &mut [i8]) {
    let g = d.g;
    let l = QuadLayout::new(g);
    let (oh, ow) = (g.out_h(), g.out_w());
    let plane = g.in_h * g.in_w;
    // Padding rows and junk rows are the same for every channel: written once.
    let pad = (d.zx + 128) as u8;
    let mut quads = vec![i32::from_ne_bytes([pad; 4]); l.rows * l.stride];
    let mut scratch = vec![d.zx as i8; g.in_h * l.bytes];
    let mut wq = vec![0i32; g.kernel_h * l.groups];
    let taps = g.kernel_h * g.kernel_w;
    assert!(
        l.last_read() <= quads.len(),
        "depthwise blocks read past their buffer: {g:?}"
    );
    assert!(d.x.len() >= channels.end * plane && d.w.len() >= channels.end * taps);
    assert!(out.len() >= channels.len() * oh * ow);
    let first = channels.start;
    for c in channels {
        quad_rows(&l, g, &d.x[c * plane..(c + 1) * plane], &mut scratch, &mut quads);
        let bias = super::depthwise_vnni::channel_quads(d, c, l.groups, &mut wq);
        let rq = Epilogue::new(bias, d.requant.multiplier[c], d.requant);
        let out_c = &mut out[(c - first) * oh * ow..(c - first + 1) * oh * ow];
        for oy0 in (0..oh).step_by(ROWS) {
            for x0 in (0..ow).step_by(LANES) {
                let mut acc = [_mm256_setzero_si256(); ROWS];
                for ky in 0..g.kernel_h {
                    for q in 0..l.groups {
                        let wv = _mm256_set1_epi32(wq[ky * l.groups + q]);
                        let base = (oy0 * g.stride_h + ky) * l.stride + x0 + q * l.shift;
                        for (r, acc) in acc.iter_mut().enumerate() {
                            // SAFETY: at most `l.last_read()` ≤ quads.len() (asserted).
                            let v = unsafe {
                                _mm256_loadu_si256(
                                    quads.as_ptr().add(base + r * g.stride_h * l.stride) as *const __m256i
                                )
                            };
                            *acc = _mm256_dpbusd_avx_epi32(*acc, v, wv);
                        }
                    }
                }
                let lanes = LANES.min(ow - x0);
                for (r, &acc) in acc.iter().enumerate().take(oh - oy0) {
                    let dst = &mut out_c[(oy0 + r) * ow + x0..(oy0 + r) * ow + x0 + lanes];
                    let v = rq.apply(acc);
                    // A fixed-size copy is one store; a ragged one would call memcpy.
                    match <&mut [i8; LANES]>::try_from(&mut *dst) {
                        Ok(dst) => *dst = v,
                        Err(_) => dst.iter_mut().zip(v).for_each(|(d, v)| *d = v),
                    }
                }
            }
        }
    }
}

/// One channel's input rows `x` into their quad rows: the rows go first into a padded byte
/// plane (`scratch`, `in_h` rows of `l.bytes`, its padding already `zx`), all of them before
/// any is read back. A load spanning several recent stores waits until they
/// retire (store forwarding fails), and reading each row right after copying it made this step
/// most of the kernel's time.
#[target_feature(enable = "avx2")]
fn quad_rows(l: &QuadLayout, g: &Geometry, x: &[i8], scratch: &mut [i8], quads: &mut [i32]) {
    let (s, pl) = (g.stride_w, g.pads[1]);
    for (row, dst) in x.chunks_exact(g.in_w).zip(scratch.chunks_exact_mut(l.bytes)) {
        dst[pl..pl + g.in_w].copy_from_slice(row);
    }
    let shuffle = l.shuffle();
    let flip = _mm256_set1_epi8(0x80u8 as i8);
    let interior = quads.chunks_exact_mut(l.stride).skip(g.pads[0]);
    for (bytes, dst) in scratch.chunks_exact(l.bytes).zip(interior) {
        for (j, dst) in (0..l.stride).step_by(LANES).zip(dst.chunks_exact_mut(LANES)) {
            // Quads j..j+4 from bytes s·j.., quads j+4..j+8 from bytes s·(j+4)..
            // (`QuadLayout::bytes` holds both 16-byte loads).
            let src = &bytes[s * j..s * j + 4 * s + 16];
            // SAFETY: `src` holds bytes 0..4·s + 16; `dst` is 8 i32s.
            unsafe {
                let lo = _mm_loadu_si128(src.as_ptr() as *const __m128i);
                let hi = _mm_loadu_si128(src.as_ptr().add(4 * s) as *const __m128i);
                let v = _mm256_shuffle_epi8(_mm256_set_m128i(hi, lo), shuffle);
                let v = _mm256_xor_si256(v, flip);
                _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, v);
            }
        }
    }
}

/// The quad buffer's shape for one geometry (the module's doc gives the layout).
struct QuadLayout {
    /// Instructions per kernel row: `ceil(kernel_w / 4)`.
    groups: usize,
    /// Quads from one group of four taps to the next: `4 / stride_w`.
    shift: usize,
    /// Quads per row in the buffer: every column a block reads, in whole 8-quad stores.
    stride: usize,
    /// Rows in the buffer: the padded input, and the rows the last block's dropped rows read.
    rows: usize,
    /// Bytes of the padded-row scratch: the padded row, and what the last 8-quad store reads.
    bytes: usize,
    oh: usize,
    ow: usize,
    kernel_h: usize,
    stride_h: usize,
    stride_w: usize,
}

impl QuadLayout {
    fn new(g: &Geometry) -> Self {
        let groups = g.kernel_w.div_ceil(4);
        let shift = 4 / g.stride_w;
        let (oh, ow) = (g.out_h(), g.out_w());
        let stride = (ow.next_multiple_of(LANES) + (groups - 1) * shift).next_multiple_of(LANES);
        let rows = (g.in_h + g.pads[0] + g.pads[2]).max((oh.next_multiple_of(ROWS) - 1) * g.stride_h + g.kernel_h);
        let padded_w = g.in_w + g.pads[1] + g.pads[3];
        let bytes = (g.stride_w * stride + 16).max(padded_w);
        QuadLayout {
            groups,
            shift,
            stride,
            rows,
            bytes,
            oh,
            ow,
            kernel_h: g.kernel_h,
            stride_h: g.stride_h,
            stride_w: g.stride_w,
        }
    }

    /// One past the last quad any block loads: the last block's last row at the last kernel row
    /// and group, eight quads wide.
    fn last_read(&self) -> usize {
        if self.oh == 0 || self.ow == 0 {
            return 0;
        }
        let last_row = (self.oh.next_multiple_of(ROWS) - 1) * self.stride_h + self.kernel_h - 1;
        let last_x0 = (self.ow - 1) / LANES * LANES;
        last_row * self.stride + last_x0 + (self.groups - 1) * self.shift + LANES
    }

    /// `vpshufb` indices making quads from bytes, in each 128-bit half: quad `l` (0..4) is bytes
    /// `s·l .. s·l + 4` of that half's 16 bytes.
    #[target_feature(enable = "avx2")]
    fn shuffle(&self) -> __m256i {
        let s = self.stride_w;
        let mut idx = [0u8; 32];
        for (i, b) in idx.iter_mut().enumerate() {
            let (lane, t) = ((i % 16) / 4, i % 4);
            *b = (s * lane + t) as u8;
        }
        // SAFETY: `idx` is 32 bytes.
        unsafe { _mm256_loadu_si256(idx.as_ptr() as *const __m256i) }
    }
}

/// Requantisation of a row of eight i32 sums (bias not yet added), as `kernels::requantize`.
struct Epilogue {
    bias: __m256i,
    multiplier: __m256,
    lo: __m256,
    hi: __m256,
    zero_point: __m256i,
}

impl Epilogue {
    #[target_feature(enable = "avx2")]
    fn new(bias: i32, multiplier: f32, rq: &super::super::Requant) -> Self {
        Epilogue {
            bias: _mm256_set1_epi32(bias),
            multiplier: _mm256_set1_ps(multiplier),
            lo: _mm256_set1_ps((rq.lo - rq.zero_point) as f32),
            hi: _mm256_set1_ps((rq.hi - rq.zero_point) as f32),
            zero_point: _mm256_set1_epi32(rq.zero_point),
        }
    }

    /// Bias, f32 product, clamp, round half to even (the default MXCSR mode), zero point, and
    /// the eight results as bytes (each already inside the i8 range, so the saturating packs
    /// change nothing).
    #[target_feature(enable = "avx2")]
    fn apply(&self, sums: __m256i) -> [i8; LANES] {
        let acc = _mm256_add_epi32(sums, self.bias);
        let v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), self.multiplier);
        let v = _mm256_min_ps(_mm256_max_ps(v, self.lo), self.hi);
        let q = _mm256_add_epi32(_mm256_cvtps_epi32(v), self.zero_point);
        // Per 128-bit half: four i32 → four i16 → four i8, in the half's low four bytes.
        let p = _mm256_packs_epi16(_mm256_packs_epi32(q, q), _mm256_setzero_si256());
        let lo = _mm256_cvtsi256_si32(p) as u32;
        let hi = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(p)) as u32;
        (((hi as u64) << 32) | lo as u64).to_le_bytes().map(|b| b as i8)
    }
}
