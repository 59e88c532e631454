//! Repeated trials, as the guides tune: K-fold cross-validation (`fit --folds K`) and a grid
//! sweep over named settings (`sweep --grid lr=1e-3,3e-4 --grid label_smoothing=0,0.1`).
//! Each trial is a complete run in its own sub-folder, scored by the runtime on its exported
//! bundle. A trial whose folder already has `report.json` is not run again, so an interrupted
//! sweep continues where it stopped.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::finish;
use super::{FitError, RunDir};
use crate::config::FitConfig;
use crate::progress::Progress;

#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error(transparent)]
    Fit(#[from] FitError),
    #[error("--grid `{0}` is not KEY=V1,V2,…")]
    GridSyntax(String),
    #[error("--grid `{key}`: no such setting (settings are the keys of config.toml)")]
    UnknownKey { key: String },
    #[error("--grid: {0}")]
    Invalid(String),
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The score of one finished trial.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub name: String,
    /// The settings that distinguish this trial (`key=value`).
    pub settings: Vec<String>,
    pub run: PathBuf,
    pub val_top1: f64,
    pub val_loss: f64,
    pub val_images: usize,
}

/// Run (or reuse) one trial in `config.out`.
fn trial(
    config: &FitConfig,
    name: String,
    settings: Vec<String>,
    progress: &Progress,
) -> Result<Trial, ExperimentError> {
    let run = RunDir(config.out.clone());
    let report_path = run.0.join("report.json");
    if !report_path.is_file() {
        progress.line(&format!("── {name} {}", settings.join(" ")));
        let fitted = super::fit(config, run.last().exists(), progress)?;
        finish::finish(&run, &fitted)?;
    }
    let read_err = |message: String| ExperimentError::Read {
        path: report_path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&report_path).map_err(|e| read_err(e.to_string()))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| read_err(e.to_string()))?;
    let eval = &json["evaluation"];
    let number = |v: &serde_json::Value| v.as_f64().ok_or_else(|| read_err("missing evaluation".into()));
    Ok(Trial {
        name,
        settings,
        run: run.0,
        val_top1: number(&eval["top1"])?,
        val_loss: number(&eval["mean_loss"])?,
        val_images: eval["images"].as_u64().unwrap_or(0) as usize,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct FoldSummary {
    pub folds: Vec<Trial>,
    pub mean_top1: f64,
    pub std_top1: f64,
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// K-fold cross-validation: one full run per fold under `out/fold-i`.
pub fn cross_validate(base: &FitConfig, k: usize, progress: &Progress) -> Result<FoldSummary, ExperimentError> {
    let mut folds = Vec::with_capacity(k);
    for i in 0..k {
        let config = FitConfig {
            folds: k,
            fold: i,
            out: base.out.join(format!("fold-{i}")),
            ..base.clone()
        };
        folds.push(trial(
            &config,
            format!("fold {}/{k}", i + 1),
            vec![format!("fold={i}")],
            progress,
        )?);
    }
    let top1: Vec<f64> = folds.iter().map(|t| t.val_top1).collect();
    let (mean_top1, std_top1) = mean_std(&top1);
    Ok(FoldSummary {
        folds,
        mean_top1,
        std_top1,
    })
}

/// One `KEY=V1,V2,…` axis of a grid. `lr` means `head_lr`; dashes read as underscores.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub key: String,
    pub values: Vec<String>,
}

impl std::str::FromStr for Axis {
    type Err = ExperimentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, values) = s.split_once('=').ok_or_else(|| ExperimentError::GridSyntax(s.into()))?;
        let key = match key.trim().replace('-', "_").as_str() {
            "lr" => "head_lr".to_string(),
            other => other.to_string(),
        };
        let values: Vec<String> = values
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if key.is_empty() || values.is_empty() {
            return Err(ExperimentError::GridSyntax(s.into()));
        }
        Ok(Axis { key, values })
    }
}

