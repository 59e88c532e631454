//! Forward passes without training: the head phase's feature cache and batched prediction.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use kestrel_runtime::PreprocessSpec;
use rayon::prelude::*;

use super::FitError;
use super::prepare::Prepared;
use super::recipe::rng_for;
use crate::config::FitConfig;
use crate::data::augment;
use crate::data::images::EvalSet;
use crate::data::store::{Store, StoreError};
use crate::model::Network;
use crate::progress::Progress;

/// A `[N, width]` tensor read back to the host.
pub(crate) fn to_vec(t: Tensor<2>) -> Result<Vec<f32>, FitError> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| FitError::Tensor(format!("{e:?}")))
}

/// Pooled features of `n` images of `len` floats each, produced by `fill(i, out)`; each batch's
/// rows (`model.feature_width()` values each) go to `emit` in order.
#[allow(clippy::too_many_arguments)]
fn features_of(
    model: &Network,
    spec: &PreprocessSpec,
    n: usize,
    batch: usize,
    device: &Device,
    progress: &Progress,
    fill: impl Fn(usize, &mut [f32]) -> Result<(), FitError> + Sync,
    mut emit: impl FnMut(&[f32]) -> Result<(), FitError>,
) -> Result<(), FitError> {
    let len = spec.tensor_len();
    let bar = progress.bar(n as u64, "features");
    for start in (0..n).step_by(batch.max(1)) {
        let end = (start + batch).min(n);
        let mut data = vec![0.0f32; (end - start) * len];
        data.par_chunks_exact_mut(len)
            .enumerate()
            .try_for_each(|(i, chunk)| fill(start + i, chunk))?;
        let x = Tensor::<4>::from_data(TensorData::new(data, spec.batch_shape(end - start)), device);
        emit(&to_vec(model.features(x))?)?;
        bar.inc((end - start) as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// The phase-1 feature cache: pooled backbone features of every training view (on disk, one
/// record per view) and validation image (in memory), computed once.
#[derive(Debug)]
pub struct HeadFeatures {
    /// `labels.len()` rows of `width`.
    pub train: Store,
    pub labels: Vec<usize>,
    /// `val.len() × width`.
    pub val: Vec<f32>,
    /// Features per row: the backbone's feature width.
    pub width: usize,
}

impl HeadFeatures {
    /// The training rows `batch`, packed, with their labels.
    pub fn batch(&self, batch: &[usize]) -> Result<(Vec<f32>, Vec<usize>), StoreError> {
        let mut x = vec![0.0f32; batch.len() * self.width];
        for (out, &i) in x.chunks_exact_mut(self.width).zip(batch) {
            self.train.f32_into(i, out)?;
        }
        Ok((x, batch.iter().map(|&i| self.labels[i]).collect()))
    }
}

/// View `view` of training image `image` as the head phase caches it: view 0 is the runtime's
/// tensor for the file, exactly; views 1.. are augmented, seeded per image and view.
pub fn training_view(
    config: &FitConfig,
    data: &Prepared,
    image: usize,
    view: usize,
    out: &mut [f32],
) -> Result<(), FitError> {
    if view == 0 {
        return Ok(data.train.plain_into(image, &data.spec, out)?);
    }
    let mut rng = rng_for(config.seed, 1, image as u64, view as u64);
    Ok(augment::augmented(
        &data.train.image(image)?,
        &data.spec,
        &config.augment,
        &mut rng,
        out,
    )?)
}

pub fn head_features(
    config: &FitConfig,
    model: &Network,
    data: &Prepared,
    progress: &Progress,
) -> Result<HeadFeatures, FitError> {
    let device = config.device()?;
    let backbone = model.valid();
    let width = model.feature_width();
    let spec = &data.spec;
    let views = 1 + config.feature_views;
    let n_train = data.train.len();
    let started = Instant::now();
    let mut train = Store::on_disk(&config.out)?;
    features_of(
        &backbone,
        spec,
        n_train * views,
        config.batch_size,
        &device,
        progress,
        |i, out| training_view(config, data, i % n_train, i / n_train, out),
        |rows| {
            for row in rows.chunks_exact(width) {
                train.push_f32(row)?;
            }
            Ok(())
        },
    )?;
    let labels: Vec<usize> = (0..n_train * views).map(|i| data.train.labels[i % n_train]).collect();
    let mut val = Vec::with_capacity(data.val.len() * width);
    features_of(
        &backbone,
        spec,
        data.val.len(),
        config.batch_size,
        &device,
        progress,
        |i, out| Ok(data.val.tensor_into(i, spec, out)?),
        |rows| {
            val.extend_from_slice(rows);
            Ok(())
        },
    )?;
    tracing::info!(
        "feature cache: {} training views, {} validation images in {:.2}s",
        labels.len(),
        data.val.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(HeadFeatures {
        train,
        labels,
        val,
        width,
    })
}

/// Logits of preprocessed images, in batches, in inference mode.
pub fn predict(
    model: &Network,
    spec: &PreprocessSpec,
    set: &EvalSet,
    batch: usize,
    device: &Device,
) -> Result<Vec<f32>, FitError> {
    let model = model.valid();
    let mut out = Vec::new();
    for start in (0..set.len()).step_by(batch.max(1)) {
        let end = (start + batch.max(1)).min(set.len());
        let x = Tensor::<4>::from_data(
            TensorData::new(set.tensors(start..end, spec)?, spec.batch_shape(end - start)),
            device,
        );
        out.extend(to_vec(model.forward(x))?);
    }
    Ok(out)
}
