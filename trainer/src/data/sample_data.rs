//! A small labelled photo folder made from the sample photos (scikit-image's, fetched by
//! `scripts/fetch-assets.sh`): each class is one photo, each image a different random crop,
//! flip and exposure of it, written as JPEG. Enough to watch a fine-tune work end to end in
//! minutes on a CPU, and what the tests train on.

use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::{DynamicImage, RgbImage};

use crate::assets;
use crate::data::dataset::SplitMix64;

/// Class name → sample photo.
pub const CLASSES: [(&str, &str); 3] = [
    ("cat", "chelsea.png"),
    ("coffee", "coffee.png"),
    ("astronaut", "astronaut.png"),
];

#[derive(Debug, thiserror::Error)]
pub enum SampleDataError {
    #[error(transparent)]
    Asset(#[from] assets::MissingAsset),
    #[error(transparent)]
    Decode(#[from] kestrel_runtime::DecodeError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("cannot create {path}: {source}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn variant(photo: &RgbImage, size: u32, rng: &mut SplitMix64) -> RgbImage {
    let (w, h) = photo.dimensions();
    let share = 0.45 + 0.5 * rng.next_f64();
    let side = ((w.min(h) as f64) * share.sqrt()).round().max(8.0) as u32;
    let x = rng.below((w - side + 1) as usize) as u32;
    let y = rng.below((h - side + 1) as usize) as u32;
    let mut img = imageops::resize(
        &imageops::crop_imm(photo, x, y, side, side).to_image(),
        size,
        size,
        FilterType::Triangle,
    );
    if rng.next_f64() < 0.5 {
        imageops::flip_horizontal_in_place(&mut img);
    }
    let gain = 0.75 + 0.5 * rng.next_f64();
    for p in img.pixels_mut() {
        p.0 = p.0.map(|v| (v as f64 * gain).round().clamp(0.0, 255.0) as u8);
    }
    img
}

/// Write `per_class` images of `size`×`size` per class under `out/<class>/`; returns the class
/// folders. Deterministic for a seed.
pub fn make_photo_folder(out: &Path, per_class: usize, size: u32, seed: u64) -> Result<Vec<PathBuf>, SampleDataError> {
    let mut rng = SplitMix64(seed);
    let mut dirs = Vec::new();
    for (class, photo) in CLASSES {
        let photo = kestrel_runtime::load_image(&assets::sample(photo)?)?.to_rgb8();
        let dir = out.join(class);
        std::fs::create_dir_all(&dir).map_err(|source| SampleDataError::Mkdir {
            path: dir.clone(),
            source,
        })?;
        for i in 0..per_class {
            let path = dir.join(format!("{class}-{i:03}.jpg"));
            DynamicImage::ImageRgb8(variant(&photo, size, &mut rng))
                .save(&path)
                .map_err(|source| SampleDataError::Write { path, source })?;
        }
        dirs.push(dir);
    }
    Ok(dirs)
}
