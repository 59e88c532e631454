//! Depthwise convolutions on NCHW planes, int8 and f32, sharing one driver ([`blocks`]).
//!
//! Per channel, the plane is written into a padded f32 buffer split into `stride_w` column
//! phases, so that every tap reads a contiguous run whatever the stride. Output is computed in
//! blocks of [`ROWS`] rows × `L` lanes held in registers: per tap one weight broadcast and eight
//! independent multiply-adds (one chain per block would run at a quarter of the FMA units' rate,
//! which is what tract's f32 depthwise and this module's first version did). Blocks are whole:
//! rows past the output and lanes past its width read zeros the buffer holds and are dropped,
//! so a 7- or 14-wide row has no scalar tail.
//!
//! int8 is computed in f32, exactly (see the parent module): the buffer holds `x − zx`, and each
//! block's sums are integers below 2²². f32 models use the same blocks with the input copied in.
//!
//! This file holds the portable forms (the aarch64 path); `x86` passes its own fill and block
//! closures (AVX2, AVX-512) to the same driver.

use std::ops::Range;

use super::portable::{requant_row, round_to_i32};
use super::{Depthwise, DepthwiseF32, Geometry, Requant};

/// Output rows per block.
pub const ROWS: usize = 8;

/// One block: up to [`ROWS`] output rows × `L` lanes, what a block kernel reads and where its
/// outputs go.
pub struct Block<'a> {
    /// The phase buffer from the block's origin. Tap `t` of row `r`, lane `j` reads
    /// `src[offsets[t] + r·row_stride + j]`: at most `max(offsets) + 7·row_stride + L` values,
    /// which the buffer holds.
    pub src: &'a [f32],
    /// The channel's weights as f32, in tap order.
    pub w: &'a [f32],
    pub offsets: &'a [usize],
    pub row_stride: usize,
    /// Rows and lanes that are in the output (the rest are computed and dropped).
    pub rows: usize,
    pub lanes: usize,
    /// Row `r` of the block goes to `out[r·out_stride..][..lanes]`.
    pub out_stride: usize,
}

/// Where each input pixel of a channel goes in the phase buffer.
pub struct PhaseLayout {
    pub in_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    /// Rows of each phase.
    pub rows: usize,
    /// Columns of each phase row.
    pub width: usize,
}

impl PhaseLayout {
    /// Write one channel's interior values `conv(x)` into a buffer whose padding is already 0
    /// (the same zeros for every channel, so they are written once), in runs the compiler
    /// vectorises. The stride as a constant (one inlined copy each) makes the phase arithmetic
    /// disappear for strides 1 and 2.
    #[inline(always)]
    pub fn fill<X: Copy>(&self, sw: usize, plane: &[X], conv: impl Fn(X) -> f32, phases: &mut [f32]) {
        match sw {
            1 => self.fill_any(1, plane, conv, phases),
            2 => self.fill_any(2, plane, conv, phases),
            _ => self.fill_any(sw, plane, conv, phases),
        }
    }

    #[inline(always)]
    fn fill_any<X: Copy>(&self, sw: usize, plane: &[X], conv: impl Fn(X) -> f32, phases: &mut [f32]) {
        let in_h = plane.len() / self.in_w;
        for p in 0..sw {
            // Phase p holds padded columns p, p + sw, …: its index j is padded column j·sw + p.
            // The interior (input columns) is j in [j_lo, j_hi); the first one reads input
            // column j_lo·sw + p − pad_left, then every sw-th.
            let j_lo = self.pad_left.saturating_sub(p).div_ceil(sw);
            let j_hi = (self.pad_left + self.in_w)
                .saturating_sub(p)
                .div_ceil(sw)
                .min(self.width);
            if j_lo >= j_hi {
                continue;
            }
            let phase = &mut phases[p * self.rows * self.width..(p + 1) * self.rows * self.width];
            let interior = phase.chunks_exact_mut(self.width).skip(self.pad_top).take(in_h);
            for (iy, row) in interior.enumerate() {
                let src = &plane[iy * self.in_w..(iy + 1) * self.in_w];
                let first = j_lo * sw + p - self.pad_left;
                let dst = &mut row[j_lo..j_hi];
                if sw == 1 {
                    for (d, &v) in dst.iter_mut().zip(&src[first..]) {
                        *d = conv(v);
                    }
                } else if sw == 2 {
                    // Whole pairs, not `step_by` or `chunks`: an interleaved load LLVM turns into
                    // shuffles (the ragged forms stay scalar, a quarter of the depthwise time).
                    let src = &src[first..];
                    let whole = dst.len().min(src.len() / 2);
                    for (d, pair) in dst[..whole].iter_mut().zip(src.chunks_exact(2)) {
                        *d = conv(pair[0]);
                    }
                    if let (Some(d), Some(&v)) = (dst.get_mut(whole), src.get(2 * whole)) {
                        *d = conv(v);
                    }
                } else {
                    for (d, &v) in dst.iter_mut().zip(src[first..].iter().step_by(sw)) {
                        *d = conv(v);
                    }
                }
            }
        }
    }
}

