//! The bad-input corpus through the trainer and the runtime.

use std::path::Path;

use kestrel_runtime::{Classifier, LoadOptions, load_image};
use kestrel_trainer::backend::Backend;

/// The bad-input corpus through the trainer's decode-once path (the runtime's decoder, the
/// on-disk cache): every decodable file comes back upright at the size training asked for,
/// everything else is skipped by name, and nothing panics.
#[test]
fn the_training_decoder_agrees_with_the_runtime_on_the_bad_input_corpus() {
    use kestrel_e2e::corpus::{self, Expect};
    use kestrel_trainer::data::dataset::Sample;
    use kestrel_trainer::data::images::decode_for_training;
    use kestrel_trainer::data::store::Store;
    use kestrel_trainer::progress::Progress;

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
    let cache = || Store::on_disk(&dir.path().join("cache")).expect("cache");
    let spec = kestrel_runtime::PreprocessSpec::efficientnet_lite(16);
    let set =
        decode_for_training(&samples, &spec, side, 1 << 24, [cache(), cache()], &Progress::plain()).expect("decoding");
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
    use kestrel_trainer::train;

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
        image_size: Some(32),
        val_fraction: 0.25,
        ..FitConfig::default()
    };
    let prepared = train::prepare(&config, &kestrel_trainer::progress::Progress::plain()).expect("prepare");
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
