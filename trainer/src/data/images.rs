//! Decode once: every image is read, decoded and shrunk in parallel before training, so no epoch
//! decodes a JPEG, and the results go to a [`Store`] (on disk for a training run), so memory does
//! not grow with the data set. Unreadable files are skipped, each with one warning line, and
//! counted.
//!
//! Training images are decoded at the size training needs: a JPEG is decoded straight to the
//! smallest of 1/8, 1/4, 1/2 or full size that still covers `shorter_side` (the DCT-domain
//! scaling libjpeg calls `scale_denom`), which is most of the decoding cost of a camera photo.
//! Evaluation images take the runtime's own path, full decode included, so a validation score is
//! the score the device would see.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use image::imageops::{self, FilterType};
use image::metadata::Orientation;
use image::{DynamicImage, RgbImage};
use kestrel_runtime::decode::{DecodeError, check_regular_file, decode_bytes, load_image_with_limit};
use kestrel_runtime::preprocess::{PreprocessError, normalize_into, resize_to_input};
use kestrel_runtime::{ClassifierError, PreprocessSpec};
use rayon::prelude::*;
use serde::Serialize;

use crate::data::dataset::Sample;
use crate::data::store::{Store, StoreError};
use crate::progress::Progress;

/// A file left out of training, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// Reading cached images back as model inputs.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    #[error(transparent)]
    Classifier(#[from] ClassifierError),
}

/// Training images kept decoded, shrunk so their shorter side is `shorter_side` (never enlarged):
/// enough resolution for random crops at the input size, a fraction of the size of originals.
#[derive(Debug)]
pub struct DecodedSet {
    pub images: Store,
    pub labels: Vec<usize>,
    pub skipped: Vec<Skipped>,
}

impl DecodedSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, index: usize) -> Result<DynamicImage, StoreError> {
        self.images.image(index).map(DynamicImage::ImageRgb8)
    }
}

/// Evaluation images as the runtime crops them: 8-bit RGB at the model's input size, a quarter
/// of the f32 tensor's size; [`EvalSet::tensor_into`] normalises exactly as the runtime does.
#[derive(Debug, Clone)]
pub struct EvalSet {
    pub crops: Arc<Store>,
    pub labels: Vec<usize>,
    pub skipped: Vec<Skipped>,
}

impl EvalSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The model input of image `index`.
    pub fn tensor_into(&self, index: usize, spec: &PreprocessSpec, out: &mut [f32]) -> Result<(), CacheError> {
        tensor_into(&self.crops, index, spec, out)
    }

    /// The model inputs of images `range`, packed.
    pub fn tensors(&self, range: Range<usize>, spec: &PreprocessSpec) -> Result<Vec<f32>, CacheError> {
        let len = spec.tensor_len();
        let mut data = vec![0.0f32; range.len() * len];
        data.par_chunks_exact_mut(len)
            .zip(range.into_par_iter())
            .try_for_each(|(out, i)| self.tensor_into(i, spec, out))?;
        Ok(data)
    }
}

/// The model input of crop `index` of `crops` (crops at the input size of `spec`).
pub fn tensor_into(crops: &Store, index: usize, spec: &PreprocessSpec, out: &mut [f32]) -> Result<(), CacheError> {
    Ok(normalize_into(&crops.image(index)?, spec, out)?)
}

fn shrink(rgb: RgbImage, shorter_side: u32) -> RgbImage {
    let (w, h) = rgb.dimensions();
    let short = w.min(h);
    if short <= shorter_side {
        return rgb;
    }
    let scale = shorter_side as f64 / short as f64;
    let (nw, nh) = (
        ((w as f64 * scale).round() as u32).max(1),
        ((h as f64 * scale).round() as u32).max(1),
    );
    imageops::resize(&rgb, nw, nh, FilterType::Triangle)
}

