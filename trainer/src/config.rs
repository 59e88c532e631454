//! Every setting of a training run. The run folder's `config.toml` holds the resolved values,
//! written before training starts; `--config` reads the same file back, and each CLI flag
//! overrides the field of the same name.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::Backend;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with decoupled weight decay.
    Adamw,
    /// SGD with (Nesterov-free) momentum.
    Sgd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Linear warm-up, then cosine decay to 1% of the peak.
    Cosine,
    /// Constant, divided by 10 after `plateau_patience` epochs without improvement.
    Plateau,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Monitor {
    /// Validation loss (lower is better).
    ValLoss,
    /// Validation top-1 accuracy (higher is better).
    ValAcc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeights {
    /// Every class counts the same per image.
    None,
    /// Inverse class frequency, normalised to mean 1: rare classes count more.
    Auto,
}

/// Training-time augmentation, applied to the decoded image before the shared preprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// Random resized crop: smallest share of the image area a crop may keep (1 = off).
    pub crop_min_area: f32,
    pub horizontal_flip: bool,
    /// Largest rotation either way, degrees (0 = off).
    pub rotation_degrees: f32,
    /// Brightness/contrast/saturation factors drawn from [1 − j, 1 + j] (0 = off).
    pub color_jitter: f32,
    /// Probability of erasing a random rectangle (0 = off).
    pub erasing: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            crop_min_area: 0.35,
            horizontal_flip: true,
            rotation_degrees: 10.0,
            color_jitter: 0.2,
            erasing: 0.25,
        }
    }
}

impl Augment {
    pub fn none() -> Self {
        Augment {
            crop_min_area: 1.0,
            horizontal_flip: false,
            rotation_degrees: 0.0,
            color_jitter: 0.0,
            erasing: 0.0,
        }
    }
}

/// What fine-tuning (phase 2) trains on. The head phase's augmented views use `[augment]`.
///
/// `none` is the default because it measured best: on Fashion-MNIST and ELPV, fine-tuning on
/// plain views beat the frozen head and fine-tuning on `[augment]`'s views did not
/// (docs/benchmarks.md, "Accuracy"). With `none` or `flip`, the frozen blocks' output for each
/// view is computed once and kept, so later epochs only run the unfrozen top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FinetuneAugment {
    /// Each training image as validation and the runtime see it.
    None,
    /// The plain view or its mirror image, drawn per image and epoch.
    Flip,
    /// Freshly augmented with the `[augment]` settings every epoch.
    Same,
}

