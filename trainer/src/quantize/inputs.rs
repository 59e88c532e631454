//! Calibration and held-out images from the user's folder, through the runtime's preprocessing.
//!
//! A folder of class folders named like the model's labels is split exactly as `fit` splits it
//! (same seed and validation share): calibration reads the training split, the gate scores the
//! validation split. Any other folder of images is unlabelled: a seeded share is held out and the
//! gate measures agreement with the float model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use kestrel_runtime::PreprocessSpec;
use kestrel_runtime::decode::DEFAULT_MAX_PIXELS;
use kestrel_runtime::preprocess::normalize_into;
use rayon::prelude::*;

use super::QuantizeError;
use super::gate::Held;
use crate::config::Augment;
use crate::data::augment;
use crate::data::dataset::{Dataset, Sample, SplitMix64, SplitOptions};
use crate::data::images::{self, DecodedSet, EvalSet, Skipped};
use crate::data::store::Store;
use crate::progress::Progress;
use kestrel_runtime::image_files::is_image_name;

#[derive(Debug, Clone)]
pub struct InputOptions {
    /// Calibration images at most (a seeded, class-balanced-by-shuffle subset of the split).
    pub images: usize,
    /// Views per image: 1 is the plain runtime view; more adds augmented crops (a small folder
    /// of photos then still calibrates every layer on varied content).
    pub views: usize,
    pub seed: u64,
    pub val_fraction: f64,
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions {
            images: 512,
            views: 1,
            seed: 42,
            val_fraction: 0.1,
        }
    }
}

/// Calibration tensors plus the held-out set the gate scores.
#[derive(Debug)]
pub struct Inputs {
    pub calibration: Vec<Vec<f32>>,
    pub held: Held,
    pub skipped: Vec<Skipped>,
    /// Where the images came from, for the model card.
    pub source: String,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // file_type() does not follow symlinks, so a link loop cannot recurse forever.
        match entry.file_type() {
            Ok(t) if t.is_dir() && depth < 8 => walk(&path, out, depth + 1),
            Ok(_) if is_image_name(&path) => out.push(path),
            _ => {}
        }
    }
}

/// Class folders whose names are all model labels → labelled samples remapped to label order.
fn labelled(dir: &Path, labels: &[String], seed: u64, val_fraction: f64) -> Option<(Vec<Sample>, Vec<Sample>)> {
    let dataset = Dataset::scan(
        dir,
        &SplitOptions {
            val_fraction,
            seed,
            ..SplitOptions::default()
        },
    )
    .ok()?;
    let map: Option<Vec<usize>> = dataset
        .classes
        .iter()
        .map(|c| labels.iter().position(|l| l == c))
        .collect();
    let map = map?;
    let remap = |s: &[Sample]| -> Vec<Sample> {
        s.iter()
            .map(|s| Sample {
                path: s.path.clone(),
                label: map[s.label],
            })
            .collect()
    };
    Some((remap(&dataset.train), remap(&dataset.val)))
}

/// `views` crops at the input size per image `indices[i]` of `set` (the plain runtime view
/// first, then augmented crops), each with its position `i`. Images are read from the store as
/// the crops are cut, never all at once.
fn views(
    set: &DecodedSet,
    indices: &[usize],
    spec: &PreprocessSpec,
    views: usize,
    seed: u64,
) -> Result<Vec<(usize, RgbImage)>, QuantizeError> {
    let aug = Augment {
        rotation_degrees: 0.0,
        erasing: 0.0,
        ..Augment::default()
    };
    let per_image: Result<Vec<Vec<(usize, RgbImage)>>, QuantizeError> = indices
        .par_iter()
        .enumerate()
        .map(|(i, &index)| {
            let mut rng = SplitMix64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut crops = vec![(i, set.plain_crop(index)?)];
            if views > 1 {
                let img = set.image(index)?;
                crops.extend(
                    (1..views).filter_map(|_| augment::augmented_rgb(&img, spec, &aug, &mut rng).ok().map(|c| (i, c))),
                );
            }
            Ok(crops)
        })
        .collect();
    Ok(per_image?.into_iter().flatten().collect())
}

/// Calibration tensors: the crops normalised as the runtime does.
fn normalised(crops: Vec<(usize, RgbImage)>, spec: &PreprocessSpec) -> Vec<Vec<f32>> {
    crops
        .into_par_iter()
        .filter_map(|(_, crop)| {
            let mut out = vec![0.0f32; spec.tensor_len()];
            normalize_into(&crop, spec, &mut out).ok().map(|_| out)
        })
        .collect()
}