/// A baseline or progressive JPEG decoded at the smallest DCT scale whose shorter side still
/// covers `shorter_side`, upright. `None` when this path does not apply (not a JPEG, CMYK or
/// 16-bit, above the pixel limit, any decoding error): the caller takes the general path, which
/// also words the error.
fn decode_jpeg_scaled(bytes: &[u8], shorter_side: u32, max_pixels: u64) -> Option<RgbImage> {
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return None;
    }
    // jpeg-decoder asserts on some malformed headers; such a file goes to the general path.
    std::panic::catch_unwind(|| {
        let mut decoder = jpeg_decoder::Decoder::new(bytes);
        decoder.read_info().ok()?;
        let info = decoder.info()?;
        let (w, h) = (info.width, info.height);
        if u64::from(w) * u64::from(h) > max_pixels || info.pixel_format != jpeg_decoder::PixelFormat::RGB24 {
            return None;
        }
        // `scale` picks the smallest factor that reaches the request on either axis: ask on the
        // shorter axis only.
        let want = shorter_side.min(u32::from(u16::MAX)) as u16;
        let request = if w <= h { (want, u16::MAX) } else { (u16::MAX, want) };
        let (sw, sh) = decoder.scale(request.0, request.1).ok()?;
        let pixels = decoder.decode().ok()?;
        let mut image = DynamicImage::ImageRgb8(RgbImage::from_raw(u32::from(sw), u32::from(sh), pixels)?);
        if let Some(o) = decoder.exif_data().and_then(Orientation::from_exif_chunk) {
            image.apply_orientation(o);
        }
        Some(image.into_rgb8())
    })
    .ok()
    .flatten()
}

/// How a JPEG is decoded before the shrink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jpeg {
    /// At the smallest DCT scale that covers the side: training, where speed matters and every
    /// image is resampled again by augmentation.
    Scaled,
    /// In full, as the runtime decodes a frame: calibration and the quantiser's gate, which
    /// must see what the deployed model sees.
    Full,
}

/// One image, decoded and shrunk to `shorter_side`. The file is read once; whatever the scaled
/// path does not take goes through the runtime's decoder on the same bytes.
fn decode_shrunk(sample: &Sample, shorter_side: u32, max_pixels: u64, jpeg: Jpeg) -> Result<RgbImage, DecodeError> {
    check_regular_file(&sample.path)?;
    let bytes = std::fs::read(&sample.path).map_err(|source| DecodeError::Open {
        path: sample.path.clone(),
        source,
    })?;
    let scaled = match jpeg {
        Jpeg::Scaled => decode_jpeg_scaled(&bytes, shorter_side, max_pixels),
        Jpeg::Full => None,
    };
    let rgb = match scaled {
        Some(rgb) => rgb,
        None => decode_bytes(&bytes, &sample.path, max_pixels)?.into_rgb8(),
    };
    Ok(shrink(rgb, shorter_side))
}

fn warn_skipped(skipped: &[Skipped]) {
    for s in skipped {
        tracing::warn!("skipping {}: {}", s.path.display(), s.reason);
    }
}

/// Images decoded per parallel round and thread: enough to keep every core busy, few enough
/// that a round's images in memory stay small (the store holds the rest).
const ROUND_PER_THREAD: usize = 8;

/// `work` on every sample in parallel, in rounds of [`ROUND_PER_THREAD`] per thread whose results go to `store` in
/// order; failures become [`Skipped`] entries (one warning each). Returns the labels of what was
/// stored. The bar counts files and shows the rate; a plain line tells the total time.
fn decode_into(
    samples: &[Sample],
    store: &mut Store,
    progress: &Progress,
    what: &str,
    work: impl Fn(&Sample) -> Result<RgbImage, String> + Sync,
) -> Result<(Vec<usize>, Vec<Skipped>), StoreError> {
    let started = Instant::now();
    let bar = progress.bar(samples.len() as u64, what);
    let (mut labels, mut skipped) = (Vec::with_capacity(samples.len()), Vec::new());
    for round in samples.chunks(ROUND_PER_THREAD * rayon::current_num_threads()) {
        let results: Vec<Result<RgbImage, String>> = round.par_iter().map(&work).collect();
        for (sample, result) in round.iter().zip(results) {
            match result {
                Ok(image) => {
                    store.push_image(&image)?;
                    labels.push(sample.label);
                }
                Err(reason) => skipped.push(Skipped {
                    path: sample.path.clone(),
                    reason,
                }),
            }
        }
        bar.inc(round.len() as u64);
    }
    bar.finish_and_clear();
    warn_skipped(&skipped);
    if !samples.is_empty() {
        tracing::info!(
            "{what}: {} images in {:.1}s ({:.0}/s)",
            samples.len(),
            started.elapsed().as_secs_f64(),
            samples.len() as f64 / started.elapsed().as_secs_f64().max(1e-9)
        );
    }
    Ok((labels, skipped))
}

