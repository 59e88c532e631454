//! The accuracy gate: every int8 candidate is loaded by the runtime library (the deployment
//! code path) and scored on held-out images beside the float bundle. A candidate whose top-1
//! drop exceeds `max_drop` is refused; before giving up the search tries the fallbacks in
//! order — the other range method, the other weight granularity, then the most sensitive layers
//! kept in float.

use std::path::Path;
use std::sync::Arc;

use kestrel_runtime::bundle::Bundle;
use kestrel_runtime::{Classifier, LoadOptions};
use serde::Serialize;
use tract_onnx::pb;

use super::calibrate::{Calibration, RangeMethod};
use super::{Options, QuantizeError, Rewritten, Scheme, quantize};
use crate::data::store::Store;
use crate::evaluate::logits;
use crate::metrics::{self, Evaluation};

/// The percentile tried beside min/max.
pub const PERCENTILE: f64 = 0.9999;

/// Held-out images as the runtime crops them (8-bit, at the input size). Without true labels
/// (`labelled == false`) the labels are the float model's own top-1, so "accuracy" reads as
/// agreement with float.
#[derive(Debug, Clone)]
pub struct Held {
    pub crops: Arc<Store>,
    pub labels: Vec<usize>,
    pub classes: Vec<String>,
    pub labelled: bool,
}

/// What the gate asks for.
#[derive(Debug, Clone)]
pub struct Request {
    pub scheme: Scheme,
    pub per_channel: bool,
    /// `None`: try min/max and percentile, keep the better.
    pub method: Option<RangeMethod>,
    /// Largest accepted top-1 drop, in percentage points.
    pub max_drop: f64,
    pub fallbacks: bool,
}

/// One quantised candidate and how it scored.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub options: Options,
    pub label: String,
    pub rewritten: Rewritten,
    pub evaluation: Evaluation,
    /// Float top-1 minus int8 top-1, percentage points.
    pub drop_pts: f64,
    pub passed: bool,
}

/// The float model's scores and every attempt; `chosen` indexes `attempts`.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub float: Evaluation,
    pub labelled: bool,
    pub attempts: Vec<Attempt>,
    pub chosen: Option<usize>,
    #[serde(skip)]
    pub bundle: Option<Bundle>,
}

impl Outcome {
    pub fn chosen(&self) -> Option<&Attempt> {
        self.chosen.map(|i| &self.attempts[i])
    }

    /// The most accurate attempt, passed or not.
    pub fn best(&self) -> Option<&Attempt> {
        self.attempts
            .iter()
            .rev()
            .max_by(|a, b| a.evaluation.top1.total_cmp(&b.evaluation.top1))
    }

    /// Per-class top-1 change (int8 − float recall, points), worst first.
    pub fn class_deltas(&self) -> Vec<(String, f64)> {
        let Some(a) = self.chosen().or(self.best()) else {
            return Vec::new();
        };
        let mut d: Vec<(String, f64)> = self
            .float
            .per_class
            .iter()
            .zip(&a.evaluation.per_class)
            .filter(|(f, _)| f.support > 0)
            .map(|(f, q)| (f.class.clone(), 100.0 * (q.recall - f.recall)))
            .collect();
        d.sort_by(|a, b| a.1.total_cmp(&b.1));
        d
    }

    /// `int8 − float` confusion counts, only the cells that changed: (truth, predicted, Δ).
    pub fn confusion_changes(&self) -> Vec<(String, String, i64)> {
        let Some(a) = self.chosen().or(self.best()) else {
            return Vec::new();
        };
        let classes: Vec<&str> = self.float.per_class.iter().map(|c| c.class.as_str()).collect();
        let mut out = Vec::new();
        for (t, (fr, qr)) in self.float.matrix.iter().zip(&a.evaluation.matrix).enumerate() {
            for (p, (f, q)) in fr.iter().zip(qr).enumerate() {
                let delta = *q as i64 - *f as i64;
                if delta != 0 {
                    out.push((classes[t].to_string(), classes[p].to_string(), delta));
                }
            }
        }
        out.sort_by_key(|(_, _, d)| -d.abs());
        out
    }
}

fn evaluate(bundle: Bundle, path: &Path, held: &Held) -> Result<Evaluation, QuantizeError> {
    let err = |source| QuantizeError::Evaluate {
        path: path.to_path_buf(),
        source,
    };
    let classifier = Classifier::from_bundle(bundle, path, &LoadOptions::default()).map_err(|e| err(e.into()))?;
    let logits = logits(&classifier, &held.crops).map_err(err)?;
    Ok(metrics::evaluate(&logits, &held.labels, &held.classes))
}

/// Without labels only the float model's confident answers are a reference worth matching: a
/// flip between two near-equal guesses on an out-of-domain photo says nothing about int8.
pub const CONFIDENT: f32 = 0.5;

/// The held-out images the float model answers with probability ≥ [`CONFIDENT`], labelled with
/// those answers.
pub fn confident_float_answers(bundle: &Bundle, path: &Path, held: &Held) -> Result<Held, QuantizeError> {
    let err = |source| QuantizeError::Evaluate {
        path: path.to_path_buf(),
        source,
    };
    let classes = bundle.metadata.labels.len().max(1);
    let classifier =
        Classifier::from_bundle(bundle.clone(), path, &LoadOptions::default()).map_err(|e| err(e.into()))?;
    let logits = logits(&classifier, &held.crops).map_err(err)?;
    let (mut crops, mut labels) = (Store::in_memory(), Vec::new());
    for (image, row) in logits.chunks(classes).enumerate() {
        let p = kestrel_runtime::classifier::softmax(row);
        let best = p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)));
        if let Some((top, &prob)) = best
            && prob >= CONFIDENT
        {
            crops.push_image(&held.crops.image(image)?)?;
            labels.push(top);
        }
    }
    if labels.is_empty() {
        return Err(QuantizeError::NoImages {
            hint: format!(
                "the float model answers none of the {} held-out images with probability ≥ {CONFIDENT}; calibrate \
                 on photos of the classes it knows, or on class folders named like its labels",
                held.labels.len()
            ),
        });
    }
    Ok(Held {
        crops: Arc::new(crops),
        labels,
        ..held.clone()
    })
}

