//! `kestrel`: classify images with a Kestrel model bundle.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kestrel_runtime::{Classifier, LoadOptions, load_image};

/// Exit codes scripts can rely on.
mod exit {
    /// Some inputs could not be classified (each was reported); the others were.
    pub const SOME_INPUTS_FAILED: u8 = 1;
    /// The model could not be loaded, or nothing could be done.
    pub const FATAL: u8 = 2;
}

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
    Bench {
        /// A model bundle; repeat to compare.
        #[arg(long = "model", required = true)]
        models: Vec<PathBuf>,
        /// Timed inferences per model.
        #[arg(long, default_value_t = 50)]
        iterations: usize,
        /// Untimed inferences per model first.
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        threads: u16,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print a bundle's labels, preprocessing and model card.
    Info {
        /// The model bundle (.onnx with kestrel.* metadata).
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: PathBuf,
    },
}

/// The shipped int8 bundle: what the runtime runs unless told otherwise.
const DEFAULT_MODEL: &str = "models/efficientnet-lite0-imagenet.int8.onnx";

#[derive(clap::Args)]
struct ClassifyArgs {
    /// The model bundle (.onnx with kestrel.* metadata).
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// How many classes to print per image.
    #[arg(long, short = 'k', default_value_t = 3)]
    top_k: usize,
    /// Output format: human-readable lines, or one JSON object per line for scripts.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Threads for inference (matrix products run in parallel above 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    /// Image files (JPEG, PNG, BMP, GIF, TIFF, WebP).
    #[arg(required = true)]
    images: Vec<PathBuf>,
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
        Command::Info { model } => info(&model),
        Command::Bench {
            models,
            iterations,
            warmup,
            threads,
            format,
        } => bench(&models, iterations, warmup, threads.into(), format),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::FATAL)
        }
    }
}

fn classify(args: &ClassifyArgs) -> anyhow::Result<ExitCode> {
    let options = LoadOptions {
        threads: args.threads.into(),
    };
    let classifier = Classifier::load(&args.model, &options).context("loading the model")?;
    let labels = classifier.labels();
    let mut stdout = std::io::stdout().lock();
    let mut failed = 0usize;
    for path in &args.images {
        let prediction = load_image(path)
            .map_err(anyhow::Error::from)
            .and_then(|img| Ok(classifier.classify(&img)?));
        let prediction = match prediction {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e:#}");
                failed += 1;
                continue;
            }
        };
        let top = prediction.top_k(labels, args.top_k);
        match args.format {
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
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::SOME_INPUTS_FAILED)
    })
}

fn bench(
    models: &[PathBuf],
    iterations: usize,
    warmup: usize,
    threads: usize,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let report = kestrel_runtime::bench::run(models, &LoadOptions { threads }, warmup, iterations.max(1))
        .context("benchmarking")?;
    match format {
        Format::Text => print!("{}", kestrel_runtime::bench::table(&report)),
        Format::Jsonl => println!("{}", serde_json::to_string(&report)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn info(model: &std::path::Path) -> anyhow::Result<ExitCode> {
    let bundle = kestrel_runtime::Bundle::read(model)?;
    let m = &bundle.metadata;
    println!("model:       {}", model.display());
    println!("backbone:    {}", m.model_card.backbone);
    println!("precision:   {}", m.model_card.precision);
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
    Ok(ExitCode::SUCCESS)
}
