//! Two-phase transfer learning, the recipe of the Keras and fastai guides:
//! 1. **head**: the backbone is frozen, so each training image's pooled features are computed
//!    once (plain view plus `feature_views` augmented views) and the new head trains on them;
//! 2. **finetune**: the top `unfreeze_blocks` blocks, the head conv and the classifier train at a
//!    lower learning rate on freshly augmented images; BatchNorm stays in inference mode.
//!
//! Every epoch ends with validation, a checkpoint (`last.ckpt`, and `best.ckpt` on improvement)
//! and a rewritten `metrics.csv`. A killed run resumes from `last.ckpt`. The run ends on the best
//! epoch's weights (fine-tuning replaces the head phase's best only by beating it).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::nn::Linear;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use kestrel_runtime::PreprocessSpec;
use rayon::prelude::*;

use crate::augment;
use crate::checkpoint::{self, EpochRow, Phase, RunState};
use crate::config::{ClassWeights, FitConfig, Monitor, OptimizerKind, Schedule};
use crate::dataset::{Dataset, SplitMix64, SplitOptions};
use crate::efficientnet::{EfficientNet, FEATURES};
use crate::images::{self, CacheError, DecodedSet, EvalSet, Skipped};
use crate::metrics::{self, Evaluation};
use crate::progress::Progress;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    #[error(transparent)]
    Pretrained(#[from] crate::pretrained::PretrainedError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error(transparent)]
    Preprocess(#[from] kestrel_runtime::preprocess::PreprocessError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("class `{class}` has no readable training images left after skipping unreadable files")]
    ClassEmptied { class: String },
    #[error("the validation split has no readable images")]
    NoValidation,
    #[error(
        "training diverged: loss is {loss} at {phase:?} epoch {epoch}; the last good checkpoint is {checkpoint}; try a lower learning rate"
    )]
    Diverged {
        loss: f64,
        phase: Phase,
        epoch: usize,
        checkpoint: PathBuf,
    },
    #[error("{path} exists from an earlier run; pass --resume to continue it, or choose another --out")]
    RunExists { path: PathBuf },
    #[error("reading a tensor back from the device failed: {0}")]
    Tensor(String),
    #[error("--resume: no checkpoint at {path}")]
    NothingToResume { path: PathBuf },
}

/// What a finished run produced.
#[derive(Debug)]
pub struct Fitted {
    pub model: EfficientNet,
    pub history: Vec<EpochRow>,
    /// Validation of the final weights in Burn (the runtime re-checks the exported file).
    pub validation: Evaluation,
    pub data: Prepared,
}

/// Paths inside a run folder.
#[derive(Debug, Clone)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn config(&self) -> PathBuf {
        self.0.join("config.toml")
    }
    pub fn last(&self) -> PathBuf {
        self.0.join("checkpoints/last.ckpt")
    }
    pub fn best(&self) -> PathBuf {
        self.0.join("checkpoints/best.ckpt")
    }
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.csv")
    }
    pub fn model(&self) -> PathBuf {
        self.0.join("model.onnx")
    }
}

