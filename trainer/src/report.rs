//! The end of a run: export the bundle, evaluate it through the runtime (the deployment code
//! path, not Burn), and write what a person reads: `report.html` with the training curves and the
//! confusion matrix (also as `curves.svg`/`.png` and `confusion.svg`/`.png`), `report.json` for
//! scripts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kestrel_runtime::bundle::{Bundle, Metadata, ModelCard};
use kestrel_runtime::{Classifier, LoadOptions};
use serde::Serialize;

use crate::checkpoint::{EpochRow, Phase};
use crate::export::{self, ExportError};
use crate::fit::{FitError, Fitted, RunDir};
use crate::images::Skipped;
use crate::metrics::{self, Evaluation};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Fit(#[from] FitError),
    #[error(transparent)]
    Classifier(#[from] kestrel_runtime::ClassifierError),
    #[error(transparent)]
    Bundle(#[from] kestrel_runtime::BundleError),
    #[error(transparent)]
    Quantize(#[from] crate::quantize::QuantizeError),
    #[error(transparent)]
    Cache(#[from] crate::images::CacheError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub model: PathBuf,
    pub classes: &'a [String],
    pub train_images: usize,
    pub val_images: usize,
    /// How train and validation were split (grouping of near-duplicates included).
    pub split: String,
    /// Burn ↔ tract max |Δlogit| of the exported graph.
    pub export_parity: f32,
    /// Evaluation of the exported bundle in the runtime, on the validation split (which also
    /// chose the best epoch).
    pub evaluation: &'a Evaluation,
    /// The `test/` split of a pre-split folder, evaluated once, at the end, with the weights
    /// validation chose: the number to quote. Absent without a `test/` folder.
    pub test: Option<&'a Evaluation>,
    pub history: &'a [EpochRow],
    pub skipped: &'a [Skipped],
}

/// What [`finish`] measured on the exported bundle, in the runtime.
pub struct Finished {
    pub validation: Evaluation,
    /// The `test/` split, when the data folder has one.
    pub test: Option<Evaluation>,
    /// Burn ↔ tract max |Δlogit|.
    pub parity: f32,
}

/// Export `fitted` into the run folder, evaluate it in the runtime and write the report files.
pub fn finish(run: &RunDir, fitted: &Fitted, backbone_source: &str) -> Result<Finished, ReportError> {
    let spec = &fitted.data.spec;
    let classes = &fitted.data.dataset.classes;
    let mut metadata = Metadata {
        labels: classes.clone(),
        preprocess: spec.clone(),
        model_card: ModelCard {
            backbone: "efficientnet-lite0".into(),
            weights_source: format!("fine-tuned from {backbone_source}"),
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
    let parity = export::export_bundle(
        &fitted.model,
        &metadata,
        &model_path,
        &check,
        crate::pretrained::PARITY_TOLERANCE,
    )?;

    let evaluation = evaluate_in_runtime(&model_path, fitted)?;
    let test = evaluate_test_split(run, &model_path, fitted)?;
    let card_metrics = &mut metadata.model_card.metrics;
    card_metrics.insert("val_top1".into(), evaluation.top1);
    card_metrics.insert(format!("val_top{}", evaluation.k), evaluation.topk);
    card_metrics.insert("val_images".into(), evaluation.images as f64);
    if let Some(t) = &test {
        card_metrics.insert("test_top1".into(), t.top1);
        card_metrics.insert(format!("test_top{}", t.k), t.topk);
        card_metrics.insert("test_images".into(), t.images as f64);
    }
    let bundle = Bundle::read(&model_path)?;
    Bundle::write(bundle.proto, &metadata, &model_path)?;

    let report = Report {
        model: model_path,
        classes,
        train_images: fitted.data.dataset.train.len(),
        val_images: fitted.data.val.len(),
        split: fitted.data.dataset.split_summary(),
        export_parity: parity,
        evaluation: &evaluation,
        test: test.as_ref(),
        history: &fitted.history,
        skipped: &fitted.data.skipped,
    };
    write_files(&run.0, &report)?;
    Ok(Finished {
        validation: evaluation,
        test,
        parity,
    })
}

/// The validation split through the runtime and the bundle at `model` (the deployment path).
pub fn evaluate_in_runtime(model: &Path, fitted: &Fitted) -> Result<Evaluation, ReportError> {
    evaluate_set(model, &fitted.data.val, fitted)
}

/// The `test/` split, when the folder has one: decoded only now, at the end, and run once
/// through the runtime, so nothing during training could have looked at it.
fn evaluate_test_split(run: &RunDir, model: &Path, fitted: &Fitted) -> Result<Option<Evaluation>, ReportError> {
    let test = &fitted.data.dataset.test;
    if test.is_empty() {
        return Ok(None);
    }
    let set = crate::images::preprocess_for_eval(
        test,
        &fitted.data.spec,
        kestrel_runtime::decode::DEFAULT_MAX_PIXELS,
        crate::store::Store::on_disk(&run.0)?,
        &crate::progress::Progress::auto(),
    )?;
    for s in &set.skipped {
        tracing::warn!("test split: skipped {}: {}", s.path.display(), s.reason);
    }
    if set.is_empty() {
        return Ok(None);
    }
    evaluate_set(model, &set, fitted).map(Some)
}

fn evaluate_set(model: &Path, set: &crate::images::EvalSet, fitted: &Fitted) -> Result<Evaluation, ReportError> {
    let classifier = Classifier::load(model, &LoadOptions::default())?;
    let logits = crate::evaluate::logits(&classifier, &set.crops)?;
    Ok(metrics::evaluate(&logits, &set.labels, &fitted.data.dataset.classes))
}

/// The run's int8 bundle (`model.int8.onnx`): quantised per the config's scheme, calibrated on
/// the training split and gated on the validation split through the runtime. `None` when no
/// candidate stays within `int8_max_drop` (the float bundle stands; nothing int8 is written).
pub fn quantize(
    run: &RunDir,
    fitted: &Fitted,
    config: &crate::config::FitConfig,
) -> Result<(PathBuf, crate::quantize::gate::Outcome), ReportError> {
    use crate::quantize::{self, gate, inputs};
    let out = run.0.join("model.int8.onnx");
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
    };
    let outcome = quantize::calibrate_and_write(&float, &run.model(), &data, &request, &out, |a| {
        tracing::info!(
            "int8 candidate {}: val top-1 {:.1}% ({:+.1} pt){}",
            a.label,
            100.0 * a.evaluation.top1,
            -a.drop_pts,
            if a.passed { "" } else { ", over the limit" }
        )
    })?;
    crate::fit::write(
        &run.0.join("quantize.json"),
        &serde_json::to_string_pretty(&outcome).unwrap_or_default(),
    )?;
    Ok((out, outcome))
}

fn write_files(dir: &Path, report: &Report) -> Result<(), FitError> {
    let curves = curves_svg(report.history);
    let confusion = confusion_svg(&report.evaluation.matrix, report.classes);
    crate::fit::write(&dir.join("curves.svg"), &curves)?;
    crate::fit::write(&dir.join("confusion.svg"), &confusion)?;
    // A plot that cannot be drawn must not fail a finished training run: warn and go on.
    let pngs = [
        crate::plots::curves_png(report.history, &dir.join("curves.png")),
        crate::plots::confusion_png(&report.evaluation.matrix, report.classes, &dir.join("confusion.png")),
    ];
    for result in pngs {
        if let Err(e) = result {
            tracing::warn!("{e}");
        }
    }
    crate::fit::write(
        &dir.join("report.json"),
        &serde_json::to_string_pretty(report).unwrap_or_default(),
    )?;
    crate::fit::write(&dir.join("report.html"), &html(report, &curves, &confusion))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Loss and accuracy per epoch, both phases on one time axis.
pub fn curves_svg(history: &[EpochRow]) -> String {
    let (w, h, pad) = (640.0, 300.0, 40.0);
    let n = history.len().max(2) as f64;
    let max_loss = history
        .iter()
        .flat_map(|r| [r.train_loss, r.val_loss])
        .fold(0.0f64, f64::max)
        .max(1e-6);
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n - 1.0);
    let y = |v: f64| h - pad - (h - 2.0 * pad) * v;
    let line = |f: &dyn Fn(&EpochRow) -> f64, colour: &str| {
        let pts: Vec<String> = history
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{:.1},{:.1}", x(i), y(f(r).clamp(0.0, 1.0))))
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        )
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"#888\"/>",
        h - pad,
        w - pad,
        h - pad,
        h - pad
    );
    s += &line(&|r| r.train_loss / max_loss, "#1f77b4");
    s += &line(&|r| r.val_loss / max_loss, "#ff7f0e");
    s += &line(&|r| r.val_top1, "#2ca02c");
    if let Some(i) = history
        .iter()
        .position(|r| r.phase == Phase::Finetune)
        .filter(|&i| i > 0)
    {
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{pad}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#aaa\" stroke-dasharray=\"4\"/>\
             <text x=\"{0:.1}\" y=\"{2}\">fine-tune</text>",
            x(i),
            h - pad,
            pad - 5.0
        );
    }
    let _ = write!(
        s,
        "<text x=\"{pad}\" y=\"{}\">epoch →</text>\
         <text x=\"{}\" y=\"20\" fill=\"#1f77b4\">train loss</text><text x=\"{}\" y=\"20\" fill=\"#ff7f0e\">val loss</text>\
         <text x=\"{}\" y=\"20\" fill=\"#2ca02c\">val top-1 (0–100%)</text>\
         <text x=\"5\" y=\"{}\">0</text><text x=\"5\" y=\"{}\">max</text></svg>",
        h - 10.0,
        pad,
        pad + 90.0,
        pad + 170.0,
        h - pad,
        pad + 4.0
    );
    s
}

/// Row-normalised confusion matrix as a heat map, counts in the cells.
pub fn confusion_svg(matrix: &[Vec<usize>], classes: &[String]) -> String {
    let n = classes.len().max(1);
    let cell = (480 / n).clamp(12, 48) as f64;
    let label_w = 140.0;
    let size = label_w + cell * n as f64 + 20.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{size}\" height=\"{size}\" font-family=\"sans-serif\" font-size=\"11\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"5\" y=\"14\">truth ↓ predicted →</text>"
    );
    for (t, row) in matrix.iter().enumerate() {
        let total = row.iter().sum::<usize>().max(1) as f64;
        let y = label_w + t as f64 * cell;
        let _ = write!(
            s,
            "<text x=\"5\" y=\"{:.1}\">{}</text>",
            y + cell * 0.65,
            esc(&classes[t])
        );
        for (p, &count) in row.iter().enumerate() {
            let x = label_w + p as f64 * cell;
            let share = count as f64 / total;
            let shade = (255.0 * (1.0 - share)).round() as u8;
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell}\" height=\"{cell}\" fill=\"rgb({shade},{shade},255)\" stroke=\"#ddd\"/>"
            );
            if count > 0 && cell >= 20.0 {
                let colour = if share > 0.5 { "white" } else { "black" };
                let _ = write!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{colour}\">{count}</text>",
                    x + cell / 2.0,
                    y + cell * 0.65
                );
            }
        }
    }
    for (p, class) in classes.iter().enumerate() {
        let x = label_w + p as f64 * cell + cell * 0.65;
        let _ = write!(
            s,
            "<text transform=\"translate({x:.1},{:.1}) rotate(-60)\">{}</text>",
            label_w - 4.0,
            esc(class)
        );
    }
    s + "</svg>"
}

