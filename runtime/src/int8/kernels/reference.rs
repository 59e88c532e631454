//! The definitions: what every fast path must compute, bit for bit. Written for clarity only.

use super::{AddParams, Geometry, Requant};

/// Direct convolution, any geometry: `y[co][oy][ox] = requant(bias[co] + Σ w · (x − zx))`, where
/// taps falling in the padding contribute 0 (a real zero, whatever the zero point).
/// `w` is `out_channels × in_channels/groups × kernel_h × kernel_w`, as ONNX stores it.
pub fn conv(g: &Geometry, x: &[i8], zx: i32, w: &[i8], bias: &[i32], requant: &Requant) -> Vec<i8> {
    let (oh, ow) = (g.out_h(), g.out_w());
    let cin_g = g.in_channels / g.groups;
    let cout_g = g.out_channels / g.groups;
    let mut out = vec![0i8; g.out_channels * oh * ow];
    for co in 0..g.out_channels {
        let group = co / cout_g;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = bias[co];
                for ci in 0..cin_g {
                    let c = group * cin_g + ci;
                    for ky in 0..g.kernel_h {
                        for kx in 0..g.kernel_w {
                            let iy = (oy * g.stride_h + ky) as isize - g.pads[0] as isize;
                            let ix = (ox * g.stride_w + kx) as isize - g.pads[1] as isize;
                            if iy < 0 || ix < 0 || iy >= g.in_h as isize || ix >= g.in_w as isize {
                                continue;
                            }
                            let xv = x[(c * g.in_h + iy as usize) * g.in_w + ix as usize] as i32 - zx;
                            let wv = w[((co * cin_g + ci) * g.kernel_h + ky) * g.kernel_w + kx] as i32;
                            acc += xv * wv;
                        }
                    }
                }
                out[(co * oh + oy) * ow + ox] = requant.apply(acc, co);
            }
        }
    }
    out
}

/// `depth × cols` matrix product with requantisation (no zero point: see `kernels::gemm`).
pub fn gemm(w: &[i8], rows: usize, depth: usize, x: &[i8], cols: usize, bias: &[i32], requant: &Requant) -> Vec<i8> {
    let mut out = vec![0i8; rows * cols];
    for r in 0..rows {
        for n in 0..cols {
            let mut acc = bias[r];
            for k in 0..depth {
                acc += w[r * depth + k] as i32 * x[k * cols + n] as i32;
            }
            out[r * cols + n] = requant.apply(acc, r);
        }
    }
    out
}

/// ONNX QuantizeLinear, element by element.
pub fn quantize(x: &[f32], scale: f32, zero: i32) -> Vec<i8> {
    x.iter()
        .map(|&v| ((v / scale).round_ties_even() + zero as f32).clamp(-128.0, 127.0) as i8)
        .collect()
}

/// The quantised add, element by element.
pub fn add(p: &AddParams, a: &[i8], b: &[i8]) -> Vec<i8> {
    a.iter().zip(b).map(|(&a, &b)| add_one(p, a, b)).collect()
}

/// One element of the quantised add: both inputs rescaled to the output's scale in f32, summed,
/// then requantised as every kernel does (multiplier 1 on the already-scaled sum).
#[inline(always)]
pub fn add_one(p: &AddParams, a: i8, b: i8) -> i8 {
    let v = p.a_mult * (a as i32 - p.a_zero) as f32 + p.b_mult * (b as i32 - p.b_zero) as f32;
    let v = v.clamp((p.lo - p.zero_point) as f32, (p.hi - p.zero_point) as f32);
    (v.round_ties_even() as i32 + p.zero_point) as i8
}

/// Depthwise convolution is a convolution with one channel per group.
pub fn depthwise(g: &Geometry, x: &[i8], zx: i32, w: &[i8], bias: &[i32], requant: &Requant) -> Vec<i8> {
    debug_assert!(g.is_depthwise());
    conv(g, x, zx, w, bias, requant)
}

/// f32 depthwise convolution, accumulated in f64: `y[c][oy][ox] = bias[c] + Σ w · x`, taps in the
/// padding contributing 0. Also returns Σ |w · x| per output, the scale of its rounding error.
pub fn depthwise_f32(g: &Geometry, x: &[f32], w: &[f32], bias: &[f32]) -> (Vec<f32>, Vec<f64>) {
    debug_assert!(g.is_depthwise());
    let (oh, ow) = (g.out_h(), g.out_w());
    let mut out = vec![0f32; g.out_channels * oh * ow];
    let mut magnitude = vec![0f64; out.len()];
    for c in 0..g.out_channels {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut acc, mut mag) = (bias[c] as f64, bias[c].abs() as f64);
                for ky in 0..g.kernel_h {
                    for kx in 0..g.kernel_w {
                        let iy = (oy * g.stride_h + ky) as isize - g.pads[0] as isize;
                        let ix = (ox * g.stride_w + kx) as isize - g.pads[1] as isize;
                        if iy < 0 || ix < 0 || iy >= g.in_h as isize || ix >= g.in_w as isize {
                            continue;
                        }
                        let xv = x[(c * g.in_h + iy as usize) * g.in_w + ix as usize] as f64;
                        let wv = w[(c * g.kernel_h + ky) * g.kernel_w + kx] as f64;
                        acc += xv * wv;
                        mag += (xv * wv).abs();
                    }
                }
                out[(c * oh + oy) * ow + ox] = acc as f32;
                magnitude[(c * oh + oy) * ow + ox] = mag;
            }
        }
    }
    (out, magnitude)
}

/// f32 matrix product accumulated in f64: `out[r][n] = bias[r] + Σ_k w[r][k] · x[k][n]`, with
/// Σ |w · x| per output (the scale of its rounding error).
pub fn gemm_f32(w: &[f32], rows: usize, depth: usize, x: &[f32], cols: usize, bias: &[f32]) -> (Vec<f32>, Vec<f64>) {
    let mut out = vec![0f32; rows * cols];
    let mut magnitude = vec![0f64; rows * cols];
    for r in 0..rows {
        for n in 0..cols {
            let (mut acc, mut mag) = (bias[r] as f64, bias[r].abs() as f64);
            for k in 0..depth {
                let p = w[r * depth + k] as f64 * x[k * cols + n] as f64;
                acc += p;
                mag += p.abs();
            }
            out[r * cols + n] = acc as f32;
            magnitude[r * cols + n] = mag;
        }
    }
    (out, magnitude)
}
