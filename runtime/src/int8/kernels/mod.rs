//! Kernels for Kestrel's own ops: an int8 GEMM (pointwise convolutions, and every other
//! convolution after im2col), depthwise convolutions (int8, and f32 for float models), an int8
//! residual add, all on NCHW planes of one image, and the f32 × int8-weights product of an int8
//! file's classifier ([`gemv_w8`]: within f32 rounding of its reference, not bit for bit).
//!
//! - [`reference`] is the definition: plain loops, no tricks. Every other path must match it bit
//!   for bit (f32 depthwise: within f32 rounding), and the tests check every path this CPU has
//!   ([`GemmPath::available`], [`depthwise_paths`], [`depthwise_f32_paths`]) on random shapes,
//!   strides, paddings and zero points.
//! - [`portable`] (GEMM driver and tile, im2col, add) and `depthwise` are safe Rust written so
//!   that LLVM vectorises it: the depthwise blocks compile on aarch64 to four independent
//!   `fmla .4s` chains per row. It runs on any CPU; the GEMM's driver (tiling, padding rows,
//!   requantisation) is shared by every GEMM path.
//! - `x86` holds what needs intrinsics, picked at run time: the GEMM as AVX-512 VNNI `vpdpbusd`
//!   (64 products per instruction; 3–5× the AVX2 form here) or AVX2 `vpmaddwd` (LLVM forms
//!   neither from the plain loop: the portable GEMM measured 6–8× slower than `vpmaddwd`), the
//!   int8 depthwise convolution in integers with `vpdpbusd` (AVX-512 VNNI + VBMI, or AVX-VNNI:
//!   four taps per instruction), and the f32-exact depthwise blocks with eight FMA chains, masked
//!   loads and stores and in-register requantisation (f32 models, CPUs without VNNI, and strides
//!   the integer form does not take).
//! - `aarch64` holds the GEMM's register tiles in NEON (`SMULL`/`SADALP` on i8 pairs, and
//!   `SMLAL` by lane for weights holding a −128): the Pi's pointwise convolutions. LLVM compiled
//!   the portable tile to scalar code there. `x86` and `aarch64` are the only modules that may use `unsafe`.
//!
//! Depthwise convolutions other than the x86 VNNI ones compute in f32, exactly: every operand is
//! an integer (|x − zx| ≤ 255, |w| ≤ 128) and a 5×5 window's sum stays below 25·255·128 < 2²²,
//! where f32 is exact (up to 128 taps; larger windows take the reference path). The i32 bias is added after conversion back to
//! i32. This is bit-identical to int32 accumulation, vectorises with plain code, and lets float
//! models share the same kernel.
//!
//! Requantisation follows onnxruntime's (MLAS) definition, so the int8 file gives the same
//! numbers in both engines: `y = clamp(round_half_even(acc · m), lo − zy, hi − zy) + zy` with
//! `m = sx · sw / sy` in f32.

use std::ops::Range;

use rayon::prelude::*;

#[cfg(target_arch = "aarch64")]
mod aarch64;
mod depthwise;
mod gemm;
pub mod gemv_w8;
pub mod portable;
pub mod reference;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use gemm::{GemmPath, GemmWeights, PackedInput, gemm, gemm_rows, pack_input};
pub use gemv_w8::{WeightsI8, gemv_w8};

/// Where a requantised output lands: the multiplier per output channel, the zero point, and the
/// clamp in the quantised domain (the i8 range, narrowed by a fused ReLU/ReLU6).
#[derive(Debug, Clone, PartialEq)]
pub struct Requant {
    pub multiplier: Vec<f32>,
    pub zero_point: i32,
    pub lo: i32,
    pub hi: i32,
}

impl Requant {
    /// One output value from its i32 accumulator (bias included) in channel `c`.
    #[inline(always)]
    pub fn apply(&self, acc: i32, c: usize) -> i8 {
        requantize(acc, self.multiplier[c], self.zero_point, self.lo, self.hi)
    }
}

