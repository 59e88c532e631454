//! What a person reads at the end of a run: `report.html` with the training curves and the
//! confusion matrix (also as `curves.svg`/`.png` and `confusion.svg`/`.png`), and
//! `report.json` for scripts. This module only renders; `train::finish` measures.

pub mod png;
pub mod svg;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::data::images::Skipped;
use crate::metrics::Evaluation;
use crate::train::checkpoint::EpochRow;
use crate::train::{FitError, write};
use svg::{confusion_svg, curves_svg, esc};

#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub model: PathBuf,
    /// The backbone's architecture, e.g. `efficientnet-lite0`.
    pub backbone: &'a str,
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

/// Write report.html, report.json and the plots into `dir`.
pub fn write_files(dir: &Path, report: &Report) -> Result<(), FitError> {
    let curves = curves_svg(report.history);
    let confusion = confusion_svg(&report.evaluation.matrix, report.classes);
    write(&dir.join("curves.svg"), &curves)?;
    write(&dir.join("confusion.svg"), &confusion)?;
    // A plot that cannot be drawn must not fail a finished training run: warn and go on.
    let pngs = [
        png::curves_png(report.history, &dir.join("curves.png")),
        png::confusion_png(&report.evaluation.matrix, report.classes, &dir.join("confusion.png")),
    ];
    for result in pngs {
        if let Err(e) = result {
            tracing::warn!("{e}");
        }
    }
    write(
        &dir.join("report.json"),
        &serde_json::to_string_pretty(report).unwrap_or_default(),
    )?;
    write(&dir.join("report.html"), &html(report, &curves, &confusion))
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
        "<h1>Kestrel training report</h1><p>Model <code>{}</code> ({}) · {} classes · {} train / {} validation images \
         ({}).</p>\
         <h2>Validation (exported bundle, run by the Kestrel runtime)</h2>\
         <p>top-1 <b>{:.1}%</b> · top-{} {:.1}% · loss {:.4} · Burn↔tract max |Δlogit| {:.1e}</p>",
        esc(&report.model.display().to_string()),
        esc(report.backbone),
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
