//! The command line: clap definitions only. Each command's work is in `commands/<name>.rs`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kestrel_trainer::backend::Backend;
use kestrel_trainer::config::{ClassWeights, FinetuneAugment, FitConfig, Monitor, OptimizerKind, Schedule};
use kestrel_trainer::quantize::Scheme as QScheme;
use kestrel_trainer::train::{RunDir, experiments};

#[derive(Parser)]
#[command(
    name = "kestrel-train",
    version,
    about = "Train and export Kestrel image classifiers."
)]
#[command(
    after_help = "Exit codes: 0 success · 1 the result failed a check (export parity, training diverged) · 2 usage or input error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Fine-tune an ImageNet-pretrained EfficientNet-Lite (--backbone lite0, lite1 or lite2) on
    /// a folder of labelled photos and export a checked bundle.
    ///
    /// DATA is photos/<class>/<image> (split 90/10 here, stratified, seeded) or
    /// photos/{train,val}/<class>/<image>. Phase 1 trains a new head on the frozen ImageNet
    /// backbone (its features are computed once); phase 2 fine-tunes the top blocks.
    /// The run folder gets config.toml, checkpoints/, metrics.csv, model.onnx and report.html.
    ///
    /// Examples:
    ///   kestrel-train fit --data photos/ --out runs/birds
    ///   kestrel-train fit --data photos/ --out runs/birds-l2 --backbone lite2
    ///   kestrel-train fit --config runs/birds/config.toml --resume
    #[command(verbatim_doc_comment)]
    Fit(Box<FitArgs>),
    /// Run a grid of settings (cartesian product), each a full run under out/trial-NN, and
    /// print a leaderboard by validation accuracy. Finished trials are reused on a re-run.
    ///
    /// Example: kestrel-train sweep --data photos/ --out runs/sweep --grid lr=1e-3,3e-4 --grid label-smoothing=0,0.1
    Sweep(SweepArgs),
    /// Learning-rate range test for the head: plots loss against LR (lr_find.svg in --out) and
    /// suggests a --head-lr (use about a tenth of it for --finetune-lr).
    ///
    /// Example: kestrel-train lr-find --data photos/ --out runs/lr
    LrFind(LrFindArgs),
    /// Write a small labelled photo folder (3 classes) made from the sample photos, to try
    /// `fit` on: kestrel-train sample-data --out photos && kestrel-train fit --data photos
    SampleData(SampleDataArgs),
    /// Quantise a float bundle to int8, calibrated on your own images, and check it before
    /// writing it.
    ///
    /// Calibration reads --calibrate DIR through the runtime's preprocessing. Class folders named
    /// like the model's labels are split exactly as `fit` splits them: activation ranges come from
    /// the training split and the gate scores the validation split. Any other folder of images is
    /// scored by agreement with the float model. The default scheme, int8, runs on Kestrel's
    /// integer kernels (about twice as fast as float; `kestrel info` names the kernels this CPU
    /// gets), and each layer's bias is corrected for its rounded weights. The int8 bundle is
    /// written only when its top-1 drop is within --max-drop; otherwise the fallbacks run (the
    /// other range method, the other weight granularity, the most sensitive layers kept float,
    /// and last int8 weights only) and the command exits 1 if none passes. It ends with a float
    /// vs int8 latency check on this machine.
    ///
    /// Example: kestrel-train quantize --model runs/exp1/model.onnx --calibrate data/ --out runs/exp1/model.int8.onnx
    Quantize(QuantizeArgs),
    /// Convert an IDX data set (MNIST layout, e.g. Debian's dataset-fashion-mnist, gunzipped)
    /// into DATA/<class>/<index>.png.
    ImportIdx(ImportIdxArgs),
    /// Evaluate a bundle on DATA/<class>/<image> through the runtime: accuracy, per-class
    /// precision/recall and the most-confused pairs.
    Eval(EvalArgs),
    /// Export a pretrained ImageNet EfficientNet-Lite (Lite0 by default) as a Kestrel bundle,
    /// checked in tract, and its int8 form.
    ///
    /// Needs the assets from scripts/fetch-assets.sh. Prints the Burn↔tract max |Δlogit| on the
    /// sample photos and fails above 1e-3.
    ExportImagenet(ExportImagenetArgs),
    /// List the devices training can run on: the CPU backends, and every GPU adapter wgpu
    /// offers with the number `fit --device N` takes, its type, graphics API, memory and driver,
    /// and which one `auto` picks.
    ///
    /// On a headless machine without XDG_RUNTIME_DIR (containers, CI), Mesa's Vulkan
    /// device-select layer asks for a Wayland display and libwayland prints "error:
    /// XDG_RUNTIME_DIR is invalid or not set" for each probe. It is harmless; NODEVICE_SELECT=1
    /// (or setting XDG_RUNTIME_DIR) silences it.
    Devices,
}

