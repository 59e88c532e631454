//! Two-phase transfer learning, the recipe of the Keras and fastai guides:
//! 1. **head**: the backbone is frozen, so each training image's pooled features are computed
//!    once (plain view plus `feature_views` augmented views) and the new head trains on them;
//! 2. **finetune**: the top `unfreeze_blocks` blocks, the head conv and the classifier train at a
//!    lower learning rate on the views `finetune_augment` names (plain by default, so the frozen
//!    blocks' output is computed once per view: `boundary`); BatchNorm stays in inference mode.
//!
//! Every epoch ends with validation, a checkpoint (`last.ckpt`, and `best.ckpt` on improvement)
//! and a rewritten `metrics.csv`. A killed run resumes from `last.ckpt`. The run ends on the best
//! epoch's weights (fine-tuning replaces the head phase's best only by beating it).
//!
//! Where each part lives: [`prepare`] (scan, split, decode into the run's store), `features`
//! (the head phase's feature cache, batched prediction), `phases` (both phases on one epoch loop
//! and one optimiser step, which lr-find shares), `epoch` (history, early stopping,
//! checkpoints), [`recipe`] (loss, optimiser, schedule), [`RunDir`] (the run folder),
//! [`finish`] (export, runtime evaluation, report, int8).

mod boundary;
pub mod checkpoint;
mod epoch;
pub mod experiments;
mod features;
pub mod finish;
pub mod lr_find;
mod meter;
mod phases;
mod prefetch;
mod prepare;
pub mod recipe;
mod run_dir;

use std::path::PathBuf;

use burn::tensor::Device;

pub use epoch::metrics_csv;
pub use features::{HeadFeatures, head_features, predict, training_view};
pub use meter::loss_reads_on_this_thread;
pub use prepare::{Prepared, prepare};
pub use run_dir::{RunDir, write};

use crate::config::FitConfig;
use crate::data::images::CacheError;
use crate::data::store::StoreError;
use crate::metrics::{self, Evaluation};
use crate::model::{Backbone, Network};
use crate::progress::Progress;
use checkpoint::{EpochRow, Phase};

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Dataset(#[from] crate::data::dataset::DatasetError),
    #[error(transparent)]
    Pretrained(#[from] crate::model::pretrained::PretrainedError),
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
    #[error(transparent)]
    Backbone(#[from] crate::model::UnknownBackbone),
    #[error(transparent)]
    Export(#[from] crate::onnx::export::ExportError),
    #[error(transparent)]
    Classifier(#[from] kestrel_runtime::ClassifierError),
    #[error(transparent)]
    Bundle(#[from] kestrel_runtime::BundleError),
    #[error(transparent)]
    Quantize(#[from] crate::quantize::QuantizeError),
    #[error("--resume: no checkpoint at {path}")]
    NothingToResume { path: PathBuf },
}

impl FitError {
    /// The run worked but its result failed a check (exit status 1, not 2): training diverged,
    /// or the exported bundle disagreed with Burn.
    pub fn is_check_failure(&self) -> bool {
        matches!(
            self,
            FitError::Diverged { .. } | FitError::Export(crate::onnx::export::ExportError::Parity { .. })
        )
    }
}

/// What a finished run produced.
#[derive(Debug)]
pub struct Fitted {
    pub backbone: &'static dyn Backbone,
    /// What it trained on (`auto` settled): the export's parity check allows for it.
    pub backend: crate::backend::Backend,
    pub model: Network,
    pub history: Vec<EpochRow>,
    /// Validation of the final weights in Burn (the runtime re-checks the exported file).
    pub validation: Evaluation,
    pub data: Prepared,
}

/// `config`'s backbone with its ImageNet weights and a fresh head for `classes`, on `device`.
pub fn pretrained_model(config: &FitConfig, classes: usize, device: &Device) -> Result<Network, FitError> {
    let (model, _) = crate::model::pretrained::load_imagenet(config.backbone()?, device, config.input_size())?;
    Ok(model.with_classes(classes, device).with_dropout(config.dropout))
}

/// Train per `config`, resuming from the run folder's `last.ckpt` when `resume` is set.
pub fn fit(config: &FitConfig, resume: bool, progress: &Progress) -> Result<Fitted, FitError> {
    config.validate()?;
    // Settle `auto` and the image size once: enumerating adapters is slow, and config.toml
    // records the choices.
    let config = &FitConfig {
        backend: config.backend.settle(config.device),
        image_size: Some(config.input_size()),
        ..config.clone()
    };
    let backbone = config.backbone()?;
    tracing::info!(
        "training {} at {} px on {}",
        backbone.architecture(),
        config.input_size(),
        config.backend.describe_at(config.device)
    );
    let run = RunDir(config.out.clone());
    if !resume && run.last().exists() {
        return Err(FitError::RunExists { path: run.last() });
    }
    if resume && !run.last().exists() {
        return Err(FitError::NothingToResume { path: run.last() });
    }
    run.create()?;
    write(&run.config(), &config.to_toml())?;

    let data = prepare(config, progress)?;

    let device = config.device()?;
    device.seed(config.seed);
    let fresh = || pretrained_model(config, data.dataset.classes.len(), &device);
    let (mut model, mut state, mut optim_bytes) = if resume {
        let ckpt = checkpoint::load(&run.last(), backbone, fresh()?)?;
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
        (fresh()?, epoch::new_state(backbone, phase, Vec::new()), Vec::new())
    };

    if state.phase == Phase::Head {
        model = phases::head_phase(config, backbone, &run, &data, model, &mut state, &optim_bytes, progress)?;
        // Resumed optimiser state belongs to the head's optimiser; fine-tuning starts its own,
        // as it does in a run that was never interrupted.
        optim_bytes.clear();
        // The best value carries over: fine-tuning must beat the head's best to replace it.
        let best = state.best;
        state = epoch::new_state(backbone, Phase::Finetune, std::mem::take(&mut state.history));
        state.best = best;
        checkpoint::save(&run.last(), &state, &model, None)?;
    }
    if config.finetune_epochs > 0 {
        model = phases::finetune_phase(config, backbone, &run, &data, model, &mut state, &optim_bytes, progress)?;
    }
    let logits = predict(&model, &data.spec, &data.val, config.batch_size, &device)?;
    let validation = metrics::evaluate(&logits, &data.val.labels, &data.dataset.classes);
    Ok(Fitted {
        backbone,
        backend: config.backend,
        model,
        history: state.history.clone(),
        validation,
        data,
    })
}
