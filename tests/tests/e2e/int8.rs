//! int8 bundles: the shipped one, the calibrated schemes on Kestrel's integer kernels, float
//! convolutions on Kestrel's kernels, and a trained model through the accuracy gate.

use std::path::Path;

use kestrel_e2e::shipped_imagenet_bundle;
use kestrel_runtime::bundle::Bundle;
use kestrel_runtime::{Classifier, LoadOptions, load_image, preprocess};
use kestrel_trainer::assets;
use kestrel_trainer::backend::Backend;
use kestrel_trainer::model::pretrained;

use crate::util::*;

/// The shipped int8 bundle: rebuilt by its recipe it is byte-identical to the committed file
/// (calibration, bias correction and the gate are deterministic), a quarter of the float size,
/// in the int8 form whose every Conv and Add runs on Kestrel's integer kernels, and it keeps the
/// photos' answers.
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
        chosen.report.evaluation.images >= 5,
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
    println!("int8: {float_size} → {int8_size} bytes");
    assert!(int8_size * 10 < float_size * 3, "{int8_size} vs {float_size}");

    let bundle = Bundle::read(&out).expect("valid bundle");
    let card = &bundle.metadata.model_card;
    assert_eq!(card.precision, "int8");
    assert_eq!(card.metrics.get("held_out_agreement_with_float"), Some(&1.0));
    let notes = card.notes.as_deref().unwrap_or("");
    assert!(
        notes.contains("bias-corrected") && notes.contains("integer kernels"),
        "{notes}"
    );

    let float = Classifier::load(&shipped_imagenet_bundle(), &LoadOptions::default()).expect("float");
    let int8 = Classifier::load(&out, &LoadOptions::default()).expect("int8");
    let ops = int8.op_names();
    println!("int8 plan: {} ops: {ops:?}", ops.len());
    int8_plan_is_all_integer(&int8, &ops, 49);
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
        println!(
            "{name}: {} float {:.3} int8 {:.3}, max Δp {diff:.3}",
            ta[0].label, ta[0].probability, tb[0].probability
        );
        // Measured at most 0.024 (astronaut, rocket, motorcycle); about twice that as the bound.
        assert!(diff < 0.05, "{name}: probabilities moved by {diff}");
    }
}

/// The weight-only form (what `quantize --scheme weight-only` writes without images, and the
/// gate's last fallback): every Conv/Gemm weight int8, a quarter of the float size, and at load
/// the dequantisation is folded away (by tract for the Convs, by Kestrel for the classifier, whose
/// 5 MB tract leaves to run on every inference), so it runs the float plan's kernels and nothing
/// else. Without images its card claims no bias correction.
#[test]
fn weight_only_bundle_runs_the_float_plan() {
    use kestrel_trainer::quantize::{self, Options, Scheme};
    let path = shipped_imagenet_bundle();
    let float_bundle = Bundle::read(&path).expect("float bundle");
    let (bundle, done) =
        quantize::quantize(&float_bundle, None, &Options::new(Scheme::WeightOnly), &path).expect("weight-only");
    assert_eq!(done.int8_weights, 50, "49 convolutions and the classifier");
    let graph = bundle.proto.graph.as_ref().expect("graph");
    let int8 = graph
        .initializer
        .iter()
        .filter(|t| t.data_type == tract_onnx::pb::tensor_proto::DataType::Int8 as i32)
        .count();
    assert_eq!(int8, 50, "49 convolutions and the classifier");
    let card = &bundle.metadata.model_card;
    assert_eq!(card.precision, "int8-weight-only");
    let notes = card.notes.as_deref().unwrap_or("");
    assert!(
        notes.contains("weight-only") && !notes.contains("bias-corrected"),
        "{notes}"
    );

    let float = Classifier::load(&path, &LoadOptions::default()).expect("float");
    let weights = Classifier::from_bundle(bundle, &path, &LoadOptions::default()).expect("weight-only");
    let (ops, float_ops) = (weights.op_names(), float.op_names());
    println!("weight-only plan: {} ops: {ops:?}", ops.len());
    let count = |ops: &[String], name: &str| ops.iter().filter(|o| *o == name).count();
    for kernel in ["DepthWiseConv", "LazyIm2col", "OptBinChain(Max+Min)"] {
        assert_eq!(count(&ops, kernel), count(&float_ops, kernel), "{kernel}: {ops:?}");
    }
    // The classifier keeps its int8 weights (Kestrel's op); the stem stays tract's matmul.
    assert_eq!(
        (
            count(&ops, "OptMatMul") + 1,
            count(&ops, kestrel_runtime::int8::gemm_w8::OP)
        ),
        (count(&float_ops, "OptMatMul"), 1),
        "{ops:?}"
    );
    assert_eq!(weights.int8().int8_weight_gemms, 1);
    assert!(
        !ops.iter().any(|o| o.contains("Quant")),
        "quantisation ops at run time: {ops:?}"
    );
    assert_eq!(count(&ops, "Cast"), 0, "nothing decodes int8 at run time: {ops:?}");
    let chelsea = sample("chelsea.png");
    let (a, b) = (
        float.classify(&chelsea).expect("float"),
        weights.classify(&chelsea).expect("int8"),
    );
    assert_eq!(
        a.top_k(float.labels(), 1)[0].index,
        b.top_k(weights.labels(), 1)[0].index
    );
}

