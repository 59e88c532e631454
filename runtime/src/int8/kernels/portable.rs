//! Safe kernels shaped for auto-vectorisation: fixed-width inner loops over contiguous slices.
//! The `*_body` functions are `#[inline(always)]` so `x86.rs` can compile them again inside an
//! AVX2+FMA function, where the same loops vectorise eight lanes wide.

use std::ops::Range;

use super::{AddParams, Depthwise, Requant};

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

/// [`super::requantize`] over a row: bit-identical (the clamp to the i8 range comes first, so the
/// rounded value is within ±255), and vectorised.
#[inline(always)]
pub(super) fn requant_row(acc: &[i32], multiplier: f32, requant: &Requant, out: &mut [i8]) {
    let lo = (requant.lo - requant.zero_point) as f32;
    let hi = (requant.hi - requant.zero_point) as f32;
    for (o, &a) in out.iter_mut().zip(acc) {
        let v = (a as f32 * multiplier).max(lo).min(hi);
        *o = (round_to_i32(v) + requant.zero_point) as i8;
    }
}

/// Every channel of `d` into `out`.
pub fn depthwise(d: &Depthwise, out: &mut [i8]) {
    depthwise_channels(d, 0..d.g.in_channels, out)
}

/// Per channel: the plane with its padding as f32 `x − zx` (padding 0), split into `stride_w`
/// column phases so every tap reads a contiguous run; then one multiply-add per tap over each
/// output row. Exact (see the module docs), so it matches the integer reference bit for bit.
/// `#[inline(always)]`: `x86.rs` compiles it again inside an AVX2+FMA function.
#[inline(always)]
pub fn depthwise_channels(d: &Depthwise, channels: Range<usize>, out: &mut [i8]) {
    let Depthwise {
        g,
        x,
        zx,
        w,
        bias,
        requant,
    } = *d;
    let (oh, ow) = (g.out_h(), g.out_w());
    let (kh, kw, sh, sw) = (g.kernel_h, g.kernel_w, g.stride_h, g.stride_w);
    let ph = g.in_h + g.pads[0] + g.pads[2];
    let pw = g.in_w + g.pads[1] + g.pads[3];
    // Phase p holds padded columns p, p + sw, p + 2·sw, …; tap kx reads phase kx % sw from kx / sw.
    // Output rows are computed in whole vectors of 8 (the lanes past `ow` read zeros and are
    // dropped), so short rows (7 or 14 wide late in the network) have no scalar tail.
    let ow8 = ow.next_multiple_of(8);
    let phase_w = pw.div_ceil(sw).max((kw - 1) / sw + ow8);
    let mut phases = vec![0f32; sw * ph * phase_w];
    let mut acc = vec![0f32; ow8];
    let mut acc_i = vec![0i32; ow];
    // Where tap (ky, kx) starts in the phase buffer, relative to an output row's first input row.
    let taps: Vec<usize> = (0..kh * kw)
        .map(|t| {
            let (ky, kx) = (t / kw, t % kw);
            ((kx % sw) * ph + ky) * phase_w + kx / sw
        })
        .collect();
    let zx = zx as f32;
    let first = channels.start;
    for c in channels {
        let plane = &x[c * g.in_h * g.in_w..(c + 1) * g.in_h * g.in_w];
        let layout = PhaseLayout {
            in_w: g.in_w,
            pad_top: g.pads[0],
            pad_left: g.pads[1],
            rows: ph,
            width: phase_w,
        };
        match sw {
            1 => layout.fill::<1>(plane, zx, &mut phases),
            2 => layout.fill::<2>(plane, zx, &mut phases),
            _ => layout.fill_any(sw, plane, zx, &mut phases),
        }
        let wc: Vec<f32> = w[c * kh * kw..(c + 1) * kh * kw].iter().map(|&v| v as f32).collect();
        for oy in 0..oh {
            let row = oy * sh * phase_w;
            // One 8-wide output chunk at a time, summed over every tap in registers and stored
            // once: full-width vectors however short the row, half the memory traffic.
            for (x0, chunk) in acc.chunks_exact_mut(8).enumerate() {
                let mut a = [0f32; 8];
                for (&wv, &off) in wc.iter().zip(&taps) {
                    let base = row + off + x0 * 8;
                    let src = &phases[base..base + 8];
                    for (a, &v) in a.iter_mut().zip(src) {
                        *a += wv * v;
                    }
                }
                chunk.copy_from_slice(&a);
            }
            // Exact integers below 2²² (MAX_EXACT_TAPS): the conversion is exact.
            for (ai, &a) in acc_i.iter_mut().zip(&acc) {
                *ai = round_to_i32(a) + bias[c];
            }
            let o = &mut out[((c - first) * oh + oy) * ow..((c - first) * oh + oy + 1) * ow];
            requant_row(&acc_i, requant.multiplier[c], requant, o);
        }
    }
}

/// Where each input pixel of a channel goes in the stride-phase buffer of `depthwise_channels`.
struct PhaseLayout {
    in_w: usize,
    pad_top: usize,
    pad_left: usize,
    rows: usize,
    width: usize,
}

impl PhaseLayout {
    /// Fill the whole buffer for one channel: padding rows and columns 0, every other value
    /// `x − zx`, in runs the compiler vectorises (no per-pixel index arithmetic). The stride as a
    /// constant makes the phase arithmetic disappear for the common strides 1 and 2.
    #[inline(always)]
    fn fill<const SW: usize>(&self, plane: &[i8], zx: f32, phases: &mut [f32]) {
        self.fill_any(SW, plane, zx, phases)
    }

    #[inline(always)]
    fn fill_any(&self, sw: usize, plane: &[i8], zx: f32, phases: &mut [f32]) {
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
            let phase = &mut phases[p * self.rows * self.width..(p + 1) * self.rows * self.width];
            for (py, row) in phase.chunks_exact_mut(self.width).enumerate() {
                let Some(iy) = py.checked_sub(self.pad_top).filter(|&iy| iy < in_h) else {
                    row.fill(0.0);
                    continue;
                };
                let src = &plane[iy * self.in_w..(iy + 1) * self.in_w];
                row[..j_lo.min(j_hi)].fill(0.0);
                row[j_hi..].fill(0.0);
                if j_lo >= j_hi {
                    continue;
                }
                let first = j_lo * sw + p - self.pad_left;
                let dst = &mut row[j_lo..j_hi];
                if sw == 1 {
                    for (d, &v) in dst.iter_mut().zip(&src[first..]) {
                        *d = v as f32 - zx;
                    }
                } else if sw == 2 {
                    // Pairs, not `step_by`: an interleaved load LLVM turns into shuffles.
                    for (d, pair) in dst.iter_mut().zip(src[first..].chunks(2)) {
                        *d = pair[0] as f32 - zx;
                    }
                } else {
                    for (d, &v) in dst.iter_mut().zip(src[first..].iter().step_by(sw)) {
                        *d = v as f32 - zx;
                    }
                }
            }
        }
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
        *o = (round_to_i32(v.max(lo).min(hi)) + p.zero_point) as i8;
    }
}
