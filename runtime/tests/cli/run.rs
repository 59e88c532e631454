//! `kestrel run`: sources, signals, saved frames, and the built-in model.

use std::process::Command;

use super::util::*;

#[test]
fn run_plays_a_folder_as_jsonl_and_counts_every_frame() {
    let dir = tempfile::tempdir().expect("tempdir");
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).expect("mkdir");
    std::fs::copy(sample("chelsea.png"), frames.join("01-cat.png")).expect("copy");
    std::fs::write(frames.join("02-coffee.jpg"), jpeg_frame("coffee.png")).expect("write");
    std::fs::write(frames.join("03-broken.jpg"), b"\xFF\xD8 not really a jpeg").expect("write");
    std::fs::write(frames.join("notes.txt"), b"not an image").expect("write");
    let out = kestrel(&[
        "run",
        "--source",
        frames.to_str().expect("utf-8"),
        "--format",
        "jsonl",
        "-k",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    assert_eq!(lines.len(), 3, "two frames and the summary: {lines:?}");
    assert!(CATS.contains(&top1(&lines[0]).as_str()), "{}", lines[0]);
    assert!(
        ["espresso", "cup", "coffee mug"].contains(&top1(&lines[1]).as_str()),
        "{}",
        lines[1]
    );
    for frame in &lines[..2] {
        assert_eq!(frame["top"].as_array().expect("top").len(), 2);
        let t = &frame["timings_ms"];
        assert!(t["inference"].as_f64().expect("inference ms") > 0.0, "{frame}");
        assert!(t["decode"].as_f64().is_some() && t["preprocess"].as_f64().is_some());
    }
    let summary = &lines[2]["summary"];
    assert_eq!(summary["frames"], 3, "{summary}");
    assert_eq!(summary["inferred"], 2);
    assert_eq!(summary["corrupt"], 1);
    assert_eq!(summary["dropped"], 0, "a folder is a recording: nothing is dropped");
    assert_eq!(summary["ended"], "end of stream");
    assert!(stderr(&out).contains("03-broken.jpg"), "{}", stderr(&out));
}

/// An MJPEG byte stream as `rpicam-vid --codec mjpeg -o -` writes it, with the damage a pipe can
/// carry: garbage between frames and a frame cut short.
#[test]
fn run_splits_an_mjpeg_stream_and_survives_damage() {
    let (cat, coffee) = (jpeg_frame("chelsea.png"), jpeg_frame("coffee.png"));
    let mut stream = b"rpicam-vid says hello\n".to_vec();
    stream.extend(&cat);
    stream.extend(&coffee[..coffee.len() / 2]);
    stream.extend(&coffee);
    stream.extend([0u8, 0, 0, 0xFF]);
    stream.extend(&cat);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("camera.mjpeg");
    std::fs::write(&file, &stream).expect("write");

    // A file is a recording: every frame is inferred, in order.
    let source = format!("mjpeg:{}", file.display());
    let out = kestrel(&["run", "--source", &source, "--format", "jsonl"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    let labels: Vec<String> = lines[..lines.len() - 1].iter().map(top1).collect();
    assert_eq!(labels.len(), 3, "{labels:?}");
    assert!(
        CATS.contains(&labels[0].as_str()) && CATS.contains(&labels[2].as_str()),
        "{labels:?}"
    );
    let summary = &lines[lines.len() - 1]["summary"];
    assert_eq!(
        (summary["frames"].as_u64(), summary["corrupt"].as_u64()),
        (Some(4), Some(1)),
        "{summary}"
    );
    assert!(stderr(&out).contains("cut short"), "{}", stderr(&out));

    // stdin is live: frames may be dropped as stale, but every one is accounted for.
    let mut child = spawn_mjpeg_run();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&stream).expect("feed");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    let summary = &lines[lines.len() - 1]["summary"];
    let n = |k: &str| summary[k].as_u64().expect("count");
    assert_eq!(n("frames"), 4, "{summary}");
    assert_eq!(n("inferred") + n("dropped") + n("corrupt"), 4, "{summary}");
    assert_eq!(n("inferred") as usize, lines.len() - 1);
}

/// Ctrl-C (SIGINT) and a service manager's stop (systemd sends SIGTERM, then SIGKILL) end a live
/// run the way the end of its stream does: the summary, then exit 0.
#[test]
fn run_ends_with_its_summary_on_sigint_and_sigterm() {
    use std::io::{BufRead, BufReader, Read, Write};
    let cat = jpeg_frame("chelsea.png");
    for signal in ["INT", "TERM"] {
        let mut child = spawn_mjpeg_run();
        // A camera that stays open: one frame, then stdin is held until the process has ended.
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&cat).expect("feed");
        stdin.flush().expect("flush");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("first prediction");
        assert!(CATS.contains(&top1(&json_lines(&first)[0]).as_str()), "{first}");

        let kill = Command::new("kill")
            .args(["-s", signal, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(kill.success());
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).expect("read");
        let status = child.wait().expect("wait");
        drop(stdin);
        let mut err = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .expect("stderr");
        assert!(status.success(), "SIG{signal}: {status}; stderr: {err}");
        let lines = json_lines(&rest);
        let summary = &lines.last().expect("a summary line")["summary"];
        assert_eq!(summary["frames"].as_u64(), Some(1), "SIG{signal}: {summary}");
        assert_eq!(summary["ended"].as_str(), Some("interrupted"), "SIG{signal}: {summary}");
    }
}

#[test]
fn run_saves_uncertain_frames_with_their_top_k() {
    let dir = tempfile::tempdir().expect("tempdir");
    let review = dir.path().join("review");
    // Every frame is "uncertain" below probability 1.01; no rate limit.
    let save_all = [
        "run",
        "--source",
        "synthetic:160x120:3",
        "--save-uncertain",
        review.to_str().expect("utf-8"),
        "--below",
        "1.01",
        "--save-interval",
        "0",
    ];
    let out = kestrel(&[&save_all[..], &["--on-change", "--threshold", "0.99"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let mut files: Vec<String> = std::fs::read_dir(&review)
        .expect("review dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    // frame-<run>-<index>: one run id for the whole run.
    let run = files[0]
        .strip_prefix("frame-")
        .and_then(|f| f.split('-').next())
        .expect("frame-<run>-…")
        .to_string();
    assert!(run.parse::<u128>().is_ok(), "{files:?}");
    let expected: Vec<String> = (0..3)
        .flat_map(|i| ["jpg", "json"].map(|ext| format!("frame-{run}-{i:08}.{ext}")))
        .collect();
    assert_eq!(files, expected);
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(review.join(format!("frame-{run}-00000001.json"))).expect("json"))
            .expect("valid");
    assert_eq!(sidecar["frame"], 1);
    assert_eq!(sidecar["top"].as_array().expect("top-k").len(), 3);
    let img = image::open(review.join(format!("frame-{run}-00000002.jpg"))).expect("saved frame decodes");
    assert_eq!((img.width(), img.height()), (160, 120));
    // --on-change with a threshold no synthetic frame reaches: one "(uncertain)" line only.
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("(uncertain)"));
    assert!(stderr(&out).contains("saved 3"), "{}", stderr(&out));
    // A second run into the same folder adds its frames beside the first run's, overwriting none.
    let again = kestrel(&save_all);
    assert!(again.status.success(), "{}", stderr(&again));
    let after = std::fs::read_dir(&review).expect("review dir").count();
    assert_eq!(after, 12, "the second run must keep the first run's 6 files");
}

#[test]
fn run_refuses_a_bad_source_with_the_forms_it_accepts() {
    let out = kestrel(&["run", "--source", "no/such/folder"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("mjpeg:-") && stderr(&out).contains("camera"),
        "{}",
        stderr(&out)
    );
}

/// `kestrel run --save-uncertain` onto a full disk (a 24 KiB tmpfs) and a read-only one, in a
/// private user + mount namespace (the kernel's own ENOSPC and EROFS): every failed save is a
/// warning naming the file and is counted, the run goes on to the end and exits 0, and the
/// review folder never holds a frame without its sidecar or a temp file.
#[test]
fn save_uncertain_survives_a_full_or_read_only_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (full, read_only, report) = (dir.path().join("full"), dir.path().join("ro"), dir.path().join("r"));
    for d in [&full, &read_only] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let script = r#"
save() {
    status=0
    "$1" run --source synthetic:160x120:10 --save-uncertain "$2" --below 1.01 --save-interval 0 \
        --format jsonl > "$3.out" 2> "$3.err" || status=$?
    echo "$status" > "$3.status"
    ls -A "$2" > "$3.files"
}
mount -t tmpfs -o size=24k tmpfs "$2"
save "$1" "$2" "$4.full"
mount -t tmpfs -o ro tmpfs "$3"
save "$1" "$3" "$4.ro"
"#;
    let out = Command::new("unshare")
        .env("KESTREL_CONFIG", "")
        .args(["--user", "--map-root-user", "--mount", "sh", "-euc", script, "sh"])
        .arg(env!("CARGO_BIN_EXE_kestrel"))
        .args([&full, &read_only, &report])
        .current_dir(repo_root())
        .output()
        .expect("unshare (util-linux) runs");
    assert!(
        out.status.success(),
        "namespace script failed; this test needs user namespaces: {}",
        stderr(&out)
    );
    let read =
        |case: &str, ext: &str| std::fs::read_to_string(format!("{}.{case}.{ext}", report.display())).expect("report");
    for (case, os_error, folder) in [
        ("full", "No space left on device", &full),
        ("ro", "Read-only file system", &read_only),
    ] {
        let err = read(case, "err");
        assert_eq!(read(case, "status").trim(), "0", "{case}: {err}");
        let lines = json_lines(&read(case, "out"));
        let summary = &lines.last().expect("summary line")["summary"];
        let (saved, failed) = (
            summary["saved"].as_u64().expect("saved"),
            summary["save_errors"].as_u64().expect("save_errors"),
        );
        assert_eq!(
            (summary["inferred"].as_u64(), saved + failed),
            (Some(10), 10),
            "{case}: {summary}"
        );
        assert!(failed >= 1, "{case}: nothing failed: {summary}");
        assert!(
            err.contains(os_error) && err.contains(&folder.display().to_string()),
            "{case}: warning must carry the OS error and the path: {err}"
        );
        let files: Vec<String> = read(case, "files").lines().map(str::to_string).collect();
        assert!(
            files.iter().all(|f| !f.contains(".tmp")),
            "{case}: temp files left: {files:?}"
        );
        for f in &files {
            let twin = match f.strip_suffix(".jpg") {
                Some(stem) => format!("{stem}.json"),
                None => f.replace(".json", ".jpg"),
            };
            assert!(files.contains(&twin), "{case}: {f} without {twin}");
        }
        assert_eq!(files.len() as u64, 2 * saved, "{case}: {files:?}");
        println!(
            "save-uncertain onto {case}: {saved} saved, {failed} refused; first warning: {}",
            err.lines().find(|l| l.contains("warning")).unwrap_or_default()
        );
    }
}

/// With nothing but the binary: from a folder outside the repository, no `--model`, no
/// `KESTREL_MODEL`, a fresh cache folder, `kestrel` runs its built-in bundle and `info` says so.
/// `KESTREL_MODEL` picks another, and a wrong one is a clear usage error.
#[test]
fn the_binary_carries_its_default_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cat = sample("chelsea.png");
    let run = |args: &[&str], env: &[(&str, &std::ffi::OsStr)]| {
        let mut c = command();
        c.args(args)
            .current_dir(dir.path())
            .env("XDG_CACHE_HOME", dir.path().join("cache"));
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run kestrel")
    };
    let out = run(&["classify", &cat.to_string_lossy()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(CATS.iter().any(|c| stdout(&out).contains(c)), "{}", stdout(&out));
    let info = stdout(&run(&["info"], &[]));
    assert!(info.contains("built into this binary"), "{info}");
    assert!(
        dir.path().join("cache/kestrel").is_dir(),
        "unpacked into XDG_CACHE_HOME"
    );

    let float = repo_root().join("models/efficientnet-lite0-imagenet.onnx");
    let info = stdout(&run(&["info"], &[("KESTREL_MODEL", float.as_os_str())]));
    assert!(info.contains("($KESTREL_MODEL)") && info.contains("float32"), "{info}");
    let out = run(
        &["classify", &cat.to_string_lossy()],
        &[("KESTREL_MODEL", "no/such.onnx".as_ref())],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("KESTREL_MODEL is no/such.onnx"),
        "{}",
        stderr(&out)
    );
}
