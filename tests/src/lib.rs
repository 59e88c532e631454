//! Helpers for Kestrel's end-to-end tests: real models, real files, temp dirs.

pub mod corpus;

use std::path::{Path, PathBuf};

use kestrel_runtime::bundle::Metadata;
use kestrel_trainer::backend::Backend;
use kestrel_trainer::config::FitConfig;
use kestrel_trainer::model::{self, pretrained};

/// The repository root (the workspace manifest's directory), as cargo states it when it runs
/// the test. Not the value compiled in: two checkouts sharing one target folder (CI's clone and a
/// developer's, on one machine) share test binaries too, since cargo judges freshness by the
/// sources' times, and a binary built in the other checkout would look for that one's files.
pub fn repo_root() -> PathBuf {
    let manifest =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The ImageNet bundle that ships in `models/`.
pub fn shipped_imagenet_bundle() -> PathBuf {
    repo_root().join("models/efficientnet-lite0-imagenet.onnx")
}

/// Metadata for a small `classes`-way model at `size`×`size`, labels `class0`, `class1`, ….
pub fn small_metadata(classes: usize, size: u32) -> Metadata {
    let labels = (0..classes).map(|i| format!("class{i}")).collect();
    let mut m = pretrained::imagenet_metadata(model::default_backbone(), labels, size);
    m.model_card.notes = Some("test fixture: random weights".into());
    m
}

/// Export an untrained Lite0 with `classes` outputs at `size` px into `dir`; returns the path.
pub fn export_small_bundle(dir: &Path, name: &str, classes: usize, size: u32) -> anyhow::Result<PathBuf> {
    let device = Backend::Flex.device();
    let backbone = model::default_backbone();
    let net = backbone.build(&device).with_classes(classes, &device);
    let metadata = small_metadata(classes, size);
    let path = dir.join(name);
    let proto = backbone.onnx(&net, size as usize, size as usize)?;
    kestrel_runtime::Bundle::write(proto, &metadata, &path)?;
    Ok(path)
}

/// The small run every backend is held to: 3 classes × 8 sample-photo variants at 64 px, a 25%
/// validation split, 4 head epochs on cached features (plain + one augmented view), then
/// `finetune_epochs` epochs of the top block. Data goes under `dir/photos`, the run `dir/run`.
pub fn sample_photo_run(dir: &Path, backend: Backend, finetune_epochs: usize) -> anyhow::Result<FitConfig> {
    let data = dir.join("photos");
    kestrel_trainer::data::sample_data::make_photo_folder(&data, 8, 64, 21)?;
    Ok(FitConfig {
        data,
        out: dir.join("run"),
        backend,
        image_size: Some(64),
        batch_size: 8,
        val_fraction: 0.25,
        head_epochs: 4,
        feature_views: 1,
        finetune_epochs,
        unfreeze_blocks: 1,
        ..FitConfig::default()
    })
}

/// The smallest real Kestrel bundle: a 4×4 RGB input, global average pool, and a 2-class Gemm.
/// A few hundred bytes, so a fuzzer can mutate it quickly; loads and classifies like any other.
pub fn tiny_bundle_bytes() -> anyhow::Result<Vec<u8>> {
    use kestrel_trainer::onnx::graph::{Attr, Dim, GraphBuilder, f32_tensor};
    use prost::Message;
    let mut g = GraphBuilder::default();
    g.input(
        "input",
        &[Dim::Named("batch"), Dim::Fixed(3), Dim::Fixed(4), Dim::Fixed(4)],
    );
    g.node("GlobalAveragePool", &["input"], "pooled", &[]);
    g.node("Flatten", &["pooled"], "features", &[("axis", Attr::Int(1))]);
    let w = g.initializer(f32_tensor("w", &[2, 3], &[1.0, 0.0, -1.0, -1.0, 0.0, 1.0]));
    let b = g.initializer(f32_tensor("b", &[2], &[0.0, 0.1]));
    g.node("Gemm", &["features", &w, &b], "logits", &[("transB", Attr::Int(1))]);
    g.output("logits", &[Dim::Named("batch"), Dim::Fixed(2)]);
    let mut proto = g.into_model("tiny", kestrel_runtime::VERSION);
    proto.metadata_props = small_metadata(2, 4).to_props();
    let bytes = proto.encode_to_vec();
    // Through the contract once, so a seed is never an invalid bundle by accident.
    kestrel_runtime::Bundle::from_bytes(&bytes, Path::new("tiny.onnx"))?;
    Ok(bytes)
}
