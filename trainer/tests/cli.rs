//! `kestrel-train` as a user runs it: fit on a small photo folder, kill it, resume, evaluate.
//! Needs the assets from `scripts/fetch-assets.sh`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kestrel_trainer::data::sample_data::make_photo_folder;
use kestrel_trainer::model;
use kestrel_trainer::train::checkpoint::{self, Phase};

fn train_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kestrel-train"));
    c.env("RUST_LOG", "warn");
    c
}

/// `kestrel-train fit --data DATA --out RUN`.
fn fit_cmd(data: &Path, run: &Path) -> Command {
    let mut c = train_cmd();
    c.arg("fit").arg("--data").arg(data).arg("--out").arg(run);
    c
}

/// Three classes × 4 sample-photo variants at 64 px in `dir/photos`.
fn photo_folder(dir: &Path, seed: u64) -> std::path::PathBuf {
    let data = dir.join("photos");
    make_photo_folder(&data, 4, 64, seed).expect("sample data");
    data
}

fn check(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const SMALL_RUN: [&str; 14] = [
    "--image-size",
    "64",
    "--batch-size",
    "8",
    "--head-epochs",
    "3",
    "--finetune-epochs",
    "3",
    "--unfreeze-blocks",
    "2",
    "--val-fraction",
    "0.25",
    "--patience",
    "0",
];

/// Two head-only epochs at 32 px, no augmented views: the cheapest complete run.
const HEAD_ONLY_32PX: [&str; 8] = [
    "--image-size",
    "32",
    "--feature-views",
    "0",
    "--head-epochs",
    "2",
    "--finetune-epochs",
    "0",
];

fn metrics_rows(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.csv"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
        .collect()
}

/// SIGKILL mid-fine-tune, then `--resume`: the run completes, every epoch is in metrics.csv
/// exactly once, and every checkpoint under its final name loads.
#[test]
fn a_killed_fit_resumes_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("photos");
    let run = dir.path().join("run");
    make_photo_folder(&data, 12, 80, 1).expect("sample data");

    let mut child = fit_cmd(&data, &run)
        .args(SMALL_RUN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kestrel-train");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !metrics_rows(&run).iter().any(|r| r.starts_with("finetune")) {
        assert!(Instant::now() < deadline, "no fine-tune epoch within 10 minutes");
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("fit ended before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    // What a kill inside a checkpoint write leaves (the cause of a CI flake, when the kill landed
    // there by chance under load): a half-written temp file named after the dead writer. Planted
    // here so every run takes that path; the resume must remove it, whoever's kill made it.
    let torn = run.join("checkpoints").join(format!(".last.ckpt.tmp-{}", child.id()));
    std::fs::write(&torn, b"KESTREL-CKPT-v1\n half").expect("plant a torn temp file");
    let before = metrics_rows(&run);
    assert!(before.len() >= 4 && before.len() < 6, "killed mid-run: {before:?}");

    // A second fit into the same folder without --resume is refused rather than overwriting.
    let again = fit_cmd(&data, &run).output().expect("run");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));

    outputs_that_cannot_be_written_keep_the_last_checkpoint(&run, dir.path());

    let resumed = train_cmd()
        .args(["fit", "--resume", "--out", run.to_str().expect("utf-8")])
        .output()
        .expect("resume");
    check(&resumed);
    let rows = metrics_rows(&run);
    let expected: Vec<String> = (1..=3)
        .map(|e| format!("head,{e}"))
        .chain((1..=3).map(|e| format!("finetune,{e}")))
        .collect();
    assert_eq!(rows, expected, "each epoch once, in order");

    let device = kestrel_trainer::backend::Backend::Flex.device();
    let backbone = model::default_backbone();
    let template = || backbone.build(&device).with_classes(3, &device);
    for name in ["last.ckpt", "best.ckpt"] {
        let ckpt = checkpoint::load(&run.join("checkpoints").join(name), backbone, template()).expect(name);
        if name == "last.ckpt" {
            assert_eq!((ckpt.state.phase, ckpt.state.epochs_done), (Phase::Finetune, 3));
        }
    }
    for file in [
        "model.onnx",
        "report.html",
        "report.json",
        "curves.svg",
        "confusion.svg",
        "curves.png",
        "confusion.png",
        "config.toml",
        "model.int8.onnx",
    ] {
        assert!(run.join(file).is_file(), "{file} missing");
    }

    let int8 = kestrel_runtime::Bundle::read(&run.join("model.int8.onnx")).expect("int8 bundle");
    assert_eq!(int8.metadata.model_card.precision, "int8");
    assert!(int8.metadata.model_card.metrics.contains_key("val_top1"));

    // eval through the runtime on fresh images of the same classes.
    let fresh = dir.path().join("fresh");
    make_photo_folder(&fresh, 6, 80, 99).expect("fresh data");
    let eval = train_cmd()
        .args(["eval", "--json", "--model"])
        .arg(run.join("model.onnx"))
        .arg("--data")
        .arg(&fresh)
        .output()
        .expect("eval");
    check(&eval);
    let json: serde_json::Value = serde_json::from_slice(&eval.stdout).expect("json");
    let top1 = json["top1"].as_f64().expect("top1");
    println!("fine-tuned model on 18 unseen images: top-1 {:.1}%", 100.0 * top1);
    assert!(top1 >= 0.8, "top-1 {top1} on unseen crops of the training photos");
}