/// Activation-quantised schemes on the ImageNet bundle, calibrated on the sample photos: each
/// compiles to integer kernels in tract (no silent fall-back to float), and still names the cat.
#[test]
fn calibrated_int8_schemes_run_integer_kernels_and_name_the_cat() {
    use kestrel_trainer::quantize::{self, Options, RangeMethod, Scheme};
    let Photos {
        path,
        float,
        calibration,
        ..
    } = calibrated_on_photos(0.3);
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
        // The image is quantised on the pixels' own grid, whatever the calibration saw: scale
        // 1/128 and the zero point at pixel 127, i8 (127 − 128) or u8.
        let graph = bundle.proto.graph.as_ref().expect("graph");
        let init = |name: &str| graph.initializer.iter().find(|t| t.name == name).cloned();
        let scale = init("image.q_scale").and_then(|t| kestrel_runtime::onnx_proto::f32s(&t));
        let zero = init("image.q_zero").map(|t| t.raw_data);
        let pixel_127: u8 = if scheme == Scheme::Int8 { (-1i8) as u8 } else { 127 };
        assert_eq!(
            (scale, zero),
            (Some(vec![1.0 / 128.0]), Some(vec![pixel_127])),
            "{scheme}: the input's quantisation"
        );
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

/// The shipped float bundle calibrated on 2 views of the sample photos, `val_fraction` of them
/// held out.
struct Photos {
    path: std::path::PathBuf,
    float: Bundle,
    data: kestrel_trainer::quantize::inputs::Inputs,
    calibration: kestrel_trainer::quantize::Calibration,
}

fn calibrated_on_photos(val_fraction: f64) -> Photos {
    use kestrel_trainer::quantize::{calibrate, inputs};
    let path = shipped_imagenet_bundle();
    let float = Bundle::read(&path).expect("float bundle");
    let options = inputs::InputOptions {
        views: 2,
        val_fraction,
        ..inputs::InputOptions::default()
    };
    let photos = assets::photos().expect("photos: run scripts/fetch-assets.sh");
    let data = inputs::from_folder(&photos, &float.metadata.labels, &float.metadata.preprocess, &options)
        .expect("calibration images");
    let shape = float.metadata.preprocess.batch_shape(1);
    let calibration = calibrate::calibrate(&float.proto, shape, &data.calibration, &path).expect("calibrate");
    Photos {
        path,
        float,
        data,
        calibration,
    }
}

/// Bias correction moves the int8 model's answers towards float's: on crops that neither
/// calibration nor anything else saw, the int8 and weight-only schemes' softmax outputs differ
/// from float's by less (mean total variation) with the correction than without.
#[test]
fn bias_correction_brings_int8_answers_closer_to_float() {
    use kestrel_trainer::evaluate::logits;
    use kestrel_trainer::quantize::{self, Options, Scheme};
    let Photos {
        path,
        float,
        data,
        calibration,
    } = calibrated_on_photos(0.5);
    let classes = float.metadata.labels.len();
    let probabilities = |bundle: Bundle| -> Vec<Vec<f32>> {
        let c = Classifier::from_bundle(bundle, &path, &LoadOptions::default()).expect("loads");
        let rows = logits(&c, &data.held.crops).expect("logits");
        rows.chunks(classes).map(kestrel_runtime::classifier::softmax).collect()
    };
    let reference = probabilities(float.clone());
    let distance = |scheme: Scheme, bias_correction: bool| {
        let options = Options {
            bias_correction,
            ..Options::new(scheme)
        };
        let (bundle, _) = quantize::quantize(&float, Some(&calibration), &options, &path).expect("quantize");
        let got = probabilities(bundle);
        let tv: f64 = reference
            .iter()
            .zip(&got)
            .map(|(p, q)| 0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs() as f64).sum::<f64>())
            .sum();
        tv / reference.len() as f64
    };
    assert!(reference.len() >= 20, "too few held-out crops: {}", reference.len());
    // Weight-only too: it reads no activation ranges, but its weights round the same way.
    for scheme in [Scheme::Int8, Scheme::WeightOnly] {
        let (plain, corrected) = (distance(scheme, false), distance(scheme, true));
        println!(
            "{scheme}, {} held-out crops: mean total variation from float {plain:.4} without, {corrected:.4} with \
             bias correction",
            reference.len()
        );
        assert!(
            corrected < 0.9 * plain,
            "{scheme}: bias correction did not bring int8 closer to float: {corrected:.4} vs {plain:.4}"
        );
    }
}

