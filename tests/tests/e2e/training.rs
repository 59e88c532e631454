//! Training on each backend, messy data folders, the feature cache and checkpoints.

use burn::module::Module;

use image::DynamicImage;
use kestrel_runtime::load_image;
use kestrel_trainer::backend::Backend;
use kestrel_trainer::data::batch;
use kestrel_trainer::model::{self, pretrained};

use crate::util::*;

/// The wgpu backend (Mesa's lavapipe where there is no GPU) computes what flex computes, and a
/// short two-phase fit runs on it. CI installs mesa-vulkan-drivers (scripts/test.sh).
#[test]
fn wgpu_backend_matches_flex_and_trains() {
    use kestrel_trainer::progress::Progress;
    use kestrel_trainer::train;

    let spec = kestrel_runtime::PreprocessSpec::efficientnet_lite(64);
    let photos = [sample("chelsea.png"), sample("coffee.png")];
    let logits = |backend: Backend| {
        let device = backend.device();
        let (model, _) = pretrained::load_imagenet(model::default_backbone(), &device, 64).expect("pretrained");
        let input = batch::images_to_tensor(&photos, &spec, &device).expect("batch");
        model.forward(input).into_data().try_into_vec::<f32>().expect("logits")
    };
    println!("wgpu adapter: {}", Backend::Wgpu.describe());
    let (gpu, cpu) = (logits(Backend::Wgpu), logits(Backend::Flex));
    let diff = gpu.iter().zip(&cpu).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("wgpu ↔ flex max |Δlogit| on 2 photos at 64 px: {diff:.2e}");
    // The same bound the export's parity check holds a wgpu run to.
    assert!(
        diff < Backend::Wgpu.parity_tolerance(),
        "wgpu and flex disagree: {diff}"
    );
    assert_eq!(top1(&gpu[..1000]), top1(&cpu[..1000]));

    // The same run as the ndarray test below, plus one fine-tuning epoch so the backward pass
    // runs on wgpu too: the accuracy must land in the same band.
    let dir = tempfile::tempdir().expect("tempdir");
    // On the adapter `kestrel-train devices` numbers 0 (lavapipe in CI), chosen explicitly.
    let config = kestrel_trainer::config::FitConfig {
        device: Some(0),
        ..kestrel_e2e::sample_photo_run(dir.path(), Backend::Wgpu, 1).expect("sample data")
    };
    let reads = train::loss_reads_on_this_thread();
    let fitted = train::fit(&config, false, &Progress::plain()).expect("fit on wgpu");
    assert_eq!(fitted.history.len(), 5);
    // Without a bar, the training loop waits for the GPU once per epoch, not once per step
    // (issue 19): 4 head epochs and 1 fine-tuning epoch, several steps each.
    assert_eq!(train::loss_reads_on_this_thread() - reads, 5, "loss reads per run");
    assert!(
        fitted
            .history
            .iter()
            .all(|r| r.train_loss.is_finite() && r.val_loss.is_finite())
    );
    println!("wgpu: val top-1 {:.1}%", 100.0 * fitted.validation.top1);
    assert!(fitted.validation.top1 >= 0.9, "{:?}", fitted.validation);
    // The export at the end of `fit`, from the network on wgpu: tract must agree within the
    // backend's stated tolerance, and the bundle lands at its final path only then.
    let run = kestrel_trainer::train::RunDir(config.out.clone());
    let finished = kestrel_trainer::train::finish::finish(&run, &fitted).expect("export from wgpu");
    println!(
        "wgpu: export parity max |Δlogit| {:.2e} (tolerance {:.0e})",
        finished.parity,
        Backend::Wgpu.parity_tolerance()
    );
    assert!(finished.parity <= Backend::Wgpu.parity_tolerance());
    assert!(run.model().is_file());
    let saved = kestrel_trainer::config::FitConfig::load(&dir.path().join("run/config.toml")).expect("config");
    assert_eq!(saved.backend, Backend::Wgpu);
    assert_eq!(saved.device, Some(0), "config.toml records the adapter");
}

/// What one plain-SGD step changed: `after − before` per parameter (= −lr · gradient).
fn deltas(before: &Tensors, after: &Tensors) -> Tensors {
    assert_eq!(before.len(), after.len());
    before
        .iter()
        .zip(after)
        .map(|((id, b), (id_after, a))| {
            assert_eq!(id, id_after, "the step kept the module's structure");
            (id.clone(), a.iter().zip(b).map(|(a, b)| a - b).collect())
        })
        .collect()
}