/// `script` under `sh` in a private user + mount namespace, where it may mount a small tmpfs or
/// a read-only bind without privileges: the kernel's own ENOSPC and EROFS, not a simulation.
fn in_mount_namespace(script: &str, args: &[&Path]) -> Output {
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-euc", script, "sh"])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("unshare (util-linux) runs");
    assert!(
        out.status.success(),
        "namespace script failed ({:?}); this test needs user namespaces\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Resuming `run` (a killed run) onto a full disk, then onto a read-only one: each fails with
/// exit 2 and the OS error with the file it concerns; `last.ckpt` is untouched, and no temp file
/// is left behind, neither the failed writes' nor the one the killed run left. `run` is left as the disk-full attempt left it, for the real resume after.
fn outputs_that_cannot_be_written_keep_the_last_checkpoint(run: &Path, scratch: &Path) {
    let last = run.join("checkpoints/last.ckpt");
    let before = std::fs::read(&last).expect("last.ckpt");
    let mount = scratch.join("mnt");
    std::fs::create_dir_all(&mount).expect("mkdir");
    let report = scratch.join("attempt");
    let bin = Path::new(env!("CARGO_BIN_EXE_kestrel-train"));

    // Full: a tmpfs with the run copied in and 1 MiB left, less than one checkpoint.
    in_mount_namespace(
        r#"mount -t tmpfs -o size=256m tmpfs "$3"
cp -a "$2" "$3/run"
avail=$(df --output=avail -B1 "$3" | tail -n 1)
fallocate -l $((avail - 1048576)) "$3/filler"
status=0
"$1" fit --resume --out "$3/run" > /dev/null 2> "$4.stderr" || status=$?
echo "$status" > "$4.status"
rm -f "$3/filler"
rm -rf "$2"
cp -a "$3/run" "$2""#,
        &[bin, run, &mount, &report],
    );
    let read = |ext: &str| std::fs::read_to_string(report.with_extension(ext)).expect("attempt report");
    let err = read("stderr");
    assert_eq!(read("status").trim(), "2", "{err}");
    assert!(
        err.contains("No space left on device") && err.contains(".ckpt"),
        "disk full must be reported with the checkpoint's path: {err}"
    );
    println!("resume onto a full disk: {}", err.trim());

    // Read-only: the run folder bind-mounted read-only over itself.
    in_mount_namespace(
        r#"mount --bind "$2" "$2"
mount -o remount,bind,ro "$2"
status=0
"$1" fit --resume --out "$2" > /dev/null 2> "$3.stderr" || status=$?
echo "$status" > "$3.status""#,
        &[bin, run, &report],
    );
    let err = read("stderr");
    assert_eq!(read("status").trim(), "2", "{err}");
    assert!(
        err.contains("Read-only file system") && err.contains(&run.display().to_string()),
        "read-only must be reported with the path: {err}"
    );
    println!("resume onto a read-only disk: {}", err.trim());

    assert!(std::fs::read(&last).expect("last.ckpt") == before, "last.ckpt changed");
    let leftovers: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .expect("checkpoints")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn bad_data_folders_fail_before_training_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("photos");
    std::fs::create_dir_all(data.join("only")).expect("mkdir");
    std::fs::write(data.join("only/a.jpg"), b"x").expect("write");
    let out = fit_cmd(&data, &dir.path().join("run")).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only one class (`only`)"), "{err}");

    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "data = \"photos\"\nhead_epochs = \"many\"\n").expect("write");
    let out = train_cmd().args(["fit", "--config"]).arg(&cfg).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("head_epochs"), "{err}");
}

