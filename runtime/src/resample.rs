//! Separable resampling of 8-bit RGB, bit-identical to `image::imageops::resize`.
//!
//! `image` resizes through a generic per-pixel path (dynamic kernel call per tap, four f32
//! channels, bounds-checked `get_pixel`): 4–7 ms for a camera frame's centre crop, more than the
//! rest of the frame loop together. This is the same arithmetic — the same tap weights, computed
//! the same way, summed in the same order, rounded the same way — laid out so the vertical pass
//! runs over contiguous rows and vectorises. Being bit-identical means no model trained before
//! this change sees different pixels, and the test below holds us to it.

use image::RgbImage;

use crate::preprocess::Filter;

/// Taps of a 1-D resampling: output `o` reads `weights[o * span ..][..len[o]]` from input
/// positions `start[o]..start[o] + len[o]`.
struct Taps {
    start: Vec<usize>,
    len: Vec<usize>,
    span: usize,
    weights: Vec<f32>,
}

fn support(filter: Filter) -> f32 {
    match filter {
        Filter::Nearest => 0.0,
        Filter::Triangle => 1.0,
        Filter::CatmullRom => 2.0,
        Filter::Lanczos3 => 3.0,
    }
}

fn kernel(filter: Filter, x: f32) -> f32 {
    match filter {
        Filter::Nearest => 1.0,
        Filter::Triangle => {
            if x.abs() < 1.0 {
                1.0 - x.abs()
            } else {
                0.0
            }
        }
        Filter::CatmullRom => catmull_rom(x),
        Filter::Lanczos3 => {
            if x.abs() < 3.0 {
                sinc(x) * sinc(x / 3.0)
            } else {
                0.0
            }
        }
    }
}

/// Mitchell–Netravali with b = 0, c = 0.5, written term for term as `image` writes it, so the
/// f32 rounding matches.
fn catmull_rom(x: f32) -> f32 {
    let (b, c) = (0.0f32, 0.5f32);
    let a = x.abs();
    let k = if a < 1.0 {
        (12.0 - 9.0 * b - 6.0 * c) * a.powi(3) + (-18.0 + 12.0 * b + 6.0 * c) * a.powi(2) + (6.0 - 2.0 * b)
    } else if a < 2.0 {
        (-b - 6.0 * c) * a.powi(3)
            + (6.0 * b + 30.0 * c) * a.powi(2)
            + (-12.0 * b - 48.0 * c) * a
            + (8.0 * b + 24.0 * c)
    } else {
        0.0
    };
    k / 6.0
}

fn sinc(t: f32) -> f32 {
    let a = t * std::f32::consts::PI;
    if t == 0.0 { 1.0 } else { a.sin() / a }
}

impl Taps {
    fn new(from: usize, to: usize, filter: Filter) -> Taps {
        let ratio = from as f32 / to as f32;
        let sratio = if ratio < 1.0 { 1.0 } else { ratio };
        let src_support = support(filter) * sratio;
        let mut start = Vec::with_capacity(to);
        let mut len = Vec::with_capacity(to);
        let mut rows: Vec<Vec<f32>> = Vec::with_capacity(to);
        for o in 0..to {
            let centre = (o as f32 + 0.5) * ratio;
            let left = ((centre - src_support).floor() as i64).clamp(0, from as i64 - 1);
            let right = ((centre + src_support).ceil() as i64).clamp(left + 1, from as i64);
            let centre = centre - 0.5;
            let mut ws: Vec<f32> = (left..right)
                .map(|i| kernel(filter, (i as f32 - centre) / sratio))
                .collect();
            let mut sum = 0.0;
            for w in &ws {
                sum += w;
            }
            for w in &mut ws {
                *w /= sum;
            }
            start.push(left as usize);
            len.push(ws.len());
            rows.push(ws);
        }
        let span = len.iter().copied().max().unwrap_or(0);
        let mut weights = vec![0.0; span * to];
        for (o, ws) in rows.iter().enumerate() {
            weights[o * span..o * span + ws.len()].copy_from_slice(ws);
        }
        Taps {
            start,
            len,
            span,
            weights,
        }
    }

    fn of(&self, o: usize) -> (usize, &[f32]) {
        (self.start[o], &self.weights[o * self.span..o * self.span + self.len[o]])
    }
}

/// `t.clamp(0, 255).round()`: halves away from zero, as `f32::round`. Without SSE4.1 (the
/// x86-64 baseline) `round` is a libm call per channel; this is two instructions and exact: for
/// `t` in 0..=255 the truncation is exact and so is `t - whole`.
fn round_u8(t: f32) -> u8 {
    let t = t.clamp(0.0, 255.0);
    let whole = t as u8;
    if t - whole as f32 >= 0.5 { whole + 1 } else { whole }
}