/// The int8 scheme's plan, read off tract: every Conv and residual Add of Lite0 runs on Kestrel's
/// integer ops (16 depthwise, 32 pointwise, the stem through im2col; 9 adds), the classifier on
/// Kestrel's int8-weights product, and nothing of tract's own convolution or matmul machinery is
/// left. Fails if a tract upgrade or a change in the file's form stops the lowering.
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
    assert_eq!(
        (
            count("OptMatMul"),
            count(kestrel_runtime::int8::gemm_w8::OP),
            lowered.int8_weight_gemms
        ),
        (0, 1, 1),
        "the classifier keeps its int8 weights: {ops:?}"
    );
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

/// More threads change how fast, never what: the shipped float and int8 bundles give the same
/// logits, bit for bit, on 1, 2 and 3 threads (every kernel splits whole output channels, so each
/// value is summed in the same order), inference after inference on the same pool.
#[test]
fn threads_change_nothing_but_speed() {
    let photos = assets::photos().expect("photos: run scripts/fetch-assets.sh");
    let mut inputs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&photos)
        .expect("photos")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let path = shipped_imagenet_bundle();
    let spec = Bundle::read(&path).expect("float bundle").metadata.preprocess;
    for file in files.iter().take(6) {
        let Ok(image) = load_image(file) else { continue };
        inputs.push(preprocess(&image, &spec).expect("preprocess"));
    }
    assert!(inputs.len() >= 4, "{} photos", inputs.len());
    let int8 = kestrel_e2e::repo_root().join("models/efficientnet-lite0-imagenet.int8.onnx");
    for bundle in [path, int8] {
        let load = |threads| {
            let options = LoadOptions {
                threads,
                ..LoadOptions::default()
            };
            Classifier::load(&bundle, &options).expect("bundle loads")
        };
        let one = load(1);
        let expected: Vec<Vec<f32>> = inputs.iter().map(|x| one.logits(x).expect("1 thread")).collect();
        for threads in [2, 3] {
            let many = load(threads);
            for round in 0..3 {
                for (i, x) in inputs.iter().enumerate() {
                    let got = many.logits(x).expect("threads");
                    assert!(
                        got == expected[i],
                        "{}: {threads} threads, round {round}, photo {i}: logits differ from 1 thread's",
                        bundle.display()
                    );
                }
            }
        }
    }
}

