//! `kestrel`: classify images with a Kestrel model bundle. Which model runs is `model.rs`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kestrel_runtime::decode::load_image_with_limit;
use kestrel_runtime::{Classifier, LoadOptions};

use kestrel_runtime::exit::Status;
use model::{BUILTIN_NAME, Origin, resolve_model};

mod model;

#[derive(Parser)]
#[command(name = "kestrel", version, about = "Run a Kestrel image classifier on a CPU.", long_about = None)]
#[command(after_help = "Exit codes: 0 all good · 1 some inputs failed (each reported) · 2 model or usage error.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    Bench {
        /// A model bundle; repeat to compare [default: as for `classify`].
        #[arg(long = "model")]
        models: Vec<PathBuf>,
        /// Time the frame pipeline on this source (see `kestrel run --help`) for --iterations frames.
        #[arg(long)]
        source: Option<String>,
        /// Timed inferences per model.
        #[arg(long, default_value_t = 50)]
        iterations: usize,
        /// Untimed inferences per model first.
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        #[command(flatten)]
        output: OutputArgs,
        /// Run int8 models as tract alone would (QDQ simulated in f32), without Kestrel's integer
        /// kernels: the comparison that shows what the kernels bring.
        #[arg(long)]
        tract_only: bool,
        /// Print where each model's time goes instead: milliseconds per op type per inference,
        /// slowest first (tract's plan, Kestrel's int8 ops included).
        #[arg(long)]
        profile: bool,
    },
    /// Classify live frames: a camera, the Pi camera through a pipe, a stream, or a folder played
    /// as a video. Prints the top classes per frame (or JSON lines), per-stage timings and FPS,
    /// and a summary at the end (end of stream, Ctrl-C or SIGTERM; exit 0).
    ///
    /// Sources: `camera` / `camera:1` / `camera:/dev/video2` / `camera:<name>` (V4L2/UVC) ·
    /// `mjpeg:-` (stdin) · `mjpeg:PATH` (file or named pipe) · `mjpeg:tcp://HOST:PORT` ·
    /// a folder of images (name order) · one image · `synthetic[:WxH[:FRAMES]]`.
    ///
    /// Examples:
    ///   kestrel run                                              # first camera, default model
    ///   rpicam-vid -t 0 --codec mjpeg -o - | kestrel run --source mjpeg:-
    ///   kestrel run --source frames/ --format jsonl > out.jsonl
    ///   kestrel run --save-uncertain review/ --below 0.6         # keep hard frames for labelling
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// List cameras (V4L2) and the formats each offers.
    Cameras,
    /// Print a bundle's labels, preprocessing and model card.
    Info {
        #[command(flatten)]
        model: ModelArg,
    },
}

/// `--model`, for the commands that run one bundle.
#[derive(clap::Args)]
struct ModelArg {
    /// The model bundle (.onnx with kestrel.* metadata) [default: $KESTREL_MODEL, else the
    /// ImageNet int8 bundle built into this binary].
    #[arg(long = "model")]
    path: Option<PathBuf>,
}