/// One fine-tuning step (every block unfrozen, as `fit --unfreeze-blocks 0`) and one head step
/// (the classifier on the pooled features, as the head phase) on `backend`, from the pretrained
/// weights, on a fixed batch: the weight changes of plain SGD, i.e. −lr · the gradients.
/// Dropout is set to 0 and BatchNorm is frozen (as fine-tuning has it), so the step is
/// deterministic and both backends compute the same function.
fn one_step(backend: Backend) -> (Tensors, Tensors) {
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::{GradientsParams, SgdConfig};
    const LR: f64 = 1.0;
    let spec = kestrel_runtime::PreprocessSpec::efficientnet_lite(64);
    let photos = [sample("chelsea.png"), sample("coffee.png")];
    let device = backend.device();
    let train = device.clone().autodiff();
    let backbone = model::default_backbone();
    let (network, _) = pretrained::load_imagenet(backbone, &device, 64).expect("pretrained");
    let network = network.with_dropout(0.0);
    // Labels the model does not already give, so every gradient is well away from zero.
    let labels = kestrel_trainer::train::recipe::labels_tensor(&[1, 2], &train);
    let loss_fn = CrossEntropyLossConfig::new().init(&train);

    let trainable = backbone.freeze_for_finetune(network.clone(), 0).fork(&train).train();
    let before = weights(&trainable);
    let x = batch::images_to_tensor(&photos, &spec, &train).expect("batch");
    let loss = loss_fn.forward(trainable.forward(x), labels.clone());
    let grads = GradientsParams::from_grads(loss.backward(), &trainable);
    let stepped = SgdConfig::new().init().step(LR, trainable, grads);
    let full = deltas(&before, &weights(&stepped));

    let features = network.features(batch::images_to_tensor(&photos, &spec, &device).expect("batch"));
    let head = network.fc.clone().fork(&train).train();
    let before = weights(&head);
    let features = burn::tensor::Tensor::<2>::from_data(features.into_data(), &train);
    let loss = loss_fn.forward(head.forward(features), labels);
    let grads = GradientsParams::from_grads(loss.backward(), &head);
    let stepped = SgdConfig::new().init().step(LR, head, grads);
    (full, deltas(&before, &weights(&stepped)))
}

/// Largest |wgpu − flex| of a weight change, relative to the largest |change| of that tensor.
fn worst_relative(gpu: &Tensors, cpu: &Tensors) -> (f32, usize) {
    let mut worst = 0.0f32;
    let mut moved = 0;
    for ((id, g), (_, c)) in gpu.iter().zip(cpu) {
        let scale = c.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = g.iter().zip(c).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        if scale == 0.0 {
            assert_eq!(diff, 0.0, "{id}: frozen on flex, moved on wgpu");
            continue;
        }
        moved += 1;
        worst = worst.max(diff / scale);
    }
    (worst, moved)
}

/// The backward pass on wgpu (lavapipe in CI) computes the gradients flex computes: one full
/// fine-tuning step and one head step from the same weights move every parameter the same way.
/// Tolerance: each gradient entry is a sum over the batch, the pixels and up to 1280 channels,
/// in another order on each backend, so f32 rounding (2⁻²⁴ relative per operation, growing
/// with the square root of ~10⁴ terms per sum) puts differences near 10⁻⁵ of a tensor's largest
/// change: 5.4·10⁻⁶ measured on lavapipe. 10⁻⁴ leaves a margin of about 20, while a missing,
/// zeroed or misrouted gradient is off by order 1.
#[test]
fn wgpu_gradients_match_flex() {
    let adapter = Backend::Wgpu.describe();
    println!("wgpu adapter: {adapter}");
    assert!(adapter.starts_with("wgpu ("), "wgpu fell back to the CPU: {adapter}");
    let (gpu_full, gpu_head) = one_step(Backend::Wgpu);
    let (cpu_full, cpu_head) = one_step(Backend::Flex);
    let (full, moved) = worst_relative(&gpu_full, &cpu_full);
    let (head, head_moved) = worst_relative(&gpu_head, &cpu_head);
    println!(
        "wgpu ↔ flex, one SGD step: fine-tuning {moved} tensors moved, worst relative |Δ| {full:.2e}; \
         head {head_moved} tensors, {head:.2e}"
    );
    // Every trainable tensor: 47 block convs (block 0 has no expansion), the head conv, and the
    // classifier's weight and bias (the stem and every BatchNorm stay frozen).
    assert_eq!(moved, 50, "tensors moved in a full fine-tuning step");
    assert_eq!(head_moved, 2, "the classifier's weight and bias");
    assert!(
        full < 1e-4,
        "fine-tuning step: wgpu and flex gradients differ by {full:.2e}"
    );
    assert!(head < 1e-4, "head step: wgpu and flex gradients differ by {head:.2e}");
}

