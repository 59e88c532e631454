//! `kestrel-train`: build Kestrel model bundles.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kestrel_runtime::atomic::write_atomic;
use kestrel_runtime::bundle::Bundle;
use kestrel_trainer::backend::Backend;
use kestrel_trainer::config::{ClassWeights, FitConfig, Monitor, OptimizerKind, Schedule};
use kestrel_trainer::fit::{self, RunDir};
use kestrel_trainer::progress::Progress;
use kestrel_trainer::quantize::Scheme as QScheme;
use kestrel_trainer::{assets, evaluate, experiments, pretrained, report};

#[derive(Parser)]
#[command(
    name = "kestrel-train",
    version,
    about = "Train and export Kestrel image classifiers."
)]
#[command(
    after_help = "Exit codes: 0 success · 1 the result failed a check (export parity, training diverged) · 2 usage or input error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fine-tune EfficientNet-Lite0 on a folder of labelled photos and export a checked bundle.
    ///
    /// DATA is photos/<class>/<image> (split 90/10 here, stratified, seeded) or
    /// photos/{train,val}/<class>/<image>. Phase 1 trains a new head on the frozen ImageNet
    /// backbone (its features are computed once); phase 2 fine-tunes the top blocks.
    /// The run folder gets config.toml, checkpoints/, metrics.csv, model.onnx and report.html.
    ///
    /// Examples:
    ///   kestrel-train fit --data photos/ --out runs/birds
    ///   kestrel-train fit --config runs/birds/config.toml --resume
    Fit(Box<FitArgs>),
    /// Run a grid of settings (cartesian product), each a full run under out/trial-NN, and
    /// print a leaderboard by validation accuracy. Finished trials are reused on a re-run.
    ///
    /// Example: kestrel-train sweep --data photos/ --out runs/sweep --grid lr=1e-3,3e-4 --grid label-smoothing=0,0.1
    Sweep {
        #[command(flatten)]
        fit: Box<FitArgs>,
        /// KEY=V1,V2,… over a config.toml key (`lr` is head_lr; dashes read as underscores).
        #[arg(long = "grid", required = true)]
        grid: Vec<experiments::Axis>,
    },
    /// Learning-rate range test for the head: plots loss against LR (lr_find.svg in --out) and
    /// suggests a --head-lr (use about a tenth of it for --finetune-lr).
    ///
    /// Example: kestrel-train lr-find --data photos/ --out runs/lr
    LrFind {
        #[command(flatten)]
        fit: Box<FitArgs>,
        /// Smallest learning rate tried.
        #[arg(long, default_value_t = 1e-6)]
        start: f64,
        /// Largest learning rate tried.
        #[arg(long, default_value_t = 1.0)]
        end: f64,
        #[arg(long, default_value_t = 100)]
        steps: usize,
    },
    /// Write a small labelled photo folder (3 classes) made from the sample photos, to try
    /// `fit` on: kestrel-train sample-data --out photos && kestrel-train fit --data photos
    SampleData {
        #[arg(long, default_value = "photos")]
        out: PathBuf,
        /// Images per class.
        #[arg(long, default_value_t = 40)]
        per_class: usize,
        /// Side of each square image in pixels.
        #[arg(long, default_value_t = 160)]
        size: u32,
    },
    /// Quantise a float bundle to int8, calibrated on your own images, and check it before
    /// writing it.
    ///
    /// Calibration reads --calibrate DIR through the runtime's preprocessing. Class folders named
    /// like the model's labels are split exactly as `fit` splits them: activation ranges come from
    /// the training split and the gate scores the validation split. Any other folder of images is
    /// scored by agreement with the float model. The int8 bundle is written only when its top-1
    /// drop is within --max-drop; otherwise the fallbacks run (the other range method, the other
    /// weight granularity, the most sensitive layers kept float) and the command exits 1 if none
    /// passes. It ends with a float vs int8 latency check in tract on this machine.
    ///
    /// Example: kestrel-train quantize --model runs/exp1/model.onnx --calibrate data/ --out runs/exp1/model.int8.onnx
    Quantize {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Your images: class folders (the training data) or any folder of photos. Required for
        /// every scheme but weight-only, which without it is written unchecked.
        #[arg(long, value_name = "DIR")]
        calibrate: Option<PathBuf>,
        /// The int8 graph form; weight-only is what tract 0.23.9 runs fastest (docs/benchmarks.md).
        #[arg(long, value_enum, default_value_t = QScheme::WeightOnly)]
        scheme: QScheme,
        /// Activation ranges: both (keep the better), or one.
        #[arg(long, value_enum, default_value_t = RangeArg::Auto)]
        ranges: RangeArg,
        /// One weight scale per tensor instead of per output channel.
        #[arg(long)]
        per_tensor: bool,
        /// Largest accepted top-1 drop against float, in percentage points.
        #[arg(long, default_value_t = 1.0)]
        max_drop: f64,
        /// Fail at once instead of trying the fallbacks.
        #[arg(long)]
        no_fallback: bool,
        /// Calibration images at most.
        #[arg(long, default_value_t = 512)]
        images: usize,
        /// Views per image: 1 = the plain runtime view; more adds augmented crops (useful when
        /// the folder holds only a few photos).
        #[arg(long, default_value_t = 1)]
        views: usize,
        /// Split seed and validation share; keep them as in `fit` to calibrate on its training split.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 0.1)]
        val_fraction: f64,
        /// Timed inferences per model in the latency check (0 skips it).
        #[arg(long, default_value_t = 10)]
        bench_iterations: usize,
    },
    /// Convert an IDX data set (MNIST layout, e.g. Debian's dataset-fashion-mnist, gunzipped)
    /// into DATA/<class>/<index>.png.
    ImportIdx {
        #[arg(long)]
        images: PathBuf,
        #[arg(long)]
        labels: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Class names in label order, comma-separated (default: Fashion-MNIST's).
        #[arg(long, value_delimiter = ',')]
        names: Option<Vec<String>>,
        /// Images per class (the first ones in file order).
        #[arg(long, default_value_t = usize::MAX)]
        per_class: usize,
    },
    /// Evaluate a bundle on DATA/<class>/<image> through the runtime: accuracy, per-class
    /// precision/recall and the most-confused pairs.
    Eval {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        /// Print the full evaluation as JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Export the pretrained ImageNet EfficientNet-Lite0 as a Kestrel bundle, checked in tract.
    ///
    /// Needs the assets from scripts/fetch-assets.sh. Prints the Burn↔tract max |Δlogit| on the
    /// sample photos and fails above 1e-3.
    ExportImagenet {
        /// Where to write the bundle.
        #[arg(long, default_value = "models/efficientnet-lite0-imagenet.onnx")]
        out: PathBuf,
        /// Where to write its int8 form (weight-only, checked against the float bundle on
        /// held-out crops of the sample photos); the runtime's default model.
        #[arg(long, default_value = "models/efficientnet-lite0-imagenet.int8.onnx")]
        int8_out: PathBuf,
        /// Square input size in pixels.
        #[arg(long, default_value_t = pretrained::IMAGENET_SIZE)]
        size: u32,
        /// Burn backend for the reference forward pass.
        #[arg(long, value_enum, default_value_t = Backend::Flex)]
        backend: Backend,
    },
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum RangeArg {
    /// Try min/max and the 99.99th percentile, keep the more accurate.
    Auto,
    Minmax,
    Percentile,
}

/// Flags mirror the keys of config.toml; a flag overrides the file.
#[derive(clap::Args)]
struct FitArgs {
    /// Read settings from this TOML file (e.g. an earlier run's config.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint (after a crash or Ctrl-C).
    #[arg(long)]
    resume: bool,
    /// Folder of labelled photos.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run folder.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Square input size in pixels (multiple of 32).
    #[arg(long)]
    image_size: Option<u32>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Validation share when DATA is not pre-split.
    #[arg(long)]
    val_fraction: Option<f64>,
    /// K-fold cross-validation: K full runs (out/fold-0 …), reported as mean ± std. Refused on a
    /// folder that is already split into train/ and val/.
    #[arg(long)]
    folds: Option<usize>,
    /// Keep near-duplicates on one side of the split: files whose names give the same key (the
    /// regex's first capture group, or its whole match) go together, e.g. `^(.+)_\d+\.jpg$`
    /// for `scene_001.jpg`. Default: frames saved by `kestrel run --save-uncertain` group by run.
    #[arg(long, value_name = "REGEX")]
    group_by: Option<String>,
    /// Phase 1 epochs (head only, frozen backbone); 0 skips the phase.
    #[arg(long)]
    head_epochs: Option<usize>,
    #[arg(long)]
    head_lr: Option<f64>,
    /// Augmented views per image in the phase-1 feature cache.
    #[arg(long)]
    feature_views: Option<usize>,
    /// Phase 2 epochs (fine-tuning); 0 skips the phase.
    #[arg(long)]
    finetune_epochs: Option<usize>,
    #[arg(long)]
    finetune_lr: Option<f64>,
    /// Blocks unfrozen in phase 2, from the top (0 = all).
    #[arg(long)]
    unfreeze_blocks: Option<usize>,
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerKind>,
    #[arg(long)]
    weight_decay: Option<f64>,
    #[arg(long)]
    dropout: Option<f64>,
    #[arg(long)]
    label_smoothing: Option<f32>,
    #[arg(long, value_enum)]
    schedule: Option<Schedule>,
    #[arg(long, value_enum)]
    class_weights: Option<ClassWeights>,
    /// Clip the gradient norm (0 = off).
    #[arg(long)]
    grad_clip: Option<f32>,
    /// Metric for early stopping and the best checkpoint.
    #[arg(long, value_enum)]
    monitor: Option<Monitor>,
    /// Epochs without improvement before a phase stops (0 = never).
    #[arg(long)]
    patience: Option<usize>,
    /// Turn every augmentation off.
    #[arg(long)]
    no_augment: bool,
    /// Threads for decoding (0 = all cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Skip (and count) images with more pixels than this, before decoding them.
    #[arg(long)]
    max_pixels: Option<u64>,
    /// Form of the int8 bundle the run ends with (see `quantize --help`).
    #[arg(long, value_enum)]
    int8_scheme: Option<QScheme>,
    /// Largest top-1 drop (points) the int8 bundle may show on the validation split.
    #[arg(long)]
    int8_max_drop: Option<f64>,
}

impl FitArgs {
    /// Defaults, then the config file (or the run's own config.toml on --resume), then flags.
    fn resolve(&self) -> anyhow::Result<FitConfig> {
        let from_run = match (&self.config, self.resume, &self.out) {
            (None, true, Some(out)) => Some(RunDir(out.clone()).config()),
            _ => None,
        };
        let mut c = match self.config.as_ref().or(from_run.as_ref()) {
            Some(path) => FitConfig::load(path)?,
            None => FitConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field.clone() { c.$field = v; } )* };
        }
        set!(
            data,
            out,
            backend,
            image_size,
            batch_size,
            seed,
            val_fraction,
            head_epochs,
            head_lr,
            feature_views
        );
        set!(
            finetune_epochs,
            finetune_lr,
            unfreeze_blocks,
            optimizer,
            weight_decay,
            dropout,
            label_smoothing
        );
        set!(schedule, class_weights, grad_clip, monitor, workers, folds);
        set!(int8_scheme, int8_max_drop, max_pixels);
        if let Some(g) = &self.group_by {
            c.group_by = Some(g.clone());
        }
        if let Some(p) = self.patience {
            c.early_stopping_patience = p;
        }
        if self.no_augment {
            c.augment = kestrel_trainer::config::Augment::none();
        }
        Ok(c)
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", kestrel_runtime::error_report(e.as_ref()));
            let check_failed = e.chain().any(|c| {
                matches!(
                    c.downcast_ref(),
                    Some(kestrel_trainer::export::ExportError::Parity { .. })
                ) || matches!(c.downcast_ref(), Some(kestrel_trainer::fit::FitError::Diverged { .. }))
            });
            ExitCode::from(if check_failed { 1 } else { 2 })
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Sweep { fit, grid } => {
            let config = fit.resolve()?;
            config.validate()?;
            let trials = experiments::sweep(&config, &grid, &Progress::auto())?;
            print!("{}", experiments::leaderboard(&trials));
            experiments::write_json(&config.out.join("leaderboard.json"), &trials)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Fit(args) => {
            let config = args.resolve()?;
            if config.folds > 1 {
                let summary = experiments::cross_validate(&config, config.folds, &Progress::auto())?;
                for t in &summary.folds {
                    println!(
                        "{}: val top-1 {:.1}% ({} images) · {}",
                        t.name,
                        100.0 * t.val_top1,
                        t.val_images,
                        t.run.display()
                    );
                }
                println!(
                    "{}-fold cross-validation: top-1 {:.1}% ± {:.1}",
                    config.folds,
                    100.0 * summary.mean_top1,
                    100.0 * summary.std_top1
                );
                experiments::write_json(&config.out.join("folds.json"), &summary)?;
                return Ok(ExitCode::SUCCESS);
            }
            let run = RunDir(config.out.clone());
            let fitted = fit::fit(&config, args.resume, &Progress::auto())?;
            let finished = report::finish(&run, &fitted, assets::LITE0_WEIGHTS_SOURCE)?;
            let eval = &finished.validation;
            println!(
                "{} · val top-1 {:.1}% · top-{} {:.1}% ({} images, runtime) · Burn↔tract max |Δlogit| {:.1e}",
                run.model().display(),
                100.0 * eval.top1,
                eval.k,
                100.0 * eval.topk,
                eval.images,
                finished.parity
            );
            if let Some(t) = &finished.test {
                println!(
                    "test split (held out, evaluated once): top-1 {:.1}% · top-{} {:.1}% ({} images)",
                    100.0 * t.top1,
                    t.k,
                    100.0 * t.topk,
                    t.images
                );
            }
            let (int8, outcome) = report::quantize(&run, &fitted, &config)?;
            match outcome.chosen() {
                Some(a) => println!(
                    "{} · int8 {} · val top-1 {:.1}% ({:+.1} pt vs float)",
                    int8.display(),
                    a.label,
                    100.0 * a.evaluation.top1,
                    -a.drop_pts
                ),
                None => println!(
                    "no int8 bundle: every candidate lost more than {} pt of top-1 ({}; see quantize.json)",
                    config.int8_max_drop,
                    kestrel_trainer::quantize::gate::summary(&outcome)
                ),
            }
            if !fitted.data.skipped.is_empty() {
                println!(
                    "skipped {} unreadable files (listed in report.html)",
                    fitted.data.skipped.len()
                );
            }
            println!("report: {}", run.0.join("report.html").display());
            Ok(ExitCode::SUCCESS)
        }
        Command::LrFind { fit, start, end, steps } => {
            let config = fit.resolve()?;
            config.validate()?;
            let finding = kestrel_trainer::lr_find::lr_find(&config, start, end, steps, &Progress::auto())?;
            std::fs::create_dir_all(&config.out).with_context(|| format!("creating {}", config.out.display()))?;
            let plot = config.out.join("lr_find.svg");
            write_atomic(&plot, kestrel_trainer::lr_find::plot_svg(&finding).as_bytes())
                .with_context(|| format!("writing {}", plot.display()))?;
            let csv: String = std::iter::once("lr,loss\n".to_string())
                .chain(finding.points.iter().map(|p| format!("{:.6e},{:.6}\n", p.lr, p.loss)))
                .collect();
            let csv_path = config.out.join("lr_find.csv");
            write_atomic(&csv_path, csv.as_bytes()).with_context(|| format!("writing {}", csv_path.display()))?;
            println!(
                "suggested --head-lr {:.1e} (steepest descent; lowest loss at {:.1e}) · plot: {}",
                finding.suggested,
                finding.min_loss_lr,
                plot.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::SampleData { out, per_class, size } => {
            let dirs = kestrel_trainer::sample_data::make_photo_folder(&out, per_class, size, 7)?;
            println!(
                "wrote {} classes × {per_class} images under {}",
                dirs.len(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Quantize {
            model,
            out,
            calibrate,
            scheme,
            ranges,
            per_tensor,
            max_drop,
            no_fallback,
            images,
            views,
            seed,
            val_fraction,
            bench_iterations,
        } => {
            use kestrel_trainer::quantize::{RangeMethod, gate, inputs};
            let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0.0, |m| m.len() as f64 / 1048576.0);
            let Some(dir) = calibrate else {
                if scheme.needs_calibration() {
                    anyhow::bail!(
                        "scheme {scheme} needs calibration images: add --calibrate DIR (your training folder)"
                    );
                }
                let n = kestrel_trainer::quantize::quantize_bundle(&model, &out)
                    .with_context(|| format!("quantising {}", model.display()))?;
                println!(
                    "{} · {n} weight tensors int8 · {:.1} MiB → {:.1} MiB · unchecked (add --calibrate DIR to check accuracy)",
                    out.display(),
                    size(&model),
                    size(&out)
                );
                return Ok(ExitCode::SUCCESS);
            };
            let float = Bundle::read(&model)?;
            let options = inputs::InputOptions {
                images,
                views,
                seed,
                val_fraction,
            };
            let data = inputs::from_folder(&dir, &float.metadata.labels, &float.metadata.preprocess, &options)
                .with_context(|| format!("reading calibration images from {}", dir.display()))?;
            if !data.skipped.is_empty() {
                println!("skipped {} unreadable files", data.skipped.len());
            }
            let request = gate::Request {
                scheme,
                per_channel: !per_tensor,
                method: match ranges {
                    RangeArg::Auto => None,
                    RangeArg::Minmax => Some(RangeMethod::MinMax),
                    RangeArg::Percentile => Some(RangeMethod::Percentile(gate::PERCENTILE)),
                },
                max_drop,
                fallbacks: !no_fallback,
            };
            let outcome = kestrel_trainer::quantize::calibrate_and_write(&float, &model, &data, &request, &out, |a| {
                eprintln!(
                    "  tried {:<55} top-1 {:5.1}% ({:+.1} pt) {}",
                    a.label,
                    100.0 * a.evaluation.top1,
                    -a.drop_pts,
                    if a.passed { "ok" } else { "over --max-drop" }
                )
            })
            .with_context(|| format!("quantising {}", model.display()))?;
            println!(
                "calibration: {} views · {} held-out · {}",
                data.calibration.len(),
                outcome.float.images,
                gate::summary(&outcome)
            );
            let changes = outcome.confusion_changes();
            if !changes.is_empty() {
                let shown: Vec<String> = changes
                    .iter()
                    .take(5)
                    .map(|(t, p, d)| format!("{t}→{p} {d:+}"))
                    .collect();
                println!("confusion changes (int8 − float): {}", shown.join(" · "));
            }
            let report = out.with_extension("quantize.json");
            write_atomic(&report, serde_json::to_string_pretty(&outcome)?.as_bytes())
                .with_context(|| format!("writing {}", report.display()))?;
            let Some(chosen) = outcome.chosen() else {
                eprintln!(
                    "error: no int8 candidate of {} stays within --max-drop {max_drop} pt (tried {}; details in {}). \
                     Calibrate on more of your images (--images, --views), allow a larger --max-drop, or use \
                     --scheme weight-only.",
                    model.display(),
                    outcome.attempts.len(),
                    report.display()
                );
                return Ok(ExitCode::from(1));
            };
            println!(
                "{} · {} · {:.1} MiB → {:.1} MiB",
                out.display(),
                chosen.label,
                size(&model),
                size(&out)
            );
            if bench_iterations > 0 {
                let bench = kestrel_runtime::bench::run(
                    &[model.clone(), out.clone()],
                    &kestrel_runtime::LoadOptions::default(),
                    2,
                    bench_iterations,
                )?;
                let (f, q) = (bench.results[0].p50_ms, bench.results[1].p50_ms);
                println!(
                    "latency (tract, 1 thread, this machine): float {f:.1} ms · int8 {q:.1} ms ({:.2}×)",
                    f / q
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportIdx {
            images,
            labels,
            out,
            names,
            per_class,
        } => {
            let names = names.unwrap_or_else(|| {
                kestrel_trainer::idx::FASHION_MNIST
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            });
            let counts = kestrel_trainer::idx::import(&images, &labels, &names, per_class, &out)?;
            println!(
                "wrote {} images in {} classes under {}",
                counts.iter().sum::<usize>(),
                names.len(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval { model, data, json } => {
            let (eval, skipped) = evaluate::evaluate_folder(&model, &data)
                .with_context(|| format!("evaluating {} on {}", model.display(), data.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&eval)?);
            } else {
                println!(
                    "{} images · top-1 {:.1}% · top-{} {:.1}% · loss {:.4} · {} skipped",
                    eval.images,
                    100.0 * eval.top1,
                    eval.k,
                    100.0 * eval.topk,
                    eval.mean_loss,
                    skipped.len()
                );
                for c in &eval.per_class {
                    println!(
                        "  {:<24} n={:<5} precision {:.3} recall {:.3} F1 {:.3}",
                        c.class, c.support, c.precision, c.recall, c.f1
                    );
                }
                for c in eval.most_confused.iter().take(5) {
                    println!("  confused: {} → {} ×{}", c.truth, c.predicted, c.count);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ExportImagenet {
            out,
            int8_out,
            size,
            backend,
        } => {
            let diff = pretrained::export_imagenet(&out, &backend.device(), size)
                .with_context(|| format!("exporting the ImageNet bundle to {}", out.display()))?;
            println!("wrote {} · Burn↔tract max |Δlogit| = {diff:.2e}", out.display());
            let outcome = pretrained::quantize_imagenet(&out, &int8_out)
                .with_context(|| format!("quantising {} to {}", out.display(), int8_out.display()))?;
            println!(
                "wrote {} · {}",
                int8_out.display(),
                kestrel_trainer::quantize::gate::summary(&outcome)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
