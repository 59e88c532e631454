//! One-shot commands: classify, info, bench, and bad models.

use super::util::*;
use std::process::Output;

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

    // The decompression-bomb limit is the user's to set.
    let out = kestrel(&["classify", "--max-pixels", "1000", cat.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("chelsea.png") && err.contains("above the limit of 1000") && err.contains("--max-pixels"),
        "{err}"
    );
}

/// `classify` with `model` on the cat photo: a model error (exit 2); its stderr.
fn refused_model(model: &std::path::Path) -> String {
    let cat = sample("chelsea.png");
    let out = kestrel(&[
        "classify",
        "--model",
        model.to_str().expect("utf-8"),
        cat.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    stderr(&out)
}

#[test]
fn an_unusable_model_is_fatal_and_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("broken.onnx");
    std::fs::write(&model, b"not onnx at all").expect("write");
    let err = refused_model(&model);
    assert!(
        err.contains("broken.onnx") && err.contains("not a valid ONNX file"),
        "{err}"
    );
}

/// tract panics on a few malformed graphs (fuzz/ found a Flatten axis past the rank). The file
/// is refused like any other bad model: exit 2, one error naming it and where tract failed, and
/// no "panicked at" line from Rust beside it.
#[test]
fn a_graph_tract_panics_on_is_refused_without_a_panic_message() {
    use prost::Message;
    use tract_onnx::pb;
    let shipped = repo_root().join("models/efficientnet-lite0-imagenet.int8.onnx");
    let mut proto = pb::ModelProto::decode(std::fs::read(shipped).expect("read").as_slice()).expect("decode");
    let graph = proto.graph.as_mut().expect("graph");
    let flatten = graph
        .node
        .iter_mut()
        .find(|n| n.op_type == "Flatten")
        .expect("a Flatten node");
    flatten.attribute.iter_mut().find(|a| a.name == "axis").expect("axis").i = 51;
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("flatten-axis.onnx");
    std::fs::write(&model, proto.encode_to_vec()).expect("write");
    let err = refused_model(&model);
    assert!(
        err.contains("flatten-axis.onnx")
            && err.contains("the graph is malformed (tract panicked: range end index 51")
            && err.contains(", at tract-hir-"),
        "{err}"
    );
    assert!(!err.contains("panicked at") && !err.contains("RUST_BACKTRACE"), "{err}");
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
    assert_eq!(results[1]["precision"], "int8");
    let size = |r: &serde_json::Value| r["file_bytes"].as_u64().expect("size");
    assert!(
        size(&results[1]) * 3 < size(&results[0]),
        "int8 is under a third of float"
    );
    assert!(report["peak_rss_mib"].as_f64().expect("rss") > 0.0);
    // EfficientNet-Lite0 at 224 px is about 0.4 GMAC (0.39–0.41 in published counts), and
    // int8 does the same arithmetic in integers.
    let macs = |r: &serde_json::Value| r["macs"].as_u64().expect("macs") as f64 / 1e9;
    assert!((0.37..0.42).contains(&macs(&results[0])), "{}", macs(&results[0]));
    assert!((macs(&results[1]) / macs(&results[0]) - 1.0).abs() < 0.02);
    assert!(report["matmul_macs_per_second"].as_f64().expect("rate") > 1e8);

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
