//! The end of a run: export the bundle (checked against Burn, then written once), evaluate it
//! through the runtime (the deployment code path, not Burn), write the report, and quantise
//! it to int8.

use std::path::PathBuf;

use kestrel_runtime::Classifier;
use kestrel_runtime::bundle::{Bundle, Metadata, ModelCard};

use super::run_dir::{RunDir, write};
use super::{FitError, Fitted};
use crate::data::images::EvalSet;
use crate::metrics::{self, Evaluation};
use crate::onnx::export;
use crate::report::Report;

/// What [`finish`] measured on the exported bundle, in the runtime.
pub struct Finished {
    pub validation: Evaluation,
    /// The `test/` split, when the data folder has one.
    pub test: Option<Evaluation>,
    /// Burn ↔ tract max |Δlogit|.
    pub parity: f32,
}

/// Export `fitted` into the run folder, evaluated in the runtime, and write the report files.
/// The bundle is checked (Burn ↔ tract parity) and evaluated in memory, then written once,
/// with its metrics in the model card: a bundle that fails its check never reaches
/// `model.onnx`.
pub fn finish(run: &RunDir, fitted: &Fitted) -> Result<Finished, FitError> {
    let spec = &fitted.data.spec;
    let classes = &fitted.data.dataset.classes;
    let backbone = fitted.backbone;
    let mut metadata = Metadata {
        labels: classes.clone(),
        preprocess: spec.clone(),
        model_card: ModelCard {
            backbone: backbone.architecture().into(),
            weights_source: format!("fine-tuned from {}", backbone.weights().source),
            classes: classes.len(),
            metrics: Default::default(),
            precision: "float32".into(),
            tool: format!("kestrel-train {}", kestrel_runtime::VERSION),
            notes: Some(format!(
                "trained on {} ({} train / {} val images; {})",
                fitted.data.dataset.root.display(),
                fitted.data.dataset.train.len(),
                fitted.data.dataset.val.len(),
                fitted.data.dataset.split_summary()
            )),
        },
    };
    let len = spec.tensor_len();
    let check: Vec<Vec<f32>> = fitted
        .data
        .val
        .tensors(0..fitted.data.val.len().min(4), spec)?
        .chunks(len)
        .map(<[f32]>::to_vec)
        .collect();
    let model_path = run.model();
    let checked = export::checked_bundle(
        backbone,
        &fitted.model,
        &metadata,
        &model_path,
        &check,
        fitted.backend.parity_tolerance(),
    )?;
    let evaluation = evaluate_set(&checked.classifier, &fitted.data.val, fitted)?;
    let test = evaluate_test_split(run, &checked.classifier, fitted)?;
    let card_metrics = &mut metadata.model_card.metrics;
    card_metrics.insert("val_top1".into(), evaluation.top1);
    card_metrics.insert(format!("val_top{}", evaluation.k), evaluation.topk);
    card_metrics.insert("val_images".into(), evaluation.images as f64);
    if let Some(t) = &test {
        card_metrics.insert("test_top1".into(), t.top1);
        card_metrics.insert(format!("test_top{}", t.k), t.topk);
        card_metrics.insert("test_images".into(), t.images as f64);
    }
    Bundle::write(checked.bundle.proto, &metadata, &model_path)?;

    let report = Report {
        model: model_path,
        backbone: backbone.architecture(),
        classes,
        train_images: fitted.data.dataset.train.len(),
        val_images: fitted.data.val.len(),
        split: fitted.data.dataset.split_summary(),
        export_parity: checked.parity,
        evaluation: &evaluation,
        test: test.as_ref(),
        history: &fitted.history,
        skipped: &fitted.data.skipped,
    };
    crate::report::write_files(&run.0, &report)?;
    Ok(Finished {
        validation: evaluation,
        test,
        parity: checked.parity,
    })
}

/// The `test/` split, when the folder has one: decoded only now, at the end, and run once
/// through the runtime, so nothing during training could have looked at it.
fn evaluate_test_split(run: &RunDir, classifier: &Classifier, fitted: &Fitted) -> Result<Option<Evaluation>, FitError> {
    let test = &fitted.data.dataset.test;
    if test.is_empty() {
        return Ok(None);
    }
    let set = crate::data::images::preprocess_for_eval(
        test,
        &fitted.data.spec,
        kestrel_runtime::decode::DEFAULT_MAX_PIXELS,
        crate::data::store::Store::on_disk(&run.0)?,
        &crate::progress::Progress::auto(),
    )?;
    for s in &set.skipped {
        tracing::warn!("test split: skipped {}: {}", s.path.display(), s.reason);
    }
    if set.is_empty() {
        return Ok(None);
    }
    evaluate_set(classifier, &set, fitted).map(Some)
}

/// A split through the runtime (the deployment path, not Burn).
fn evaluate_set(classifier: &Classifier, set: &EvalSet, fitted: &Fitted) -> Result<Evaluation, FitError> {
    let logits = crate::evaluate::logits(classifier, &set.crops)?;
    Ok(metrics::evaluate(&logits, &set.labels, &fitted.data.dataset.classes))
}

/// The run's int8 bundle (`model.int8.onnx`): quantised per the config's scheme, calibrated on
/// the training split and gated on the validation split through the runtime. `None` when no
/// candidate stays within `int8_max_drop` (the float bundle stands; nothing int8 is written).
pub fn quantize(
    run: &RunDir,
    fitted: &Fitted,
    config: &crate::config::FitConfig,
) -> Result<(PathBuf, crate::quantize::gate::Outcome), FitError> {
    use crate::quantize::{self, gate, inputs};
    let out = run.int8_model();
    let float = Bundle::read(&run.model())?;
    let data = inputs::from_run(
        &fitted.data.train,
        &fitted.data.val,
        &fitted.data.dataset.classes,
        &fitted.data.spec,
        // Calibration tensors only for a scheme that reads them (512 take 300 MB at 224 px).
        if config.int8_scheme.needs_calibration() { 512 } else { 0 },
        config.seed,
    )?;
    let request = gate::Request {
        scheme: config.int8_scheme,
        per_channel: true,
        method: None,
        max_drop: config.int8_max_drop,
        fallbacks: true,
        bias_correction: true,
    };
    let outcome = quantize::calibrate_and_write(&float, &run.model(), &data, &request, &out, |a| {
        tracing::info!(
            "int8 candidate {}: val top-1 {:.1}% ({:+.1} pt) on the choosing half{}",
            a.label,
            100.0 * a.selection.evaluation.top1,
            -a.selection.drop_pts,
            if a.passed { "" } else { ", over the limit" }
        )
    })?;
    write(
        &run.file("quantize.json"),
        &serde_json::to_string_pretty(&outcome).unwrap_or_default(),
    )?;
    Ok((out, outcome))
}
