//! The bundle contract: each way of breaking it is refused with its own message, and the
//! smallest real bundle loads.

use image::DynamicImage;
use kestrel_e2e::{export_small_bundle, small_metadata};
use kestrel_runtime::bundle::{self, Bundle, BundleError, ContractError};
use kestrel_runtime::{Classifier, ClassifierError, LoadOptions};
use prost::Message;
use tract_onnx::pb;

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

/// A bundle that fails its Burn ↔ tract check is never written: nothing at the final name and no
/// temporary file beside it (the check runs on the bundle in memory, before anything can save it).
#[test]
fn an_export_that_fails_its_check_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let device = kestrel_trainer::backend::Backend::Flex.device();
    let backbone = kestrel_trainer::model::default_backbone();
    let net = backbone.build(&device).with_classes(2, &device);
    let metadata = small_metadata(2, 32);
    let path = dir.path().join("model.onnx");
    let check = vec![vec![0.25f32; metadata.preprocess.tensor_len()]];
    // No difference is below a negative tolerance: the check must fail.
    let err = kestrel_trainer::onnx::export::checked_bundle(backbone, &net, &metadata, &path, &check, -1.0)
        .and_then(|c| c.save(&path))
        .expect_err("parity cannot pass");
    assert!(
        matches!(err, kestrel_trainer::onnx::export::ExportError::Parity { .. }),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "files left: {left:?}");
}