/// The requantisation every kernel uses. The clamp comes before the rounding (as in MLAS) so no
/// float-to-int conversion ever overflows; for integer bounds the result is the same as rounding
/// first.
#[inline(always)]
pub fn requantize(acc: i32, multiplier: f32, zero_point: i32, lo: i32, hi: i32) -> i8 {
    let v = (acc as f32 * multiplier).clamp((lo - zero_point) as f32, (hi - zero_point) as f32);
    (v.round_ties_even() as i32 + zero_point) as i8
}

/// A convolution's geometry on one image (NCHW, batch 1), dilation 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    pub in_channels: usize,
    pub out_channels: usize,
    pub groups: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    /// top, left, bottom, right
    pub pads: [usize; 4],
}

impl Geometry {
    pub fn out_h(&self) -> usize {
        (self.in_h + self.pads[0] + self.pads[2] - self.kernel_h) / self.stride_h + 1
    }

    pub fn out_w(&self) -> usize {
        (self.in_w + self.pads[1] + self.pads[3] - self.kernel_w) / self.stride_w + 1
    }

    /// One input channel per group and one output channel per group.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_channels && self.groups == self.out_channels
    }

    /// A plain matrix product over channels: 1×1, stride 1, no padding, one group.
    pub fn is_pointwise(&self) -> bool {
        self.groups == 1
            && (self.kernel_h, self.kernel_w, self.stride_h, self.stride_w) == (1, 1, 1, 1)
            && self.pads == [0; 4]
    }

    /// Whether the geometry is one the kernels compute (and [`reference::conv`] defines).
    pub fn is_valid(&self) -> bool {
        self.groups > 0
            && self.in_channels.is_multiple_of(self.groups)
            && self.out_channels.is_multiple_of(self.groups)
            && self.kernel_h > 0
            && self.kernel_w > 0
            && self.stride_h > 0
            && self.stride_w > 0
            && self.in_h + self.pads[0] + self.pads[2] >= self.kernel_h
            && self.in_w + self.pads[1] + self.pads[3] >= self.kernel_w
    }

    /// Weights per output channel.
    pub fn taps(&self) -> usize {
        self.in_channels / self.groups * self.kernel_h * self.kernel_w
    }
}

/// Which implementation runs the kernels on this CPU; `kestrel info` and the benchmarks print it.
pub fn isa() -> &'static str {
    match GemmPath::best() {
        #[cfg(target_arch = "x86_64")]
        GemmPath::Vnni if depthwise_paths()[0].0 == "vnni" => "x86-64 AVX-512 VNNI (vpdpbusd GEMM and depthwise)",
        #[cfg(target_arch = "x86_64")]
        GemmPath::Vnni => "x86-64 AVX-512 VNNI (vpdpbusd GEMM, f32-exact depthwise)",
        #[cfg(target_arch = "x86_64")]
        GemmPath::Avx2 if depthwise_paths()[0].0 == "avxvnni" => {
            "x86-64 AVX2 (vpmaddwd GEMM, AVX-VNNI vpdpbusd depthwise)"
        }
        #[cfg(target_arch = "x86_64")]
        GemmPath::Avx2 => "x86-64 AVX2 (vpmaddwd GEMM, f32-exact depthwise)",
        #[cfg(target_arch = "aarch64")]
        GemmPath::NeonMull => "aarch64 NEON (SMULL/SADALP GEMM, f32-exact depthwise)",
        #[cfg(target_arch = "aarch64")]
        GemmPath::NeonLane => "aarch64 NEON (SMLAL-by-lane GEMM, f32-exact depthwise)",
        GemmPath::Portable => "portable (no SIMD detected)",
    }
}