/// Write a run file atomically; the error names it.
pub(crate) fn write(path: &Path, text: &str) -> Result<(), FitError> {
    kestrel_runtime::atomic::write_atomic(path, text.as_bytes()).map_err(|source| FitError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Shorter side of cached training images: room for random crops at the input size.
fn cache_side(config: &FitConfig) -> u32 {
    (config.image_size as f32 * 1.3).ceil() as u32
}

fn rng_for(seed: u64, stream: u64, a: u64, b: u64) -> SplitMix64 {
    let mut r = SplitMix64(seed ^ stream.wrapping_mul(0x9E37_79B9));
    let s = r.next_u64() ^ a.wrapping_mul(0xA24B_AED4_963E_E407) ^ b.wrapping_mul(0x9FB2_1C65_1E98_DF25);
    SplitMix64(s)
}

pub fn loss_fn(config: &FitConfig, dataset: &Dataset, device: &Device) -> CrossEntropyLoss {
    let weights = match config.class_weights {
        ClassWeights::None => None,
        ClassWeights::Auto => {
            let counts = dataset.train_counts();
            let inv: Vec<f32> = counts.iter().map(|&c| 1.0 / c.max(1) as f32).collect();
            let mean = inv.iter().sum::<f32>() / inv.len() as f32;
            Some(inv.iter().map(|w| w / mean).collect())
        }
    };
    CrossEntropyLossConfig::new()
        .with_smoothing((config.label_smoothing > 0.0).then_some(config.label_smoothing))
        .with_weights(weights)
        .init(device)
}

pub fn optimizer(config: &FitConfig) -> ModuleOptimizer {
    let clip = (config.grad_clip > 0.0).then_some(GradientClippingConfig::Norm(config.grad_clip));
    match config.optimizer {
        OptimizerKind::Adamw => AdamWConfig::new()
            .with_weight_decay(config.weight_decay as f32)
            .with_grad_clipping(clip)
            .init(),
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum(Some(
                MomentumConfig::new().with_momentum(config.momentum).with_dampening(0.0),
            ))
            .with_weight_decay((config.weight_decay > 0.0).then_some(WeightDecayConfig {
                penalty: config.weight_decay as f32,
            }))
            .with_gradient_clipping(clip)
            .init(),
    }
}

/// Learning rate at `step` of `total` steps in a phase with peak `peak`.
pub fn learning_rate(config: &FitConfig, peak: f64, step: usize, total: usize, steps_per_epoch: usize) -> f64 {
    match config.schedule {
        Schedule::Plateau => peak,
        Schedule::Cosine => {
            let warmup = (config.warmup_epochs * steps_per_epoch as f64).round() as usize;
            if step < warmup {
                return peak * (step + 1) as f64 / warmup as f64;
            }
            let span = total.saturating_sub(warmup).max(1);
            let t = ((step - warmup) as f64 / span as f64).min(1.0);
            let floor = 0.01 * peak;
            floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
    }
}

pub fn labels_tensor(labels: &[usize], device: &Device) -> Tensor<1, Int> {
    let data: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(data, [labels.len()]), device)
}

fn to_vec(t: Tensor<2>) -> Result<Vec<f32>, FitError> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| FitError::Tensor(format!("{e:?}")))
}

/// Oriented so that lower is better.
fn monitored(config: &FitConfig, eval: &Evaluation) -> f64 {
    match config.monitor {
        Monitor::ValLoss => eval.mean_loss,
        Monitor::ValAcc => -eval.top1,
    }
}