/// Calibration and held-out tensors for a model with `labels` and `spec`, from `dir`.
pub fn from_folder(
    dir: &Path,
    labels: &[String],
    spec: &PreprocessSpec,
    options: &InputOptions,
) -> Result<Inputs, QuantizeError> {
    let (mut train, val, is_labelled) = match labelled(dir, labels, options.seed, options.val_fraction) {
        Some((train, val)) if !val.is_empty() => (train, val, true),
        _ => {
            let mut files = Vec::new();
            walk(dir, &mut files, 0);
            files.sort();
            let mut rng = SplitMix64(options.seed);
            rng.shuffle(&mut files);
            let n = files.len();
            let held = ((n as f64 * options.val_fraction).round() as usize)
                .max(1)
                .min(n.saturating_sub(1));
            // Labels are filled in by the gate: the float model's own answers.
            let samples: Vec<Sample> = files.into_iter().map(|path| Sample { path, label: 0 }).collect();
            let (val, train) = samples.split_at(held);
            (train.to_vec(), val.to_vec(), false)
        }
    };
    if train.is_empty() || val.is_empty() {
        return Err(QuantizeError::NoImages {
            hint: format!(
                "{} needs at least two readable images (class folders named like the model's labels, or any \
                 images); give --calibrate a folder of your own photos",
                dir.display()
            ),
        });
    }
    SplitMix64(options.seed ^ 0xCA11).shuffle(&mut train);
    train.truncate(options.images.max(1));
    // Decoded at twice the input size: room for crops, a fraction of the originals' memory.
    let side = 2 * spec.height.max(spec.width);
    let progress = Progress::auto();
    // In full, as the runtime decodes: calibration must see what the deployed model sees.
    let decode = |samples: &[Sample]| {
        images::decode_for_training(
            samples,
            spec,
            side,
            DEFAULT_MAX_PIXELS,
            [Store::in_memory(), Store::in_memory()],
            &progress,
        )
    };
    let decoded = decode(&train)?;
    let all: Vec<usize> = (0..decoded.len()).collect();
    let calibration = normalised(views(&decoded, &all, spec, options.views, options.seed)?, spec);
    let mut skipped = decoded.skipped;
    let held = if options.views <= 1 {
        let set = images::preprocess_for_eval(&val, spec, DEFAULT_MAX_PIXELS, Store::in_memory(), &progress)?;
        skipped.extend(set.skipped);
        Held {
            crops: set.crops,
            labels: set.labels,
            classes: labels.to_vec(),
            labelled: is_labelled,
        }
    } else {
        let decoded = decode(&val)?;
        let (mut crops, mut labels_of) = (Store::in_memory(), Vec::new());
        let all: Vec<usize> = (0..decoded.len()).collect();
        for (i, crop) in views(&decoded, &all, spec, options.views, options.seed ^ 0x4E1D)? {
            crops.push_image(&crop)?;
            labels_of.push(decoded.labels[i]);
        }
        skipped.extend(decoded.skipped);
        Held {
            crops: Arc::new(crops),
            labels: labels_of,
            classes: labels.to_vec(),
            labelled: is_labelled,
        }
    };
    if calibration.is_empty() || held.labels.is_empty() {
        return Err(QuantizeError::NoImages {
            hint: format!("no image in {} could be decoded", dir.display()),
        });
    }
    Ok(Inputs {
        calibration,
        held,
        skipped,
        // The folder's name only: a bundle must not depend on where its images lived.
        source: format!(
            "{} ({}, {} calibration images × {} views)",
            dir.file_name().unwrap_or(dir.as_os_str()).to_string_lossy(),
            if is_labelled {
                "training split"
            } else {
                "unlabelled images"
            },
            train.len(),
            options.views.max(1)
        ),
    })
}

/// Calibration from a training run's decoded training split (plain runtime views, at most
/// `limit` images; none for 0) and its validation crops as the held-out set (shared, not
/// copied).
pub fn from_run(
    train: &DecodedSet,
    val: &EvalSet,
    classes: &[String],
    spec: &PreprocessSpec,
    limit: usize,
    seed: u64,
) -> Result<Inputs, QuantizeError> {
    let mut order: Vec<usize> = (0..train.len()).collect();
    SplitMix64(seed ^ 0xCA11).shuffle(&mut order);
    order.truncate(limit);
    order.sort_unstable();
    let calibration = normalised(views(train, &order, spec, 1, seed)?, spec);
    Ok(Inputs {
        calibration,
        held: Held {
            crops: Arc::clone(&val.crops),
            labels: val.labels.clone(),
            classes: classes.to_vec(),
            labelled: true,
        },
        skipped: Vec::new(),
        source: format!("the run's training split ({} images)", order.len()),
    })
}
