//! Decode once: every image is read, decoded and shrunk in parallel before training, so no epoch
//! decodes a JPEG, and the results go to a [`Store`] (on disk for a training run), so memory does
//! not grow with the data set. Unreadable files are skipped, each with one warning line, and
//! counted.
//!
//! Every image takes the runtime's own decoder, full decode included. An evaluation image is
//! kept as the runtime crops it, so a validation score is the score the device would see. A
//! training image is kept twice: shrunk (for augmentation's random crops), and as the runtime's
//! crop, which is the plain view the head phase and calibration use, so the un-augmented view
//! training sees is, bit for bit, what `kestrel` feeds the model for the same file. (Training
//! once decoded JPEGs at a reduced DCT scale and took the plain view from the shrunk copy: two
//! resamplings where the runtime does one, so train and serve saw different pixels, issue 15.)

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use image::imageops::{self, FilterType};
use image::{DynamicImage, RgbImage};
use kestrel_runtime::decode::load_image_with_limit;
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

/// Training images kept decoded: `images` shrunk so their shorter side is `shorter_side` (never
/// enlarged), enough resolution for random crops at the input size and a fraction of the
/// originals' size; `plain` the runtime's crop of each at the input size.
#[derive(Debug)]
pub struct DecodedSet {
    pub images: Store,
    pub plain: Store,
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

    /// Image `index` as the runtime crops it, before normalisation.
    pub fn plain_crop(&self, index: usize) -> Result<RgbImage, StoreError> {
        self.plain.image(index)
    }

    /// The model input of image `index` without augmentation: the runtime's tensor.
    pub fn plain_into(&self, index: usize, spec: &PreprocessSpec, out: &mut [f32]) -> Result<(), CacheError> {
        tensor_into(&self.plain, index, spec, out)
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

/// One training image, decoded as the runtime decodes it: shrunk to `shorter_side`, and the
/// runtime's crop at the input size. The file is read once.
fn decode_for_views(
    sample: &Sample,
    spec: &PreprocessSpec,
    shorter_side: u32,
    max_pixels: u64,
) -> Result<[RgbImage; 2], String> {
    let image = load_image_with_limit(&sample.path, max_pixels).map_err(|e| e.to_string())?;
    let plain = resize_to_input(&image, spec).map_err(|e| e.to_string())?;
    Ok([shrink(image.into_rgb8(), shorter_side), plain])
}

fn warn_skipped(skipped: &[Skipped]) {
    for s in skipped {
        tracing::warn!("skipping {}: {}", s.path.display(), s.reason);
    }
}

/// Images decoded per parallel round and thread: enough to keep every core busy, few enough
/// that a round's images in memory stay small (the store holds the rest).
const ROUND_PER_THREAD: usize = 8;

/// `work` on every sample in parallel, in rounds of [`ROUND_PER_THREAD`] per thread whose results
/// go to `stores` in order (result k to store k); failures become [`Skipped`] entries (one warning
/// each). Returns the labels of what was stored. The bar counts files and shows the rate; a plain
/// line tells the total time.
fn decode_into<const N: usize>(
    samples: &[Sample],
    mut stores: [&mut Store; N],
    progress: &Progress,
    what: &str,
    work: impl Fn(&Sample) -> Result<[RgbImage; N], String> + Sync,
) -> Result<(Vec<usize>, Vec<Skipped>), StoreError> {
    let started = Instant::now();
    let bar = progress.bar(samples.len() as u64, what);
    let (mut labels, mut skipped) = (Vec::with_capacity(samples.len()), Vec::new());
    for round in samples.chunks(ROUND_PER_THREAD * rayon::current_num_threads()) {
        let results: Vec<Result<[RgbImage; N], String>> = round.par_iter().map(&work).collect();
        for (sample, result) in round.iter().zip(results) {
            match result {
                Ok(images) => {
                    for (store, image) in stores.iter_mut().zip(&images) {
                        store.push_image(image)?;
                    }
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

/// Decode `samples` in parallel for training: shrunk copies (shorter side capped at
/// `shorter_side`) into `images`, the runtime's crops into `plain`.
pub fn decode_for_training(
    samples: &[Sample],
    spec: &PreprocessSpec,
    shorter_side: u32,
    max_pixels: u64,
    [mut images, mut plain]: [Store; 2],
    progress: &Progress,
) -> Result<DecodedSet, StoreError> {
    let (labels, skipped) = decode_into(samples, [&mut images, &mut plain], progress, "decoding train", |s| {
        decode_for_views(s, spec, shorter_side, max_pixels)
    })?;
    Ok(DecodedSet {
        images,
        plain,
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
    let (labels, skipped) = decode_into(samples, [&mut store], progress, "decoding eval", |s| {
        let img = load_image_with_limit(&s.path, max_pixels).map_err(|e| e.to_string())?;
        Ok([resize_to_input(&img, spec).map_err(|e| e.to_string())?])
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

    fn sample(dir: &std::path::Path, name: &str, image: &RgbImage) -> Sample {
        let path = dir.join(name);
        image.save(&path).expect("test step");
        Sample { path, label: 0 }
    }

    /// The head phase's plain view and calibration's first view are the runtime's tensor for the
    /// same file, exactly, for a JPEG large enough that a reduced-scale decode or a shrink first
    /// would change pixels; the augmentation source is the full decode, shrunk.
    #[test]
    fn the_training_plain_view_is_the_runtimes_tensor_exactly() {
        let dir = tempfile::tempdir().expect("test step");
        let samples = vec![
            sample(dir.path(), "big.jpg", &photo(1600, 1200)),
            sample(dir.path(), "small.png", &photo(50, 40)),
        ];
        let spec = PreprocessSpec::efficientnet_lite(64);
        let stores = [Store::in_memory(), Store::in_memory()];
        let set = decode_for_training(&samples, &spec, 83, u64::MAX, stores, &Progress::plain()).expect("decode");
        let mut ours = vec![0.0f32; spec.tensor_len()];
        for (i, s) in samples.iter().enumerate() {
            let img = load_image_with_limit(&s.path, u64::MAX).expect("test step");
            let expected = kestrel_runtime::preprocess::preprocess(&img, &spec).expect("test step");
            set.plain_into(i, &spec, &mut ours).expect("plain view");
            assert_eq!(ours, expected, "{}", s.path.display());
        }
        assert_eq!(
            set.images.image(0).expect("shrunk").as_raw(),
            shrink(
                load_image_with_limit(&samples[0].path, u64::MAX)
                    .expect("full")
                    .into_rgb8(),
                83
            )
            .as_raw()
        );
        assert_eq!(set.image(0).expect("shrunk").height(), 83);
        assert_eq!(set.image(1).expect("small").height(), 40, "never enlarged");
        // Over the pixel limit: skipped with the runtime's message.
        let set = decode_for_training(
            &samples[..1],
            &spec,
            83,
            1000,
            [Store::in_memory(), Store::in_memory()],
            &Progress::plain(),
        )
        .expect("decode");
        assert!(
            set.is_empty() && set.skipped[0].reason.contains("--max-pixels"),
            "{:?}",
            set.skipped
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