/// Pooled features of `n` images of `len` floats each, produced by `fill(i, out)`; each batch's
/// rows (`FEATURES` values each) go to `emit` in order.
#[allow(clippy::too_many_arguments)]
fn features_of(
    model: &EfficientNet,
    spec: &PreprocessSpec,
    n: usize,
    batch: usize,
    device: &Device,
    progress: &Progress,
    fill: impl Fn(usize, &mut [f32]) -> Result<(), FitError> + Sync,
    mut emit: impl FnMut(&[f32]) -> Result<(), FitError>,
) -> Result<(), FitError> {
    let len = spec.tensor_len();
    let bar = progress.bar(n as u64, "features");
    for start in (0..n).step_by(batch.max(1)) {
        let end = (start + batch).min(n);
        let mut data = vec![0.0f32; (end - start) * len];
        data.par_chunks_exact_mut(len)
            .enumerate()
            .try_for_each(|(i, chunk)| fill(start + i, chunk))?;
        let x = Tensor::<4>::from_data(TensorData::new(data, spec.batch_shape(end - start)), device);
        emit(&to_vec(model.features(x))?)?;
        bar.inc((end - start) as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// The data of a run, decoded once into nameless cache files in the run folder (see
/// [`crate::store`]): memory does not grow with the data set.
#[derive(Debug)]
pub struct Prepared {
    pub dataset: Dataset,
    pub spec: PreprocessSpec,
    pub train: DecodedSet,
    pub val: EvalSet,
    pub skipped: Vec<Skipped>,
}

/// Scan, split and decode the data per `config`; fails before any training on unusable data.
pub fn prepare(config: &FitConfig, progress: &Progress) -> Result<Prepared, FitError> {
    let dataset = Dataset::scan(
        &config.data,
        &SplitOptions {
            val_fraction: config.val_fraction,
            seed: config.seed,
            fold: (config.folds > 1).then_some((config.folds, config.fold)),
            group_by: config
                .group_regex()
                .map_err(|e| FitError::Config(crate::config::ConfigError::Invalid(format!("group_by: {e}"))))?,
        },
    )?;
    tracing::info!(
        classes = dataset.classes.len(),
        train = dataset.train.len(),
        val = dataset.val.len(),
        "dataset {}",
        dataset.root.display()
    );
    let spec = PreprocessSpec::efficientnet_lite(config.image_size);
    if config.workers > 0 {
        // A global pool that already exists is fine: it was sized by an earlier call.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers)
            .build_global();
    }
    let started = Instant::now();
    let cache = || Store::on_disk(&config.out);
    let train = images::decode_for_training(
        &dataset.train,
        cache_side(config),
        config.max_pixels,
        images::Jpeg::Scaled,
        cache()?,
        progress,
    )?;
    let val = images::preprocess_for_eval(&dataset.val, &spec, config.max_pixels, cache()?, progress)?;
    tracing::info!(
        "decoded {} images in {:.1}s ({:.0} MB cached on disk)",
        train.len() + val.len(),
        started.elapsed().as_secs_f64(),
        (train.images.bytes() + val.crops.bytes()) as f64 / 1e6
    );
    for (c, class) in dataset.classes.iter().enumerate() {
        if !train.labels.contains(&c) {
            return Err(FitError::ClassEmptied { class: class.clone() });
        }
    }
    if val.is_empty() {
        return Err(FitError::NoValidation);
    }
    let skipped: Vec<Skipped> = train.skipped.iter().chain(&val.skipped).cloned().collect();
    Ok(Prepared {
        dataset,
        spec,
        train,
        val,
        skipped,
    })
}

/// ImageNet-pretrained Lite0 with a fresh head for `classes`, on the config's device.
pub fn pretrained_model(config: &FitConfig, classes: usize, device: &Device) -> Result<EfficientNet, FitError> {
    let (model, _) = crate::pretrained::load_imagenet(device, config.image_size)?;
    Ok(model.with_classes(classes, device).with_dropout(config.dropout))
}

/// The phase-1 feature cache: pooled backbone features of every training view (on disk, one
/// record per view) and validation image (in memory), computed once.
#[derive(Debug)]
pub struct HeadFeatures {
    /// `labels.len()` rows of `FEATURES`.
    pub train: Store,
    pub labels: Vec<usize>,
    /// `val.len() × FEATURES`.
    pub val: Vec<f32>,
}

impl HeadFeatures {
    /// The training rows `batch`, packed, with their labels.
    pub fn batch(&self, batch: &[usize]) -> Result<(Vec<f32>, Vec<usize>), StoreError> {
        let mut x = vec![0.0f32; batch.len() * FEATURES];
        for (out, &i) in x.chunks_exact_mut(FEATURES).zip(batch) {
            self.train.f32_into(i, out)?;
        }
        Ok((x, batch.iter().map(|&i| self.labels[i]).collect()))
    }
}

pub fn head_features(
    config: &FitConfig,
    model: &EfficientNet,
    data: &Prepared,
    progress: &Progress,
) -> Result<HeadFeatures, FitError> {
    let device = config.backend.device();
    let backbone = model.valid();
    let spec = &data.spec;
    let views = 1 + config.feature_views;
    let n_train = data.train.len();
    let started = Instant::now();
    let mut train = Store::on_disk(&config.out)?;
    // View 0 is the plain evaluation view; views 1.. are augmented, seeded per image and view.
    features_of(
        &backbone,
        spec,
        n_train * views,
        config.batch_size,
        &device,
        progress,
        |i, out| {
            let (image, view) = (i % n_train, i / n_train);
            let img = data.train.image(image)?;
            if view == 0 {
                augment::plain(&img, spec, out)?;
            } else {
                let mut rng = rng_for(config.seed, 1, image as u64, view as u64);
                augment::augmented(&img, spec, &config.augment, &mut rng, out)?;
            }
            Ok(())
        },
        |rows| {
            for row in rows.chunks_exact(FEATURES) {
                train.push_f32(row)?;
            }
            Ok(())
        },
    )?;
    let labels: Vec<usize> = (0..n_train * views).map(|i| data.train.labels[i % n_train]).collect();
    let mut val = Vec::with_capacity(data.val.len() * FEATURES);
    features_of(
        &backbone,
        spec,
        data.val.len(),
        config.batch_size,
        &device,
        progress,
        |i, out| Ok(data.val.tensor_into(i, spec, out)?),
        |rows| {
            val.extend_from_slice(rows);
            Ok(())
        },
    )?;
    tracing::info!(
        "feature cache: {} training views, {} validation images in {:.2}s",
        labels.len(),
        data.val.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(HeadFeatures { train, labels, val })
}

/// Train per `config`, resuming from the run folder's `last.ckpt` when `resume` is set.
pub fn fit(config: &FitConfig, resume: bool, progress: &Progress) -> Result<Fitted, FitError> {
    config.validate()?;
    // Settle `auto` once: enumerating adapters is slow, and config.toml records the choice.
    let config = &FitConfig {
        backend: config.backend.resolve(),
        ..config.clone()
    };
    tracing::info!("training on {}", config.backend.describe());
    let run = RunDir(config.out.clone());
    if !resume && run.last().exists() {
        return Err(FitError::RunExists { path: run.last() });
    }
    if resume && !run.last().exists() {
        return Err(FitError::NothingToResume { path: run.last() });
    }
    std::fs::create_dir_all(config.out.join("checkpoints")).map_err(|source| FitError::Write {
        path: config.out.clone(),
        source,
    })?;
    remove_stale_temps(&run)?;
    write(&run.config(), &config.to_toml())?;

    let data = prepare(config, progress)?;

    let device = config.backend.device();
    device.seed(config.seed);
    let fresh = || pretrained_model(config, data.dataset.classes.len(), &device);
    let (mut model, mut state, mut optim_bytes) = if resume {
        let ckpt = checkpoint::load(&run.last(), fresh()?)?;
        tracing::info!(
            phase = ?ckpt.state.phase,
            epochs_done = ckpt.state.epochs_done,
            "resuming from {}",
            run.last().display()
        );
        (ckpt.model, ckpt.state, ckpt.optimizer_bytes)
    } else {
        let phase = if config.head_epochs > 0 {
            Phase::Head
        } else {
            Phase::Finetune
        };
        (fresh()?, new_state(phase, Vec::new()), Vec::new())
    };

    if state.phase == Phase::Head {
        model = head_phase(config, &run, &data, model, &mut state, &optim_bytes, progress)?;
        // Resumed optimiser state belongs to the head's optimiser; fine-tuning starts its own,
        // as it does in a run that was never interrupted.
        optim_bytes.clear();
        // The best value carries over: fine-tuning must beat the head's best to replace it.
        let best = state.best;
        state = new_state(Phase::Finetune, std::mem::take(&mut state.history));
        state.best = best;
        checkpoint::save(&run.last(), &state, &model, None)?;
    }
    if config.finetune_epochs > 0 {
        model = finetune_phase(config, &run, &data, model, &mut state, &optim_bytes, progress)?;
    }
    let logits = predict(&model, &data.spec, &data.val, config.batch_size, &device)?;
    let validation = metrics::evaluate(&logits, &data.val.labels, &data.dataset.classes);
    Ok(Fitted {
        model,
        history: state.history.clone(),
        validation,
        data,
    })
}

/// A run killed while writing (SIGKILL, OOM, power cut) leaves its temp file beside the final
/// name; whoever takes the folder over next removes it, so a killed run costs no disk.
fn remove_stale_temps(run: &RunDir) -> Result<(), FitError> {
    for dir in [run.0.clone(), run.0.join("checkpoints")] {
        let removed = kestrel_runtime::atomic::remove_stale_temps(&dir)
            .map_err(|source| FitError::Write { path: dir, source })?;
        for path in removed {
            tracing::info!(
                "removed {}, left by a run that was killed while writing it",
                path.display()
            );
        }
    }
    Ok(())
}

fn new_state(phase: Phase, history: Vec<EpochRow>) -> RunState {
    RunState {
        phase,
        epochs_done: 0,
        best: None,
        epochs_without_improvement: 0,
        lr_scale: 1.0,
        stopped_early: false,
        history,
    }
}

/// Logits of preprocessed images, in batches, in inference mode.
pub fn predict(
    model: &EfficientNet,
    spec: &PreprocessSpec,
    set: &EvalSet,
    batch: usize,
    device: &Device,
) -> Result<Vec<f32>, FitError> {
    let model = model.valid();
    let mut out = Vec::new();
    for start in (0..set.len()).step_by(batch.max(1)) {
        let end = (start + batch.max(1)).min(set.len());
        let x = Tensor::<4>::from_data(
            TensorData::new(set.tensors(start..end, spec)?, spec.batch_shape(end - start)),
            device,
        );
        out.extend(to_vec(model.forward(x))?);
    }
    Ok(out)
}

/// Stop at the first non-finite loss, before the optimiser spreads it into the weights; the
/// last checkpoint is the last good state.
fn check_finite(loss: f64, phase: Phase, epoch: usize, run: &RunDir) -> Result<(), FitError> {
    if loss.is_finite() {
        return Ok(());
    }
    Err(FitError::Diverged {
        loss,
        phase,
        epoch: epoch + 1,
        checkpoint: run.last(),
    })
}

/// The training side of an epoch's numbers; validation comes from its [`Evaluation`].
struct EpochTrain {
    phase: Phase,
    epoch: usize,
    lr: f64,
    train_loss: f64,
    images_per_second: f64,
}

/// Record an epoch: history, metrics.csv, early-stopping bookkeeping, checkpoints.
#[allow(clippy::too_many_arguments)]
fn end_epoch(
    config: &FitConfig,
    run: &RunDir,
    state: &mut RunState,
    train: EpochTrain,
    eval: &Evaluation,
    model: &EfficientNet,
    optim: &ModuleOptimizer,
    progress: &Progress,
) -> Result<(), FitError> {
    let row = EpochRow {
        phase: train.phase,
        epoch: train.epoch,
        lr: train.lr,
        train_loss: train.train_loss,
        val_loss: eval.mean_loss,
        val_top1: eval.top1,
        val_topk: eval.topk,
        images_per_second: train.images_per_second,
    };
    if !row.train_loss.is_finite() || !row.val_loss.is_finite() {
        let loss = if row.train_loss.is_finite() {
            row.val_loss
        } else {
            row.train_loss
        };
        return Err(FitError::Diverged {
            loss,
            phase: row.phase,
            epoch: row.epoch,
            checkpoint: run.last(),
        });
    }
    progress.line(&format!(
        "{:?} epoch {:>3} · lr {:.2e} · train loss {:.4} · val loss {:.4} · top-1 {:.1}% · top-{} {:.1}% · {:.0} img/s",
        row.phase,
        row.epoch,
        row.lr,
        row.train_loss,
        row.val_loss,
        100.0 * row.val_top1,
        eval.k,
        100.0 * row.val_topk,
        row.images_per_second
    ));
    state.history.push(row);
    state.epochs_done += 1;
    let value = monitored(config, eval);
    let improved = state.best.is_none_or(|b| value < b - 1e-9);
    if improved {
        state.best = Some(value);
        state.epochs_without_improvement = 0;
    } else {
        state.epochs_without_improvement += 1;
        if config.schedule == Schedule::Plateau
            && state.epochs_without_improvement > 0
            && state
                .epochs_without_improvement
                .is_multiple_of(config.plateau_patience.max(1))
        {
            state.lr_scale *= 0.1;
        }
    }
    let patience = config.early_stopping_patience;
    state.stopped_early = patience > 0 && state.epochs_without_improvement >= patience;
    // Checkpoints before the row: an epoch in metrics.csv is an epoch a resume starts after.
    if improved {
        checkpoint::save(&run.best(), state, model, None)?;
    }
    checkpoint::save(&run.last(), state, model, Some(optim))?;
    write(&run.metrics(), &metrics_csv(&state.history))?;
    if state.stopped_early {
        progress.line(&format!(
            "early stopping: no improvement for {} epochs",
            state.epochs_without_improvement
        ));
    }
    Ok(())
}

pub fn metrics_csv(history: &[EpochRow]) -> String {
    let mut s = String::from("phase,epoch,lr,train_loss,val_loss,val_top1,val_topk,images_per_second\n");
    for r in history {
        let phase = match r.phase {
            Phase::Head => "head",
            Phase::Finetune => "finetune",
        };
        s.push_str(&format!(
            "{phase},{},{:.6e},{:.6},{:.6},{:.6},{:.6},{:.4}\n",
            r.epoch, r.lr, r.train_loss, r.val_loss, r.val_top1, r.val_topk, r.images_per_second
        ));
    }
    s
}

/// The best weights of the run so far (the current ones when no epoch improved).
fn best_so_far(run: &RunDir, current: EfficientNet, template: EfficientNet) -> EfficientNet {
    match checkpoint::load(&run.best(), template) {
        Ok(best) => best.model,
        Err(_) => current,
    }
}

fn head_phase(
    config: &FitConfig,
    run: &RunDir,
    data: &Prepared,
    mut model: EfficientNet,
    state: &mut RunState,
    optim_bytes: &[u8],
    progress: &Progress,
) -> Result<EfficientNet, FitError> {
    let device = config.backend.device();
    let features = head_features(config, &model, data, progress)?;
    let train_device = device.clone().autodiff();
    // fork moves to the autodiff device; train() then turns gradient tracking on.
    let mut head: Linear = model.fc.clone().fork(&train_device).train();
    let dropout = model.dropout.clone();
    let loss_fn = loss_fn(config, &data.dataset, &train_device);
    let mut optim = checkpoint::restore_optimizer(&run.last(), optimizer(config), optim_bytes)?;
    let n = features.labels.len();
    let steps_per_epoch = n.div_ceil(config.batch_size);
    let total = steps_per_epoch * config.head_epochs;
    let val_x = Tensor::<2>::from_data(
        TensorData::new(features.val.clone(), [data.val.len(), FEATURES]),
        &device,
    );
    while state.epochs_done < config.head_epochs && !state.stopped_early {
        let epoch = state.epochs_done;
        let t0 = Instant::now();
        let mut order: Vec<usize> = (0..n).collect();
        rng_for(config.seed, 2, epoch as u64, 0).shuffle(&mut order);
        let (mut loss_sum, mut lr) = (0.0, 0.0);
        for (b, batch) in order.chunks(config.batch_size).enumerate() {
            let (x, labels) = features.batch(batch)?;
            let x = Tensor::<2>::from_data(TensorData::new(x, [batch.len(), FEATURES]), &train_device);
            let logits = head.forward(dropout.forward(x));
            let loss = loss_fn.forward(logits, labels_tensor(&labels, &train_device));
            let batch_loss = loss.clone().into_scalar::<f32>() as f64;
            check_finite(batch_loss, Phase::Head, epoch, run)?;
            loss_sum += batch_loss * batch.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            lr = learning_rate(
                config,
                config.head_lr,
                epoch * steps_per_epoch + b,
                total,
                steps_per_epoch,
            ) * state.lr_scale;
            head = optim.step(lr, head, grads);
        }
        let val_logits = to_vec(head.valid().forward(val_x.clone()))?;
        let eval = metrics::evaluate(&val_logits, &data.val.labels, &data.dataset.classes);
        model.fc = head.valid();
        let train = EpochTrain {
            phase: Phase::Head,
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / n as f64,
            images_per_second: n as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        };
        end_epoch(config, run, state, train, &eval, &model, &optim, progress)?;
    }
    let template = model.clone();
    Ok(best_so_far(run, model, template))
}

/// Freeze everything but the top `unfreeze_blocks` blocks (all when 0), the head conv and the
/// classifier; every BatchNorm stays frozen in inference mode (the guides' advice for small
/// fine-tuning batches).
pub fn freeze_for_finetune(mut model: EfficientNet, unfreeze_blocks: usize) -> EfficientNet {
    let n = model.blocks.len();
    let first_trainable = if unfreeze_blocks == 0 {
        0
    } else {
        n.saturating_sub(unfreeze_blocks)
    };
    model.conv_stem = model.conv_stem.freeze();
    model.bn0 = model.bn0.freeze();
    model.bn1 = model.bn1.freeze();
    model.blocks = model
        .blocks
        .into_iter()
        .enumerate()
        .map(|(i, mut b)| {
            if i < first_trainable {
                return b.freeze();
            }
            b.bn0 = b.bn0.map(|bn| bn.freeze());
            b.bn1 = b.bn1.freeze();
            b.bn2 = b.bn2.freeze();
            b
        })
        .collect();
    model
}

fn finetune_phase(
    config: &FitConfig,
    run: &RunDir,
    data: &Prepared,
    model: EfficientNet,
    state: &mut RunState,
    optim_bytes: &[u8],
    progress: &Progress,
) -> Result<EfficientNet, FitError> {
    let (spec, dataset) = (&data.spec, &data.dataset);
    let device = config.backend.device();
    let train_device = device.clone().autodiff();
    let template = model.clone();
    let mut model = freeze_for_finetune(model, config.unfreeze_blocks)
        .fork(&train_device)
        .train();
    let loss_fn = loss_fn(config, dataset, &train_device);
    let mut optim = checkpoint::restore_optimizer(&run.last(), optimizer(config), optim_bytes)?;
    let n = data.train.len();
    let len = spec.tensor_len();
    let steps_per_epoch = n.div_ceil(config.batch_size);
    let total = steps_per_epoch * config.finetune_epochs;
    while state.epochs_done < config.finetune_epochs && !state.stopped_early {
        let epoch = state.epochs_done;
        let t0 = Instant::now();
        train_device.seed(config.seed.wrapping_add(epoch as u64));
        let mut order: Vec<usize> = (0..n).collect();
        rng_for(config.seed, 3, epoch as u64, 0).shuffle(&mut order);
        let (mut loss_sum, mut lr) = (0.0, 0.0);
        let bar = progress.bar(n as u64, &format!("finetune epoch {}", epoch + 1));
        for (b, batch) in order.chunks(config.batch_size).enumerate() {
            let mut pixels = vec![0.0f32; batch.len() * len];
            pixels.par_chunks_exact_mut(len).zip(batch.par_iter()).try_for_each(
                |(out, &i)| -> Result<(), FitError> {
                    let mut rng = rng_for(config.seed, 4, epoch as u64, i as u64);
                    augment::augmented(&data.train.image(i)?, spec, &config.augment, &mut rng, out)?;
                    Ok(())
                },
            )?;
            let labels: Vec<usize> = batch.iter().map(|&i| data.train.labels[i]).collect();
            let x = Tensor::<4>::from_data(TensorData::new(pixels, spec.batch_shape(batch.len())), &train_device);
            let loss = loss_fn.forward(model.forward(x), labels_tensor(&labels, &train_device));
            let batch_loss = loss.clone().into_scalar::<f32>() as f64;
            check_finite(batch_loss, Phase::Finetune, epoch, run)?;
            loss_sum += batch_loss * batch.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            lr = learning_rate(
                config,
                config.finetune_lr,
                epoch * steps_per_epoch + b,
                total,
                steps_per_epoch,
            ) * state.lr_scale;
            model = optim.step(lr, model, grads);
            bar.inc(batch.len() as u64);
            bar.set_message(format!("loss {batch_loss:.4}"));
        }
        bar.finish_and_clear();
        let eval_model = model.valid();
        let logits = predict(&eval_model, spec, &data.val, config.batch_size, &device)?;
        let eval = metrics::evaluate(&logits, &data.val.labels, &dataset.classes);
        let train = EpochTrain {
            phase: Phase::Finetune,
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / n as f64,
            images_per_second: n as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        };
        end_epoch(config, run, state, train, &eval, &eval_model, &optim, progress)?;
    }
    let current = model.valid();
    Ok(best_so_far(run, current, template))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_warms_up_then_decays_to_the_floor() {
        let config = FitConfig {
            warmup_epochs: 1.0,
            ..FitConfig::default()
        };
        let lr = |step| learning_rate(&config, 1.0, step, 100, 10);
        assert!((lr(0) - 0.1).abs() < 1e-12);
        assert!((lr(9) - 1.0).abs() < 1e-12);
        assert!(lr(50) < lr(20) && lr(20) < 1.0);
        assert!((lr(100) - 0.01).abs() < 1e-9);
    }

    #[test]
    fn finetune_freezes_all_but_the_top_blocks_and_every_batchnorm() {
        let device = Device::flex();
        let model = freeze_for_finetune(EfficientNet::lite0(&device).with_classes(3, &device), 2)
            .fork(&device.clone().autodiff())
            .train();
        assert!(!model.conv_stem.weight.is_require_grad());
        assert!(!model.blocks[13].depthwise_conv.weight.is_require_grad());
        assert!(model.blocks[14].depthwise_conv.weight.is_require_grad());
        assert!(!model.blocks[15].bn1.gamma.is_require_grad());
        assert!(model.conv_head.weight.is_require_grad());
        assert!(model.fc.weight.is_require_grad());
    }
}
