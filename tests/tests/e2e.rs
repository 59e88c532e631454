//! End-to-end: pretrained weights → Burn → exported bundle → tract, and the bundle contract.
//! Needs the assets from `scripts/fetch-assets.sh` (CI fetches them first).

use std::path::Path;

use burn::module::Module;

use image::DynamicImage;
use kestrel_e2e::{export_small_bundle, shipped_imagenet_bundle, small_metadata};
use kestrel_runtime::bundle::{self, Bundle, BundleError, ContractError};
use kestrel_runtime::{Classifier, ClassifierError, LoadOptions, load_image, preprocess};
use kestrel_trainer::backend::Backend;
use kestrel_trainer::{assets, batch, export, pretrained};
use prost::Message;
use tract_onnx::pb;

const CAT_CLASSES: std::ops::RangeInclusive<usize> = 281..=285;
/// espresso, cup, coffee mug
const COFFEE_CLASSES: [usize; 3] = [967, 968, 504];

fn sample(name: &str) -> DynamicImage {
    let path = assets::sample(name).expect("sample photos: run scripts/fetch-assets.sh");
    load_image(&path).expect("decode sample photo")
}

fn top1(logits: &[f32]) -> usize {
    (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .expect("non-empty")
}

/// The pretrained model names the cat and the coffee in Burn; the exported graph agrees with
/// Burn in tract; and the export reproduces the shipped bundle byte for byte.
#[test]
fn pretrained_imagenet_export_matches_burn_and_the_shipped_bundle() {
    let device = Backend::Flex.device();
    let (model, metadata) = pretrained::load_imagenet(&device, pretrained::IMAGENET_SIZE).expect("pretrained");
    let spec = &metadata.preprocess;

    let photos = [sample("chelsea.png"), sample("coffee.png")];
    let input = batch::images_to_tensor(&photos, spec, &device).expect("batch");
    let logits = model.forward(input).into_data().try_into_vec::<f32>().expect("logits");
    let (cat, coffee) = logits.split_at(1000);
    assert!(
        CAT_CLASSES.contains(&top1(cat)),
        "Burn: chelsea → {}",
        metadata.labels[top1(cat)]
    );
    assert!(
        COFFEE_CLASSES.contains(&top1(coffee)),
        "Burn: coffee → {}",
        metadata.labels[top1(coffee)]
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("imagenet.onnx");
    let check = pretrained::check_batch(spec).expect("check batch");
    let diff = export::export_bundle(&model, &metadata, &out, &check, pretrained::PARITY_TOLERANCE).expect("export");
    println!(
        "export parity: Burn ↔ tract max |Δlogit| = {diff:.3e} (tolerance {:.0e})",
        pretrained::PARITY_TOLERANCE
    );
    assert!(diff < pretrained::PARITY_TOLERANCE);

    let classifier = Classifier::load(&out, &LoadOptions::default()).expect("load exported");
    let labels = classifier.labels();
    let cat = classifier.classify(&photos[0]).expect("classify").top_k(labels, 3);
    assert!(CAT_CLASSES.contains(&cat[0].index), "tract: chelsea → {cat:?}");
    let coffee = classifier.classify(&photos[1]).expect("classify").top_k(labels, 3);
    assert!(COFFEE_CLASSES.contains(&coffee[0].index), "tract: coffee → {coffee:?}");

    let shipped = std::fs::read(shipped_imagenet_bundle()).expect("models/efficientnet-lite0-imagenet.onnx");
    let fresh = std::fs::read(&out).expect("exported bundle");
    assert!(
        shipped == fresh,
        "models/efficientnet-lite0-imagenet.onnx is stale: regenerate it with `cargo run --release -p kestrel-trainer -- export-imagenet`"
    );
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

/// A tiny exported model, loaded by the runtime, then each way of breaking the contract.
#[test]
fn contract_refuses_each_malformed_bundle_with_its_own_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = export_small_bundle(dir.path(), "good.onnx", 3, 32).expect("export");
    let classifier = Classifier::load(&good, &LoadOptions::default()).expect("good bundle loads");
    let img = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(50, 40, image::Rgb([10, 200, 30])));
    let p = classifier.classify(&img).expect("classify");
    assert_eq!(p.probabilities.len(), 3);
    assert!((p.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5);

    let proto = pb::ModelProto::decode(std::fs::read(&good).expect("read").as_slice()).expect("decode");
    let with_prop = |key: &str, value: Option<&str>| {
        let mut p = proto.clone();
        p.metadata_props.retain(|e| e.key != key);
        if let Some(v) = value {
            p.metadata_props.push(pb::StringStringEntryProto {
                key: key.into(),
                value: v.into(),
            });
        }
        p.encode_to_vec()
    };
    let load = |name: &str, bytes: &[u8]| -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let err = Classifier::load(&path, &LoadOptions::default()).expect_err(name);
        let msg = format!("{err}: {}", error_chain(&err));
        assert!(
            msg.contains(&path.display().to_string()),
            "{name}: message must name the file: {msg}"
        );
        msg
    };
    let metadata = small_metadata(3, 32);
    let card = serde_json::to_string(&metadata.model_card).expect("json");

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "missing-labels",
            with_prop(bundle::LABELS_KEY, None),
            "`kestrel.labels` is missing",
        ),
        (
            "missing-format",
            with_prop(bundle::FORMAT_KEY, None),
            "`kestrel.format` is missing",
        ),
        (
            "bad-json",
            with_prop(bundle::LABELS_KEY, Some("[\"a\", ")),
            "`kestrel.labels` is malformed",
        ),
        (
            "bad-spec",
            with_prop(bundle::PREPROCESS_KEY, Some("{\"width\": 32}")),
            "`kestrel.preprocess` is malformed",
        ),
        (
            "future-format",
            with_prop(bundle::FORMAT_KEY, Some("99")),
            "format `99` is not supported",
        ),
        (
            "empty-labels",
            with_prop(bundle::LABELS_KEY, Some("[]")),
            "`kestrel.labels` is empty",
        ),
        (
            "dup-labels",
            with_prop(bundle::LABELS_KEY, Some("[\"a\",\"b\",\"a\"]")),
            "names `a` twice",
        ),
        (
            "label-count",
            with_prop(
                bundle::MODEL_CARD_KEY,
                Some(&card.replace("\"classes\":3", "\"classes\":4")),
            ),
            "says 4 classes",
        ),
        (
            "outputs",
            {
                let mut p =
                    pb::ModelProto::decode(with_prop(bundle::LABELS_KEY, Some("[\"a\",\"b\",\"c\",\"d\"]")).as_slice())
                        .expect("decode");
                for e in &mut p.metadata_props {
                    if e.key == bundle::MODEL_CARD_KEY {
                        e.value = card.replace("\"classes\":3", "\"classes\":4");
                    }
                }
                p.encode_to_vec()
            },
            "outputs 3 scores but `kestrel.labels` has 4",
        ),
        (
            "input-shape",
            with_prop(
                bundle::PREPROCESS_KEY,
                Some(&serde_json::to_string(&kestrel_runtime::PreprocessSpec::efficientnet_lite(48)).expect("json")),
            ),
            "describes [1, 3, 48, 48]",
        ),
        (
            "zero-std",
            with_prop(
                bundle::PREPROCESS_KEY,
                Some(
                    &serde_json::to_string(&kestrel_runtime::PreprocessSpec {
                        std: [128.0, 0.0, 128.0],
                        ..kestrel_runtime::PreprocessSpec::efficientnet_lite(32)
                    })
                    .expect("json"),
                ),
            ),
            "std[1] = 0 must be finite and non-zero",
        ),
        ("not-onnx", b"this is not a model".to_vec(), "is not a valid ONNX file"),
        (
            "truncated",
            std::fs::read(&good).expect("read")[..5000].to_vec(),
            "is not a valid ONNX file",
        ),
    ];
    let mut messages = std::collections::HashSet::new();
    for (name, bytes, expected) in cases {
        let msg = load(&format!("{name}.onnx"), &bytes);
        assert!(msg.contains(expected), "{name}: expected `{expected}` in: {msg}");
        assert!(messages.insert(msg.clone()), "{name}: message not specific: {msg}");
    }

    let missing = dir.path().join("nope.onnx");
    let err = Classifier::load(&missing, &LoadOptions::default()).expect_err("missing file");
    assert!(
        matches!(err, ClassifierError::Bundle(BundleError::Read { .. })),
        "{err}"
    );

    // The reader does not depend on the loader: a plain Bundle::read sees the same errors.
    let err = Bundle::read(&dir.path().join("label-count.onnx")).expect_err("read");
    assert!(matches!(
        err,
        BundleError::Contract {
            source: ContractError::CardClasses { card: 4, labels: 3 },
            ..
        }
    ));
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![];
    let mut source = err.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

