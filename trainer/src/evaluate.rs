//! `kestrel-train eval`: a bundle on a labelled folder, through the runtime.

use std::path::{Path, PathBuf};

use kestrel_runtime::decode::DEFAULT_MAX_PIXELS;
use kestrel_runtime::{Classifier, LoadOptions};
use rayon::prelude::*;

use crate::data::classes::{ScanError, class_folders};
use crate::data::dataset::Sample;
use crate::data::images::{self, CacheError, Skipped};
use crate::data::store::{Store, StoreError};
use crate::metrics::{self, Evaluation};
use crate::progress::Progress;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Classifier(#[from] kestrel_runtime::ClassifierError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error("folder {path} is class `{class}`, which model {model} does not know (its classes: {known})")]
    UnknownClass {
        path: PathBuf,
        class: String,
        model: PathBuf,
        known: String,
    },
    #[error("{path} holds no class folders with images")]
    Empty { path: PathBuf },
}

/// Evaluate the bundle at `model` on `data/<class>/<image>`; class folders must be model labels.
pub fn evaluate_folder(model: &Path, data: &Path) -> Result<(Evaluation, Vec<Skipped>), EvalError> {
    let classifier = Classifier::load(model, &LoadOptions::default())?;
    let labels = classifier.labels().to_vec();
    let mut samples = Vec::new();
    for class in class_folders(data)? {
        let label = labels
            .iter()
            .position(|l| *l == class.name)
            .ok_or_else(|| EvalError::UnknownClass {
                path: class.dir.clone(),
                class: class.name.clone(),
                model: model.to_path_buf(),
                known: labels.join(", "),
            })?;
        samples.extend(class.images.into_iter().map(|path| Sample { path, label }));
    }
    samples.sort_by(|a, b| a.path.cmp(&b.path));
    if samples.is_empty() {
        return Err(EvalError::Empty {
            path: data.to_path_buf(),
        });
    }
    let set = images::preprocess_for_eval(
        &samples,
        &classifier.metadata().preprocess,
        DEFAULT_MAX_PIXELS,
        Store::in_memory(),
        &Progress::auto(),
    )?;
    let logits = logits(&classifier, &set.crops)?;
    Ok((metrics::evaluate(&logits, &set.labels, &labels), set.skipped))
}

/// Row-major logits of `crops` (8-bit, at the model's input size, as
/// [`images::preprocess_for_eval`] stores them), inferred in parallel.
pub fn logits(classifier: &Classifier, crops: &Store) -> Result<Vec<f32>, CacheError> {
    let spec = &classifier.metadata().preprocess;
    let rows: Result<Vec<Vec<f32>>, CacheError> = (0..crops.len())
        .into_par_iter()
        .map(|i| {
            let mut x = vec![0.0f32; spec.tensor_len()];
            images::tensor_into(crops, i, spec, &mut x)?;
            Ok(classifier.logits(&x)?)
        })
        .collect();
    Ok(rows?.into_iter().flatten().collect())
}