/// One depthwise convolution of a whole `channels × in_h × in_w` image: what every depthwise
/// kernel reads (see [`reference::depthwise`] for the definition).
#[derive(Debug, Clone, Copy)]
pub struct Depthwise<'a> {
    pub g: &'a Geometry,
    pub x: &'a [i8],
    pub zx: i32,
    /// `channels × kernel_h × kernel_w`.
    pub w: &'a [i8],
    pub bias: &'a [i32],
    pub requant: &'a Requant,
}

/// Channels `channels` of `d` into `out` (those channels' output planes only).
pub fn depthwise_channels(d: &Depthwise, channels: Range<usize>, out: &mut [i8]) {
    let g = d.g;
    if g.kernel_h * g.kernel_w > MAX_EXACT_TAPS {
        let all = reference::depthwise(g, d.x, d.zx, d.w, d.bias, d.requant);
        let plane = g.out_h() * g.out_w();
        out.copy_from_slice(&all[channels.start * plane..channels.end * plane]);
        return;
    }
    (depthwise_paths()[0].1)(d, channels, out)
}

/// A depthwise implementation: channels `channels` of a [`Depthwise`] into `out`.
pub type DepthwiseFn = fn(&Depthwise, Range<usize>, &mut [i8]);

/// Every depthwise implementation this CPU runs, fastest first, named (the tests run each).
pub fn depthwise_paths() -> &'static [(&'static str, DepthwiseFn)] {
    static PATHS: std::sync::OnceLock<Vec<(&'static str, DepthwiseFn)>> = std::sync::OnceLock::new();
    PATHS.get_or_init(|| {
        let mut paths: Vec<(&'static str, DepthwiseFn)> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if x86::depthwise_vnni::available() {
                paths.push(("vnni", x86::depthwise_vnni::depthwise_channels));
            }
            if x86::avxvnni_available() {
                paths.push(("avxvnni", x86::depthwise_channels_avxvnni));
            }
            if x86::avx512_available() {
                paths.push(("avx512", x86::depthwise_channels_avx512));
            }
            if x86::available() {
                paths.push(("avx2", x86::depthwise_channels));
            }
        }
        paths.push(("portable", depthwise::int8_channels));
        paths
    })
}

/// One f32 depthwise convolution of a whole `channels × in_h × in_w` image (float models: the
/// same blocks as the int8 kernel, without the integer steps).
#[derive(Debug, Clone, Copy)]
pub struct DepthwiseF32<'a> {
    pub g: &'a Geometry,
    pub x: &'a [f32],
    /// `channels × kernel_h × kernel_w`.
    pub w: &'a [f32],
    pub bias: &'a [f32],
    /// Outputs clamped to `[lo, hi]`: a folded Relu/Clip (infinite bounds: none).
    pub clamp: (f32, f32),
}

/// An f32 depthwise implementation: channels `channels` of a [`DepthwiseF32`] into `out`.
pub type DepthwiseF32Fn = fn(&DepthwiseF32, Range<usize>, &mut [f32]);

/// Every f32 depthwise implementation this CPU runs, fastest first, named.
pub fn depthwise_f32_paths() -> &'static [(&'static str, DepthwiseF32Fn)] {
    static PATHS: std::sync::OnceLock<Vec<(&'static str, DepthwiseF32Fn)>> = std::sync::OnceLock::new();
    PATHS.get_or_init(|| {
        let mut paths: Vec<(&'static str, DepthwiseF32Fn)> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if x86::avx512_available() {
                paths.push(("avx512", x86::depthwise_f32_channels_avx512));
            }
            if x86::available() {
                paths.push(("avx2", x86::depthwise_f32_channels));
            }
        }
        paths.push(("portable", depthwise::f32_channels));
        paths
    })
}