#[test]
fn missing_assets_name_the_fix() {
    let err = assets::path(Path::new("weights/not-there.pth")).expect_err("missing");
    assert!(err.to_string().contains("scripts/fetch-assets.sh"));
}

/// The wgpu backend (Mesa's lavapipe where there is no GPU) computes what flex computes, and a
/// short two-phase fit runs on it. CI installs mesa-vulkan-drivers (scripts/test.sh).
#[test]
fn wgpu_backend_matches_flex_and_trains() {
    use kestrel_trainer::fit;
    use kestrel_trainer::progress::Progress;

    let spec = kestrel_runtime::PreprocessSpec::efficientnet_lite(64);
    let photos = [sample("chelsea.png"), sample("coffee.png")];
    let logits = |backend: Backend| {
        let device = backend.device();
        let (model, _) = pretrained::load_imagenet(&device, 64).expect("pretrained");
        let input = batch::images_to_tensor(&photos, &spec, &device).expect("batch");
        model.forward(input).into_data().try_into_vec::<f32>().expect("logits")
    };
    println!("wgpu adapter: {}", Backend::Wgpu.describe());
    let (gpu, cpu) = (logits(Backend::Wgpu), logits(Backend::Flex));
    let diff = gpu.iter().zip(&cpu).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("wgpu ↔ flex max |Δlogit| on 2 photos at 64 px: {diff:.2e}");
    assert!(diff < 1e-2, "wgpu and flex disagree: {diff}");
    assert_eq!(top1(&gpu[..1000]), top1(&cpu[..1000]));

    // The same run as the ndarray test below, plus one fine-tuning epoch so the backward pass
    // runs on wgpu too: the accuracy must land in the same band.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = kestrel_e2e::sample_photo_run(dir.path(), Backend::Wgpu, 1).expect("sample data");
    let fitted = fit::fit(&config, false, &Progress::plain()).expect("fit on wgpu");
    assert_eq!(fitted.history.len(), 5);
    assert!(
        fitted
            .history
            .iter()
            .all(|r| r.train_loss.is_finite() && r.val_loss.is_finite())
    );
    println!("wgpu: val top-1 {:.1}%", 100.0 * fitted.validation.top1);
    assert!(fitted.validation.top1 >= 0.9, "{:?}", fitted.validation);
    let saved = kestrel_trainer::config::FitConfig::load(&dir.path().join("run/config.toml")).expect("config");
    assert_eq!(saved.backend, Backend::Wgpu);
}

