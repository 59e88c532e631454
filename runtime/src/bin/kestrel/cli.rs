//! The command line: every flag of every command, and nothing that runs. `run`'s flags are also
//! the keys of the config file (`config.rs`), which is why they are all optional here: a flag
//! overrides the file, the file overrides the default.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Deserialize;

#[derive(Parser)]
#[command(name = "kestrel", version, about = "Run a Kestrel image classifier on a CPU.", long_about = None)]
#[command(
    after_help = "Exit codes: 0 all good · 1 some inputs failed (each reported) · 2 model, config or usage \
                        error."
)]
pub struct Cli {
    /// Read settings from this TOML file [default: $KESTREL_CONFIG, else /etc/kestrel/kestrel.toml
    /// if it exists]. Its keys are `run`'s flags with underscores (top_k = 5, on_change = true);
    /// its `model` is also the model of classify, info and bench. A flag overrides the file.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Classify image files and print the top classes of each, one line per image.
    ///
    /// Example: kestrel classify --model models/efficientnet-lite0-imagenet.int8.onnx cat.jpg dog.png
    Classify(ClassifyArgs),
    /// Time bundles side by side in one process: load time, p50/p95 latency, images/s, memory.
    ///
    /// Inferences interleave (A, B, A, B, …) so machine noise hits every model alike; the last
    /// column is each model's speed relative to the first.
    ///
    /// Example: kestrel bench --model model.onnx --model model.int8.onnx --threads 2
    ///
    /// With --source, times the whole frame pipeline instead (capture, decode, preprocess,
    /// inference) on that source, e.g. --source synthetic:640x480: FPS, per-stage p50/p95, the
    /// share of frame time outside inference, and peak memory.
    Bench(BenchArgs),
    /// Classify live frames: a camera, the Pi camera through a pipe, a stream, or a folder played
    /// as a video. Prints the top classes per frame (or JSON lines), per-stage timings and FPS,
    /// and a summary at the end (end of stream, Ctrl-C or SIGTERM; exit 0). Can also serve a live
    /// web view (--http) and publish to an MQTT broker (--mqtt).
    ///
    /// Sources: `camera` (the first device that captures) / `camera:1` / `camera:/dev/video2` /
    /// `camera:<name>` (V4L2/UVC) · `mjpeg:-` (stdin) · `mjpeg:PATH` (file or named pipe) ·
    /// `mjpeg:tcp://HOST:PORT` · a folder of images (name order) · one image ·
    /// `synthetic[:WxH[:FRAMES]]`.
    ///
    /// Every flag is also a key of the config file (--config, /etc/kestrel/kestrel.toml), with
    /// underscores: `source = "mjpeg:-"`, `top_k = 5`, `http = "0.0.0.0:8080"`.
    ///
    /// Examples:
    ///   kestrel run                                              # first camera, default model
    ///   rpicam-vid -t 0 --codec mjpeg -o - | kestrel run --source mjpeg:-
    ///   kestrel run --source frames/ --format jsonl > out.jsonl
    ///   kestrel run --http                                       # watch on http://127.0.0.1:8080
    ///   kestrel run --mqtt mqtt://broker.local/kitchen/camera --on-change
    ///   kestrel run --save-uncertain review/ --below 0.6         # keep hard frames for labelling
    #[command(verbatim_doc_comment)]
    Run(Box<RunArgs>),
    /// List cameras (V4L2), the formats each offers, and which one `--source camera` picks.
    Cameras,
    /// Print a bundle's labels, preprocessing and model card, and where the model came from.
    Info {
        #[command(flatten)]
        model: ModelArg,
    },
}

/// `--model`, for the commands that run one bundle.
#[derive(clap::Args)]
pub struct ModelArg {
    /// The model bundle (.onnx with kestrel.* metadata) [default: $KESTREL_MODEL, else the config
    /// file's `model`, else the ImageNet int8 bundle built into this binary].
    #[arg(long = "model")]
    pub path: Option<PathBuf>,
}

