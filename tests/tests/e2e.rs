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
    let with_graph = |edit: &dyn Fn(&mut pb::GraphProto)| {
        let mut p = proto.clone();
        edit(p.graph.as_mut().expect("graph"));
        p.encode_to_vec()
    };
    let load = |name: &str, bytes: &[u8]| -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let err = Classifier::load(&path, &LoadOptions::default()).expect_err(name);
        let msg = kestrel_runtime::error_report(&err);
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
            "nan-weights",
            with_graph(&|graph| {
                let t = graph
                    .initializer
                    .iter_mut()
                    .find(|t| t.data_type == pb::tensor_proto::DataType::Float as i32 && t.raw_data.len() >= 8)
                    .expect("a float initializer");
                t.raw_data[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
            }),
            "holds NaN at index 1",
        ),
        (
            "dangling-output",
            with_graph(&|graph| graph.output[0].name = "nowhere".into()),
            "the graph's output names tensor `nowhere`",
        ),
        (
            "dangling-input",
            with_graph(&|graph| {
                let last = graph.node.len() - 1;
                graph.node[last].input[0] = "ghost".into();
            }),
            "names tensor `ghost`, which no graph input",
        ),
        (
            // fuzz/ found this: tract's Flatten indexes the shape by the axis unchecked, and
            // panics. The runtime catches it; the file is refused like any other.
            "flatten-axis",
            with_graph(&|graph| {
                let flatten = graph
                    .node
                    .iter_mut()
                    .find(|n| n.op_type == "Flatten")
                    .expect("a Flatten node");
                flatten.attribute.iter_mut().find(|a| a.name == "axis").expect("axis").i = 51;
            }),
            "the graph is malformed (tract panicked: range end index 51 out of range",
        ),
        (
            "huge-input",
            with_prop(
                bundle::PREPROCESS_KEY,
                Some(&serde_json::to_string(&kestrel_runtime::PreprocessSpec::efficientnet_lite(5000)).expect("json")),
            ),
            "input size 5000x5000 is over 4096 per side",
        ),
        (
            "plain-onnx",
            {
                let mut p = proto.clone();
                p.metadata_props.clear();
                p.encode_to_vec()
            },
            "is not a Kestrel bundle",
        ),
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
    let prepared = fit::prepare(&config, &Progress::plain()).expect("prepare");
    assert_eq!(prepared.skipped.len(), 1, "{:?}", prepared.skipped);
    assert!(prepared.skipped[0].path.ends_with("cat/corrupt.jpg"));
    assert_eq!(
        prepared.train.len() + prepared.val.len(),
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
    let direct = fit::predict(&model, &prepared.spec, &prepared.val, 4, &device).expect("predict");
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
        // One weight byte, halfway through the model section: lengths and magic stay valid, and
        // Burn would load the file as a different model; only the checksum can tell.
        ("weight", {
            let mut b = bytes.clone();
            let json_len = u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")) as usize;
            let model_at = 24 + json_len;
            let model_len = u64::from_le_bytes(b[model_at..model_at + 8].try_into().expect("8 bytes")) as usize;
            b[model_at + 8 + model_len / 2] ^= 0x01;
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
        if name == "weight" {
            assert!(err.contains("checksum mismatch"), "{err}");
        }
    }
}

/// The shipped int8 bundle: rebuilt by its recipe it is byte-identical to the committed file,
/// a quarter of the float size, every Conv/Gemm weight int8, the dequantisation folded away by
/// tract (so it runs float kernels: the weight-only promise), and it keeps the photos' answers.
#[test]
fn shipped_int8_bundle_is_reproducible_and_keeps_its_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("imagenet.int8.onnx");
    let outcome = pretrained::quantize_imagenet(&shipped_imagenet_bundle(), &out).expect("quantize");
    let chosen = outcome.chosen().expect("passes the gate");
    println!(
        "shipped int8: {} · {}",
        chosen.label,
        kestrel_trainer::quantize::gate::summary(&outcome)
    );
    assert!(
        chosen.evaluation.images >= 10,
        "too few confident held-out images to mean anything"
    );
    let committed = kestrel_e2e::repo_root().join("models/efficientnet-lite0-imagenet.int8.onnx");
    assert!(
        std::fs::read(&committed).expect("models/efficientnet-lite0-imagenet.int8.onnx")
            == std::fs::read(&out).expect("fresh"),
        "models/efficientnet-lite0-imagenet.int8.onnx is stale: regenerate it with \
         `cargo run -p kestrel-trainer -- export-imagenet`"
    );
    let (float_size, int8_size) = (
        std::fs::metadata(shipped_imagenet_bundle()).expect("float").len(),
        std::fs::metadata(&out).expect("int8").len(),
    );
    println!("weight-only int8: {float_size} → {int8_size} bytes");
    assert!(int8_size * 10 < float_size * 3, "{int8_size} vs {float_size}");

    let bundle = Bundle::read(&out).expect("valid bundle");
    let card = &bundle.metadata.model_card;
    assert_eq!(card.precision, "int8-weight-only");
    assert_eq!(card.metrics.get("held_out_agreement_with_float"), Some(&1.0));
    assert!(
        card.notes.as_deref().unwrap_or("").contains("weight-only"),
        "{:?}",
        card.notes
    );
    let graph = bundle.proto.graph.as_ref().expect("graph");
    let int8 = graph
        .initializer
        .iter()
        .filter(|t| t.data_type == pb::tensor_proto::DataType::Int8 as i32)
        .count();
    assert_eq!(int8, 50, "49 convolutions and the classifier");

    let float = Classifier::load(&shipped_imagenet_bundle(), &LoadOptions::default()).expect("float");
    let int8 = Classifier::load(&out, &LoadOptions::default()).expect("int8");
    let ops = int8.op_names();
    println!("weight-only plan: {} ops: {ops:?}", ops.len());
    // The float plan's kernels and nothing else: tract folds each Conv weight's dequantisation at
    // load but left the classifier's (5 MB as f32, over its 4 MiB fold budget) to run on every
    // inference, ~5 ms of 30 on 1 thread; Kestrel folds every constant dequantisation at load
    // (int8::lower::fold_constant_dequantize), for those 5 MB of memory.
    let float_ops = float.op_names();
    let count = |ops: &[String], name: &str| ops.iter().filter(|o| *o == name).count();
    for kernel in ["OptMatMul", "DepthWiseConv", "LazyIm2col", "OptBinChain(Max+Min)"] {
        assert_eq!(count(&ops, kernel), count(&float_ops, kernel), "{kernel}: {ops:?}");
    }
    assert!(
        !ops.iter().any(|o| o.contains("Quant")),
        "quantisation ops at run time: {ops:?}"
    );
    assert_eq!(count(&ops, "Cast"), 0, "nothing decodes int8 at run time: {ops:?}");
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

/// Activation-quantised schemes on the ImageNet bundle, calibrated on the sample photos: each
/// compiles to integer kernels in tract (no silent fall-back to float), and still names the cat.
#[test]
fn calibrated_int8_schemes_run_integer_kernels_and_name_the_cat() {
    use kestrel_trainer::quantize::{self, Options, RangeMethod, Scheme, calibrate, inputs};
    let path = shipped_imagenet_bundle();
    let float = Bundle::read(&path).expect("float bundle");
    let options = inputs::InputOptions {
        views: 2,
        val_fraction: 0.3,
        ..inputs::InputOptions::default()
    };
    let photos = assets::photos().expect("photos: run scripts/fetch-assets.sh");
    let data = inputs::from_folder(&photos, &float.metadata.labels, &float.metadata.preprocess, &options)
        .expect("calibration images");
    let shape = float.metadata.preprocess.batch_shape(1);
    let calibration = calibrate::calibrate(&float.proto, shape, &data.calibration, &path).expect("calibrate");
    let float_ops = Classifier::from_bundle(float.clone(), &path, &LoadOptions::default())
        .expect("float")
        .op_names();
    println!("float plan: {float_ops:?}");
    let chelsea = sample("chelsea.png");
    for scheme in [Scheme::Int8, Scheme::QOperator, Scheme::Mixed, Scheme::Qdq] {
        let options = Options {
            method: RangeMethod::Percentile(quantize::gate::PERCENTILE),
            ..Options::new(scheme)
        };
        let (bundle, done) = quantize::quantize(&float, Some(&calibration), &options, &path).expect("quantize");
        let int8 = Classifier::from_bundle(bundle.clone(), &path, &LoadOptions::default()).expect("int8 bundle loads");
        let ops = int8.op_names();
        println!("{scheme}: {done:?}; plan {ops:?}");
        assert_ne!(ops, float_ops, "{scheme}: tract runs the float plan");
        // What each scheme promises, read off tract's optimised plan: an integer Conv shows as
        // its u8 input moved to i8 for tract's i8 matmul kernels (OffsetU8asI8) and a
        // requantisation (Scale); a float depthwise Conv as tract's f32 DepthWiseConv; QDQ is
        // simulated in f32 (Quantize/Dequantize ops around float kernels, no integer matmul).
        let count = |name: &str| ops.iter().filter(|o| *o == name).count();
        if scheme == Scheme::Int8 {
            int8_plan_is_all_integer(&int8, &ops, done.int8_convs);
            int8_kernels_agree_with_tracts_simulation(&int8, bundle, &path);
            let top = int8.classify(&chelsea).expect("classify").top_k(int8.labels(), 3);
            println!("{scheme}: chelsea → {top:?}");
            assert!(CAT_CLASSES.contains(&top[0].index), "{scheme}: chelsea → {top:?}");
            continue;
        }
        let (integer, float_depthwise) = match scheme {
            Scheme::QOperator => (49, 0),
            Scheme::Mixed => (33, 16),
            _ => (0, 16),
        };
        assert_eq!(done.int8_convs, if scheme == Scheme::Qdq { 49 } else { integer });
        assert_eq!(count("OffsetU8asI8"), integer, "{scheme}: integer convs in {ops:?}");
        assert_eq!(count("Scale"), integer, "{scheme}: requantisations in {ops:?}");
        assert_eq!(
            count(&format!("{}.depthwise", kestrel_runtime::int8::f32_conv::OP)),
            float_depthwise,
            "{scheme}: float depthwise on Kestrel's kernel in {ops:?}"
        );
        assert_eq!(count("DepthWiseConv"), 0, "{scheme}: tract's f32 depthwise in {ops:?}");
        if scheme == Scheme::Qdq {
            assert!(count("QuantizeLinearU8") >= 49, "{scheme}: {ops:?}");
        }
        let top = int8.classify(&chelsea).expect("classify").top_k(int8.labels(), 3);
        println!("{scheme}: chelsea → {top:?}");
        assert!(CAT_CLASSES.contains(&top[0].index), "{scheme}: chelsea → {top:?}");
    }
}

/// The int8 scheme's plan, read off tract: every Conv and residual Add of Lite0 runs on Kestrel's
/// integer ops (16 depthwise, 32 pointwise, the stem through im2col; 9 adds), and nothing of
/// tract's own convolution machinery is left (no im2col, no f32 depthwise, no matmul but the
/// float classifier's). Fails if a tract upgrade or a change in the file's form stops the lowering.
fn int8_plan_is_all_integer(int8: &Classifier, ops: &[String], written: usize) {
    use kestrel_runtime::int8::ops::{ADD, CONV, QUANTIZE};
    let count = |name: &str| ops.iter().filter(|o| *o == name).count();
    let lowered = int8.int8();
    assert_eq!(
        (lowered.int8_convs, lowered.int8_adds, lowered.other_convs),
        (written, 9, 0),
        "{ops:?}"
    );
    assert_eq!(count(&format!("{CONV}.depthwise")), 16, "{ops:?}");
    assert_eq!(count(&format!("{CONV}.pointwise")), 32, "{ops:?}");
    assert_eq!(count(&format!("{CONV}.im2col")), 1, "{ops:?}");
    assert_eq!(count(ADD), 9, "{ops:?}");
    assert_eq!(
        (count(QUANTIZE), count("QuantizeLinearI8")),
        (1, 0),
        "the input is quantised by Kestrel's kernel: {ops:?}"
    );
    let tracts: Vec<&String> = ops
        .iter()
        .filter(|o| o.contains("Conv") && !o.starts_with(CONV) || o.contains("Im2col") || o.contains("DepthWise"))
        .collect();
    assert!(tracts.is_empty(), "tract still runs {tracts:?} in {ops:?}");
    assert_eq!(count("OptMatMul"), 1, "only the float classifier is a matmul: {ops:?}");
}

/// The same int8 file through Kestrel's kernels and through tract alone (which simulates QDQ in
/// f32): integer accumulation is exact where f32 rounds, so a few activations land one step
/// apart; the logits must still agree closely and name the same class.
fn int8_kernels_agree_with_tracts_simulation(int8: &Classifier, bundle: Bundle, path: &Path) {
    let options = LoadOptions {
        int8_kernels: false,
        ..LoadOptions::default()
    };
    let simulated = Classifier::from_bundle(bundle, path, &options).expect("tract alone");
    assert_eq!(simulated.int8().int8_convs, 0);
    let photos = assets::photos().expect("photos");
    let (mut worst, mut agree, mut n) = (0f32, 0, 0);
    for entry in std::fs::read_dir(&photos).expect("photos").flatten() {
        let Ok(image) = load_image(&entry.path()) else { continue };
        let input = preprocess(&image, &int8.metadata().preprocess).expect("preprocess");
        let ours = int8.logits(&input).expect("int8 kernels");
        let theirs = simulated.logits(&input).expect("tract");
        let range = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        worst = worst.max(diff / range);
        agree += usize::from(top1(&ours) == top1(&theirs));
        n += 1;
    }
    println!(
        "int8 kernels vs tract's f32 simulation: top-1 agree on {agree}/{n} photos, max |Δlogit| {:.3} of the logit range",
        worst
    );
    assert!(n >= 10, "{n} photos");
    assert!(agree * 10 >= n * 9, "top-1 agrees on {agree}/{n}");
    // Measured 0.036 on these photos (this machine, x86-64 AVX2); about twice that as the bound.
    assert!(worst < 0.08, "max |Δlogit| {worst} of the range");
}

/// Float bundles run their convolutions on Kestrel's kernels: the 16 depthwise ones everywhere
/// (none left on tract's `DepthWiseConv`), the 32 pointwise ones where the CPU has AVX-512; and
/// the logits match tract's own float plan on every photo: same top-1, max |Δlogit| within f32
/// rounding of a different summation order.
#[test]
fn float_convolutions_run_on_kestrels_kernels_and_match_tract() {
    use kestrel_runtime::int8::f32_conv::OP;
    let path = shipped_imagenet_bundle();
    let ours = Classifier::load(&path, &LoadOptions::default()).expect("float bundle");
    let ops = ours.op_names();
    let count = |name: &str| ops.iter().filter(|o| *o == name).count();
    let pointwise = if kestrel_runtime::int8::kernels::gemm_f32_available() {
        32
    } else {
        0
    };
    assert_eq!(
        (count(&format!("{OP}.depthwise")), count("DepthWiseConv")),
        (16, 0),
        "{ops:?}"
    );
    assert_eq!(count(&format!("{OP}.pointwise")), pointwise, "{ops:?}");
    assert_eq!((ours.int8().f32_depthwise, ours.int8().f32_pointwise), (16, pointwise));
    let options = LoadOptions {
        int8_kernels: false,
        ..LoadOptions::default()
    };
    let tract = Classifier::load(&path, &options).expect("tract alone");
    assert!(tract.op_names().iter().all(|o| !o.starts_with(OP)));
    let photos = assets::photos().expect("photos: run scripts/fetch-assets.sh");
    let (mut worst, mut n) = (0f32, 0);
    for entry in std::fs::read_dir(&photos).expect("photos").flatten() {
        let Ok(image) = load_image(&entry.path()) else { continue };
        let input = preprocess(&image, &ours.metadata().preprocess).expect("preprocess");
        let (a, b) = (ours.logits(&input).expect("ours"), tract.logits(&input).expect("tract"));
        let range = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = a.iter().zip(&b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        worst = worst.max(diff / range);
        assert_eq!(top1(&a), top1(&b), "{}", entry.path().display());
        n += 1;
    }
    println!("float: Kestrel's convolutions vs tract's, {n} photos: max |Δlogit| {worst:.2e} of the logit range");
    assert!(n >= 10, "{n} photos");
    // f32 sums in another order: a few ulps per layer through 49 layers. Measured below 1e-5
    // here; a wrong tap, stride, weight or bias is off by far more than the bound.
    assert!(worst < 1e-4, "max |Δlogit| {worst} of the range");
}

/// A model trained in the test, quantised with calibration on its own training split: the
/// int8 bundle passes the gate and agrees with float on fresh images; a calibration on one
/// constant image is refused by the gate.
#[test]
fn trained_model_quantises_within_the_gate_and_broken_calibration_is_refused() {
    use kestrel_trainer::quantize::{self, Scheme, gate, inputs};
    use kestrel_trainer::{fit, progress::Progress, report};

    let dir = tempfile::tempdir().expect("tempdir");
    let config = kestrel_e2e::sample_photo_run(dir.path(), Backend::Flex, 0).expect("sample data");
    let fitted = fit::fit(&config, false, &Progress::plain()).expect("fit");
    let run = fit::RunDir(config.out.clone());
    report::finish(&run, &fitted, "test").expect("export");
    let float = Bundle::read(&run.model()).expect("float bundle");
    let data = inputs::from_run(
        &fitted.data.train,
        &fitted.data.val,
        &fitted.data.dataset.classes,
        &fitted.data.spec,
        512,
        config.seed,
    )
    .expect("calibration inputs");
    let request = gate::Request {
        scheme: Scheme::QOperator,
        per_channel: true,
        method: None,
        max_drop: 1.0,
        fallbacks: true,
    };
    let out = dir.path().join("model.int8.onnx");
    let outcome = quantize::calibrate_and_write(&float, &run.model(), &data, &request, &out, |_| {}).expect("quantize");
    println!("trained model, qoperator: {}", gate::summary(&outcome));
    let chosen = outcome.chosen().expect("a candidate within 1 pt");
    assert!(chosen.drop_pts <= 1.0);
    let card = Bundle::read(&out).expect("int8 bundle").metadata.model_card;
    assert_eq!(card.precision, "int8-qoperator");
    assert_eq!(card.metrics.get("val_top1"), Some(&chosen.evaluation.top1));
    assert!(card.metrics.contains_key("float_val_top1"));

    // Fresh images of the same classes: int8 and float agree on at least 90% of top-1 answers.
    let fresh = dir.path().join("fresh");
    kestrel_trainer::sample_data::make_photo_folder(&fresh, 10, 80, 77).expect("fresh photos");
    let (f, q) = (
        Classifier::load(&run.model(), &LoadOptions::default()).expect("float"),
        Classifier::load(&out, &LoadOptions::default()).expect("int8"),
    );
    let (mut agree, mut total) = (0, 0);
    for class in std::fs::read_dir(&fresh).expect("fresh").flatten() {
        for file in std::fs::read_dir(class.path()).expect("class").flatten() {
            let img = load_image(&file.path()).expect("decode");
            let (a, b) = (f.classify(&img).expect("float"), q.classify(&img).expect("int8"));
            agree += usize::from(a.top_k(f.labels(), 1)[0].index == b.top_k(q.labels(), 1)[0].index);
            total += 1;
        }
    }
    println!("fresh images: int8 agrees with float on {agree}/{total}");
    assert!(total >= 30 && agree * 10 >= total * 9, "{agree}/{total}");

    // One constant grey image as the whole calibration set: ranges collapse, the gate refuses.
    let grey = image::RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
    let mut one = kestrel_trainer::store::Store::in_memory();
    one.push_image(&grey).expect("in memory");
    let grey_set = kestrel_trainer::images::DecodedSet {
        images: one,
        labels: vec![0],
        skipped: Vec::new(),
    };
    let broken = inputs::from_run(
        &grey_set,
        &fitted.data.val,
        &fitted.data.dataset.classes,
        &fitted.data.spec,
        1,
        config.seed,
    )
    .expect("calibration inputs");
    let refused = quantize::calibrate_and_write(
        &float,
        &run.model(),
        &broken,
        &gate::Request {
            fallbacks: false,
            method: Some(quantize::RangeMethod::MinMax),
            ..request
        },
        &dir.path().join("broken.int8.onnx"),
        |_| {},
    )
    .expect("search runs");
    println!("constant-image calibration: {}", gate::summary(&refused));
    assert!(refused.chosen.is_none(), "the gate let a broken calibration through");
    assert!(
        !dir.path().join("broken.int8.onnx").exists(),
        "nothing is written on refusal"
    );
}

/// The bad-input corpus through the trainer's decode-once path (scaled JPEG decoding, the
/// on-disk cache): every decodable file comes back upright at the size training asked for,
/// everything else is skipped by name, and nothing panics. 24 px asks the 64×48 JPEGs for a
/// half-scale decode.
#[test]
fn the_training_decoder_agrees_with_the_runtime_on_the_bad_input_corpus() {
    use kestrel_e2e::corpus::{self, Expect};
    use kestrel_trainer::dataset::Sample;
    use kestrel_trainer::images::{Jpeg, decode_for_training};
    use kestrel_trainer::progress::Progress;
    use kestrel_trainer::store::Store;

    let dir = tempfile::tempdir().expect("tempdir");
    let cases = corpus::images(&dir.path().join("corpus")).expect("corpus");
    let samples: Vec<Sample> = cases
        .iter()
        .enumerate()
        .map(|(label, c)| Sample {
            path: c.path.clone(),
            label,
        })
        .collect();
    let side = 24;
    let store = Store::on_disk(&dir.path().join("cache")).expect("cache");
    let set = decode_for_training(&samples, side, 1 << 24, Jpeg::Scaled, store, &Progress::plain()).expect("decoding");
    for (label, case) in cases.iter().enumerate() {
        let stored = set.labels.iter().position(|&l| l == label);
        let skipped = set.skipped.iter().find(|s| s.path == case.path);
        match (&case.expect, stored, skipped) {
            (Expect::Decodes { width, height }, Some(i), None) => {
                let image = set.images.image(i).expect("cached image");
                let short = (*width).min(*height);
                let expected = if short <= side {
                    (*width, *height)
                } else {
                    let scale = side as f64 / short as f64;
                    (
                        ((*width as f64 * scale).round() as u32).max(1),
                        ((*height as f64 * scale).round() as u32).max(1),
                    )
                };
                assert_eq!(image.dimensions(), expected, "{}", case.kind);
                if case.kind.starts_with("EXIF-rotated") {
                    // Upright: the original's bottom-left corner (green high, red low) is top-left.
                    let px = image.get_pixel(0, 0).0;
                    assert!(px[1] > 180 && px[0] < 60, "rotated top-left {px:?}");
                }
            }
            (Expect::Refused(_), None, Some(s)) => assert!(!s.reason.is_empty(), "{}", case.kind),
            (expect, stored, skipped) => {
                panic!(
                    "{}: expected {expect:?}, stored {stored:?}, skipped {skipped:?}",
                    case.kind
                )
            }
        }
    }
}

/// Every kind in the bad-input corpus, through the runtime's decoder and preprocessing and the
/// classifier: a decodable file gives an upright image of the right size and finite
/// probabilities; anything else is an error that names the file. Nothing panics.
#[test]
fn bad_image_corpus_decodes_upright_or_is_refused_by_name() {
    use kestrel_e2e::corpus::{self, Expect};
    use kestrel_runtime::decode::{DecodeError, load_image_with_limit};

    let dir = tempfile::tempdir().expect("tempdir");
    let cases = corpus::images(dir.path()).expect("corpus");
    assert!(cases.len() >= 20, "{} kinds", cases.len());
    let classifier = Classifier::load(
        &kestrel_e2e::repo_root().join("models/efficientnet-lite0-imagenet.int8.onnx"),
        &LoadOptions::default(),
    )
    .expect("shipped int8 bundle");
    for case in &cases {
        let result = load_image(&case.path);
        match (&case.expect, result) {
            (Expect::Decodes { width, height }, Ok(img)) => {
                assert_eq!((img.width(), img.height()), (*width, *height), "{}", case.kind);
                let p = classifier.classify(&img).expect(case.kind);
                assert!(
                    p.probabilities.iter().all(|v| v.is_finite()),
                    "{}: non-finite output",
                    case.kind
                );
            }
            (Expect::Refused(why), Err(err)) => {
                let msg = kestrel_runtime::error_report(&err);
                assert!(
                    msg.contains(why) && msg.contains(&case.path.display().to_string()),
                    "{}: expected `{why}` and the path in: {msg}",
                    case.kind
                );
            }
            (expect, got) => panic!("{}: expected {expect:?}, got {got:?}", case.kind),
        }
        println!("bad-input corpus: {:<50} {:?}", case.kind, case.expect);
    }

    let find = |kind: &str| {
        let case = cases.iter().find(|c| c.kind.starts_with(kind)).expect(kind);
        load_image(&case.path).expect(kind).to_rgb8()
    };
    // Orientation 6 is "rotate 90° clockwise to display": the original's bottom-left corner
    // (green high, red low in the test card) becomes the top-left.
    let upright = find("EXIF-rotated");
    let px = upright.get_pixel(0, 0).0;
    assert!(px[1] > 200 && px[0] < 40, "rotated top-left {px:?}");
    // Full cyan ink, no black: red off, green and blue full.
    assert_eq!(find("CMYK").get_pixel(3, 3).0, [0, 255, 255]);
    assert_eq!(find("palette").get_pixel(0, 0).0, [255, 0, 0]);
    assert_eq!(find("palette").get_pixel(0, 20).0, [0, 0, 255]);

    // The pixel limit is the caller's: a plain 64x48 photo is refused under a 1000-pixel limit,
    // from its header, before decoding.
    let photo = &cases[0];
    let err = load_image_with_limit(&photo.path, 1000).expect_err("over the limit");
    assert!(
        matches!(
            err,
            DecodeError::TooLarge {
                width: 64,
                height: 48,
                limit: 1000,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("--max-pixels"), "{err}");
}

/// A training folder holding the whole corpus, under a class name with spaces and non-ASCII,
/// beside symlink loops: the scan finishes, the class keeps its name, every refused kind is
/// skipped and counted with its path, and every decodable kind is used.
#[test]
fn a_dataset_of_bad_files_skips_and_counts_each_one() {
    use kestrel_e2e::corpus::{self, Expect};
    use kestrel_trainer::config::FitConfig;
    use kestrel_trainer::fit;

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("photos");
    let odd = data.join("chat noir 猫");
    let cases = corpus::images(&odd).expect("corpus");
    std::fs::create_dir_all(data.join("dog")).expect("mkdir");
    for i in 0..8 {
        let img = corpus::card(50 + i, 40);
        std::fs::write(data.join(format!("dog/{i}.jpg")), corpus::jpeg_bytes(&img)).expect("write");
    }
    // A loop back to the dataset root (a folder: not an image, ignored), a link to its own
    // folder with an image name (a directory: ignored), and a link to itself (ELOOP: skipped).
    std::os::unix::fs::symlink(&data, odd.join("loop")).expect("symlink");
    std::os::unix::fs::symlink(&odd, odd.join("folder.jpg")).expect("symlink");
    std::os::unix::fs::symlink(odd.join("self.jpg"), odd.join("self.jpg")).expect("symlink");
    // A directory with an image name.
    std::fs::create_dir_all(odd.join("album.png")).expect("mkdir");

    let config = FitConfig {
        data,
        out: dir.path().join("run"),
        backend: Backend::Flex,
        image_size: 32,
        val_fraction: 0.25,
        ..FitConfig::default()
    };
    let prepared = fit::prepare(&config, &kestrel_trainer::progress::Progress::plain()).expect("prepare");
    assert_eq!(
        prepared.dataset.classes,
        vec!["chat noir 猫".to_string(), "dog".to_string()]
    );
    let refused: Vec<&Path> = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Refused(_)))
        .map(|c| c.path.as_path())
        .collect();
    let mut skipped: Vec<&Path> = prepared.skipped.iter().map(|s| s.path.as_path()).collect();
    skipped.sort();
    let mut expected: Vec<&Path> = refused.clone();
    let self_loop = odd.join("self.jpg");
    expected.push(&self_loop);
    expected.sort();
    assert_eq!(skipped, expected, "skipped: {:#?}", prepared.skipped);
    for s in &prepared.skipped {
        assert!(!s.reason.is_empty(), "{}", s.path.display());
    }
    let decodable = cases.len() - refused.len();
    assert_eq!(
        prepared.train.len() + prepared.val.len(),
        decodable + 8,
        "every decodable kind used"
    );
}

/// The fuzzer's seed bundle is a real one: it loads, and a red image scores class 0 (weights
/// `[1, 0, -1]` on the mean of R, G, B) above class 1.
#[test]
fn tiny_seed_bundle_loads_and_classifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tiny.onnx");
    std::fs::write(&path, kestrel_e2e::tiny_bundle_bytes().expect("tiny bundle")).expect("write");
    let classifier = Classifier::load(&path, &LoadOptions::default()).expect("loads");
    let red = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(9, 7, image::Rgb([255, 0, 0])));
    let p = classifier.classify(&red).expect("classify");
    assert_eq!(p.probabilities.len(), 2);
    assert!(p.probabilities[0] > 0.8, "{:?}", p.probabilities);
}