/// `quantize`'s default scheme runs on integer kernels and so needs calibration images: without
/// `--calibrate` it refuses before reading the model, names both fixes, and writes nothing.
#[test]
fn quantize_without_calibration_images_names_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_file = dir.path().join("model.int8.onnx");
    let out = train_cmd()
        .args(["quantize", "--model", "no-such-model.onnx", "--out"])
        .arg(&out_file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scheme int8 needs calibration images")
            && err.contains("--calibrate DIR")
            && err.contains("--scheme weight-only"),
        "{err}"
    );
    assert!(!out_file.exists());
}

/// `devices` numbers the wgpu adapters as `--device` takes them (CI has lavapipe, a software
/// rasteriser, so `auto` keeps to the CPU), and a `--device` that cannot be honoured is a usage
/// error that says why, before any data is read.
#[test]
fn devices_are_listed_and_a_wrong_device_is_refused() {
    let out = train_cmd().arg("devices").output().expect("run");
    check(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("flex (--backend flex)"), "{text}");
    assert!(
        text.contains("  0  llvmpipe") && text.contains("(CPU) · software rasteriser"),
        "lavapipe (scripts/test.sh installs mesa-vulkan-drivers) as adapter 0:\n{text}"
    );
    // Its API, memory (lavapipe offers a share of system memory) and driver, from wgpu itself.
    assert!(
        text.contains("     Vulkan · ") && text.contains(" GiB shared system memory · driver llvmpipe"),
        "{text}"
    );
    assert!(text.contains("--backend auto trains on flex"), "{text}");

    let dir = tempfile::tempdir().expect("tempdir");
    let data = photo_folder(dir.path(), 3);
    let run = dir.path().join("run");
    let out = fit_cmd(&data, &run).args(["--device", "9"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--device 9: there is no such adapter") && err.contains("0: llvmpipe"),
        "{err}"
    );
    let out = fit_cmd(&data, &run)
        .args(["--backend", "flex", "--device", "0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--backend flex computes on the CPU; use --backend wgpu"),
        "{err}"
    );
    assert!(
        !run.join("config.toml").exists(),
        "refused before the run folder was written"
    );
}

#[test]
fn a_diverging_run_stops_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = photo_folder(dir.path(), 5);
    let out = fit_cmd(&data, &dir.path().join("run"))
        .args(HEAD_ONLY_32PX)
        .args(["--optimizer", "sgd", "--head-lr", "1e30", "--label-smoothing", "0"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("training diverged") && err.contains("lower learning rate"),
        "{err}"
    );
}

#[test]
fn folds_and_sweeps_run_full_trials_and_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = photo_folder(dir.path(), 8);
    let quick = HEAD_ONLY_32PX;

    let cv = dir.path().join("cv");
    let out = fit_cmd(&data, &cv)
        .args(quick)
        .args(["--folds", "2"])
        .output()
        .expect("folds");
    check(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2-fold cross-validation: top-1"), "{text}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cv.join("folds.json")).expect("folds.json")).expect("json");
    assert_eq!(summary["folds"].as_array().expect("folds").len(), 2);
    let images: u64 = (0..2)
        .map(|i| summary["folds"][i]["val_images"].as_u64().expect("n"))
        .sum();
    assert_eq!(images, 12, "the folds validate every image once");

    let sweep_dir = dir.path().join("sweep");
    let sweep = || {
        train_cmd()
            .args(["sweep", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(&sweep_dir)
            .args(quick)
            .args(["--grid", "lr=1e-2,1e-3", "--grid", "optimizer=adamw"])
            .output()
            .expect("sweep")
    };
    let first = sweep();
    check(&first);
    let board = String::from_utf8_lossy(&first.stdout).into_owned();
    println!("{board}");
    assert_eq!(board.lines().filter(|l| l.contains("head_lr=")).count(), 2, "{board}");
    let modified = |trial: &str| {
        std::fs::metadata(sweep_dir.join(trial).join("model.onnx"))
            .and_then(|m| m.modified())
            .expect("model.onnx of a trial")
    };
    let before = (modified("trial-00"), modified("trial-01"));
    check(&sweep());
    assert_eq!(
        before,
        (modified("trial-00"), modified("trial-01")),
        "finished trials are reused, not rerun"
    );

    let bad = train_cmd()
        .args(["sweep", "--data"])
        .arg(&data)
        .args(["--grid", "no_such_key=1"])
        .output()
        .expect("sweep");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no such setting"));
}

/// A pre-split folder with a `test/` split: validation chooses the weights, the test split is
/// evaluated once at the end and reported apart (stdout, report.json, report.html and the
/// bundle's model card); the report says how the data was split. `--folds` on such a folder is
/// refused before training, since every fold would be the same run.
#[test]
fn a_test_split_is_reported_apart_from_validation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("photos");
    make_photo_folder(&data.join("train"), 4, 64, 11).expect("train");
    make_photo_folder(&data.join("val"), 2, 64, 12).expect("val");
    make_photo_folder(&data.join("test"), 3, 64, 13).expect("test");
    let run = dir.path().join("run");
    let out = fit_cmd(&data, &run).args(HEAD_ONLY_32PX).output().expect("fit");
    check(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("test split (held out, evaluated once)") && text.contains("(9 images)"),
        "{text}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).expect("report.json")).expect("json");
    assert_eq!(
        report["evaluation"]["images"].as_u64(),
        Some(6),
        "validation: 2 per class"
    );
    assert_eq!(report["test"]["images"].as_u64(), Some(9), "test: 3 per class");
    assert!(
        report["split"].as_str().expect("split").starts_with("as given"),
        "{}",
        report["split"]
    );
    let html = std::fs::read_to_string(run.join("report.html")).expect("report.html");
    assert!(html.contains("Test (held out"), "report.html has no test section");
    let card = kestrel_runtime::bundle::Bundle::read(&run.join("model.onnx"))
        .expect("bundle")
        .metadata
        .model_card;
    assert_eq!(card.metrics.get("test_images"), Some(&9.0), "{:?}", card.metrics);
    assert!(card.metrics.contains_key("test_top1"), "{:?}", card.metrics);

    let out = fit_cmd(&data, &dir.path().join("cv"))
        .args(HEAD_ONLY_32PX)
        .args(["--folds", "2"])
        .output()
        .expect("folds");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 identical trainings"), "{err}");
}

/// `--backbone` reaches every part of a run: the network trained (Lite2's 21 blocks, so a Lite0
/// checkpoint would not load), config.toml (which records the backbone and the size it chose),
/// the bundle's model card and the report. An unknown name is a usage error that lists the
/// choices.
#[test]
fn a_run_trains_the_backbone_it_is_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = photo_folder(dir.path(), 9);
    let run = dir.path().join("run");
    let out = fit_cmd(&data, &run)
        .args(HEAD_ONLY_32PX)
        .args(["--backbone", "lite2"])
        .output()
        .expect("run");
    check(&out);
    let config = std::fs::read_to_string(run.join("config.toml")).expect("config.toml");
    assert!(
        config.contains("backbone = \"lite2\"") && config.contains("image_size = 32"),
        "{config}"
    );
    let bundle = kestrel_runtime::Bundle::read(&run.join("model.onnx")).expect("bundle");
    assert_eq!(bundle.metadata.model_card.backbone, "efficientnet-lite2");
    let report = std::fs::read_to_string(run.join("report.html")).expect("report");
    assert!(report.contains("efficientnet-lite2"));
    let lite2 = model::backbone("lite2").expect("lite2");
    let device = kestrel_trainer::backend::Backend::Flex.device();
    let ckpt = checkpoint::load(
        &run.join("checkpoints/last.ckpt"),
        lite2,
        lite2.build(&device).with_classes(3, &device),
    )
    .expect("a Lite2 checkpoint");
    assert_eq!(ckpt.model.blocks.len(), 21);

    // Without --image-size, a backbone trains at its own size.
    let (data_s, run_s) = (data.to_string_lossy().into_owned(), dir.path().join("default"));
    let config = kestrel_trainer::config::FitConfig {
        data: data_s.into(),
        out: run_s,
        backbone: "lite1".into(),
        ..Default::default()
    };
    assert_eq!(config.input_size(), 240);

    let out = fit_cmd(&data, &dir.path().join("nope"))
        .args(["--backbone", "resnet50"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lite0, lite1, lite2"), "{err}");
}
