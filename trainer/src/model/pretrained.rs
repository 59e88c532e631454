//! ImageNet bundles built from a backbone's pretrained checkpoint; Lite0's ships with Kestrel.

use std::path::Path;

use burn::tensor::Device;
use kestrel_runtime::bundle::{Metadata, ModelCard};
use kestrel_runtime::{PreprocessSpec, load_image, preprocess};

use super::{Backbone, Network, imagenet, weights};
use crate::{assets, onnx::export};

/// Burn and tract must agree this closely on the exported float graph: the CPU's bound
/// ([`crate::backend::Backend::parity_tolerance`]), where `export-imagenet` runs.
pub const PARITY_TOLERANCE: f32 = 1e-3;
/// Photos the export is checked on.
pub const CHECK_PHOTOS: [&str; 2] = ["chelsea.png", "coffee.png"];

#[derive(Debug, thiserror::Error)]
pub enum PretrainedError {
    #[error(transparent)]
    Asset(#[from] assets::MissingAsset),
    #[error(transparent)]
    Weights(#[from] weights::WeightsError),
    #[error(transparent)]
    Labels(#[from] imagenet::LabelsError),
    #[error(transparent)]
    Decode(#[from] kestrel_runtime::DecodeError),
    #[error(transparent)]
    Preprocess(#[from] kestrel_runtime::preprocess::PreprocessError),
    #[error(transparent)]
    Export(#[from] export::ExportError),
    #[error(transparent)]
    Quantize(#[from] crate::quantize::QuantizeError),
    #[error(
        "no int8 form of {path} passed the accuracy gate ({summary}); the shipped bundle must keep the float \
         model's answers"
    )]
    Gate { path: std::path::PathBuf, summary: String },
}

/// Where `export-imagenet` writes `backbone`'s float bundle by default (Lite0's is committed).
pub fn default_bundle_path(backbone: &dyn Backbone) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("models/{}-imagenet.onnx", backbone.architecture()))
}

/// The metadata of `backbone`'s ImageNet bundle at `size` px.
pub fn imagenet_metadata(backbone: &dyn Backbone, labels: Vec<String>, size: u32) -> Metadata {
    Metadata {
        model_card: ModelCard {
            backbone: backbone.architecture().into(),
            weights_source: backbone.weights().source.into(),
            classes: labels.len(),
            metrics: Default::default(),
            precision: "float32".into(),
            tool: format!("kestrel-train {}", kestrel_runtime::VERSION),
            notes: Some("ImageNet-1k classifier, pretrained weights as published; logits output".into()),
        },
        labels,
        preprocess: PreprocessSpec::efficientnet_lite(size),
    }
}

/// `backbone` with its ImageNet weights and its bundle metadata at `size` px, from the asset
/// cache.
pub fn load_imagenet(
    backbone: &dyn Backbone,
    device: &Device,
    size: u32,
) -> Result<(Network, Metadata), PretrainedError> {
    let model = weights::load_imagenet(backbone, &assets::path(backbone.weights().file)?, device)?;
    let labels = imagenet::labels(
        &assets::path(assets::IMAGENET_SYNSETS)?,
        &assets::path(assets::IMAGENET_LEMMAS)?,
    )?;
    Ok((model, imagenet_metadata(backbone, labels, size)))
}

/// The sample photos, preprocessed per `spec`: the batch an export is checked on.
pub fn check_batch(spec: &PreprocessSpec) -> Result<Vec<Vec<f32>>, PretrainedError> {
    CHECK_PHOTOS
        .iter()
        .map(|name| Ok(preprocess(&load_image(&assets::sample(name)?)?, spec)?))
        .collect()
}

/// Build `backbone`'s ImageNet bundle at `out` from the weights loaded on `backend`; returns the
/// Burn↔tract max |Δlogit|, checked against that backend's tolerance.
pub fn export_imagenet(
    backbone: &dyn Backbone,
    out: &Path,
    backend: crate::backend::Backend,
    size: u32,
) -> Result<f32, PretrainedError> {
    let (model, metadata) = load_imagenet(backbone, &backend.device(), size)?;
    let batch = check_batch(&metadata.preprocess)?;
    let tolerance = backend.parity_tolerance();
    let checked = export::checked_bundle(backbone, &model, &metadata, out, &batch, tolerance)?;
    Ok(checked.save(out)?)
}

/// How the shipped int8 bundle is made: scheme int8 (Kestrel's integer kernels, about twice as
/// fast as float: docs/benchmarks.md), calibrated on augmented crops of half the scikit-image
/// photos, bias-corrected, and checked on crops of the other half against the float bundle's
/// confident answers.
pub fn imagenet_int8_recipe() -> (crate::quantize::inputs::InputOptions, crate::quantize::gate::Request) {
    use crate::quantize::{Scheme, gate, inputs};
    (
        inputs::InputOptions {
            images: 512,
            views: 16,
            seed: 42,
            val_fraction: 0.5,
        },
        gate::Request {
            scheme: Scheme::Int8,
            per_channel: true,
            method: None,
            max_drop: 1.0,
            fallbacks: false,
            bias_correction: true,
        },
    )
}

/// Quantise the float ImageNet bundle at `float` into `out` by [`imagenet_int8_recipe`].
pub fn quantize_imagenet(float: &Path, out: &Path) -> Result<crate::quantize::gate::Outcome, PretrainedError> {
    use crate::quantize::{self, gate, inputs};
    let bundle = kestrel_runtime::Bundle::read(float).map_err(quantize::QuantizeError::from)?;
    let (options, request) = imagenet_int8_recipe();
    let photos = assets::photos()?;
    let data = inputs::from_folder(&photos, &bundle.metadata.labels, &bundle.metadata.preprocess, &options)?;
    let outcome = quantize::calibrate_and_write(&bundle, float, &data, &request, out, |_| {})?;
    if outcome.chosen.is_none() {
        return Err(PretrainedError::Gate {
            path: float.to_path_buf(),
            summary: gate::summary(&outcome),
        });
    }
    Ok(outcome)
}