/// Conv nodes ranked most sensitive first, by the estimated noise-to-signal ratio of the
/// activations they read and write under `method` (see [`Histogram::noise_to_signal`]).
///
/// [`Histogram::noise_to_signal`]: super::calibrate::Histogram::noise_to_signal
pub fn sensitivity(proto: &pb::ModelProto, calibration: &Calibration, method: RangeMethod) -> Vec<(String, f64)> {
    let ranges = calibration.ranges(method);
    let score = |tensor: &str| match (calibration.tensors.get(tensor), ranges.get(tensor)) {
        (Some(h), Some(&r)) => h.noise_to_signal(r),
        _ => 0.0,
    };
    let mut ranked: Vec<(String, f64)> = proto
        .graph
        .iter()
        .flat_map(|g| g.node.iter())
        .filter(|n| n.op_type == "Conv")
        .map(|n| {
            let s = n.input.first().map_or(0.0, |i| score(i)) + n.output.first().map_or(0.0, |o| score(o));
            (n.name.clone(), s)
        })
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
}

/// Quantise per `request`, score every candidate, apply the fallbacks, and keep the best
/// candidate that passes (highest top-1; the earlier one on a tie).
pub fn search(
    float: &Bundle,
    path: &Path,
    calibration: Option<&Calibration>,
    held: &Held,
    request: &Request,
    mut on_attempt: impl FnMut(&Attempt),
) -> Result<Outcome, QuantizeError> {
    let relabelled;
    let held = if held.labelled {
        held
    } else {
        relabelled = confident_float_answers(float, path, held)?;
        &relabelled
    };
    let float_eval = evaluate(float.clone(), path, held)?;
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut bundles: Vec<Bundle> = Vec::new();
    let mut try_options = |options: Options, attempts: &mut Vec<Attempt>| -> Result<bool, QuantizeError> {
        let (bundle, rewritten) = quantize(float, calibration, &options, path)?;
        let evaluation = evaluate(bundle.clone(), path, held)?;
        let drop_pts = 100.0 * (float_eval.top1 - evaluation.top1);
        let passed = drop_pts <= request.max_drop + 1e-9;
        let attempt = Attempt {
            label: options.label(),
            options,
            rewritten,
            evaluation,
            drop_pts,
            passed,
        };
        on_attempt(&attempt);
        attempts.push(attempt);
        bundles.push(bundle);
        Ok(passed)
    };
    let methods: Vec<RangeMethod> = match (request.scheme.needs_calibration(), request.method) {
        (false, _) => vec![RangeMethod::MinMax],
        (true, Some(m)) => vec![m],
        (true, None) => vec![RangeMethod::MinMax, RangeMethod::Percentile(PERCENTILE)],
    };
    let base = |method| Options {
        method,
        per_channel: request.per_channel,
        ..Options::new(request.scheme)
    };
    for &m in &methods {
        try_options(base(m), &mut attempts)?;
    }
    let best_method = attempts
        .iter()
        .max_by(|a, b| a.evaluation.top1.total_cmp(&b.evaluation.top1))
        .map_or(RangeMethod::MinMax, |a| a.options.method);
    if request.fallbacks && !attempts.iter().any(|a| a.passed) {
        let flipped = Options {
            per_channel: !request.per_channel,
            ..base(best_method)
        };
        let passed = try_options(flipped, &mut attempts)?;
        if let (false, true, Some(c)) = (passed, request.scheme.needs_calibration(), calibration) {
            let ranked = sensitivity(&float.proto, c, best_method);
            for keep in [2usize, 4, 8, 16] {
                let options = Options {
                    keep_float: ranked.iter().take(keep).map(|(n, _)| n.clone()).collect(),
                    ..base(best_method)
                };
                if try_options(options, &mut attempts)? {
                    break;
                }
            }
        }
    }
    let chosen = attempts
        .iter()
        .enumerate()
        .filter(|(_, a)| a.passed)
        .max_by(|(i, a), (j, b)| a.evaluation.top1.total_cmp(&b.evaluation.top1).then(j.cmp(i)))
        .map(|(i, _)| i);
    let bundle = chosen.map(|i| bundles.swap_remove(i));
    Ok(Outcome {
        float: float_eval,
        labelled: held.labelled,
        attempts,
        chosen,
        bundle,
    })
}

/// `drop` in points as the one-liner: "float top-1 91.8% · int8 top-1 91.5% (−0.3 pt)".
pub fn summary(outcome: &Outcome) -> String {
    let what = if outcome.labelled {
        "top-1"
    } else {
        "agreement with float's confident answers"
    };
    let Some(a) = outcome.chosen().or(outcome.best()) else {
        return String::new();
    };
    let mut s = if outcome.labelled {
        format!(
            "float top-1 {:.1}% · int8 top-1 {:.1}% ({:+.1} pt)",
            100.0 * outcome.float.top1,
            100.0 * a.evaluation.top1,
            -a.drop_pts
        )
    } else {
        format!(
            "int8 {what} {:.1}% on {} images",
            100.0 * a.evaluation.top1,
            a.evaluation.images
        )
    };
    if let Some((class, d)) = outcome.class_deltas().first().filter(|(_, d)| *d < 0.0) {
        s.push_str(&format!(" · worst class '{class}' {d:+.1} pt"));
    }
    s
}
