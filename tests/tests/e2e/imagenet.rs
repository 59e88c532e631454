//! Pretrained backbones: Burn names the sample photos, the export agrees in tract, the shipped
//! bundle is reproducible, and the trainer feeds what the runtime feeds.

use std::path::Path;

use kestrel_e2e::shipped_imagenet_bundle;
use kestrel_runtime::{Classifier, LoadOptions, preprocess};
use kestrel_trainer::assets;
use kestrel_trainer::backend::Backend;
use kestrel_trainer::data::batch;
use kestrel_trainer::model::{self, pretrained};
use kestrel_trainer::onnx::export;

use crate::util::*;

/// `backbone` with its ImageNet weights names the cat and the coffee in Burn; its exported
/// graph agrees with Burn in tract and names them too. Returns the exported file.
fn check_imagenet_export(backbone: &'static dyn model::Backbone, dir: &Path) -> std::path::PathBuf {
    let device = Backend::Flex.device();
    let (model, metadata) = pretrained::load_imagenet(backbone, &device, backbone.native_size()).expect("pretrained");
    let spec = &metadata.preprocess;
    let name = backbone.name();

    let photos = [sample("chelsea.png"), sample("coffee.png")];
    let input = batch::images_to_tensor(&photos, spec, &device).expect("batch");
    let logits = model.forward(input).into_data().try_into_vec::<f32>().expect("logits");
    let (cat, coffee) = logits.split_at(1000);
    assert!(
        CAT_CLASSES.contains(&top1(cat)),
        "{name} Burn: chelsea → {}",
        metadata.labels[top1(cat)]
    );
    assert!(
        COFFEE_CLASSES.contains(&top1(coffee)),
        "{name} Burn: coffee → {}",
        metadata.labels[top1(coffee)]
    );

    let out = dir.join(format!("{name}-imagenet.onnx"));
    let check = pretrained::check_batch(spec).expect("check batch");
    let diff = export::checked_bundle(backbone, &model, &metadata, &out, &check, pretrained::PARITY_TOLERANCE)
        .and_then(|c| c.save(&out))
        .expect("export");
    println!(
        "{name} export parity at {} px: Burn ↔ tract max |Δlogit| = {diff:.3e} (tolerance {:.0e})",
        backbone.native_size(),
        pretrained::PARITY_TOLERANCE
    );
    assert!(diff < pretrained::PARITY_TOLERANCE);

    let classifier = Classifier::load(&out, &LoadOptions::default()).expect("load exported");
    assert_eq!(classifier.metadata().model_card.backbone, backbone.architecture());
    let labels = classifier.labels();
    let cat = classifier.classify(&photos[0]).expect("classify").top_k(labels, 3);
    assert!(CAT_CLASSES.contains(&cat[0].index), "{name} tract: chelsea → {cat:?}");
    let coffee = classifier.classify(&photos[1]).expect("classify").top_k(labels, 3);
    assert!(
        COFFEE_CLASSES.contains(&coffee[0].index),
        "{name} tract: coffee → {coffee:?}"
    );
    out
}

/// Lite0, the default: as above, and the export reproduces the shipped bundle byte for byte.
#[test]
fn pretrained_imagenet_export_matches_burn_and_the_shipped_bundle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = check_imagenet_export(model::default_backbone(), dir.path());
    let shipped = std::fs::read(shipped_imagenet_bundle()).expect("models/efficientnet-lite0-imagenet.onnx");
    let fresh = std::fs::read(&out).expect("exported bundle");
    assert!(
        shipped == fresh,
        "models/efficientnet-lite0-imagenet.onnx is stale: regenerate it with `cargo run --release -p kestrel-trainer -- export-imagenet`"
    );
}

/// Every other backbone, at its own input size (Lite1 240 px, Lite2 260 px: not multiples of
/// 32, so "SAME" padding is symmetric on some stride-2 layers and asymmetric on others).
#[test]
fn every_backbone_exports_with_parity_and_names_the_sample_photos() {
    let dir = tempfile::tempdir().expect("tempdir");
    for backbone in model::BACKBONES.iter().skip(1) {
        check_imagenet_export(*backbone, dir.path());
    }
}

/// The trainer's batch for an image is bit-identical to what the runtime feeds the model.
#[test]
fn trainer_batches_equal_runtime_inputs_bit_for_bit() {
    let device = Backend::Flex.device();
    let spec = kestrel_runtime::PreprocessSpec::efficientnet_lite(96);
    let photos = [sample("chelsea.png"), sample("astronaut.png"), sample("rocket.jpg")];
    let batch = batch::images_to_tensor(&photos, &spec, &device).expect("batch");
    assert_eq!(batch.dims(), [3, 3, 96, 96]);
    let trainer: Vec<u32> = batch
        .into_data()
        .try_into_vec::<f32>()
        .expect("data")
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let runtime: Vec<u32> = photos
        .iter()
        .flat_map(|p| preprocess(p, &spec).expect("preprocess"))
        .map(f32::to_bits)
        .collect();
    assert!(trainer == runtime, "trainer and runtime preprocessing differ");
}

#[test]
fn missing_assets_name_the_fix() {
    let err = assets::path(Path::new("weights/not-there.pth")).expect_err("missing");
    assert!(err.to_string().contains("scripts/fetch-assets.sh"));
}
