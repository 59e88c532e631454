//! A run's data, made ready once: scanned, split and decoded into nameless cache files in the
//! run folder (see [`crate::data::store`]), so memory does not grow with the data set.

use std::time::Instant;

use kestrel_runtime::PreprocessSpec;

use super::FitError;
use crate::config::FitConfig;
use crate::data::dataset::{Dataset, SplitOptions};
use crate::data::images::{self, DecodedSet, EvalSet, Skipped};
use crate::data::store::Store;
use crate::progress::Progress;

/// Shorter side of cached training images: room for random crops at the input size.
fn cache_side(config: &FitConfig) -> u32 {
    (config.input_size() as f32 * 1.3).ceil() as u32
}

/// The data of a run, decoded once into nameless cache files in the run folder (see
/// [`crate::data::store`]): memory does not grow with the data set.
#[derive(Debug)]
pub struct Prepared {
    pub dataset: Dataset,
    pub spec: PreprocessSpec,
    pub train: DecodedSet,
    pub val: EvalSet,
    pub skipped: Vec<Skipped>,
}

/// Scan, split and decode the data per `config`; fails before any training on unusable data.
pub fn prepare(config: &FitConfig, progress: &Progress) -> Result<Prepared, FitError> {
    let dataset = Dataset::scan(
        &config.data,
        &SplitOptions {
            val_fraction: config.val_fraction,
            seed: config.seed,
            fold: (config.folds > 1).then_some((config.folds, config.fold)),
            group_by: config
                .group_regex()
                .map_err(|e| FitError::Config(crate::config::ConfigError::Invalid(format!("group_by: {e}"))))?,
        },
    )?;
    tracing::info!(
        classes = dataset.classes.len(),
        train = dataset.train.len(),
        val = dataset.val.len(),
        "dataset {}",
        dataset.root.display()
    );
    let spec = PreprocessSpec::efficientnet_lite(config.input_size());
    if config.workers > 0 {
        // A global pool that already exists is fine: it was sized by an earlier call.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers)
            .build_global();
    }
    let started = Instant::now();
    let cache = || Store::on_disk(&config.out);
    let train = images::decode_for_training(
        &dataset.train,
        &spec,
        cache_side(config),
        config.max_pixels,
        [cache()?, cache()?],
        progress,
    )?;
    let val = images::preprocess_for_eval(&dataset.val, &spec, config.max_pixels, cache()?, progress)?;
    tracing::info!(
        "decoded {} images in {:.1}s ({:.0} MB cached on disk)",
        train.len() + val.len(),
        started.elapsed().as_secs_f64(),
        (train.images.bytes() + train.plain.bytes() + val.crops.bytes()) as f64 / 1e6
    );
    for (c, class) in dataset.classes.iter().enumerate() {
        if !train.labels.contains(&c) {
            return Err(FitError::ClassEmptied { class: class.clone() });
        }
    }
    if val.is_empty() {
        return Err(FitError::NoValidation);
    }
    let skipped: Vec<Skipped> = train.skipped.iter().chain(&val.skipped).cloned().collect();
    Ok(Prepared {
        dataset,
        spec,
        train,
        val,
        skipped,
    })
}
