//! The int8 depthwise convolution in integers with AVX-512 VNNI: `vpdpbusd` multiplies four
//! taps of sixteen output columns per instruction into int32 sums, where the f32-exact blocks of
//! `depthwise` do one tap. On EfficientNet-Lite0's 16 depthwise convolutions it takes 1.81–1.85
//! ms against their 2.04–2.07 here, hot in cache (two runs of `kernels::tests::timings`, each
//! shape's mean of 20 calls, repeated layers counted; the wide early planes gain most, 96×112²
//! stride 2 0.31 → 0.16 ms, while 7×7 planes are about 10% slower alone yet faster in the whole
//! model than sending them to the f32 blocks), and 2.25 → 1.92–1.98 ms in the model
//! (`scripts/bench-int8.sh`'s profile).
//!
//! - **Quads.** Every padded input row becomes a row of quads: quad `j` of group `q` holds the
//!   four bytes at padded columns `s·j + 4q ..` as unsigned bytes `u = x + 128` (padding holds
//!   `zx + 128`, which stands for 0.0). Taps `4q .. 4q + 3` of output column `ox` are then quad
//!   `ox` of group `q`, for any horizontal stride `s` (strides other than 1, 2 and 4 take the
//!   f32-exact blocks all the same: a sixteen-quad window must fit a 64-byte load). A kernel row
//!   of `k` taps is `ceil(k / 4)` instructions (3×3: 3 per register instead of 9; 5×5: 10
//!   instead of 25), a tap past the kernel having weight 0. Quads are made straight from the
//!   input: one masked load (bytes outside the row come from a register of `zx`) and one
//!   `vpermb` (VBMI) per sixteen.
//! - **Exact sums.** `vpdpbusd` multiplies unsigned by signed bytes, so the sums are of `w · u`,
//!   and `Σ w · (x − zx) = Σ w · u − (zx + 128) · Σ w`: the second term is folded into the bias.
//!   |w · u| ≤ 128 · 255, and `vpdpbusd` wraps like i32 arithmetic, as the reference's sums would.
//! - **Blocks** are up to [`ACCS`] registers, one per output row, each sixteen columns; for
//!   planes at most eight wide (the 7×7 stage) a register holds two output rows (eight quads per
//!   buffer row, rows stored by phase of the vertical stride so that the two rows are
//!   neighbours), which wastes one lane in eight instead of nine in sixteen. Rows and columns
//!   past the output read padding and are dropped; results leave with a saturating narrow and
//!   a masked store.

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::{Depthwise, Geometry};
use super::depthwise::Requant512;

/// Accumulators per block: independent `vpdpbusd` chains.
const ACCS: usize = 8;
/// Lanes per register.
const LANES: usize = 16;

/// Whether this form runs here.
pub fn available() -> bool {
    super::avx512_available() && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vbmi")
}

/// Whether the integer forms (this one and `depthwise_avxvnni`) take `g`: horizontal strides
/// whose taps fall on whole quads. The others take the f32-exact blocks.
pub(super) fn takes(g: &Geometry) -> bool {
    matches!(g.stride_w, 1 | 2 | 4)
}

/// Channels `channels` of `d` into `out`.
pub fn depthwise_channels(d: &Depthwise, channels: Range<usize>, out: &mut [i8]) {
    if !takes(d.g) {
        return super::depthwise_channels_avx512(d, channels, out);
    }
    // SAFETY: only called after `available()` returned true.
    unsafe { depthwise(d, channels, out) }
}

/// The buffers' shape for one geometry. Rows are stored by phase of the vertical stride
/// (padded row `y` at `(y % stride_h) · phase + y / stride_h`), so the rows two successive output
/// rows read at one kernel row are neighbours whatever the stride: a register can then load two
/// output rows' quads at once.
struct Layout {
    /// Groups of four taps per kernel row.
    groups: usize,
    /// Output rows per register: 2 for planes at most eight wide, else 1.
    pair: usize,
    /// Quads per buffer row.
    stride: usize,
    /// Rows per phase.
    phase: usize,
    stride_h: usize,
}

impl Layout {
    fn new(g: &Geometry) -> Self {
        let (oh, ow) = (g.out_h(), g.out_w());
        let pair = if ow <= LANES / 2 { 2 } else { 1 };
        let stride = if pair == 2 {
            LANES / 2
        } else {
            ow.next_multiple_of(LANES)
        };
        // The last register of the last block starts at output row `last` (rows past the output
        // are computed and dropped) and reads `pair` rows from there at each kernel row.
        let last = oh.next_multiple_of(ACCS * pair).saturating_sub(pair);
        let sh = g.stride_h;
        let padded_h = g.in_h + g.pads[0] + g.pads[2];
        Layout {
            groups: g.kernel_w.div_ceil(4),
            pair,
            stride,
            phase: padded_h.div_ceil(sh).max(last + (g.kernel_h - 1) / sh + pair),
            stride_h: sh,
        }
    }