/// The driver: channel by channel, `fill` writes the phase buffer and `block` computes and
/// stores each block (given the channel). `weights(c, w)` writes channel `c`'s taps as f32.
/// `#[inline(always)]`: `x86` compiles it again inside AVX2 and AVX-512 functions.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn blocks<const L: usize, X: Copy, O>(
    g: &Geometry,
    x: &[X],
    channels: Range<usize>,
    out: &mut [O],
    weights: impl Fn(usize, &mut [f32]),
    fill: impl Fn(&PhaseLayout, usize, &[X], &mut [f32]),
    block: impl Fn(&Block, usize, &mut [O]),
) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let (kh, kw, sh, sw) = (g.kernel_h, g.kernel_w, g.stride_h, g.stride_w);
    let pw = g.in_w + g.pads[1] + g.pads[3];
    // Phase p holds padded columns p, p + sw, p + 2·sw, …; tap kx reads phase kx % sw from kx / sw.
    // Whole blocks: wide enough for every lane of the last block, tall enough for its last row.
    let ow_l = ow.next_multiple_of(L);
    let phase_w = pw.div_ceil(sw).max((kw - 1) / sw + ow_l);
    let ph = (g.in_h + g.pads[0] + g.pads[2]).max((oh.next_multiple_of(ROWS) - 1) * sh + kh);
    let mut phases = vec![0f32; sw * ph * phase_w];
    let mut wc = vec![0f32; kh * kw];
    // Where tap (ky, kx) starts in the phase buffer, relative to an output row's first input row.
    let taps: Vec<usize> = (0..kh * kw)
        .map(|t| {
            let (ky, kx) = (t / kw, t % kw);
            ((kx % sw) * ph + ky) * phase_w + kx / sw
        })
        .collect();
    let row_stride = sh * phase_w;
    let layout = PhaseLayout {
        in_w: g.in_w,
        pad_top: g.pads[0],
        pad_left: g.pads[1],
        rows: ph,
        width: phase_w,
    };
    let first = channels.start;
    for c in channels {
        fill(
            &layout,
            sw,
            &x[c * g.in_h * g.in_w..(c + 1) * g.in_h * g.in_w],
            &mut phases,
        );
        weights(c, &mut wc);
        let out_c = &mut out[(c - first) * oh * ow..(c - first + 1) * oh * ow];
        for oy0 in (0..oh).step_by(ROWS) {
            for x0 in (0..ow_l).step_by(L) {
                let b = Block {
                    src: &phases[oy0 * row_stride + x0..],
                    w: &wc,
                    offsets: &taps,
                    row_stride,
                    rows: ROWS.min(oh - oy0),
                    lanes: L.min(ow - x0),
                    out_stride: ow,
                };
                block(&b, c, &mut out_c[oy0 * ow + x0..]);
            }
        }
    }
}

/// `a[r][j] = Σ_t w[t] · src[offsets[t] + r·row_stride + j]`, row by row, so each row is one
/// accumulator of `L` lanes that LLVM keeps in vector registers (several registers wide:
/// independent chains). `FUSED` picks `mul_add`, an FMA instruction on aarch64 (on x86 without
/// FMA it would be a library call). `x86` has intrinsics forms that interleave all rows.
#[inline(always)]
pub fn accumulate<const L: usize, const FUSED: bool>(b: &Block) -> [[f32; L]; ROWS] {
    let mut out = [[0f32; L]; ROWS];
    for (r, out) in out.iter_mut().enumerate() {
        let mut a = [0f32; L];
        for (&wv, &off) in b.w.iter().zip(b.offsets) {
            let base = off + r * b.row_stride;
            for (a, &v) in a.iter_mut().zip(&b.src[base..base + L]) {
                *a = if FUSED { wv.mul_add(v, *a) } else { *a + wv * v };
            }
        }
        *out = a;
    }
    out
}

