//! `kestrel run --http`: the page in a real browser (Debian's chromium), the API and metrics
//! through a real HTTP client (curl), and the token.

use std::time::Duration;

use super::browser::Browser;
use super::util::*;

/// A run fed the cat photo over stdin (as `rpicam-vid | kestrel run --source mjpeg:-`) with the
/// web view on a free port; the feeding thread stops when the run does.
fn cat_stream(extra: &[&str]) -> Running {
    let mut args = vec![
        "run",
        "--source",
        "mjpeg:-",
        "--format",
        "jsonl",
        "--http",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let mut run = Running::spawn(&args, true);
    let mut stdin = run.child.stdin.take().expect("stdin");
    let frame = jpeg_frame("chelsea.png");
    std::thread::spawn(move || {
        use std::io::Write;
        while stdin.write_all(&frame).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    run
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// The value of the Prometheus sample `name` (with its labels, if any) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

/// The page loads in headless chromium, shows the label of live results (two different frames'
/// results, so the server-sent events reach it) and the video under it, and a screenshot of the
/// video area is a picture, not an empty box.
#[test]
fn the_page_shows_live_frames_and_labels_in_a_browser() {
    let run = cat_stream(&[]);
    let addr = run.web_addr();
    run.wait_lines(3, Duration::from_secs(60));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut browser = Browser::launch(dir.path());
    browser.navigate(&format!("http://{addr}/"));
    // Waits on the page's state, not on a time budget; the deadline only bounds a broken page.
    let shown = browser.eval(
        r#"new Promise((resolve, reject) => {
            const label = document.getElementById("label");
            const video = document.getElementById("video");
            const frames = new Set();
            const started = performance.now();
            const check = () => {
                if (label.dataset.frame) frames.add(label.dataset.frame);
                const page = document.body.innerText;
                if (frames.size >= 2 && video.naturalWidth > 0) {
                    resolve({ label: label.textContent, page });
                } else if (performance.now() - started > 60000) {
                    reject(new Error(`in 60 s: results shown for ${frames.size} frames, ` +
                        `video ${video.naturalWidth} px wide; the page:\n${page}`));
                } else {
                    setTimeout(check, 20);
                }
            };
            check();
        })"#,
    );
    let label = shown["label"].as_str().unwrap_or_default();
    let page = shown["page"].as_str().unwrap_or_default();
    assert!(CATS.contains(&label), "the page's label is `{label}`:\n{page}");
    assert!(page.contains("inference"), "timings missing:\n{page}");
    let shot = browser.screenshot();
    let img = image::load_from_memory(&shot).expect("screenshot decodes").to_rgb8();
    // The video fills the left of the page (from 16 px in); the page around it is #111.
    let region: Vec<f64> = (200..600)
        .step_by(4)
        .flat_map(|y| (100..700).step_by(4).map(move |x| (x, y)))
        .map(|(x, y)| {
            let p = img.get_pixel(x, y).0;
            (f64::from(p[0]) + f64::from(p[1]) + f64::from(p[2])) / 3.0
        })
        .collect();
    let mean = region.iter().sum::<f64>() / region.len() as f64;
    let sd = (region.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / region.len() as f64).sqrt();
    println!("video area: mean {mean:.1}, sd {sd:.1}");
    assert!(
        mean > 30.0 && sd > 20.0,
        "video area looks blank: mean {mean:.1}, sd {sd:.1}"
    );
    let (status, _, _) = run.stop();
    assert!(status.success());
}

/// /api/latest has the jsonl schema, /api/events streams one event per result in order,
/// /metrics parses as Prometheus text with consistent histograms, /stream.mjpg carries JPEGs.
#[test]
fn the_api_events_metrics_and_video_answer_a_real_client() {
    let run = cat_stream(&[]);
    let addr = run.web_addr();
    run.wait_lines(3, Duration::from_secs(60));
    let (code, body) = curl(&format!("http://{addr}/api/latest"), &[]);
    assert_eq!(code, 200);
    let latest = json(&body);
    let line = json(run.lines()[0].as_bytes());
    assert_eq!(keys(&latest), keys(&line), "same schema as --format jsonl");
    assert!(CATS.contains(&latest["label"].as_str().unwrap_or_default()), "{latest}");

    let (code, body) = curl(&format!("http://{addr}/api/events"), &["--max-time", "3"]);
    assert_eq!(code, 200);
    let text = String::from_utf8_lossy(&body);
    let events: Vec<(u64, serde_json::Value)> = text
        .split("\n\n")
        .filter_map(|block| {
            let id = block.lines().find_map(|l| l.strip_prefix("id: "))?.parse().ok()?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((id, json(data.as_bytes())))
        })
        .collect();
    assert!(events.len() >= 3, "few events in 3 s:\n{text}");
    for pair in events.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "one event per result, none skipped");
        // Frame numbers may skip: a live source drops stale frames when inference lags (a
        // loaded machine); results, and so events, never skip.
        assert!(pair[1].1["frame"].as_u64() > pair[0].1["frame"].as_u64(), "in order");
    }
    assert_eq!(keys(&events[0].1), keys(&line));

    let (code, body) = curl(&format!("http://{addr}/metrics"), &[]);
    assert_eq!(code, 200);
    let metrics = String::from_utf8_lossy(&body).into_owned();
    let value = |name: &str| sample(&metrics, name).unwrap_or_else(|| panic!("no {name} in:\n{metrics}"));
    let inferred = value("kestrel_frames_inferred_total");
    assert!(inferred >= 3.0);
    assert!(value("kestrel_frames_total") >= inferred);
    let buckets: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with("kestrel_stage_seconds_bucket{stage=\"inference\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(buckets.len(), 12, "{metrics}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "cumulative: {buckets:?}");
    assert_eq!(buckets[11], value("kestrel_stage_seconds_count{stage=\"inference\"}"));
    let cat_results: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("kestrel_label_total{") && CATS.iter().any(|c| l.contains(c)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(cat_results >= 3.0, "{metrics}");
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line: {line}"));
        v.parse::<f64>().unwrap_or_else(|_| panic!("bad value: {line}"));
    }

    let (code, body) = curl(&format!("http://{addr}/stream.mjpg"), &["--max-time", "2"]);
    assert_eq!(code, 200);
    let start = body
        .windows(2)
        .position(|w| w == [0xFF, 0xD8])
        .expect("a JPEG in the stream");
    let end = body[start..]
        .windows(2)
        .position(|w| w == [0xFF, 0xD9])
        .expect("a whole JPEG")
        + start
        + 2;
    let frame = image::load_from_memory(&body[start..end]).expect("the part decodes");
    assert_eq!((frame.width(), frame.height()), (320, 213));
    assert!(String::from_utf8_lossy(&body).contains("--kestrelframe"));

    let (code, _) = curl(&format!("http://{addr}/nope"), &[]);
    assert_eq!(code, 404);
    let (status, _, _) = run.stop();
    assert!(status.success());
}