/// Messy folders: a corrupt file is skipped and counted; grey, RGBA and 16-bit images are used.
/// The phase-1 feature cache gives the logits the full model gives.
#[test]
fn dataset_edge_cases_and_the_feature_cache() {
    use kestrel_trainer::config::FitConfig;
    use kestrel_trainer::fit;
    use kestrel_trainer::progress::Progress;

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("photos");
    kestrel_trainer::sample_data::make_photo_folder(&data, 6, 64, 11).expect("sample data");
    std::fs::write(data.join("cat/corrupt.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg").expect("write");
    let coffee = load_image(&data.join("coffee/coffee-000.jpg")).expect("decode");
    coffee.to_luma8().save(data.join("coffee/grey.png")).expect("grey");
    coffee.to_rgba8().save(data.join("coffee/rgba.png")).expect("rgba");
    DynamicImage::ImageRgb16(coffee.to_rgb16())
        .save(data.join("coffee/deep.png"))
        .expect("16-bit");

    let config = FitConfig {
        data,
        out: dir.path().join("run"),
        backend: Backend::Flex,
        image_size: 64,
        batch_size: 8,
        val_fraction: 0.3,
        feature_views: 0,
        ..FitConfig::default()
    };
    let prepared = fit::prepare(&config).expect("prepare");
    assert_eq!(prepared.skipped.len(), 1, "{:?}", prepared.skipped);
    assert!(prepared.skipped[0].path.ends_with("cat/corrupt.jpg"));
    assert_eq!(
        prepared.train.images.len() + prepared.val.len(),
        3 * 6 + 3,
        "grey, RGBA, 16-bit all used"
    );

    let device = Backend::Flex.device();
    let model = fit::pretrained_model(&config, 3, &device).expect("model");
    let features = fit::head_features(&config, &model, &prepared, &Progress::plain()).expect("features");
    let head = model.valid();
    let n = prepared.val.len();
    let via_cache = head
        .head(burn::tensor::Tensor::<2>::from_data(
            burn::tensor::TensorData::new(features.val.clone(), [n, kestrel_trainer::efficientnet::FEATURES]),
            &device,
        ))
        .into_data()
        .try_into_vec::<f32>()
        .expect("logits");
    let direct = fit::predict(&model, &prepared.spec, &prepared.val.data, 4, &device).expect("predict");
    let diff = via_cache
        .iter()
        .zip(&direct)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff < 1e-4,
        "cached features → head differs from the full model by {diff}"
    );
}