/// Decode `samples` in parallel for augmentation into `store`; shorter side capped at
/// `shorter_side`.
pub fn decode_for_training(
    samples: &[Sample],
    shorter_side: u32,
    max_pixels: u64,
    jpeg: Jpeg,
    mut store: Store,
    progress: &Progress,
) -> Result<DecodedSet, StoreError> {
    let (labels, skipped) = decode_into(samples, &mut store, progress, "decoding train", |s| {
        decode_shrunk(s, shorter_side, max_pixels, jpeg).map_err(|e| e.to_string())
    })?;
    Ok(DecodedSet {
        images: store,
        labels,
        skipped,
    })
}

/// Decode and crop `samples` in parallel through the runtime's own code path into `store`.
pub fn preprocess_for_eval(
    samples: &[Sample],
    spec: &PreprocessSpec,
    max_pixels: u64,
    mut store: Store,
    progress: &Progress,
) -> Result<EvalSet, StoreError> {
    let (labels, skipped) = decode_into(samples, &mut store, progress, "decoding eval", |s| {
        let img = load_image_with_limit(&s.path, max_pixels).map_err(|e| e.to_string())?;
        resize_to_input(&img, spec).map_err(|e| e.to_string())
    })?;
    Ok(EvalSet {
        crops: Arc::new(store),
        labels,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
        })
    }

    fn read(path: &std::path::Path) -> Vec<u8> {
        std::fs::read(path).expect("test file")
    }

    fn sample(dir: &std::path::Path, name: &str, image: &RgbImage) -> Sample {
        let path = dir.join(name);
        image.save(&path).expect("test step");
        Sample { path, label: 0 }
    }

    #[test]
    fn jpegs_are_decoded_scaled_to_just_cover_the_side_training_needs() {
        let dir = tempfile::tempdir().expect("test step");
        let s = sample(dir.path(), "big.jpg", &photo(1600, 1200));
        // 1200 / 4 = 300 ≥ 256 > 1200 / 8 = 150: a quarter-size decode, then the shrink to 256.
        let scaled = decode_jpeg_scaled(&read(&s.path), 256, u64::MAX).expect("a JPEG takes the scaled path");
        assert_eq!(scaled.dimensions(), (400, 300));
        assert_eq!(
            decode_shrunk(&s, 256, u64::MAX, Jpeg::Scaled)
                .expect("test step")
                .dimensions(),
            (341, 256)
        );
        // Same size as the full decode's shrink, and close in content.
        let full = shrink(
            load_image_with_limit(&s.path, u64::MAX).expect("test step").into_rgb8(),
            256,
        );
        let ours = decode_shrunk(&s, 256, u64::MAX, Jpeg::Scaled).expect("test step");
        let exact = decode_shrunk(&s, 256, u64::MAX, Jpeg::Full).expect("test step");
        assert_eq!(exact, full, "Jpeg::Full is the runtime's decode");
        assert_eq!(full.dimensions(), ours.dimensions());
        let mean_diff = full
            .as_raw()
            .iter()
            .zip(ours.as_raw())
            .map(|(&a, &b)| (a as f64 - b as f64).abs())
            .sum::<f64>()
            / full.as_raw().len() as f64;
        assert!(mean_diff < 4.0, "mean |Δ| {mean_diff}");
        // Not a JPEG, or over the pixel limit: the general path decides.
        let png = sample(dir.path(), "x.png", &photo(64, 48));
        assert!(decode_jpeg_scaled(&read(&png.path), 16, u64::MAX).is_none());
        assert!(decode_jpeg_scaled(&read(&s.path), 256, 1000).is_none());
        assert!(
            decode_shrunk(&s, 256, 1000, Jpeg::Scaled)
                .expect_err("must be refused")
                .to_string()
                .contains("--max-pixels")
        );
    }

    #[test]
    fn eval_crops_give_the_runtimes_tensors_exactly() {
        let dir = tempfile::tempdir().expect("test step");
        let samples = vec![
            sample(dir.path(), "a.png", &photo(300, 200)),
            sample(dir.path(), "b.jpg", &photo(120, 160)),
        ];
        let spec = PreprocessSpec::efficientnet_lite(64);
        let set = preprocess_for_eval(
            &samples,
            &spec,
            u64::MAX,
            Store::on_disk(dir.path()).expect("test step"),
            &Progress::plain(),
        )
        .expect("test step");
        let packed = set.tensors(0..2, &spec).expect("test step");
        for (i, s) in samples.iter().enumerate() {
            let img = load_image_with_limit(&s.path, u64::MAX).expect("test step");
            let expected = kestrel_runtime::preprocess::preprocess(&img, &spec).expect("test step");
            assert_eq!(
                &packed[i * spec.tensor_len()..(i + 1) * spec.tensor_len()],
                &expected[..]
            );
        }
    }
}
