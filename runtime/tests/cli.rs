//! The `kestrel` binary on the shipped ImageNet bundle and the sample photos
//! (`scripts/fetch-assets.sh` puts them in the asset cache).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sample(name: &str) -> PathBuf {
    let dir = std::env::var_os("KESTREL_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/kestrel/assets"));
    let path = dir.join("samples").join(name);
    assert!(
        path.is_file(),
        "{} missing: run scripts/fetch-assets.sh",
        path.display()
    );
    path
}

fn kestrel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kestrel"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run kestrel")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const CATS: [&str; 5] = ["tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"];

#[test]
fn classify_names_the_cat_with_the_default_model() {
    let cat = sample("chelsea.png");
    let out = kestrel(&["classify", cat.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    println!("{line}");
    let first = line
        .split(": ")
        .nth(1)
        .expect("label part")
        .split(" · ")
        .next()
        .expect("first");
    assert!(CATS.iter().any(|c| first.starts_with(c)), "top-1 is not a cat: {line}");
    assert_eq!(line.matches('%').count(), 3, "three classes by default: {line}");
}

#[test]
fn jsonl_output_is_one_object_per_image_and_threads_agree() {
    let cat = sample("chelsea.png");
    let coffee = sample("coffee.png");
    let (cat, coffee) = (cat.to_str().expect("utf-8"), coffee.to_str().expect("utf-8"));
    let one = kestrel(&["classify", "--format", "jsonl", "-k", "5", cat, coffee]);
    let two = kestrel(&[
        "classify",
        "--format",
        "jsonl",
        "-k",
        "5",
        "--threads",
        "2",
        cat,
        coffee,
    ]);
    assert!(
        one.status.success() && two.status.success(),
        "{}{}",
        stderr(&one),
        stderr(&two)
    );
    let parse = |o: &Output| -> Vec<serde_json::Value> {
        stdout(o)
            .lines()
            .map(|l| serde_json::from_str(l).expect("valid JSON line"))
            .collect()
    };
    let (a, b) = (parse(&one), parse(&two));
    assert_eq!(a.len(), 2);
    assert_eq!(a[0]["top"].as_array().expect("top").len(), 5);
    let index = |v: &serde_json::Value| v["top"][0]["index"].as_u64().expect("index");
    assert!((281..=285).contains(&index(&a[0])), "{}", a[0]);
    assert!([967, 968, 504].contains(&index(&a[1])), "{}", a[1]);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(index(x), index(y));
        let (px, py) = (x["top"][0]["probability"].as_f64(), y["top"][0]["probability"].as_f64());
        assert!((px.expect("p") - py.expect("p")).abs() < 1e-4);
    }
}

#[test]
fn bad_images_are_reported_and_the_rest_still_classified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corrupt = dir.path().join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 definitely not a jpeg").expect("write");
    let missing = dir.path().join("missing.png");
    let cat = sample("chelsea.png");
    let out = kestrel(&[
        "classify",
        corrupt.to_str().expect("utf-8"),
        missing.to_str().expect("utf-8"),
        cat.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1), "some inputs failed → exit 1");
    let err = stderr(&out);
    assert!(
        err.contains("corrupt.jpg") && err.contains("not a readable image"),
        "{err}"
    );
    assert!(err.contains("missing.png"), "{err}");
    assert_eq!(stdout(&out).lines().count(), 1, "the good image is still classified");
}

#[test]
fn an_unusable_model_is_fatal_and_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("broken.onnx");
    std::fs::write(&model, b"not onnx at all").expect("write");
    let cat = sample("chelsea.png");
    let out = kestrel(&[
        "classify",
        "--model",
        model.to_str().expect("utf-8"),
        cat.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("broken.onnx") && err.contains("not a valid ONNX file"),
        "{err}"
    );
}

#[test]
fn info_describes_the_shipped_bundle() {
    let out = kestrel(&["info"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("efficientnet-lite0") && text.contains("classes:     1000"),
        "{text}"
    );
}

#[test]
fn bench_compares_models_side_by_side() {
    let out = kestrel(&[
        "bench",
        "--model",
        "models/efficientnet-lite0-imagenet.onnx",
        "--model",
        "models/efficientnet-lite0-imagenet.int8.onnx",
        "--iterations",
        "3",
        "--warmup",
        "1",
        "--format",
        "jsonl",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON object");
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(r["iterations"], 3);
        let (p50, p95) = (r["p50_ms"].as_f64().expect("p50"), r["p95_ms"].as_f64().expect("p95"));
        assert!(p50 > 0.0 && p95 >= p50, "{r}");
    }
    assert_eq!(results[0]["precision"], "float32");
    assert_eq!(results[1]["precision"], "int8-weight-only");
    let size = |r: &serde_json::Value| r["file_bytes"].as_u64().expect("size");
    assert!(
        size(&results[1]) * 3 < size(&results[0]),
        "int8 is under a third of float"
    );
    assert!(report["peak_rss_mib"].as_f64().expect("rss") > 0.0);

    let text = kestrel(&[
        "bench",
        "--model",
        "models/efficientnet-lite0-imagenet.onnx",
        "--iterations",
        "2",
    ]);
    assert!(text.status.success(), "{}", stderr(&text));
    assert!(
        stdout(&text).contains("p50 ms") && stdout(&text).contains("1.00×"),
        "{}",
        stdout(&text)
    );
}