/// The head phase alone, on the ndarray backend, learns the sample classes.
#[test]
fn ndarray_head_training_reaches_high_accuracy() {
    use kestrel_trainer::fit;
    use kestrel_trainer::progress::Progress;

    let dir = tempfile::tempdir().expect("tempdir");
    let config = kestrel_e2e::sample_photo_run(dir.path(), Backend::Ndarray, 0).expect("sample data");
    let fitted = fit::fit(&config, false, &Progress::plain()).expect("fit on ndarray");
    println!("ndarray head-only: val top-1 {:.1}%", 100.0 * fitted.validation.top1);
    assert!(fitted.validation.top1 >= 0.9, "{:?}", fitted.validation);
}

#[test]
fn corrupted_checkpoints_are_refused_clearly() {
    use kestrel_trainer::checkpoint;
    use kestrel_trainer::efficientnet::EfficientNet;
    let dir = tempfile::tempdir().expect("tempdir");
    let device = Backend::Flex.device();
    let model = EfficientNet::lite0(&device).with_classes(2, &device);
    let state = checkpoint::RunState {
        phase: checkpoint::Phase::Head,
        epochs_done: 1,
        best: Some(0.5),
        epochs_without_improvement: 0,
        lr_scale: 1.0,
        stopped_early: false,
        history: vec![],
    };
    let path = dir.path().join("last.ckpt");
    checkpoint::save(&path, &state, &model, None).expect("save");
    let template = || EfficientNet::lite0(&device).with_classes(2, &device);
    assert_eq!(checkpoint::load(&path, template()).expect("load").state, state);
    let bytes = std::fs::read(&path).expect("read");
    for (name, broken) in [
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("garbage", b"hello".to_vec()),
        ("flipped", {
            let mut b = bytes.clone();
            b[20] ^= 0xff;
            b
        }),
    ] {
        let p = dir.path().join(format!("{name}.ckpt"));
        std::fs::write(&p, broken).expect("write");
        let err = checkpoint::load(&p, template()).err().expect(name).to_string();
        assert!(
            err.contains("is corrupt") && err.contains(&format!("{name}.ckpt")),
            "{name}: {err}"
        );
    }
}

/// Weight-only int8 of the shipped ImageNet bundle: a quarter of the size, every Conv/Gemm
/// weight stored as int8, and the sample photos keep their top-1 class.
#[test]
fn weight_only_int8_bundle_keeps_its_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("imagenet.int8.onnx");
    let n = kestrel_trainer::quantize::quantize_bundle(&shipped_imagenet_bundle(), &out).expect("quantize");
    assert_eq!(n, 50, "49 convolutions and the classifier");
    let (float_size, int8_size) = (
        std::fs::metadata(shipped_imagenet_bundle()).expect("float").len(),
        std::fs::metadata(&out).expect("int8").len(),
    );
    println!("weight-only int8: {float_size} → {int8_size} bytes");
    assert!(int8_size * 10 < float_size * 3, "{int8_size} vs {float_size}");

    let bundle = Bundle::read(&out).expect("valid bundle");
    assert_eq!(bundle.metadata.model_card.precision, "int8-weight-only");
    let graph = bundle.proto.graph.as_ref().expect("graph");
    let int8 = graph
        .initializer
        .iter()
        .filter(|t| t.data_type == pb::tensor_proto::DataType::Int8 as i32)
        .count();
    assert_eq!(int8, 50);
    assert_eq!(
        graph.node.iter().filter(|n| n.op_type == "DequantizeLinear").count(),
        50
    );

    let float = Classifier::load(&shipped_imagenet_bundle(), &LoadOptions::default()).expect("float");
    let int8 = Classifier::load(&out, &LoadOptions::default()).expect("int8");
    for name in [
        "chelsea.png",
        "coffee.png",
        "astronaut.png",
        "rocket.jpg",
        "motorcycle_left.png",
    ] {
        let img = sample(name);
        let (a, b) = (float.classify(&img).expect("float"), int8.classify(&img).expect("int8"));
        let (ta, tb) = (a.top_k(float.labels(), 1), b.top_k(int8.labels(), 1));
        assert_eq!(ta[0].index, tb[0].index, "{name}: float {ta:?} vs int8 {tb:?}");
        let diff = a
            .probabilities
            .iter()
            .zip(&b.probabilities)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 0.05, "{name}: probabilities moved by {diff}");
    }
}