fn html(report: &Report, curves: &str, confusion: &str) -> String {
    let e = report.evaluation;
    let mut s = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Kestrel training report</title>\
         <style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>",
    );
    let _ = write!(
        s,
        "<h1>Kestrel training report</h1><p>Model <code>{}</code> · {} classes · {} train / {} validation images \
         ({}).</p>\
         <h2>Validation (exported bundle, run by the Kestrel runtime)</h2>\
         <p>top-1 <b>{:.1}%</b> · top-{} {:.1}% · loss {:.4} · Burn↔tract max |Δlogit| {:.1e}</p>",
        esc(&report.model.display().to_string()),
        report.classes.len(),
        report.train_images,
        report.val_images,
        esc(&report.split),
        100.0 * e.top1,
        e.k,
        100.0 * e.topk,
        e.mean_loss,
        report.export_parity
    );
    if let Some(t) = report.test {
        let _ = write!(
            s,
            "<h2>Test (held out: evaluated once, after validation chose the weights)</h2>\
             <p>{} images · top-1 <b>{:.1}%</b> · top-{} {:.1}% · loss {:.4}</p>",
            t.images,
            100.0 * t.top1,
            t.k,
            100.0 * t.topk,
            t.mean_loss
        );
    }
    s += "<h2>Training curves</h2>";
    s += curves;
    s += "<h2>Per class</h2><table><tr><th>class</th><th>images</th><th>precision</th><th>recall</th><th>F1</th></tr>";
    for c in &e.per_class {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            esc(&c.class),
            c.support,
            c.precision,
            c.recall,
            c.f1
        );
    }
    s += "</table><h2>Confusion matrix</h2>";
    s += confusion;
    s += "<h2>Most confused</h2><table><tr><th>truth</th><th>predicted as</th><th>images</th></tr>";
    for c in &e.most_confused {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.truth),
            esc(&c.predicted),
            c.count
        );
    }
    let _ = write!(s, "</table><h2>Skipped files ({})</h2><ul>", report.skipped.len());
    for k in report.skipped {
        let _ = write!(
            s,
            "<li><code>{}</code>: {}</li>",
            esc(&k.path.display().to_string()),
            esc(&k.reason)
        );
    }
    s + "</ul></body></html>"
}