/// A model trained in the test, quantised with calibration on its own training split: the
/// int8 bundle passes the gate and agrees with float on fresh images; a broken calibration is
/// refused by the gate, and its fallbacks end in int8 weights alone.
#[test]
fn trained_model_quantises_within_the_gate_and_broken_calibration_is_refused() {
    use kestrel_trainer::quantize::{self, Scheme, gate, inputs};
    use kestrel_trainer::{progress::Progress, train};

    let dir = tempfile::tempdir().expect("tempdir");
    let config = kestrel_e2e::sample_photo_run(dir.path(), Backend::Flex, 0).expect("sample data");
    let fitted = train::fit(&config, false, &Progress::plain()).expect("fit");
    let run = train::RunDir(config.out.clone());
    train::finish::finish(&run, &fitted).expect("export");
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
        bias_correction: true,
    };
    let out = dir.path().join("model.int8.onnx");
    let outcome = quantize::calibrate_and_write(&float, &run.model(), &data, &request, &out, |_| {}).expect("quantize");
    println!("trained model, qoperator: {}", gate::summary(&outcome));
    let chosen = outcome.chosen().expect("a candidate within 1 pt");
    assert!(chosen.selection.drop_pts <= 1.0);
    let card = Bundle::read(&out).expect("int8 bundle").metadata.model_card;
    assert_eq!(card.precision, "int8-qoperator");
    assert_eq!(card.metrics.get("val_top1"), Some(&chosen.report.evaluation.top1));
    assert!(card.metrics.contains_key("float_val_top1"));
    // Chosen on one half, reported on the other, with per-image flips that add up to the net
    // change in top-1 on that half.
    let (selection, report) = (&outcome.halves.selection, &outcome.halves.report);
    assert!(!selection.is_empty() && !report.is_empty());
    assert!(selection.iter().all(|i| !report.contains(i)), "the halves overlap");
    assert_eq!(selection.len() + report.len(), fitted.data.val.len());
    let r = &chosen.report;
    assert_eq!(r.agreement.images, r.evaluation.images);
    assert_eq!(r.evaluation.images, report.len());
    let net = ((outcome.float.top1 - r.evaluation.top1) * report.len() as f64).round() as i64;
    assert_eq!(r.agreement.lost() as i64 - r.agreement.gained() as i64, net);
    assert_eq!(card.metrics.get("int8_float_agreement"), Some(&r.agreement.rate()));

    // Fresh images of the same classes: int8 and float agree on at least 90% of top-1 answers.
    let fresh = dir.path().join("fresh");
    kestrel_trainer::data::sample_data::make_photo_folder(&fresh, 10, 80, 77).expect("fresh photos");
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

    // One constant grey image as the whole calibration set. Its ranges are as narrow as ranges
    // get, yet int8 keeps every answer: the image itself is quantised on the pixels' own grid
    // (which no calibration can narrow), and the narrow inner ranges cost this small model none
    // of its few validation images.
    let grey = image::RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
    let mut one = kestrel_trainer::data::store::Store::in_memory();
    one.push_image(&grey).expect("in memory");
    let mut plain = kestrel_trainer::data::store::Store::in_memory();
    let crop = kestrel_runtime::preprocess::resize_to_input(&image::DynamicImage::ImageRgb8(grey), &fitted.data.spec)
        .expect("crop");
    plain.push_image(&crop).expect("in memory");
    let grey_set = kestrel_trainer::data::images::DecodedSet {
        images: one,
        plain,
        labels: vec![0],
        skipped: Vec::new(),
    };
    let grey_inputs = inputs::from_run(
        &grey_set,
        &fitted.data.val,
        &fitted.data.dataset.classes,
        &fitted.data.spec,
        1,
        config.seed,
    )
    .expect("calibration inputs");
    let int8_min_max = gate::Request {
        scheme: Scheme::Int8,
        fallbacks: false,
        method: Some(quantize::RangeMethod::MinMax),
        ..request
    };
    let grey_out = dir.path().join("grey.int8.onnx");
    let grey = quantize::calibrate_and_write(&float, &run.model(), &grey_inputs, &int8_min_max, &grey_out, |_| {})
        .expect("search runs");
    println!("constant-image calibration: {}", gate::summary(&grey));
    assert!(grey.chosen.is_some() && grey_out.exists(), "{}", gate::summary(&grey));
    // Nothing is written when the gate refuses (here: a limit no candidate can meet).
    let refused_out = dir.path().join("refused.int8.onnx");
    let impossible = gate::Request {
        max_drop: -101.0,
        ..int8_min_max.clone()
    };
    let refused = quantize::calibrate_and_write(&float, &run.model(), &grey_inputs, &impossible, &refused_out, |_| {})
        .expect("search runs");
    assert!(
        refused.chosen.is_none() && !refused_out.exists(),
        "nothing is written on refusal"
    );

    // A broken calibration: every activation range a hundredth of what the training split gave,
    // so nearly every inner activation saturates. The gate refuses it; with the fallbacks on,
    // every integer form fails and the last fallback, int8 weights with float activations
    // (which reads no ranges), is chosen.
    let shape = fitted.data.spec.batch_shape(1);
    let mut broken =
        quantize::calibrate::calibrate(&float.proto, shape, &data.calibration, &run.model()).expect("calibrate");
    for h in broken.tensors.values_mut() {
        (h.min, h.max) = (h.min / 100.0, h.max / 100.0);
    }
    let search = |request: &gate::Request| {
        gate::search(&float, &run.model(), Some(&broken), &data.held, request, |_| {}).expect("search runs")
    };
    let refused = search(&int8_min_max);
    println!("ranges shrunk 100x: {}", gate::summary(&refused));
    assert!(refused.chosen.is_none(), "the gate let a broken calibration through");
    let fell_back = search(&gate::Request {
        fallbacks: true,
        ..int8_min_max
    });
    let labels: Vec<&str> = fell_back.attempts.iter().map(|a| a.label.as_str()).collect();
    println!("int8 with fallbacks on the broken calibration: {labels:?}");
    let chosen = fell_back.chosen().expect("the weight-only fallback passes");
    assert_eq!(chosen.options.scheme, Scheme::WeightOnly, "{labels:?}");
    assert!(
        fell_back.attempts.iter().filter(|a| a.passed).count() == 1,
        "only the last fallback passes: {labels:?}"
    );
    let card = &fell_back
        .bundle
        .as_ref()
        .expect("the chosen bundle")
        .metadata
        .model_card;
    assert_eq!(card.precision, "int8-weight-only");
}