/// `base` with `key = value` set, type-checked as config.toml would be.
pub fn with_setting(base: &FitConfig, key: &str, value: &str) -> Result<FitConfig, ExperimentError> {
    let mut table = toml::Table::try_from(base).map_err(|e| ExperimentError::Invalid(e.to_string()))?;
    if !table.contains_key(key) {
        return Err(ExperimentError::UnknownKey { key: key.into() });
    }
    // A bare word (`sgd`) is a string; anything TOML parses (`1e-3`, `true`) keeps its type.
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.into()));
    // `label_smoothing=0` means 0.0: widen integers where the setting is a float.
    let parsed = match (&table[key], parsed) {
        (toml::Value::Float(_), toml::Value::Integer(i)) => toml::Value::Float(i as f64),
        (_, v) => v,
    };
    table.insert(key.into(), parsed);
    let config: FitConfig = table
        .try_into()
        .map_err(|e: toml::de::Error| ExperimentError::Invalid(format!("{key}={value}: {e}")))?;
    config
        .validate()
        .map_err(|e| ExperimentError::Invalid(format!("{key}={value}: {e}")))?;
    Ok(config)
}

/// Every combination of the axes (cartesian product), one run each under `out/trial-NN`,
/// best first (validation top-1, then loss).
pub fn sweep(base: &FitConfig, axes: &[Axis], progress: &Progress) -> Result<Vec<Trial>, ExperimentError> {
    let mut combos: Vec<Vec<(String, String)>> = vec![vec![]];
    for axis in axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                axis.values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((axis.key.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    // Check every combination before the first (long) run.
    let configs = combos
        .iter()
        .enumerate()
        .map(|(i, combo)| {
            let mut config = FitConfig {
                out: base.out.join(format!("trial-{i:02}")),
                ..base.clone()
            };
            for (k, v) in combo {
                config = with_setting(&config, k, v)?;
            }
            Ok(config)
        })
        .collect::<Result<Vec<_>, ExperimentError>>()?;
    let mut trials = Vec::new();
    for (i, (config, combo)) in configs.iter().zip(&combos).enumerate() {
        let settings = combo.iter().map(|(k, v)| format!("{k}={v}")).collect();
        trials.push(trial(
            config,
            format!("trial {}/{}", i + 1, configs.len()),
            settings,
            progress,
        )?);
    }
    trials.sort_by(|a, b| {
        b.val_top1
            .total_cmp(&a.val_top1)
            .then(a.val_loss.total_cmp(&b.val_loss))
    });
    Ok(trials)
}

/// The leaderboard as aligned text lines.
pub fn leaderboard(trials: &[Trial]) -> String {
    let mut s = String::from("rank  val top-1  val loss  settings                                run\n");
    for (i, t) in trials.iter().enumerate() {
        s += &format!(
            "{:>4}  {:>8.1}%  {:>8.4}  {:<38}  {}\n",
            i + 1,
            100.0 * t.val_top1,
            t.val_loss,
            t.settings.join(" "),
            t.run.display()
        );
    }
    s
}

/// Write `value` as pretty JSON to `path`.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ExperimentError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| ExperimentError::Invalid(e.to_string()))?;
    kestrel_runtime::atomic::write_atomic(path, text.as_bytes()).map_err(|source| ExperimentError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_axes_parse_with_aliases_and_type_check() {
        let axis: Axis = "lr=1e-3, 3e-4".parse().expect("axis");
        assert_eq!(axis.key, "head_lr");
        assert_eq!(axis.values, ["1e-3", "3e-4"]);
        let axis: Axis = "label-smoothing=0,0.1".parse().expect("axis");
        assert_eq!(axis.key, "label_smoothing");
        assert!("nonsense".parse::<Axis>().is_err());

        let base = FitConfig {
            data: "photos".into(),
            ..FitConfig::default()
        };
        assert_eq!(with_setting(&base, "head_lr", "3e-4").expect("lr").head_lr, 3e-4);
        assert_eq!(
            with_setting(&base, "optimizer", "sgd").expect("sgd").optimizer,
            crate::config::OptimizerKind::Sgd
        );
        assert_eq!(
            with_setting(&base, "label_smoothing", "0")
                .expect("int as float")
                .label_smoothing,
            0.0
        );
        assert!(matches!(
            with_setting(&base, "nope", "1"),
            Err(ExperimentError::UnknownKey { .. })
        ));
        assert!(with_setting(&base, "head_epochs", "many").is_err());
        assert!(with_setting(&base, "label_smoothing", "2.0").is_err(), "validated");
    }

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[0.8, 1.0]);
        assert!((m - 0.9).abs() < 1e-12 && (s - 0.02f64.sqrt()).abs() < 1e-12);
    }
}