/// Every channel of `d` into `out` (`channels × out_h × out_w`), split over `pool`'s threads.
pub fn depthwise_f32(d: &DepthwiseF32, pool: Option<&rayon::ThreadPool>, out: &mut [f32]) {
    let run = depthwise_f32_paths()[0].1;
    let plane = d.g.out_h() * d.g.out_w();
    match pool {
        Some(pool) if plane > 0 => {
            let n = d.g.in_channels.div_ceil(pool.current_num_threads() * 2).max(1);
            pool.install(|| {
                out.par_chunks_mut(n * plane).enumerate().for_each(|(i, o)| {
                    let first = i * n;
                    run(d, first..first + o.len() / plane, o)
                })
            })
        }
        _ => run(d, 0..d.g.in_channels, out),
    }
}

/// Every channel of `d` into `out`.
pub fn depthwise(d: &Depthwise, out: &mut [i8]) {
    depthwise_channels(d, 0..d.g.in_channels, out)
}

/// Largest window whose sum of products (each at most 255 · 128) stays below 2²²: exact in f32
/// and convertible with `portable::round_to_i32`. 128 taps; every depthwise kernel we export has 25
/// at most.
const MAX_EXACT_TAPS: usize = (1 << 22) / (255 * 128);

/// Parameters of a quantised residual add: `y = requant(ma·(a − za) + mb·(b − zb))`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddParams {
    pub a_mult: f32,
    pub a_zero: i32,
    pub b_mult: f32,
    pub b_zero: i32,
    pub zero_point: i32,
    pub lo: i32,
    pub hi: i32,
}

/// ONNX QuantizeLinear with a scalar scale and int8 zero point: `y = saturate(round_half_even(x /
/// scale) + zero)` (a division, as ONNX and MLAS define it, not a multiplication by 1/scale).
pub fn quantize(x: &[f32], scale: f32, zero: i32, out: &mut [i8]) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        return x86::quantize(x, scale, zero, out);
    }
    portable::quantize(x, scale, zero, out)
}

pub fn add(p: &AddParams, a: &[i8], b: &[i8], out: &mut [i8]) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        return x86::add(p, a, b, out);
    }
    portable::add(p, a, b, out)
}

/// A convolution of any geometry: pointwise straight to the GEMM, depthwise to its kernel, the rest
/// through im2col (padding filled with the input zero point, which stands for 0.0) and the GEMM.
/// `bias_folded` is `bias − zx · Σw` per output channel (what [`GemmWeights::row_sums`] gives).
/// With a `pool`, output channels are split across its threads (the input is packed once).
#[allow(clippy::too_many_arguments)]
pub fn conv(
    g: &Geometry,
    x: &[i8],
    zx: i32,
    w: &GemmWeights,
    bias: &[i32],
    bias_folded: &[i32],
    requant: &Requant,
    pool: Option<&rayon::ThreadPool>,
    out: &mut [i8],
) {
    let cols = g.out_h() * g.out_w();
    // Output channels per task: a few tasks per thread for balance, whole GEMM row tiles (8 rows).
    let per_task = |channels: usize, threads: usize| channels.div_ceil(threads * 2).next_multiple_of(8).max(8);
    if g.is_depthwise() {
        let d = Depthwise {
            g,
            x,
            zx,
            w: &w.plain,
            bias,
            requant,
        };
        let run = |channels: Range<usize>, out: &mut [i8]| depthwise_channels(&d, channels, out);
        return match pool {
            Some(pool) => {
                let n = per_task(g.in_channels, pool.current_num_threads());
                pool.install(|| {
                    out.par_chunks_mut(n * cols).enumerate().for_each(|(i, o)| {
                        let first = i * n;
                        run(first..first + o.len() / cols, o)
                    })
                })
            }
            None => run(0..g.in_channels, out),
        };
    }
    if g.groups > 1 {
        return grouped(g, x, zx, w, bias_folded, requant, out);
    }
    let im2col;
    let input = if g.is_pointwise() {
        x
    } else {
        let mut scratch = Vec::new();
        portable::im2col(g, x, 0, g.in_channels, zx as i8, &mut scratch);
        im2col = scratch;
        &im2col
    };
    let packed = pack_input(w, input, cols);
    match pool {
        Some(pool) => {
            let n = per_task(w.rows, pool.current_num_threads());
            pool.install(|| {
                out.par_chunks_mut(n * cols).enumerate().for_each(|(i, o)| {
                    let first = i * n;
                    gemm_rows(w, first..first + o.len() / cols, &packed, cols, bias_folded, requant, o)
                })
            })
        }
        None => gemm_rows(w, 0..w.rows, &packed, cols, bias_folded, requant, out),
    }
}

