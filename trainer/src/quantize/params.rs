//! The int8 arithmetic the rewrite writes: affine activation parameters (u8 and i8) and
//! symmetric weight quantisation, per channel or per tensor.

/// Affine parameters of one activation tensor, u8 or i8.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActParams {
    pub scale: f32,
    pub zero_point: i32,
}

/// Ranges whose smaller side is at least this share of the larger get zero point 0 in int8: at
/// most ~10% of the resolution is given up for a zero point the kernels need not correct for.
const NEAR_SYMMETRIC: f32 = 0.8;

impl ActParams {
    /// Asymmetric u8 covering `[min, max]` (widened to include 0, so zero is exact and padding
    /// is representable).
    pub fn from_range(min: f32, max: f32) -> Self {
        let (min, max) = (min.min(0.0), max.max(0.0));
        let scale = ((max - min) / 255.0).max(1e-8);
        let zero_point = (-min / scale).round().clamp(0.0, 255.0) as i32;
        ActParams { scale, zero_point }
    }

    /// Signed int8 covering `[min, max]` (widened to include 0): zero point 0 when the range is
    /// near symmetric, else asymmetric (a ReLU output `[0, m]` gets zero point −128 and all 256
    /// levels).
    pub fn from_range_i8(min: f32, max: f32) -> Self {
        let (min, max) = (min.min(0.0), max.max(0.0));
        let (small, large) = (min.abs().min(max), min.abs().max(max));
        if min < 0.0 && small >= NEAR_SYMMETRIC * large {
            return ActParams {
                scale: (large / 127.0).max(1e-8),
                zero_point: 0,
            };
        }
        let scale = ((max - min) / 255.0).max(1e-8);
        let zero_point = (-128.0 - min / scale).round().clamp(-128.0, 127.0) as i32;
        ActParams { scale, zero_point }
    }
}

/// Symmetric int8 weights of one Conv/Gemm: per output channel, or one scale for the tensor.
pub fn quantize_weights(weights: &[f32], rows: usize, per_channel: bool) -> (Vec<i8>, Vec<f32>) {
    quantize_weights_floored(weights, rows, per_channel, &[])
}

/// Largest |bias| in accumulator units (`x_scale · w_scale`) an int32 bias may take: the rest of
/// i32 is headroom for the sum of products (under 2²⁶ for any layer we export).
pub const BIAS_LIMIT: f32 = (1u32 << 30) as f32;

/// [`quantize_weights`] with a smallest scale per row (`floor[r]`; empty for none). A channel
/// whose weights are all but zero (batch-norm folding leaves such dead channels) would otherwise
/// get a scale so small that its bias, counted in `x_scale · w_scale` units, overflows int32.
pub fn quantize_weights_floored(weights: &[f32], rows: usize, per_channel: bool, floor: &[f32]) -> (Vec<i8>, Vec<f32>) {
    let per_row = weights.len() / rows.max(1);
    let scale_of = |chunk: &[f32], floor: f32| {
        let max = chunk.iter().fold(0.0f32, |m, w| m.max(w.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        scale.max(floor)
    };
    let scales: Vec<f32> = if per_channel {
        weights
            .chunks(per_row.max(1))
            .enumerate()
            .map(|(r, chunk)| scale_of(chunk, floor.get(r).copied().unwrap_or(0.0)))
            .collect()
    } else {
        vec![scale_of(weights, floor.iter().copied().fold(0.0, f32::max))]
    };
    let q = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let s = if per_channel {
                scales[i / per_row.max(1)]
            } else {
                scales[0]
            };
            (w / s).round().clamp(-127.0, 127.0) as i8
        })
        .collect();
    (q, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_quantise_symmetrically_within_half_a_step() {
        let w = [0.5f32, -1.0, 0.25, 0.0, 0.0, 0.0, 2.0, 1.0, -2.0];
        let (q, s) = quantize_weights(&w, 3, true);
        assert_eq!(&q[..3], &[64, -127, 32]);
        assert_eq!(&q[3..6], &[0, 0, 0]);
        assert_eq!(s[1], 1.0, "an all-zero row keeps a usable scale");
        for (row, (qs, scale)) in w.chunks(3).zip(q.chunks(3).zip(&s)) {
            for (x, &v) in row.iter().zip(qs) {
                assert!((x - v as f32 * scale).abs() <= scale / 2.0 + 1e-7);
            }
        }
        let (q, s) = quantize_weights(&w, 3, false);
        assert_eq!(s, vec![2.0 / 127.0]);
        assert_eq!(&q[..3], &[32, -64, 16]);
    }

    #[test]
    fn a_dead_channels_scale_is_floored_so_its_bias_fits_int32() {
        // Row 0 as batch-norm folding leaves a dead channel: weights ~1e-7, bias -2.
        let w = [1e-7f32, -2e-7, 0.0, 0.5, -1.0, 0.25];
        let x_scale = 0.02;
        let bias = [-2.0f32, 0.1];
        let floor: Vec<f32> = bias.iter().map(|b| b.abs() / (x_scale * BIAS_LIMIT)).collect();
        let (_, plain) = quantize_weights(&w, 2, true);
        assert!(
            (bias[0] / (x_scale * plain[0])).abs() > i32::MAX as f32,
            "the case this guards"
        );
        let (q, s) = quantize_weights_floored(&w, 2, true, &floor);
        assert!((bias[0] / (x_scale * s[0])).abs() <= BIAS_LIMIT * 1.0001);
        // At the floored scale (≈ 9.3e-8) the tiny weights are still within half a step.
        assert_eq!(&q[..3], &[1, -2, 0]);
        assert_eq!(
            (&q[3..], s[1]),
            (&[64i8, -127, 32][..], 1.0 / 127.0),
            "live channels are untouched"
        );
    }

    #[test]
    fn activation_params_keep_zero_exact() {
        let relu6 = ActParams::from_range(0.0, 6.0);
        assert_eq!(relu6.zero_point, 0);
        assert!((relu6.scale - 6.0 / 255.0).abs() < 1e-9);
        let asymmetric = ActParams::from_range(-1.0, 3.0);
        assert_eq!(asymmetric.zero_point, 64);
        let positive_only = ActParams::from_range(2.0, 4.0);
        assert_eq!(positive_only.zero_point, 0, "the range is widened to include 0");
        let constant = ActParams::from_range(0.0, 0.0);
        assert!(constant.scale > 0.0);
    }

    #[test]
    fn int8_activations_use_every_level_and_zero_point_0_when_near_symmetric() {
        let relu6 = ActParams::from_range_i8(0.0, 6.0);
        assert_eq!(relu6.zero_point, -128, "[0, 6] spans all 256 levels");
        assert!((relu6.scale - 6.0 / 255.0).abs() < 1e-9);
        let symmetric = ActParams::from_range_i8(-2.9, 3.0);
        assert_eq!(symmetric.zero_point, 0);
        assert!((symmetric.scale - 3.0 / 127.0).abs() < 1e-9);
        let skewed = ActParams::from_range_i8(-1.0, 3.0);
        assert_eq!(skewed.zero_point, -64);
        assert!((skewed.scale - 4.0 / 255.0).abs() < 1e-9);
        let negative = ActParams::from_range_i8(-4.0, -1.0);
        assert_eq!(negative.zero_point, 127, "widened to include 0 at the top");
    }
}