/// `--threads` and `--format`, the same in every command that infers.
#[derive(clap::Args)]
pub struct OutputArgs {
    /// Threads for inference. Above 1, every convolution and matrix product splits across them,
    /// and while a frame is inferred the other threads wait for work spinning, not sleeping (as
    /// onnxruntime's do): up to one core each busy during inference, none between frames.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
    /// Output format: human-readable lines, or one JSON object per line for scripts.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(clap::Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// How many classes to print per image.
    #[arg(long, short = 'k', default_value_t = 3)]
    pub top_k: usize,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Refuse images with more pixels than this (a decompression bomb is refused before it is
    /// decoded).
    #[arg(long, default_value_t = kestrel_runtime::decode::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Image files (JPEG, PNG, BMP, GIF, TIFF, WebP).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A model bundle; repeat to compare [default: as for `classify`].
    #[arg(long = "model")]
    pub models: Vec<PathBuf>,
    /// Time the frame pipeline on this source (see `kestrel run --help`) for --iterations frames.
    #[arg(long)]
    pub source: Option<String>,
    /// Timed inferences per model.
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
    /// Untimed inferences per model first.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Run int8 models as tract alone would (QDQ simulated in f32), without Kestrel's integer
    /// kernels: the comparison that shows what the kernels bring.
    #[arg(long)]
    pub tract_only: bool,
    /// Print where each model's time goes instead: milliseconds per op type per inference,
    /// slowest first (tract's plan, Kestrel's int8 ops included).
    #[arg(long)]
    pub profile: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Text,
    Jsonl,
}

/// `kestrel run`'s settings: the flags, and (deserialised) the config file. Every field is
/// optional so that "not given" is told apart from "given as the default"; `config.rs` merges
/// the two and fills in the defaults named in each doc comment.
#[derive(clap::Args, Deserialize, Default, Debug, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct RunArgs {
    /// The model bundle [default: $KESTREL_MODEL, else the built-in ImageNet int8 bundle].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where frames come from (see above) [default: camera].
    #[arg(long)]
    pub source: Option<String>,
    /// Classes per result [default: 3].
    #[arg(long, short = 'k')]
    pub top_k: Option<usize>,
    /// Threads for inference [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Output format on stdout: text or jsonl [default: text].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Infer on every Nth frame only [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub every: Option<u64>,
    /// Classify only this region of each frame: x,y,w,h in pixels.
    #[arg(long, value_name = "X,Y,W,H")]
    pub roi: Option<String>,
    /// Report a label only when its probability reaches this, else "uncertain" [default: 0].
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Average probabilities over the last N inferred frames, so a label does not flicker
    /// [default: 1].
    #[arg(long)]
    pub smooth: Option<usize>,
    /// Print and publish a frame only when the reported label changes (the web view still shows
    /// every frame). `--on-change=false` overrides a config file's `on_change = true`.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub on_change: Option<bool>,
    /// Save frames whose top-1 probability is below --below into DIR (JPEG + JSON with the
    /// top-k), to label and add to the training folder.
    #[arg(long, value_name = "DIR")]
    pub save_uncertain: Option<PathBuf>,
    /// See --save-uncertain [default: 0.6].
    #[arg(long)]
    pub below: Option<f32>,
    /// At most one saved frame per this many seconds [default: 1].
    #[arg(long)]
    pub save_interval: Option<f64>,
    /// Stop after this many frames.
    #[arg(long)]
    pub frames: Option<u64>,
    /// Camera resolution to ask for, e.g. 1280x720 (the closest offered is used) [default: 640x480].
    #[arg(long, value_name = "WxH")]
    pub resolution: Option<String>,
    /// Camera frame rate to ask for [default: 30].
    #[arg(long)]
    pub fps: Option<u32>,
    /// Keep trying a lost camera or stream, with back-off, instead of stopping.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub reconnect: Option<bool>,
    /// Seconds between progress lines (text format, on stderr) [default: 5].
    #[arg(long)]
    pub progress: Option<f64>,
    /// Refuse frames with more pixels than this (counted as corrupt, before decoding)
    /// [default: 268435456].
    #[arg(long)]
    pub max_pixels: Option<u64>,
    /// Serve a live web view on ADDR: the frames with the top-k over them, FPS, timings and
    /// label changes at /, plus /api/latest (JSON), /api/events (Server-Sent Events) and
    /// /metrics (Prometheus). Without ADDR: 127.0.0.1:8080, this machine only; 0.0.0.0:8080
    /// opens it to the network.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8080")]
    pub http: Option<String>,
    /// Require this token on every web route: `Authorization: Bearer TOKEN`, or `?token=TOKEN`
    /// in the address (what a browser can send).
    #[arg(long, value_name = "TOKEN")]
    pub http_token: Option<String>,
    /// Publish each result as JSON (the jsonl schema) to mqtt://[USER:PASS@]HOST[:PORT]/TOPIC,
    /// QoS 1; only changes with --on-change. A broker that is down never stops the frame loop:
    /// results wait in a bounded queue and go out when it is back.
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,
    /// Results kept for an unreachable broker; beyond this the oldest are dropped (counted)
    /// [default: 1000].
    #[arg(long, value_name = "N")]
    pub mqtt_queue: Option<usize>,
}