impl FinetuneAugment {
    /// The augmentation a freshly drawn view gets, `augment` being the head phase's.
    pub fn settings(self, augment: &Augment) -> Augment {
        match self {
            FinetuneAugment::None => Augment::none(),
            FinetuneAugment::Flip => Augment {
                horizontal_flip: true,
                ..Augment::none()
            },
            FinetuneAugment::Same => augment.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FitConfig {
    /// Labelled photos: `<class>/<image>` or `{train,val}/<class>/<image>`.
    pub data: PathBuf,
    /// Run folder: config, checkpoints, metrics, report and the exported model.
    pub out: PathBuf,
    pub backend: Backend,
    /// Which wgpu adapter (`kestrel-train devices` numbers them); unset, the first discrete GPU,
    /// else the first other hardware one.
    pub device: Option<usize>,
    /// The pretrained network to start from: `lite0` (default), `lite1` or `lite2`
    /// (see `kestrel_trainer::model::BACKBONES`).
    pub backbone: String,
    /// Square input size in pixels; unset, the backbone's own (Lite0 224, Lite1 240, Lite2 260).
    pub image_size: Option<u32>,
    pub batch_size: usize,
    pub seed: u64,
    /// Validation share when the data folder is not pre-split.
    pub val_fraction: f64,
    /// K-fold cross-validation: validate on fold `fold` of `folds` instead of `val_fraction`
    /// (0 folds = off). `kestrel-train fit --folds K` runs every fold.
    pub folds: usize,
    pub fold: usize,
    /// Keep files whose names share a key on one side of the split: a regex on the file name,
    /// its first capture group (or whole match) being the key, e.g. `^(.+)_\d+\.jpg$` for
    /// `scene_001.jpg`. Unset: frames saved by `kestrel run --save-uncertain` group by run.
    pub group_by: Option<String>,

    /// Phase 1: epochs training only the new head on the frozen backbone (0 skips it).
    pub head_epochs: usize,
    pub head_lr: f64,
    /// Augmented views per training image in the phase-1 feature cache (besides the plain one).
    pub feature_views: usize,
    /// Phase 2: epochs fine-tuning the backbone (0 skips it).
    pub finetune_epochs: usize,
    pub finetune_lr: f64,
    /// Blocks unfrozen in phase 2, counted from the top (0 = all: Lite0 has 16, Lite1 and Lite2 21).
    pub unfreeze_blocks: usize,

    pub optimizer: OptimizerKind,
    pub weight_decay: f64,
    pub momentum: f64,
    pub dropout: f64,
    pub label_smoothing: f32,
    pub schedule: Schedule,
    pub warmup_epochs: f64,
    pub plateau_patience: usize,
    pub class_weights: ClassWeights,
    /// Clip the gradient norm to this value (0 = off).
    pub grad_clip: f32,

    pub monitor: Monitor,
    /// Stop a phase after this many epochs without improvement of `monitor` (0 = never).
    pub early_stopping_patience: usize,
    pub augment: Augment,
    /// What phase 2 trains on (see [`FinetuneAugment`]).
    pub finetune_augment: FinetuneAugment,
    /// Threads for decoding images (0 = all cores).
    pub workers: usize,
    /// Images with more pixels than this are skipped (and counted) before they are decoded.
    pub max_pixels: u64,
    /// The int8 bundle the run ends with (`model.int8.onnx`), calibrated on the training split.
    pub int8_scheme: crate::quantize::Scheme,
    /// Largest top-1 drop (points) the int8 bundle may show on the validation split.
    pub int8_max_drop: f64,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            data: PathBuf::new(),
            out: PathBuf::from("runs/exp"),
            backend: Backend::Auto,
            device: None,
            backbone: crate::model::default_backbone().name().to_string(),
            image_size: None,
            batch_size: 32,
            seed: 42,
            val_fraction: 0.1,
            folds: 0,
            fold: 0,
            group_by: None,
            head_epochs: 30,
            head_lr: 1e-3,
            feature_views: 2,
            finetune_epochs: 5,
            finetune_lr: 1e-4,
            unfreeze_blocks: 4,
            optimizer: OptimizerKind::Adamw,
            weight_decay: 1e-4,
            momentum: 0.9,
            dropout: 0.2,
            label_smoothing: 0.1,
            schedule: Schedule::Cosine,
            warmup_epochs: 1.0,
            plateau_patience: 3,
            class_weights: ClassWeights::None,
            grad_clip: 0.0,
            monitor: Monitor::ValLoss,
            early_stopping_patience: 5,
            augment: Augment::default(),
            finetune_augment: FinetuneAugment::None,
            workers: 0,
            max_pixels: kestrel_runtime::decode::DEFAULT_MAX_PIXELS,
            int8_scheme: crate::quantize::Scheme::Int8,
            int8_max_drop: 1.0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid setting: {0}")]
    Invalid(String),
    #[error("invalid setting backbone: {0}")]
    Backbone(#[from] crate::model::UnknownBackbone),
    #[error(transparent)]
    Device(#[from] crate::backend::DeviceError),
}

impl FitConfig {
    /// The Burn device this run computes on: `backend`, and `device` among wgpu adapters.
    pub fn device(&self) -> Result<burn::tensor::Device, ConfigError> {
        Ok(self.backend.device_at(self.device)?)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// The backbone this run trains.
    pub fn backbone(&self) -> Result<&'static dyn crate::model::Backbone, crate::model::UnknownBackbone> {
        crate::model::backbone(&self.backbone)
    }

    /// The input side: `image_size`, else the backbone's native size.
    pub fn input_size(&self) -> u32 {
        self.image_size
            .or_else(|| self.backbone().ok().map(|b| b.native_size()))
            .unwrap_or(224)
    }

    /// The compiled `group_by` pattern (`None` when unset).
    pub fn group_regex(&self) -> Result<Option<regex::Regex>, regex::Error> {
        self.group_by.as_deref().map(regex::Regex::new).transpose()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.data.as_os_str().is_empty() {
            return bad("no data folder: pass --data DIR");
        }
        self.backbone()?;
        if self.device.is_some() {
            self.device()?;
        }
        // "SAME" padding takes any size; below 32 px the last stage would see less than a pixel.
        if !(32..=kestrel_runtime::PreprocessSpec::MAX_SIDE).contains(&self.input_size()) {
            return bad("image_size must be from 32 to 4096 pixels");
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1");
        }
        if self.folds == 1 || (self.folds > 1 && self.fold >= self.folds) {
            return bad("folds must be 0 (off) or at least 2, and fold below folds");
        }
        if self.head_epochs + self.finetune_epochs == 0 {
            return bad("head_epochs and finetune_epochs are both 0: nothing to train");
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad("val_fraction must be in [0, 1)");
        }
        if let Err(e) = self.group_regex() {
            return Err(ConfigError::Invalid(format!("group_by is not a valid regex: {e}")));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad("label_smoothing must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout must be in [0, 1)");
        }
        if !(self.head_lr > 0.0 && self.finetune_lr > 0.0) {
            return bad("learning rates must be positive");
        }
        if !(self.augment.crop_min_area > 0.0 && self.augment.crop_min_area <= 1.0) {
            return bad("augment.crop_min_area must be in (0, 1]");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trips_and_fills_defaults() {
        let config = FitConfig {
            data: "photos".into(),
            head_epochs: 3,
            ..FitConfig::default()
        };
        assert_eq!(toml::from_str::<FitConfig>(&config.to_toml()).expect("parse"), config);
        let partial: FitConfig = toml::from_str("data = \"x\"\n[augment]\nerasing = 0.0\n").expect("parse");
        assert_eq!(partial.head_epochs, FitConfig::default().head_epochs);
        assert_eq!(partial.augment.erasing, 0.0);
        assert!(partial.augment.horizontal_flip);
        assert_eq!(partial.finetune_augment, FinetuneAugment::None);
        let flip: FitConfig = toml::from_str("finetune_augment = \"flip\"\n").expect("parse");
        assert_eq!(flip.finetune_augment, FinetuneAugment::Flip);
        assert_eq!(
            flip.finetune_augment.settings(&flip.augment),
            Augment {
                horizontal_flip: true,
                ..Augment::none()
            }
        );
        assert_eq!(FinetuneAugment::Same.settings(&flip.augment), flip.augment);
        assert!(
            toml::from_str::<FitConfig>("dat = \"typo\"").is_err(),
            "unknown keys are errors"
        );
    }

    #[test]
    fn nonsense_is_refused() {
        let mut c = FitConfig {
            data: "x".into(),
            ..FitConfig::default()
        };
        assert!(c.validate().is_ok());
        c.image_size = Some(31);
        assert!(c.validate().is_err());
        c.image_size = Some(4096 + 32);
        assert!(c.validate().is_err());
        c.image_size = Some(240);
        assert!(c.validate().is_ok());
        c.backbone = "lite9".into();
        assert!(
            c.validate()
                .is_err_and(|e| e.to_string().contains("lite0, lite1, lite2"))
        );
    }
}