/// With --http-token, every route without the token (or with a wrong one) gets 401 and a
/// fixed body, nothing of the run; the header and the query both open it.
#[test]
fn the_token_guards_every_route() {
    let run = cat_stream(&["--http-token", "s3cret"]);
    let addr = run.web_addr();
    run.wait_lines(2, Duration::from_secs(60));
    for route in [
        "/",
        "/api/latest",
        "/api/status",
        "/api/events",
        "/metrics",
        "/stream.mjpg",
        "/frame.jpg",
        "/nope",
    ] {
        let url = format!("http://{addr}{route}");
        for extra in [&[][..], &["-H", "Authorization: Bearer wrong"][..]] {
            let (code, body) = curl(&url, &[&["--max-time", "3"][..], extra].concat());
            assert_eq!(code, 401, "{route} {extra:?}");
            assert_eq!(body, b"unauthorized\n", "{route}: nothing else");
        }
        let (code, _) = curl(&format!("{url}?token=s3cre"), &["--max-time", "3"]);
        assert_eq!(code, 401, "{route} with a prefix of the token");
    }
    let (code, body) = curl(
        &format!("http://{addr}/api/latest"),
        &["-H", "Authorization: Bearer s3cret"],
    );
    assert_eq!(code, 200);
    json(&body);
    let (code, body) = curl(&format!("http://{addr}/api/latest?token=s3cret"), &[]);
    assert_eq!(code, 200);
    json(&body);
    let (code, _) = curl(&format!("http://{addr}/stream.mjpg?token=s3cret"), &["--max-time", "1"]);
    assert_eq!(code, 200);
    let (status, _, _) = run.stop();
    assert!(status.success());
}

/// A client that asks for the video and never reads is dropped (its writes time out once the
/// socket buffers are full), counted in /metrics, and the frame loop keeps classifying meanwhile;
/// clients that simply leave are not counted.
#[test]
fn a_client_that_stops_reading_is_dropped() {
    use std::io::Write;
    // 1080p frames fill the socket buffers within seconds.
    let run = Running::spawn(
        &[
            "run",
            "--source",
            "synthetic:1920x1080:1000000",
            "--format",
            "jsonl",
            "--http",
            "127.0.0.1:0",
        ],
        false,
    );
    let addr = run.web_addr();
    run.wait_lines(2, Duration::from_secs(60));
    let metric = |name: &str| -> f64 {
        let (_, body) = curl(&format!("http://{addr}/metrics"), &[]);
        sample(&String::from_utf8_lossy(&body), name).unwrap_or(f64::NAN)
    };
    // A client that watches a moment and leaves is not one that fell behind.
    curl(&format!("http://{addr}/stream.mjpg"), &["--max-time", "1"]);
    curl(&format!("http://{addr}/api/events"), &["--max-time", "1"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        metric("kestrel_http_clients_dropped_total"),
        0.0,
        "clients that left counted as dropped"
    );
    let mut stalled = std::net::TcpStream::connect(&addr).expect("connect");
    stalled
        .write_all(b"GET /stream.mjpg HTTP/1.1\r\nHost: kestrel\r\n\r\n")
        .expect("request");
    let start = std::time::Instant::now();
    let frames_at_start = metric("kestrel_frames_inferred_total");
    while metric("kestrel_http_clients_dropped_total") < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the stalled client was never dropped"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let frames = metric("kestrel_frames_inferred_total") - frames_at_start;
    println!(
        "stalled client dropped after {:.1} s; {frames} frames classified meanwhile",
        start.elapsed().as_secs_f64()
    );
    assert!(frames > 0.0, "the frame loop stalled with the client");
    // Only the metrics request itself is open now.
    assert_eq!(metric("kestrel_http_clients"), 1.0);
    drop(stalled);
    let (status, _, _) = run.stop();
    assert!(status.success());
}
