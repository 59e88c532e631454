//! What the topic modules share: the binary (never reading a config file unless told), the
//! sample photos, JSON lines.

use std::path::PathBuf;
use std::process::{Command, Output};
/// The repository root as cargo states it when it runs the test, not as compiled in: a test
/// binary built by another checkout sharing the target folder (CI's clone on this machine) is
/// reused as fresh, and would look for that checkout's files.
pub fn repo_root() -> PathBuf {
    let manifest =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.join("..")
}

pub fn sample(name: &str) -> PathBuf {
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

/// `kestrel` with the config file switched off: a machine with the .deb installed has
/// /etc/kestrel/kestrel.toml, which must not change what these tests run.
pub fn command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kestrel"));
    c.env("KESTREL_CONFIG", "").env_remove("KESTREL_MODEL");
    c
}

pub fn kestrel(args: &[&str]) -> Output {
    command()
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run kestrel")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub const CATS: [&str; 5] = ["tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"];

/// `sample` photos as JPEG bytes of at most 320 px on the long side (camera-sized frames).
pub fn jpeg_frame(name: &str) -> Vec<u8> {
    let img = image::open(sample(name)).expect("decode sample");
    let img = img.thumbnail(320, 320).to_rgb8();
    let mut out = Vec::new();
    img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90))
        .expect("encode");
    out
}

pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// A live `kestrel run` reading MJPEG from its stdin, as `rpicam-vid --codec mjpeg -o - | kestrel run`
/// has it, with every stream piped to the test.
pub fn spawn_mjpeg_run() -> std::process::Child {
    command()
        .args(["run", "--source", "mjpeg:-", "--format", "jsonl"])
        .current_dir(repo_root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn")
}

pub fn top1(v: &serde_json::Value) -> String {
    v["top"][0]["label"].as_str().expect("top label").to_string()
}

/// A `kestrel run` in the background whose output lines the test reads as they come.
pub struct Running {
    pub child: std::process::Child,
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The readers of stdout and stderr; they end at the child's end of output.
    readers: Vec<std::thread::JoinHandle<()>>,
}

type Lines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

fn collect(stream: impl std::io::Read + Send + 'static) -> (Lines, std::thread::JoinHandle<()>) {
    use std::io::BufRead;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().expect("lines").push(line);
        }
    });
    (lines, reader)
}

impl Running {
    /// Spawns `kestrel` with `args`; stdin is piped when `stdin` is set.
    pub fn spawn(args: &[&str], stdin: bool) -> Running {
        use std::process::Stdio;
        let mut child = command()
            .args(args)
            .current_dir(repo_root())
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kestrel");
        let (stdout, out_reader) = collect(child.stdout.take().expect("stdout"));
        let (stderr, err_reader) = collect(child.stderr.take().expect("stderr"));
        Running {
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    /// The first stderr line `pick` accepts, waiting up to `timeout`.
    pub fn wait_stderr<T>(&self, timeout: std::time::Duration, pick: impl Fn(&str) -> Option<T>) -> T {
        let start = std::time::Instant::now();
        loop {
            if let Some(v) = self.stderr.lock().expect("lines").iter().find_map(|l| pick(l)) {
                return v;
            }
            assert!(
                start.elapsed() < timeout,
                "kestrel never said it; stderr:\n{}",
                self.stderr.lock().expect("lines").join("\n")
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Waits until stdout has at least `n` lines.
    pub fn wait_lines(&self, n: usize, timeout: std::time::Duration) {
        let start = std::time::Instant::now();
        while self.stdout.lock().expect("lines").len() < n {
            assert!(
                start.elapsed() < timeout,
                "only {} lines in {timeout:?}; stderr:\n{}",
                self.stdout.lock().expect("lines").len(),
                self.stderr.lock().expect("lines").join("\n")
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.stdout.lock().expect("lines").clone()
    }

    /// The address after "web view: http://" on stderr.
    pub fn web_addr(&self) -> String {
        self.wait_stderr(std::time::Duration::from_secs(60), |l| {
            l.strip_prefix("web view: http://")
                .map(|rest| rest.split('/').next().unwrap_or_default().to_string())
        })
    }

    /// SIGTERM, as a service manager stops it, then waits for it and for the last of its output.
    pub fn stop(mut self) -> (std::process::ExitStatus, Vec<String>, Vec<String>) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().expect("wait");
        for reader in self.readers.drain(..) {
            reader.join().expect("output reader");
        }
        (status, self.lines(), self.stderr.lock().expect("lines").clone())
    }
}

/// A failed assertion must not leave the run behind.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl` (a real HTTP client, not ours): status and body.
pub fn curl(url: &str, extra: &[&str]) -> (u16, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("body");
    let out = Command::new("curl")
        .args(["-s", "-o"])
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl runs (apt-get install curl)");
    let code = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    (code, std::fs::read(&body).unwrap_or_default())
}