/// Resize the `width`×`height` RGB region whose first pixel is `pixels[0]` and whose rows are
/// `stride` bytes apart to `to_width`×`to_height`. The caller guarantees non-empty sizes and a
/// slice long enough for the region.
pub(crate) fn resize_rgb8(
    pixels: &[u8],
    stride: usize,
    (width, height): (usize, usize),
    (to_width, to_height): (u32, u32),
    filter: Filter,
) -> RgbImage {
    let (out_w, out_h) = (to_width as usize, to_height as usize);
    let row_len = 3 * width;

    // Vertical first, into f32 rows as wide as the source region: `image`'s order.
    let vertical = Taps::new(height, out_h, filter);
    let mut columns = vec![0.0f32; row_len * out_h];
    for (o, acc) in columns.chunks_exact_mut(row_len).enumerate() {
        let (first, ws) = vertical.of(o);
        for (i, &w) in ws.iter().enumerate() {
            let row = &pixels[(first + i) * stride..][..row_len];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v as f32 * w;
            }
        }
    }

    // Horizontal second. Transposing the f32 rows first makes each output column a weighted sum
    // of whole contiguous input columns, which vectorises like the vertical pass; the per-pixel
    // gather it replaces (one output pixel at a time) measured 15% slower. The sums are still taken
    // tap by tap from 0.0.
    let col_len = 3 * out_h;
    let mut transposed = vec![0.0f32; col_len * width];
    for (o, row) in columns.chunks_exact(row_len).enumerate() {
        for (px, dst) in row.chunks_exact(3).zip(transposed.chunks_exact_mut(col_len)) {
            dst[3 * o..3 * o + 3].copy_from_slice(px);
        }
    }
    let horizontal = Taps::new(width, out_w, filter);
    let mut acc = vec![0.0f32; col_len];
    let mut out = vec![0u8; 3 * out_w * out_h];
    for x in 0..out_w {
        let (first, ws) = horizontal.of(x);
        acc.fill(0.0);
        for (i, &w) in ws.iter().enumerate() {
            let column = &transposed[(first + i) * col_len..][..col_len];
            for (a, &v) in acc.iter_mut().zip(column) {
                *a += v * w;
            }
        }
        for (px, dst) in acc.chunks_exact(3).zip(out[3 * x..].chunks_mut(3 * out_w)) {
            for (p, &t) in dst.iter_mut().zip(px) {
                *p = round_u8(t);
            }
        }
    }
    // Length is 3·w·h by construction.
    RgbImage::from_raw(to_width, to_height, out).unwrap_or_else(|| RgbImage::new(to_width, to_height))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::imageops;
    use image::{Rgb, RgbImage};

    fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        RgbImage::from_fn(w, h, |x, y| {
            // Smooth gradient plus noise: both edges and flat areas, all 0..=255 reached.
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let n = s & 0x3f;
            Rgb([
                ((x * 255 / w.max(1)) + n).min(255) as u8,
                ((y * 255 / h.max(1)) + n).min(255) as u8,
                (s >> 24) as u8,
            ])
        })
    }

    #[test]
    fn bit_identical_to_image_crate() {
        let sizes = [
            ((420, 420), (224, 224)),
            ((640, 480), (224, 224)),
            ((97, 13), (31, 40)),
            ((5, 7), (64, 3)),
            ((1, 1), (4, 4)),
            ((300, 1), (7, 1)),
            ((224, 224), (223, 225)),
        ];
        for filter in [Filter::Nearest, Filter::Triangle, Filter::CatmullRom, Filter::Lanczos3] {
            for (i, ((w, h), (tw, th))) in sizes.into_iter().enumerate() {
                let img = noise(w, h, i as u32);
                let expected = imageops::resize(&img, tw, th, filter.into());
                let got = resize_rgb8(img.as_raw(), 3 * w as usize, (w as usize, h as usize), (tw, th), filter);
                assert!(got == expected, "{filter:?} {w}x{h} -> {tw}x{th}");
            }
        }
    }

    #[test]
    fn region_with_stride_reads_only_the_region() {
        let img = noise(50, 40, 9);
        let (x, y, w, h) = (7u32, 5u32, 30u32, 20u32);
        let crop = imageops::crop_imm(&img, x, y, w, h).to_image();
        let expected = imageops::resize(&crop, 16, 11, Filter::Triangle.into());
        let offset = 3 * (y as usize * 50 + x as usize);
        let got = resize_rgb8(
            &img.as_raw()[offset..],
            150,
            (w as usize, h as usize),
            (16, 11),
            Filter::Triangle,
        );
        assert!(got == expected);
    }
}
