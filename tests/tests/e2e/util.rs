//! What the topic modules share: the sample photos and the ImageNet classes they show.

use image::DynamicImage;
use kestrel_runtime::load_image;
use kestrel_trainer::assets;

pub const CAT_CLASSES: std::ops::RangeInclusive<usize> = 281..=285;
/// espresso, cup, coffee mug
pub const COFFEE_CLASSES: [usize; 3] = [967, 968, 504];

pub fn sample(name: &str) -> DynamicImage {
    let path = assets::sample(name).expect("sample photos: run scripts/fetch-assets.sh");
    load_image(&path).expect("decode sample photo")
}

pub fn top1(logits: &[f32]) -> usize {
    (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .expect("non-empty")
}