#[derive(clap::Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub fit: Box<FitArgs>,
    /// KEY=V1,V2,… over a config.toml key (`lr` is head_lr; dashes read as underscores).
    #[arg(long = "grid", required = true)]
    pub grid: Vec<experiments::Axis>,
}

#[derive(clap::Args)]
pub struct LrFindArgs {
    #[command(flatten)]
    pub fit: Box<FitArgs>,
    /// Smallest learning rate tried.
    #[arg(long, default_value_t = 1e-6)]
    pub start: f64,
    /// Largest learning rate tried.
    #[arg(long, default_value_t = 1.0)]
    pub end: f64,
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
}

#[derive(clap::Args)]
pub struct SampleDataArgs {
    #[arg(long, default_value = "photos")]
    pub out: PathBuf,
    /// Images per class.
    #[arg(long, default_value_t = 40)]
    pub per_class: usize,
    /// Side of each square image in pixels.
    #[arg(long, default_value_t = 160)]
    pub size: u32,
}

#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// The float bundle to quantise (a run's model.onnx).
    #[arg(long)]
    pub model: PathBuf,
    /// Where to write the int8 bundle; a report of every candidate tried goes beside it
    /// (OUT with the extension .quantize.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Your images: class folders (the training data) or any folder of photos, a few hundred
    /// are plenty. Required for every scheme but weight-only, which without it is written
    /// unchecked and without bias correction.
    #[arg(long, value_name = "DIR")]
    pub calibrate: Option<PathBuf>,
    /// The int8 graph form: int8 runs on Kestrel's integer kernels; weight-only keeps float
    /// activations (float speed, 4x smaller file, no calibration needed); the others are for
    /// comparisons (docs/benchmarks.md).
    #[arg(long, value_enum, default_value_t = QScheme::Int8)]
    pub scheme: QScheme,
    /// Activation ranges: both (keep the better), or one.
    #[arg(long, value_enum, default_value_t = RangeArg::Auto)]
    pub ranges: RangeArg,
    /// One weight scale per tensor instead of per output channel.
    #[arg(long)]
    pub per_tensor: bool,
    /// Largest accepted top-1 drop against float, in percentage points.
    #[arg(long, default_value_t = 1.0)]
    pub max_drop: f64,
    /// Fail at once instead of trying the fallbacks.
    #[arg(long)]
    pub no_fallback: bool,
    /// Leave biases as they are. By default each layer's bias absorbs the mean shift that
    /// rounding its weights to int8 causes on your calibration images (for comparisons).
    #[arg(long)]
    pub no_bias_correction: bool,
    /// Calibration images at most.
    #[arg(long, default_value_t = 512)]
    pub images: usize,
    /// Views per image: 1 = the plain runtime view; more adds augmented crops (useful when
    /// the folder holds only a few photos).
    #[arg(long, default_value_t = 1)]
    pub views: usize,
    /// Split seed and validation share; keep them as in `fit` to calibrate on its training split.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Timed inferences per model in the latency check (0 skips it).
    #[arg(long, default_value_t = 10)]
    pub bench_iterations: usize,
}