    /// Quads per group's buffer.
    fn buffer(&self) -> usize {
        self.stride_h * self.phase * self.stride
    }

    /// Where each padded row starts in a group's buffer (a table: the division in it, once
    /// per row and block, was most of the time on 7×7 planes).
    fn rows(&self, padded_h: usize) -> Vec<usize> {
        (0..padded_h.max(self.stride_h * self.phase))
            .map(|y| ((y % self.stride_h) * self.phase + y / self.stride_h) * self.stride)
            .collect()
    }
}

#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
fn depthwise(d: &Depthwise, channels: Range<usize>, out: &mut [i8]) {
    let g = d.g;
    let l = Layout::new(g);
    let (oh, ow) = (g.out_h(), g.out_w());
    let (s, pl, in_w) = (g.stride_w, g.pads[1], g.in_w);
    let plane = g.in_h * in_w;
    let taps = g.kernel_h * g.kernel_w;
    let size = l.buffer();
    let rows = l.rows(g.in_h + g.pads[0] + g.pads[2]);
    let kernel_rows = &rows[..g.kernel_h];
    // The kernel row stored furthest in (rows are in phase order).
    let furthest = kernel_rows.iter().copied().max().unwrap_or(0);
    // Padding rows (and the rows only dropped outputs read) are the same for every channel:
    // written once; each channel rewrites the interior rows.
    let pad = (d.zx + 128) as u8;
    let mut quads = vec![i32::from_ne_bytes([pad; 4]); l.groups * size];
    // Quads j..j+16 of group q read input columns a..a+64, a = s·j + 4q − pad_left: which of
    // those are inside the row is the same for every row, so the masks are made once.
    let chunks = l.stride.div_ceil(LANES);
    let mut loads: Vec<(isize, u64)> = Vec::new();
    for q in 0..l.groups {
        for j in (0..l.stride).step_by(LANES) {
            let a = (s * j + 4 * q) as isize - pl as isize;
            let (lo, hi) = ((-a).clamp(0, 64), (in_w as isize - a).clamp(0, 64));
            let ones = |n: isize| if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
            loads.push((a, if hi > lo { ones(hi) & !ones(lo) } else { 0 }));
        }
    }
    let mut idx = [0u8; 64];
    for (i, b) in idx.iter_mut().enumerate() {
        *b = (s * (i / 4) + i % 4) as u8;
    }
    // SAFETY: `idx` is 64 bytes.
    let idx = unsafe { _mm512_loadu_si512(idx.as_ptr() as *const __m512i) };
    let padding = _mm512_set1_epi8(d.zx as i8);
    let flip = _mm512_set1_epi8(0x80u8 as i8);
    let mut wq = vec![0i32; g.kernel_h * l.groups];
    assert!(d.x.len() >= channels.end * plane && d.w.len() >= channels.end * taps);
    assert!(out.len() >= channels.len() * oh * ow && d.bias.len() >= channels.end);
    let first = channels.start;
    // Channel c's quads into `quads` (its groups' buffers).
    let build = |c: usize, quads: &mut [i32]| {
        let x = &d.x[c * plane..(c + 1) * plane];
        for (q, buffer) in quads.chunks_exact_mut(size).enumerate() {
            let loads = &loads[q * chunks..(q + 1) * chunks];
            for (row, &at) in x.chunks_exact(in_w).zip(&rows[g.pads[0]..]) {
                for (&(a, mask), dst) in loads.iter().zip(buffer[at..at + l.stride].chunks_mut(LANES)) {
                    // SAFETY: the mask loads only columns a + b with 0 ≤ a + b < in_w, inside
                    // `row` (masked-off bytes are not accessed; the pointer is only offset
                    // outside it); the store writes `dst.len()` ≤ 16 quads, masked.
                    unsafe {
                        let v = _mm512_mask_loadu_epi8(padding, mask, row.as_ptr().wrapping_offset(a));
                        let v = _mm512_xor_si512(_mm512_permutexvar_epi8(idx, v), flip);
                        let m = ((1u32 << dst.len()) - 1) as __mmask16;
                        _mm512_mask_storeu_epi32(dst.as_mut_ptr(), m, v);
                    }
                }
            }
        }
    };
    for c in channels {
        build(c, &mut quads);
        let bias = channel_quads(d, c, l.groups, &mut wq);
        let rq = Requant512::new(LANES, bias, d.requant.multiplier[c], d.requant);
        let out_c = &mut out[(c - first) * oh * ow..(c - first + 1) * oh * ow];
        for row0 in (0..oh).step_by(ACCS * l.pair) {
            // Only the registers that hold output rows: a 7-row plane is four pairs, not eight.
            let b = Block {
                quads: &quads,
                size,
                l: &l,
                wq: &wq,
                kernel_rows,
                furthest,
                row0,
            };
            for x0 in (0..ow).step_by(LANES) {
                match (oh - row0).div_ceil(l.pair) {
                    1 => b.run::<1>(x0, &rq, out_c, oh, ow),
                    2 => b.run::<2>(x0, &rq, out_c, oh, ow),
                    3 => b.run::<3>(x0, &rq, out_c, oh, ow),
                    4 => b.run::<4>(x0, &rq, out_c, oh, ow),
                    5 => b.run::<5>(x0, &rq, out_c, oh, ow),
                    6 => b.run::<6>(x0, &rq, out_c, oh, ow),
                    7 => b.run::<7>(x0, &rq, out_c, oh, ow),
                    _ => b.run::<ACCS>(x0, &rq, out_c, oh, ow),
                }
            }
        }
    }
}

