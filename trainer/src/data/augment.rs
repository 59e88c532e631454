//! Training augmentation on decoded RGB images. The result is at the model's input size and goes
//! through the runtime's `normalize_into`: augmentation changes pixels, never the preprocessing.

use image::imageops;
use image::{DynamicImage, Rgb, RgbImage};
use kestrel_runtime::PreprocessSpec;
use kestrel_runtime::preprocess::{PreprocessError, normalize_into, resize_region};

use crate::config::Augment;
use crate::data::dataset::SplitMix64;

/// One random augmented view of `image`, normalised into `out`.
pub fn augmented(
    image: &DynamicImage,
    spec: &PreprocessSpec,
    aug: &Augment,
    rng: &mut SplitMix64,
    out: &mut [f32],
) -> Result<(), PreprocessError> {
    normalize_into(&augmented_rgb(image, spec, aug, rng)?, spec, out)
}

/// One random augmented view of `image` at the input size, before normalisation.
pub fn augmented_rgb(
    image: &DynamicImage,
    spec: &PreprocessSpec,
    aug: &Augment,
    rng: &mut SplitMix64,
) -> Result<RgbImage, PreprocessError> {
    let (w, h) = (image.width(), image.height());
    let (x, y, cw, ch) = if aug.crop_min_area < 1.0 {
        random_crop(w, h, aug.crop_min_area, rng)
    } else {
        spec.source_region(w, h)
    };
    let mut view = resize_region(image, (x, y, cw, ch), spec)?;
    if aug.horizontal_flip && rng.next_f64() < 0.5 {
        imageops::flip_horizontal_in_place(&mut view);
    }
    if aug.rotation_degrees > 0.0 {
        let degrees = (rng.next_f64() * 2.0 - 1.0) * aug.rotation_degrees as f64;
        view = rotate(&view, degrees.to_radians());
    }
    if aug.color_jitter > 0.0 {
        let j = aug.color_jitter as f64;
        let mut factor = || 1.0 + (rng.next_f64() * 2.0 - 1.0) * j;
        let (b, c, s) = (factor(), factor(), factor());
        jitter(&mut view, b as f32, c as f32, s as f32);
    }
    if aug.erasing > 0.0 && rng.next_f64() < aug.erasing as f64 {
        erase(&mut view, rng);
    }
    Ok(view)
}

/// Inception-style random resized crop: area share in [min_area, 1], aspect ratio in [3/4, 4/3].
fn random_crop(w: u32, h: u32, min_area: f32, rng: &mut SplitMix64) -> (u32, u32, u32, u32) {
    let area = (w as f64) * (h as f64);
    for _ in 0..10 {
        let target = area * (min_area as f64 + rng.next_f64() * (1.0 - min_area as f64));
        let log_ratio = (0.75f64).ln() + rng.next_f64() * ((4.0f64 / 3.0).ln() - (0.75f64).ln());
        let ratio = log_ratio.exp();
        let cw = (target * ratio).sqrt().round() as u32;
        let ch = (target / ratio).sqrt().round() as u32;
        if cw >= 1 && ch >= 1 && cw <= w && ch <= h {
            let x = rng.below((w - cw + 1) as usize) as u32;
            let y = rng.below((h - ch + 1) as usize) as u32;
            return (x, y, cw, ch);
        }
    }
    let side = w.min(h);
    ((w - side) / 2, (h - side) / 2, side, side)
}

/// Rotate about the centre, bilinear, edges clamped (no black corners for the model to learn).
fn rotate(image: &RgbImage, radians: f64) -> RgbImage {
    let (w, h) = image.dimensions();
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let (sin, cos) = radians.sin_cos();
    let sample = |x: f64, y: f64, c: usize| -> f64 {
        let x = x.clamp(0.0, w as f64 - 1.0);
        let y = y.clamp(0.0, h as f64 - 1.0);
        let (x0, y0) = (x.floor() as u32, y.floor() as u32);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (x - x0 as f64, y - y0 as f64);
        let p = |x, y| image.get_pixel(x, y).0[c] as f64;
        let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
        let bottom = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
        top * (1.0 - fy) + bottom * fy
    };
    RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f64 - cx, y as f64 - cy);
        let (sx, sy) = (cos * dx + sin * dy + cx, -sin * dx + cos * dy + cy);
        Rgb([0, 1, 2].map(|c| sample(sx, sy, c).round().clamp(0.0, 255.0) as u8))
    })
}

/// Brightness, contrast (about the mean grey) and saturation (about each pixel's grey).
fn jitter(image: &mut RgbImage, brightness: f32, contrast: f32, saturation: f32) {
    let luma = |p: &[f32; 3]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    let n = (image.width() * image.height()).max(1) as f32;
    let mean = image
        .pixels()
        .map(|p| luma(&p.0.map(|v| v as f32)) * brightness)
        .sum::<f32>()
        / n;
    for px in image.pixels_mut() {
        let mut v = px.0.map(|c| c as f32 * brightness);
        v = v.map(|c| (c - mean) * contrast + mean);
        let grey = luma(&v);
        v = v.map(|c| grey + (c - grey) * saturation);
        px.0 = v.map(|c| c.round().clamp(0.0, 255.0) as u8);
    }
}

/// Random erasing: a rectangle of 2–25% of the area, aspect 0.3–3.3, filled with mid grey.
fn erase(image: &mut RgbImage, rng: &mut SplitMix64) {
    let (w, h) = image.dimensions();
    let area = (w * h) as f64 * (0.02 + rng.next_f64() * 0.23);
    let ratio = (0.3f64.ln() + rng.next_f64() * (3.3f64.ln() - 0.3f64.ln())).exp();
    let ew = ((area * ratio).sqrt() as u32).clamp(1, w);
    let eh = ((area / ratio).sqrt() as u32).clamp(1, h);
    let x0 = rng.below((w - ew + 1) as usize) as u32;
    let y0 = rng.below((h - eh + 1) as usize) as u32;
    for y in y0..y0 + eh {
        for x in x0..x0 + ew {
            image.put_pixel(x, y, Rgb([127, 127, 127]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 90]))
    }

    fn dynamic(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(gradient(w, h))
    }

    #[test]
    fn no_augmentation_is_the_runtime_view() {
        let spec = PreprocessSpec::efficientnet_lite(32);
        let img = dynamic(80, 60);
        let mut b = vec![0.0; spec.tensor_len()];
        let expected = kestrel_runtime::preprocess(&img, &spec).expect("runtime");
        // With every augmentation off, the augmented path is the runtime's view.
        augmented(&img, &spec, &Augment::none(), &mut SplitMix64(1), &mut b).expect("aug");
        assert_eq!(b, expected);
    }

    #[test]
    fn augmentation_is_seeded_and_changes_pixels() {
        let spec = PreprocessSpec::efficientnet_lite(32);
        let img = dynamic(80, 60);
        let run = |seed| {
            let mut out = vec![0.0; spec.tensor_len()];
            augmented(&img, &spec, &Augment::default(), &mut SplitMix64(seed), &mut out).expect("aug");
            out
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
        assert!(run(5).iter().all(|v| v.is_finite() && (-1.0..=1.0).contains(v)));
    }

    #[test]
    fn rotation_by_zero_is_identity_and_crops_stay_inside() {
        let img = gradient(17, 9);
        assert_eq!(rotate(&img, 0.0), img);
        let mut rng = SplitMix64(9);
        for _ in 0..1000 {
            let (x, y, w, h) = random_crop(17, 9, 0.1, &mut rng);
            assert!(w >= 1 && h >= 1 && x + w <= 17 && y + h <= 9);
        }
    }
}