#[derive(clap::Args)]
pub struct ImportIdxArgs {
    #[arg(long)]
    pub images: PathBuf,
    #[arg(long)]
    pub labels: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Class names in label order, comma-separated (default: Fashion-MNIST's).
    #[arg(long, value_delimiter = ',')]
    pub names: Option<Vec<String>>,
    /// Images per class (the first ones in file order).
    #[arg(long, default_value_t = usize::MAX)]
    pub per_class: usize,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    /// Print the full evaluation as JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct ExportImagenetArgs {
    /// Which pretrained network.
    #[arg(long, default_value = "lite0", value_parser = backbone_name)]
    pub backbone: String,
    /// Where to write the bundle [default: models/efficientnet-<backbone>-imagenet.onnx].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where to write its int8 form (scheme int8, calibrated on half the sample photos and
    /// checked against the float bundle on crops of the other half) [default: the bundle's name
    /// with .int8.onnx]; Lite0's is the runtime's default model.
    #[arg(long)]
    pub int8_out: Option<PathBuf>,
    /// Square input size in pixels [default: the backbone's own: 224, 240, 260].
    #[arg(long)]
    pub size: Option<u32>,
    /// Write the float bundle only. The int8 form's gate is the shipped bundle's (it must keep
    /// the float model's confident answers on the sample photos), which other sizes may miss;
    /// `quantize` makes int8 forms with a gate of your choice.
    #[arg(long)]
    pub no_int8: bool,
    /// Burn backend for the reference forward pass.
    #[arg(long, value_enum, default_value_t = Backend::Flex)]
    pub backend: Backend,
}

/// A `--backbone` value, checked against the registered backbones (so `--help` and errors
/// list them, and adding one needs no change here).
fn backbone_name(name: &str) -> Result<String, String> {
    kestrel_trainer::model::backbone(name)
        .map(|b| b.name().to_string())
        .map_err(|e| e.to_string())
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum RangeArg {
    /// Try min/max and the 99.99th percentile, keep the more accurate.
    Auto,
    Minmax,
    Percentile,
}

/// Flags mirror the keys of config.toml; a flag overrides the file.
#[derive(clap::Args)]
pub struct FitArgs {
    /// Read settings from this TOML file (e.g. an earlier run's config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint (after a crash or Ctrl-C).
    #[arg(long)]
    pub resume: bool,
    /// Folder of labelled photos.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Run folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Which GPU adapter to train on, by its number in `kestrel-train devices` [default: the
    /// first discrete GPU, else the first other hardware one]. Implies --backend wgpu.
    #[arg(long, value_name = "N")]
    pub device: Option<usize>,
    /// Pretrained network: lite0 (default; 4.6 M parameters, 224 px), lite1 (5.4 M, 240 px) or
    /// lite2 (6.1 M, 260 px). Larger is more accurate and slower: docs/benchmarks.md has the
    /// table ("Model table").
    #[arg(long, value_parser = backbone_name)]
    pub backbone: Option<String>,
    /// Square input size in pixels [default: the backbone's own].
    #[arg(long)]
    pub image_size: Option<u32>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Validation share when DATA is not pre-split.
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// K-fold cross-validation: K full runs (out/fold-0 …), reported as mean ± std. Refused on a
    /// folder that is already split into train/ and val/.
    #[arg(long)]
    pub folds: Option<usize>,
    /// Keep near-duplicates on one side of the split: files whose names give the same key (the
    /// regex's first capture group, or its whole match) go together, e.g. `^(.+)_\d+\.jpg$`
    /// for `scene_001.jpg`. Default: frames saved by `kestrel run --save-uncertain` group by run.
    #[arg(long, value_name = "REGEX")]
    pub group_by: Option<String>,
    /// Phase 1 epochs (head only, frozen backbone); 0 skips the phase.
    #[arg(long)]
    pub head_epochs: Option<usize>,
    #[arg(long)]
    pub head_lr: Option<f64>,
    /// Augmented views per image in the phase-1 feature cache.
    #[arg(long)]
    pub feature_views: Option<usize>,
    /// Phase 2 epochs (fine-tuning); 0 skips the phase.
    #[arg(long)]
    pub finetune_epochs: Option<usize>,
    #[arg(long)]
    pub finetune_lr: Option<f64>,
    /// Blocks unfrozen in phase 2, from the top (0 = all).
    #[arg(long)]
    pub unfreeze_blocks: Option<usize>,
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    #[arg(long)]
    pub dropout: Option<f64>,
    #[arg(long)]
    pub label_smoothing: Option<f32>,
    #[arg(long, value_enum)]
    pub schedule: Option<Schedule>,
    #[arg(long, value_enum)]
    pub class_weights: Option<ClassWeights>,
    /// Clip the gradient norm (0 = off).
    #[arg(long)]
    pub grad_clip: Option<f32>,
    /// Metric for early stopping and the best checkpoint.
    #[arg(long, value_enum)]
    pub monitor: Option<Monitor>,
    /// Epochs without improvement before a phase stops (0 = never).
    #[arg(long)]
    pub patience: Option<usize>,
    /// Turn every augmentation off (the head's views and fine-tuning's).
    #[arg(long)]
    pub no_augment: bool,
    /// What fine-tuning trains on: plain views (`none`, the default, measured best), plain or
    /// mirrored (`flip`), or views augmented like the head phase's (`same`). With `none` and
    /// `flip` the frozen blocks run once per view, not once per epoch.
    #[arg(long, value_enum)]
    pub finetune_augment: Option<FinetuneAugment>,
    /// Threads for decoding (0 = all cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Skip (and count) images with more pixels than this, before decoding them.
    #[arg(long)]
    pub max_pixels: Option<u64>,
    /// Form of the int8 bundle the run ends with [default: int8, on Kestrel's integer kernels;
    /// see `quantize --help`].
    #[arg(long, value_enum)]
    pub int8_scheme: Option<QScheme>,
    /// Largest top-1 drop (points) the int8 bundle may show on the validation split.
    #[arg(long)]
    pub int8_max_drop: Option<f64>,
}

impl FitArgs {
    /// Defaults, then the config file (or the run's own config.toml on --resume), then flags.
    pub fn resolve(&self) -> anyhow::Result<FitConfig> {
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
            backbone,
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
        set!(int8_scheme, int8_max_drop, max_pixels, finetune_augment);
        if let Some(device) = self.device {
            c.device = Some(device);
        }
        if let Some(size) = self.image_size {
            c.image_size = Some(size);
        }
        if let Some(g) = &self.group_by {
            c.group_by = Some(g.clone());
        }
        if let Some(p) = self.patience {
            c.early_stopping_patience = p;
        }
        if self.no_augment {
            c.augment = kestrel_trainer::config::Augment::none();
            c.finetune_augment = FinetuneAugment::None;
        }
        Ok(c)
    }
}