/// int8: bias, requantisation and store of a block's rows.
#[inline(always)]
pub fn epilogue_i8<const L: usize>(
    a: &[[f32; L]; ROWS],
    b: &Block,
    bias: i32,
    multiplier: f32,
    requant: &Requant,
    out: &mut [i8],
) {
    let mut acc_i = [0i32; L];
    let mut lanes = [0i8; L];
    for (r, a) in a.iter().enumerate().take(b.rows) {
        // Exact integers below 2²² (MAX_EXACT_TAPS): the conversion is exact.
        for (ai, &a) in acc_i.iter_mut().zip(a) {
            *ai = round_to_i32(a) + bias;
        }
        // All L lanes (a fixed width vectorises; a row's ragged end would not), then the ones
        // that are in the row.
        requant_row(&acc_i, multiplier, requant, &mut lanes);
        out[r * b.out_stride..r * b.out_stride + b.lanes].copy_from_slice(&lanes[..b.lanes]);
    }
}

/// f32: bias, clamp (`[lo, hi]`, a folded Relu/Clip) and store of a block's rows.
#[inline(always)]
pub fn epilogue_f32<const L: usize>(a: &[[f32; L]; ROWS], b: &Block, bias: f32, (lo, hi): (f32, f32), out: &mut [f32]) {
    for (r, a) in a.iter().enumerate().take(b.rows) {
        let dst = &mut out[r * b.out_stride..r * b.out_stride + b.lanes];
        for (d, &a) in dst.iter_mut().zip(a) {
            *d = (a + bias).max(lo).min(hi);
        }
    }
}

/// Channel `c`'s int8 taps as f32.
#[inline(always)]
pub fn int8_weights<'a>(d: &'a Depthwise) -> impl Fn(usize, &mut [f32]) + 'a {
    let taps = d.g.kernel_h * d.g.kernel_w;
    move |c, wc| {
        for (f, &v) in wc.iter_mut().zip(&d.w[c * taps..(c + 1) * taps]) {
            *f = v as f32;
        }
    }
}

/// Channel `c`'s f32 taps.
#[inline(always)]
pub fn f32_weights<'a>(d: &'a DepthwiseF32) -> impl Fn(usize, &mut [f32]) + 'a {
    let taps = d.g.kernel_h * d.g.kernel_w;
    move |c, wc| wc.copy_from_slice(&d.w[c * taps..(c + 1) * taps])
}

/// Lanes per block on the portable path: 16 (four NEON registers per row: independent chains).
const PORTABLE_LANES: usize = 16;
const FUSED: bool = cfg!(target_arch = "aarch64");

/// The portable int8 depthwise, channels `channels` into `out`.
pub fn int8_channels(d: &Depthwise, channels: Range<usize>, out: &mut [i8]) {
    let zx = d.zx as f32;
    blocks::<PORTABLE_LANES, i8, i8>(
        d.g,
        d.x,
        channels,
        out,
        int8_weights(d),
        |l, sw, plane, phases| l.fill(sw, plane, |v| v as f32 - zx, phases),
        |b, c, out| {
            let a = accumulate::<PORTABLE_LANES, FUSED>(b);
            epilogue_i8(&a, b, d.bias[c], d.requant.multiplier[c], d.requant, out)
        },
    )
}

/// The portable f32 depthwise, channels `channels` into `out`.
pub fn f32_channels(d: &DepthwiseF32, channels: Range<usize>, out: &mut [f32]) {
    blocks::<PORTABLE_LANES, f32, f32>(
        d.g,
        d.x,
        channels,
        out,
        f32_weights(d),
        |l, sw, plane, phases| l.fill(sw, plane, |v| v, phases),
        |b, c, out| epilogue_f32(&accumulate::<PORTABLE_LANES, FUSED>(b), b, d.bias[c], d.clamp, out),
    )
}