/// `--threads` and `--format`, the same in every command that infers.
#[derive(clap::Args)]
struct OutputArgs {
    /// Threads for inference (matrix products run in parallel above 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    /// Output format: human-readable lines, or one JSON object per line for scripts.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(clap::Args)]
struct ClassifyArgs {
    #[command(flatten)]
    model: ModelArg,
    /// How many classes to print per image.
    #[arg(long, short = 'k', default_value_t = 3)]
    top_k: usize,
    #[command(flatten)]
    output: OutputArgs,
    /// Refuse images with more pixels than this (a decompression bomb is refused before it is
    /// decoded).
    #[arg(long, default_value_t = kestrel_runtime::decode::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Image files (JPEG, PNG, BMP, GIF, TIFF, WebP).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Where frames come from (see above).
    #[arg(long, default_value = "camera")]
    source: String,
    #[arg(long, short = 'k', default_value_t = 3)]
    top_k: usize,
    #[command(flatten)]
    output: OutputArgs,
    /// Infer on every Nth frame only.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    every: u64,
    /// Classify only this region of each frame: x,y,w,h in pixels.
    #[arg(long, value_name = "X,Y,W,H")]
    roi: Option<kestrel_runtime::live::Roi>,
    /// Report a label only when its probability reaches this (else "uncertain").
    #[arg(long, default_value_t = 0.0)]
    threshold: f32,
    /// Average probabilities over the last N inferred frames, so a label does not flicker.
    #[arg(long, default_value_t = 1)]
    smooth: usize,
    /// Print a frame only when the reported label changes.
    #[arg(long)]
    on_change: bool,
    /// Save frames whose top-1 probability is below --below into DIR (JPEG + JSON with the
    /// top-k), to label and add to the training folder.
    #[arg(long, value_name = "DIR")]
    save_uncertain: Option<PathBuf>,
    #[arg(long, default_value_t = 0.6)]
    below: f32,
    /// At most one saved frame per this many seconds.
    #[arg(long, default_value_t = 1.0)]
    save_interval: f64,
    /// Stop after this many frames.
    #[arg(long)]
    frames: Option<u64>,
    /// Camera resolution to ask for, e.g. 1280x720 (the closest offered is used).
    #[arg(long, value_name = "WxH")]
    resolution: Option<String>,
    /// Camera frame rate to ask for.
    #[arg(long)]
    fps: Option<u32>,
    /// Keep trying a lost camera or stream, with back-off, instead of stopping.
    #[arg(long)]
    reconnect: bool,
    /// Seconds between progress lines (text format, on stderr).
    #[arg(long, default_value_t = 5.0)]
    progress: f64,
    /// Refuse frames with more pixels than this (counted as corrupt, before decoding).
    #[arg(long, default_value_t = kestrel_runtime::decode::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Jsonl,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Classify(args) => classify(&args),
        Command::Info { model } => info(model.path.as_ref()),
        Command::Run(args) => run(&args),
        Command::Cameras => cameras(),
        Command::Bench {
            models,
            source: Some(source),
            iterations,
            output,
            ..
        } => bench_models(&models)
            .and_then(|models| bench_pipeline(&models, &source, iterations, output.threads.into(), output.format)),
        Command::Bench {
            models,
            source: None,
            iterations,
            warmup,
            output,
            tract_only,
            profile,
        } => {
            let format = output.format;
            let options = LoadOptions {
                threads: output.threads.into(),
                int8_kernels: !tract_only,
            };
            bench_models(&models).and_then(|models| {
                if profile {
                    bench_profile(&models, iterations, &options)
                } else {
                    bench(&models, iterations, warmup, &options, format)
                }
            })
        }
    };
    match result {
        Ok(status) => status.into(),
        Err(e) => {
            eprintln!("error: {}", kestrel_runtime::error_report(e.as_ref()));
            Status::Fatal.into()
        }
    }
}

fn classify(args: &ClassifyArgs) -> anyhow::Result<Status> {
    let options = LoadOptions {
        threads: args.output.threads.into(),
        ..LoadOptions::default()
    };
    let (model, _) = resolve_model(args.model.path.as_ref())?;
    let classifier = Classifier::load(&model, &options).context("loading the model")?;
    let labels = classifier.labels();
    let mut stdout = std::io::stdout().lock();
    let mut failed = 0usize;
    for path in &args.images {
        let prediction = load_image_with_limit(path, args.max_pixels)
            .map_err(anyhow::Error::from)
            .and_then(|img| Ok(classifier.classify(&img)?));
        let prediction = match prediction {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {}", kestrel_runtime::error_report(e.as_ref()));
                failed += 1;
                continue;
            }
        };
        let top = prediction.top_k(labels, args.top_k);
        match args.output.format {
            Format::Text => {
                let classes: Vec<String> = top
                    .iter()
                    .map(|s| format!("{} {:.1}%", s.label, 100.0 * s.probability))
                    .collect();
                writeln!(stdout, "{}: {}", path.display(), classes.join(" · "))?;
            }
            Format::Jsonl => {
                let line = serde_json::json!({ "image": path, "top": top });
                writeln!(stdout, "{line}")?;
            }
        }
    }
    Ok(if failed == 0 {
        Status::Success
    } else {
        Status::CheckFailed
    })
}

fn bench(
    models: &[PathBuf],
    iterations: usize,
    warmup: usize,
    options: &LoadOptions,
    format: Format,
) -> anyhow::Result<Status> {
    let report = kestrel_runtime::bench::run(models, options, warmup, iterations.max(1)).context("benchmarking")?;
    match format {
        Format::Text => print!("{}", kestrel_runtime::bench::table(&report)),
        Format::Jsonl => println!("{}", serde_json::to_string(&report)?),
    }
    Ok(Status::Success)
}

/// Time per op type, per model: where an inference's milliseconds go.
fn bench_profile(models: &[PathBuf], iterations: usize, options: &LoadOptions) -> anyhow::Result<Status> {
    for model in models {
        let classifier = Classifier::load(model, options).context("loading the model")?;
        let input = kestrel_runtime::bench::fixed_input(classifier.metadata().preprocess.tensor_len());
        classifier.logits(&input)?;
        let rows = classifier.profile(&input, iterations.max(1))?;
        let total: f64 = rows.iter().map(|r| r.2).sum();
        println!(
            "{} · {} · {total:.2} ms per inference",
            model.display(),
            classifier.kernels()
        );
        for (name, nodes, ms) in rows {
            println!(
                "  {name:<36} {nodes:>4} nodes {ms:>9.3} ms {:>6.1}%",
                100.0 * ms / total
            );
        }
    }
    Ok(Status::Success)
}