/// Messy folders: a corrupt file is skipped and counted; grey, RGBA and 16-bit images are used.
/// The phase-1 feature cache gives the logits the full model gives.
#[test]
fn dataset_edge_cases_and_the_feature_cache() {
    use kestrel_trainer::config::FitConfig;
    use kestrel_trainer::progress::Progress;
    use kestrel_trainer::train;

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("photos");
    kestrel_trainer::data::sample_data::make_photo_folder(&data, 6, 64, 11).expect("sample data");
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
        image_size: Some(64),
        batch_size: 8,
        val_fraction: 0.3,
        feature_views: 0,
        ..FitConfig::default()
    };
    let prepared = train::prepare(&config, &Progress::plain()).expect("prepare");
    assert_eq!(prepared.skipped.len(), 1, "{:?}", prepared.skipped);
    assert!(prepared.skipped[0].path.ends_with("cat/corrupt.jpg"));
    assert_eq!(
        prepared.train.len() + prepared.val.len(),
        3 * 6 + 3,
        "grey, RGBA, 16-bit all used"
    );

    let device = Backend::Flex.device();
    let model = train::pretrained_model(&config, 3, &device).expect("model");
    let features = train::head_features(&config, &model, &prepared, &Progress::plain()).expect("features");
    let head = model.valid();
    let n = prepared.val.len();
    let via_cache = head
        .head(burn::tensor::Tensor::<2>::from_data(
            burn::tensor::TensorData::new(
                features.val.clone(),
                [n, kestrel_trainer::model::efficientnet::FEATURES],
            ),
            &device,
        ))
        .into_data()
        .try_into_vec::<f32>()
        .expect("logits");
    let direct = train::predict(&model, &prepared.spec, &prepared.val, 4, &device).expect("predict");
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

/// What the head phase trains on for an image's plain view is the runtime's tensor for the same
/// file, bit for bit (issue 15: training once shrank first and resampled again). 640 px photos,
/// so that any shrink or reduced-scale decode before the crop would change pixels.
#[test]
fn the_training_plain_view_is_what_the_runtime_computes() {
    use kestrel_trainer::config::FitConfig;
    use kestrel_trainer::progress::Progress;
    use kestrel_trainer::train;

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("photos");
    kestrel_trainer::data::sample_data::make_photo_folder(&data, 3, 640, 5).expect("sample data");
    let config = FitConfig {
        data,
        out: dir.path().join("run"),
        backend: Backend::Flex,
        image_size: Some(96),
        val_fraction: 0.3,
        ..FitConfig::default()
    };
    let prepared = train::prepare(&config, &Progress::plain()).expect("prepare");
    assert!(prepared.skipped.is_empty() && prepared.train.len() >= 3);
    let mut ours = vec![0.0f32; prepared.spec.tensor_len()];
    for (i, sample) in prepared.dataset.train.iter().enumerate() {
        train::training_view(&config, &prepared, i, 0, &mut ours).expect("plain view");
        let runtime =
            kestrel_runtime::preprocess::preprocess(&load_image(&sample.path).expect("decode"), &prepared.spec)
                .expect("runtime preprocessing");
        assert!(
            ours == runtime,
            "{}: the training view differs from the runtime's",
            sample.path.display()
        );
    }
}

/// The head phase alone, on the ndarray backend, learns the sample classes.
#[test]
fn ndarray_head_training_reaches_high_accuracy() {
    use kestrel_trainer::progress::Progress;
    use kestrel_trainer::train;

    let dir = tempfile::tempdir().expect("tempdir");
    let config = kestrel_e2e::sample_photo_run(dir.path(), Backend::Ndarray, 0).expect("sample data");
    let reads = train::loss_reads_on_this_thread();
    let fitted = train::fit(&config, false, &Progress::plain()).expect("fit on ndarray");
    assert_eq!(train::loss_reads_on_this_thread() - reads, 4, "one loss read per epoch");
    println!("ndarray head-only: val top-1 {:.1}%", 100.0 * fitted.validation.top1);
    assert!(fitted.validation.top1 >= 0.9, "{:?}", fitted.validation);
}

#[test]
fn corrupted_checkpoints_are_refused_clearly() {
    use kestrel_trainer::train::checkpoint;
    let dir = tempfile::tempdir().expect("tempdir");
    let device = Backend::Flex.device();
    let model = model::default_backbone().build(&device).with_classes(2, &device);
    let state = checkpoint::RunState {
        backbone: "lite0".into(),
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
    let template = || model::default_backbone().build(&device).with_classes(2, &device);
    assert_eq!(
        checkpoint::load(&path, model::default_backbone(), template())
            .expect("load")
            .state,
        state
    );
    // Another backbone's run cannot resume from it, and is told how to.
    let lite1 = model::backbone("lite1").expect("lite1");
    let err = checkpoint::load(&path, lite1, lite1.build(&device).with_classes(2, &device))
        .err()
        .expect("backbone mismatch")
        .to_string();
    assert!(
        err.contains("holds a lite0 model") && err.contains("--backbone lite0"),
        "{err}"
    );
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
        let err = checkpoint::load(&p, model::default_backbone(), template())
            .err()
            .expect(name)
            .to_string();
        assert!(
            err.contains("is corrupt") && err.contains(&format!("{name}.ckpt")),
            "{name}: {err}"
        );
        if name == "weight" {
            assert!(err.contains("checksum mismatch"), "{err}");
        }
    }
}
