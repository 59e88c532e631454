//! `kestrel run --mqtt` against a real broker (Debian's mosquitto) on a free loopback port:
//! results arrive with the jsonl schema; the broker stopped mid-run stops nothing; when it is
//! back, publishing resumes and nothing is lost beyond what the bounded queue reports dropped.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::util::*;

const FRAMES: usize = 300;
const QUEUE: usize = 20;

/// A broker or subscriber process, killed if the test fails before stopping it.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// mosquitto with a persistent store, so a subscriber's session (and the results queued for
/// it) outlives a broker restart, as on any broker that keeps state.
fn broker(dir: &Path, port: u16) -> Proc {
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            // `user root`: run as root (CI), mosquitto would otherwise switch to its own user,
            // which cannot write the test's folder.
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
             log_dest file {}/broker.log\nlog_type all\n",
            dir.display(),
            dir.display()
        ),
    )
    .expect("write conf");
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto runs (apt-get install mosquitto mosquitto-clients)");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "mosquitto did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

/// A durable QoS 1 subscriber writing one payload per line to `out`.
fn subscriber(dir: &Path, port: u16, out: &str) -> Proc {
    let child = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "kestrel/test",
            "-q",
            "1",
        ])
        .args(["-c", "-i", "kestrel-test-sub"])
        .stdout(std::fs::File::create(dir.join(out)).expect("create"))
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub runs");
    let start = Instant::now();
    let subscribed = || {
        std::fs::read_to_string(dir.join("broker.log"))
            .unwrap_or_default()
            .matches("SUBSCRIBE from kestrel-test-sub")
            .count()
    };
    let before = subscribed();
    // mosquitto_sub subscribes on every connection, a resumed session's included.
    while subscribed() == before {
        assert!(start.elapsed() < Duration::from_secs(10), "subscriber never subscribed");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

fn stop(mut p: Proc, signal: &str) {
    let _ = Command::new("kill").args([signal, &p.0.id().to_string()]).status();
    let _ = p.0.wait();
}

#[test]
fn results_reach_a_real_broker_and_survive_its_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let b = broker(dir.path(), port);
    let sub1 = subscriber(dir.path(), port, "sub1.txt");
    let url = format!("mqtt://127.0.0.1:{port}/kestrel/test");
    let frames = format!("synthetic:160x120:{FRAMES}");
    let queue = QUEUE.to_string();
    let run = Running::spawn(
        &[
            "run",
            "--source",
            &frames,
            "--format",
            "jsonl",
            "--mqtt",
            &url,
            "--mqtt-queue",
            &queue,
        ],
        false,
    );
    run.wait_lines(60, Duration::from_secs(120));
    // The broker goes away (a graceful stop, so its store keeps the subscriber's session).
    stop(b, "-TERM");
    stop(sub1, "-TERM");
    let at_stop = run.lines().len();
    run.wait_lines(at_stop + 60, Duration::from_secs(120));
    let b = broker(dir.path(), port);
    let sub2 = subscriber(dir.path(), port, "sub2.txt");
    let (status, lines, stderr) = {
        let mut run = run;
        let status = run.child.wait().expect("wait");
        std::thread::sleep(Duration::from_millis(200));
        let lines = run.lines();
        let stderr = run.stderr.lock().expect("lines").clone();
        (status, lines, stderr)
    };
    assert!(status.success(), "{}", stderr.join("\n"));
    // Results still queued at the broker for the subscriber reach it within a moment.
    std::thread::sleep(Duration::from_secs(2));
    stop(sub2, "-TERM");
    stop(b, "-TERM");

    let summary: serde_json::Value = serde_json::from_str(lines.last().expect("summary")).expect("JSON");
    let m = &summary["mqtt"];
    let (dropped, unsent, reconnects) = (
        m["dropped"].as_u64().expect("dropped"),
        m["unsent"].as_u64().expect("unsent"),
        m["reconnects"].as_u64().expect("reconnects"),
    );
    assert_eq!(summary["summary"]["inferred"].as_u64(), Some(FRAMES as u64));
    let schema: BTreeSet<String> = json_lines(&lines[0])[0]
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    let mut received = BTreeSet::new();
    let mut after_restart = BTreeSet::new();
    for (file, set) in [("sub1.txt", None), ("sub2.txt", Some(&mut after_restart))] {
        let text = std::fs::read_to_string(dir.path().join(file)).expect("read");
        let mut set = set;
        for v in json_lines(&text) {
            let keys: BTreeSet<String> = v.as_object().expect("object").keys().cloned().collect();
            assert_eq!(keys, schema, "published JSON has the jsonl schema");
            let frame = v["frame"].as_u64().expect("frame");
            received.insert(frame);
            if let Some(s) = set.as_mut() {
                s.insert(frame);
            }
        }
    }
    println!(
        "mqtt: {} of {FRAMES} results received, {dropped} dropped by the queue ({QUEUE}), {unsent} unsent, \
         {reconnects} reconnects; stopped at frame {at_stop}",
        received.len()
    );
    assert!(reconnects >= 1, "{m}");
    assert_eq!(unsent, 0, "everything queued went out before exit");
    assert!(dropped > 0, "an outage of 60+ frames overflows a queue of {QUEUE}");
    assert!(
        received.len() as u64 + dropped >= FRAMES as u64,
        "lost more than the queue reported: {} received + {dropped} dropped < {FRAMES}",
        received.len()
    );
    assert!(
        after_restart.contains(&(FRAMES as u64 - 1)),
        "publishing resumed to the end"
    );
}
