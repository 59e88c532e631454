//! Decode once: every image is read, decoded and shrunk in parallel before training, so no epoch
//! decodes a JPEG. Unreadable files are skipped, each with one warning line, and counted.

use std::path::PathBuf;

use image::imageops::{self, FilterType};
use image::{DynamicImage, RgbImage};
use kestrel_runtime::PreprocessSpec;
use kestrel_runtime::decode::load_image_with_limit;
use kestrel_runtime::preprocess::preprocess;
use rayon::prelude::*;
use serde::Serialize;

use crate::dataset::Sample;

/// A file left out of training, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// Training images kept decoded, shrunk so their shorter side is `shorter_side` (never enlarged):
/// enough resolution for random crops at the input size, a fraction of the memory of originals.
#[derive(Debug)]
pub struct DecodedSet {
    /// Always `DynamicImage::ImageRgb8`.
    pub images: Vec<DynamicImage>,
    pub labels: Vec<usize>,
    pub skipped: Vec<Skipped>,
}

/// Validation images as the exact tensors the runtime would feed the model.
#[derive(Debug)]
pub struct TensorSet {
    /// `len × spec.tensor_len()` values.
    pub data: Vec<f32>,
    pub labels: Vec<usize>,
    pub skipped: Vec<Skipped>,
}

impl TensorSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

fn shrink(image: DynamicImage, shorter_side: u32) -> RgbImage {
    let rgb = image.to_rgb8();
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

fn warn_skipped(skipped: &[Skipped]) {
    for s in skipped {
        tracing::warn!("skipping {}: {}", s.path.display(), s.reason);
    }
}

/// `work` on every sample in parallel; failures become [`Skipped`] entries (one warning each),
/// successes keep their label. Order follows `samples`.
fn for_each_sample<T: Send>(
    samples: &[Sample],
    work: impl Fn(&Sample) -> Result<T, String> + Sync,
) -> (Vec<(T, usize)>, Vec<Skipped>) {
    let results: Vec<Result<(T, usize), Skipped>> = samples
        .par_iter()
        .map(|s| {
            work(s).map(|t| (t, s.label)).map_err(|reason| Skipped {
                path: s.path.clone(),
                reason,
            })
        })
        .collect();
    let (mut ok, mut skipped) = (Vec::new(), Vec::new());
    for r in results {
        match r {
            Ok(item) => ok.push(item),
            Err(s) => skipped.push(s),
        }
    }
    warn_skipped(&skipped);
    (ok, skipped)
}

/// Decode `samples` in parallel for augmentation; shorter side capped at `shorter_side`.
pub fn decode_for_training(samples: &[Sample], shorter_side: u32, max_pixels: u64) -> DecodedSet {
    let (ok, skipped) = for_each_sample(samples, |s| {
        load_image_with_limit(&s.path, max_pixels)
            .map(|img| DynamicImage::ImageRgb8(shrink(img, shorter_side)))
            .map_err(|e| e.to_string())
    });
    let (images, labels) = ok.into_iter().unzip();
    DecodedSet {
        images,
        labels,
        skipped,
    }
}

/// Decode and preprocess `samples` in parallel through the runtime's own code path.
pub fn preprocess_for_eval(samples: &[Sample], spec: &PreprocessSpec, max_pixels: u64) -> TensorSet {
    let (ok, skipped) = for_each_sample(samples, |s| {
        let img = load_image_with_limit(&s.path, max_pixels).map_err(|e| e.to_string())?;
        preprocess(&img, spec).map_err(|e| e.to_string())
    });
    let mut set = TensorSet {
        data: Vec::with_capacity(ok.len() * spec.tensor_len()),
        labels: Vec::with_capacity(ok.len()),
        skipped,
    };
    for (t, label) in ok {
        set.data.extend_from_slice(&t);
        set.labels.push(label);
    }
    set
}