/// The frame pipeline of each model on `source`, one after another.
fn bench_pipeline(
    models: &[PathBuf],
    source: &str,
    frames: usize,
    threads: usize,
    format: Format,
) -> anyhow::Result<Status> {
    use kestrel_runtime::live::{self, LiveOptions};
    let spec: kestrel_runtime::source::SourceSpec = source.parse()?;
    for model in models {
        let classifier = Classifier::load(
            model,
            &LoadOptions {
                threads,
                ..LoadOptions::default()
            },
        )
        .context("loading the model")?;
        let options = LiveOptions {
            max_frames: Some(frames.max(1) as u64),
            progress_every: std::time::Duration::from_secs(3600),
            ..LiveOptions::default()
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let summary = live::run(&classifier, &spec, &options, stop, |_| {})?;
        let peak_rss_mib = kestrel_runtime::bench::proc_status_mib("VmHWM:");
        match format {
            Format::Jsonl => println!(
                "{}",
                serde_json::json!({"model": model, "threads": threads, "summary": summary, "peak_rss_mib": peak_rss_mib})
            ),
            Format::Text => println!(
                "{} on {} · {threads} thread(s) · {} frames · {:.1} FPS · p50 ms: capture {:.2}, decode {:.2}, \
                 preprocess {:.2}, inference {:.1} · {:.1}% of frame time outside inference · peak RSS {:.0} MiB",
                model.display(),
                summary.source,
                summary.inferred,
                summary.fps,
                summary.capture_ms.p50,
                summary.decode_ms.p50,
                summary.preprocess_ms.p50,
                summary.inference_ms.p50,
                100.0 * summary.outside_inference_share,
                peak_rss_mib
            ),
        }
    }
    Ok(Status::Success)
}

/// `bench`'s models: those given, else the one `classify` would run.
fn bench_models(models: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    if models.is_empty() {
        return Ok(vec![resolve_model(None)?.0]);
    }
    Ok(models.to_vec())
}

fn info(flag: Option<&PathBuf>) -> anyhow::Result<Status> {
    let (path, origin) = resolve_model(flag)?;
    let model = path.as_path();
    let bundle = kestrel_runtime::Bundle::read(model)?;
    let m = &bundle.metadata;
    match origin {
        Origin::Flag => println!("model:       {} (--model)", model.display()),
        Origin::Env => println!("model:       {} ($KESTREL_MODEL)", model.display()),
        Origin::BuiltIn => println!(
            "model:       built into this binary: {BUILTIN_NAME} (unpacked to {})",
            model.display()
        ),
    }
    println!("backbone:    {}", m.model_card.backbone);
    println!("precision:   {}", m.model_card.precision);
    let classifier = Classifier::from_bundle(bundle.clone(), model, &LoadOptions::default())?;
    println!("kernels:     {}", classifier.kernels());
    println!("weights:     {}", m.model_card.weights_source);
    println!("written by:  {}", m.model_card.tool);
    println!(
        "input:       {}x{} {:?}",
        m.preprocess.width, m.preprocess.height, m.preprocess.resize
    );
    println!("classes:     {}", m.labels.len());
    for (name, value) in &m.model_card.metrics {
        println!("metric:      {name} = {value}");
    }
    Ok(Status::Success)
}

fn parse_resolution(s: &str) -> anyhow::Result<(u32, u32)> {
    s.split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--resolution {s}: expected WIDTHxHEIGHT, e.g. 1280x720"))
}

fn run(args: &RunArgs) -> anyhow::Result<Status> {
    use kestrel_runtime::live::{self, Event, LiveOptions, SaveUncertain};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let spec: kestrel_runtime::source::SourceSpec = args.source.parse()?;
    let (model, _) = resolve_model(args.model.path.as_ref())?;
    let classifier = Classifier::load(
        &model,
        &LoadOptions {
            threads: args.output.threads.into(),
            ..LoadOptions::default()
        },
    )
    .context("loading the model")?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        // Ctrl-C, SIGTERM (a service manager's stop) and SIGHUP (ctrlc's `termination` feature)
        // all end the run with its summary. A second one while the summary is written exits.
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::Relaxed) {
                std::process::exit(130);
            }
        })
        .context("installing the Ctrl-C/SIGTERM handler")?;
    }
    let options = LiveOptions {
        every: args.every,
        roi: args.roi,
        top_k: args.top_k,
        threshold: args.threshold,
        smooth: args.smooth.max(1),
        on_change: args.on_change,
        save_uncertain: args.save_uncertain.clone().map(|dir| SaveUncertain {
            dir,
            below: args.below,
            min_interval: std::time::Duration::from_secs_f64(args.save_interval.max(0.0)),
        }),
        max_frames: args.frames,
        max_pixels: args.max_pixels,
        reconnect: args.reconnect,
        progress_every: std::time::Duration::from_secs_f64(args.progress.max(0.1)),
        open: kestrel_runtime::source::OpenOptions {
            resolution: args.resolution.as_deref().map(parse_resolution).transpose()?,
            fps: args.fps,
            live: None,
        },
    };
    let jsonl = matches!(args.output.format, Format::Jsonl);
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    let summary = live::run(&classifier, &spec, &options, Arc::clone(&stop), |event| {
        let line = match event {
            Event::Started { source } => {
                eprintln!("source: {source} · model: {}", model.display());
                return;
            }
            Event::Warning(w) => {
                eprintln!("warning: {w}");
                return;
            }
            Event::Corrupt { frame, reason } => {
                eprintln!("frame {frame} skipped: {reason}");
                return;
            }
            Event::Progress(s) => {
                if !jsonl {
                    eprintln!(
                        "{} frames · {:.1} FPS · inference p50 {:.1} ms · dropped {} · corrupt {}",
                        s.frames, s.fps, s.inference_ms.p50, s.dropped, s.corrupt
                    );
                }
                return;
            }
            Event::Frame(r) if jsonl => serde_json::to_string(r).unwrap_or_default(),
            Event::Frame(r) => {
                let classes: Vec<String> = r
                    .top
                    .iter()
                    .map(|t| format!("{} {:.1}%", t.label, 100.0 * t.probability))
                    .collect();
                let what = r.name.clone().unwrap_or_else(|| format!("frame {}", r.frame));
                let verdict = r.label.as_deref().unwrap_or("(uncertain)");
                format!(
                    "{what}: {verdict} · {} · {:.1} ms{}",
                    classes.join(" · "),
                    r.timings_ms.decode + r.timings_ms.preprocess + r.timings_ms.inference,
                    r.saved
                        .as_ref()
                        .map(|p| format!(" · saved {}", p.display()))
                        .unwrap_or_default()
                )
            }
        };
        if write_error.is_none()
            && let Err(e) = writeln!(stdout, "{line}")
        {
            // A closed pipe (| head) ends the run cleanly.
            write_error = Some(e);
            stop.store(true, Ordering::Relaxed);
        }
    })?;
    if jsonl {
        let _ = writeln!(stdout, "{}", serde_json::json!({ "summary": summary }));
    } else {
        eprintln!(
            "summary: {} frames ({} inferred, {} skipped by --every, {} dropped as stale, {} corrupt) in {:.1} s · \
             {:.1} FPS · p50/p95 ms: decode {:.1}/{:.1}, preprocess {:.1}/{:.1}, inference {:.1}/{:.1} · {:.0}% of \
             frame time outside inference · saved {} · {}",
            summary.frames,
            summary.inferred,
            summary.skipped,
            summary.dropped,
            summary.corrupt,
            summary.elapsed_s,
            summary.fps,
            summary.decode_ms.p50,
            summary.decode_ms.p95,
            summary.preprocess_ms.p50,
            summary.preprocess_ms.p95,
            summary.inference_ms.p50,
            summary.inference_ms.p95,
            100.0 * summary.outside_inference_share,
            summary.saved,
            summary.ended
        );
    }
    Ok(Status::Success)
}

#[cfg(feature = "camera")]
fn cameras() -> anyhow::Result<Status> {
    let list = kestrel_runtime::source::camera::list().map_err(|e| anyhow::anyhow!("listing cameras: {e}"))?;
    if list.is_empty() {
        println!(
            "no V4L2 cameras found. A Raspberry Pi CSI camera is reached through libcamera instead: \
             rpicam-vid -t 0 --codec mjpeg -o - | kestrel run --source mjpeg:-"
        );
    }
    for c in list {
        println!("camera:{}  {}  ({})", c.index, c.name, c.description);
        for f in c.formats {
            println!("    {f}");
        }
    }
    Ok(Status::Success)
}

#[cfg(not(feature = "camera"))]
fn cameras() -> anyhow::Result<Status> {
    Err(kestrel_runtime::source::SourceError::NoCameraSupport.into())
}