/// f32 pointwise weights packed for Kestrel's f32 GEMM (AVX-512 only: elsewhere tract's matrix
/// products are kept, and [`GemmF32::new`] says so with `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct GemmF32 {
    pub rows: usize,
    pub depth: usize,
    packed: Vec<f32>,
}

impl GemmF32 {
    /// `w` is `rows × depth`, row-major.
    pub fn new(w: &[f32], rows: usize, depth: usize) -> Option<Self> {
        if !gemm_f32_available() || w.len() != rows * depth {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        return Some(GemmF32 {
            rows,
            depth,
            packed: x86::pack_f32_weights(w, rows, depth),
        });
        #[allow(unreachable_code)]
        None
    }
}

/// Whether this CPU has Kestrel's f32 GEMM (x86-64 with AVX-512).
pub fn gemm_f32_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return x86::avx512_available();
    #[allow(unreachable_code)]
    false
}

/// `out[r][n] = clamp(bias[r] + Σ_k w[r][k] · x[k][n])`, `x` being `depth × cols`, the clamp
/// `[lo, hi]` a folded Relu/Clip; output rows split over `pool`'s threads in whole tiles.
pub fn gemm_f32(
    w: &GemmF32,
    x: &[f32],
    cols: usize,
    bias: &[f32],
    clamp: (f32, f32),
    pool: Option<&rayon::ThreadPool>,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        let run = |rows: Range<usize>, out: &mut [f32]| {
            x86::gemm_f32_rows(&w.packed, w.depth, rows, x, cols, bias, clamp, out)
        };
        match pool {
            Some(pool) if cols > 0 => {
                let n = w
                    .rows
                    .div_ceil(pool.current_num_threads() * 2)
                    .next_multiple_of(8)
                    .max(8);
                pool.install(|| {
                    out.par_chunks_mut(n * cols).enumerate().for_each(|(i, o)| {
                        let first = i * n;
                        run(first..first + o.len() / cols, o)
                    })
                })
            }
            _ => run(0..w.rows, out),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "GemmF32 is only built where gemm_f32_available(): {w:?} {x:?} {cols} {bias:?} {clamp:?} {pool:?} {out:?}"
    )
}

/// Grouped (not depthwise) convolutions: rare in the models we export; one GEMM per group.
fn grouped(g: &Geometry, x: &[i8], zx: i32, w: &GemmWeights, bias_folded: &[i32], requant: &Requant, out: &mut [i8]) {
    let cols = g.out_h() * g.out_w();
    let per_group_in = g.in_channels / g.groups;
    let per_group_out = g.out_channels / g.groups;
    let mut scratch = Vec::new();
    for group in 0..g.groups {
        portable::im2col(g, x, group * per_group_in, per_group_in, zx as i8, &mut scratch);
        let rows = group * per_group_out..(group + 1) * per_group_out;
        let depth = w.depth;
        let sub = GemmWeights::new(
            w.plain[rows.start * depth..rows.end * depth].to_vec(),
            per_group_out,
            depth,
        );
        let sub_requant = Requant {
            multiplier: requant.multiplier[rows.clone()].to_vec(),
            ..requant.clone()
        };
        gemm(
            &sub,
            &scratch,
            cols,
            &bias_folded[rows.clone()],
            &sub_requant,
            &mut out[rows.start * cols..rows.end * cols],
        );
    }
}

#[cfg(test)]
mod tests;