/// One block of output rows from `row0`, for one channel.
struct Block<'a> {
    quads: &'a [i32],
    size: usize,
    l: &'a Layout,
    wq: &'a [i32],
    /// Where each kernel row's first row starts ([`Layout::rows`]), and the largest of them.
    kernel_rows: &'a [usize],
    furthest: usize,
    row0: usize,
}

impl Block<'_> {
    /// `N` registers (`N · pair` output rows) at columns `x0..x0 + 16`: sums, requantised, stored.
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    fn run<const N: usize>(&self, x0: usize, rq: &Requant512, out: &mut [i8], oh: usize, ow: usize) {
        let l = self.l;
        let (pair, groups) = (l.pair, l.groups);
        // The furthest load: the last register, at the kernel row stored furthest in.
        let last = self.furthest + (self.row0 + (N - 1) * pair) * l.stride + x0 + LANES + (groups - 1) * self.size;
        assert!(
            last <= groups * self.size && x0 < l.stride,
            "depthwise block reads past its buffer"
        );
        let mut acc = [_mm512_setzero_si512(); N];
        for (ky, &ky_row) in self.kernel_rows.iter().enumerate() {
            for q in 0..groups {
                let wv = _mm512_set1_epi32(self.wq[ky * groups + q]);
                // Row row0·sh + ky: phase ky % sh, row row0 + ky / sh of it; the next
                // register's rows are `pair` rows further in the same phase.
                let base = q * self.size + ky_row + self.row0 * l.stride + x0;
                for (i, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: at most `last` (asserted).
                    let v = unsafe {
                        _mm512_loadu_si512(self.quads.as_ptr().add(base + i * pair * l.stride) as *const __m512i)
                    };
                    *acc = _mm512_dpbusd_epi32(*acc, v, wv);
                }
            }
        }
        for (i, &acc) in acc.iter().enumerate() {
            let r = self.row0 + i * pair;
            if r >= oh {
                break;
            }
            let v = _mm512_cvtsepi32_epi8(rq.apply_i32(acc));
            if pair == 2 {
                store(v, &mut out[r * ow..(r + 1) * ow]);
                if r + 1 < oh {
                    store(_mm_srli_si128::<8>(v), &mut out[(r + 1) * ow..(r + 2) * ow]);
                }
            } else {
                let lanes = LANES.min(ow - x0);
                store(v, &mut out[r * ow + x0..r * ow + x0 + lanes]);
            }
        }
    }
}

/// The first `dst.len()` (≤ 16) bytes of `v` into `dst`.
#[target_feature(enable = "avx512bw,avx512vl")]
fn store(v: __m128i, dst: &mut [i8]) {
    assert!(dst.len() <= LANES);
    let mask = ((1u32 << dst.len()) - 1) as __mmask16;
    // SAFETY: the mask writes `dst.len()` bytes.
    unsafe { _mm_mask_storeu_epi8(dst.as_mut_ptr(), mask, v) }
}

/// Channel `c`'s taps as quads (four taps of a kernel row per word, zero past the row's end)
/// into `wq` (`kernel_h × groups`), and its bias with `(zx + 128) · Σw` folded in: what both
/// integer depthwise forms multiply and add.
pub(super) fn channel_quads(d: &Depthwise, c: usize, groups: usize, wq: &mut [i32]) -> i32 {
    let (kw, taps) = (d.g.kernel_w, d.g.kernel_h * d.g.kernel_w);
    let w = &d.w[c * taps..(c + 1) * taps];
    for (ky, wrow) in w.chunks_exact(kw).enumerate() {
        for q in 0..groups {
            // Built in a register: bytes written to memory and read back as a word stall (store
            // forwarding), a third of the kernel's time on 7×7 planes.
            let tap = |t: usize| wrow.get(4 * q + t).map_or(0, |&v| v as u8 as u32) << (8 * t);
            wq[ky * groups + q] = (tap(0) | tap(1) | tap(2) | tap(3)) as i32;
        }
    }
    let wsum: i32 = w.iter().map(|&v| v as i32).sum();
    d.bias[c].wrapping_sub((d.zx + 128) * wsum)
}
