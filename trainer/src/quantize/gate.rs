//! The accuracy gate: every int8 candidate is loaded by the runtime library (the deployment
//! code path) and scored on held-out images beside the float bundle. A candidate whose top-1
//! drop exceeds `max_drop` is refused; before giving up the search tries the fallbacks in
//! order — the other range method, the other weight granularity, the most sensitive layers kept
//! in float, and last int8 weights alone (weight-only).
//!
//! The held-out images are split in two, alternately within each class: the search chooses on
//! the selection half and the numbers it reports come from the other half, which chose nothing,
//! so picking the luckiest of several candidates does not flatter the result. Beside net top-1
//! it reports per image: how often int8 gives float's answer, and per class how many images it
//! lost (float right, int8 wrong) and gained (the reverse), since a net change of zero can hide
//! flips both ways.

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
    /// Correct biases for weight rounding (see [`super::bias`]); on unless comparing.
    pub bias_correction: bool,
}

/// One class's images whose answer int8 changed, against float on the same images.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassFlips {
    pub class: String,
    pub support: usize,
    /// Float right, int8 wrong.
    pub lost: usize,
    /// Float wrong, int8 right.
    pub gained: usize,
    /// Both wrong, with different answers.
    pub other: usize,
}

/// Per-image agreement of int8 with float.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Agreement {
    pub images: usize,
    /// Images where int8's top-1 is float's.
    pub same: usize,
    /// Every class, in the model's order.
    pub per_class: Vec<ClassFlips>,
}

impl Agreement {
    pub fn rate(&self) -> f64 {
        self.same as f64 / self.images.max(1) as f64
    }

    pub fn lost(&self) -> usize {
        self.per_class.iter().map(|c| c.lost).sum()
    }

    pub fn gained(&self) -> usize {
        self.per_class.iter().map(|c| c.gained).sum()
    }
}

/// Float's and int8's top-1 per image, against the labels.
pub fn agreement(float_top1: &[usize], int8_top1: &[usize], labels: &[usize], classes: &[String]) -> Agreement {
    let mut per_class: Vec<ClassFlips> = classes
        .iter()
        .map(|c| ClassFlips {
            class: c.clone(),
            support: 0,
            lost: 0,
            gained: 0,
            other: 0,
        })
        .collect();
    let mut same = 0;
    for ((&f, &q), &label) in float_top1.iter().zip(int8_top1).zip(labels) {
        let Some(c) = per_class.get_mut(label) else { continue };
        c.support += 1;
        if f == q {
            same += 1;
        } else if f == label {
            c.lost += 1;
        } else if q == label {
            c.gained += 1;
        } else {
            c.other += 1;
        }
    }
    Agreement {
        images: labels.len(),
        same,
        per_class,
    }
}

/// A candidate on one half of the held-out images.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    pub evaluation: Evaluation,
    /// Float top-1 minus int8 top-1 on the same images, percentage points.
    pub drop_pts: f64,
    pub agreement: Agreement,
}

/// One quantised candidate and how it scored.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub options: Options,
    pub label: String,
    pub rewritten: Rewritten,
    /// On the selection half: decides `passed` and which candidate is chosen.
    pub selection: Scored,
    /// On the report half, which chose nothing: the numbers to report.
    pub report: Scored,
    pub passed: bool,
}

/// Which held-out images choose and which report (indices into the held-out set).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Halves {
    pub selection: Vec<usize>,
    pub report: Vec<usize>,
}

impl Halves {
    /// Alternately within each class, in file order; when no class has a second image, both
    /// halves are every image (said in the summary).
    pub fn of(labels: &[usize]) -> Halves {
        let (mut selection, mut report) = (Vec::new(), Vec::new());
        let mut seen = std::collections::HashMap::new();
        for (i, &label) in labels.iter().enumerate() {
            let k = seen.entry(label).or_insert(0usize);
            if *k % 2 == 0 { &mut selection } else { &mut report }.push(i);
            *k += 1;
        }
        if report.is_empty() {
            report.clone_from(&selection);
        }
        Halves { selection, report }
    }

    /// Whether both halves are the same images (too few to split).
    pub fn shared(&self) -> bool {
        self.selection == self.report
    }
}

/// The float model's scores and every attempt; `chosen` indexes `attempts`.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The float bundle on the report half.
    pub float: Evaluation,
    /// The float bundle on the selection half.
    pub float_selection: Evaluation,
    pub halves: Halves,
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

    /// The most accurate attempt on the selection half, passed or not.
    pub fn best(&self) -> Option<&Attempt> {
        self.attempts
            .iter()
            .rev()
            .max_by(|a, b| a.selection.evaluation.top1.total_cmp(&b.selection.evaluation.top1))
    }

    /// Per-class top-1 change on the report half (int8 − float recall, points), worst first.
    pub fn class_deltas(&self) -> Vec<(String, f64)> {
        let Some(a) = self.chosen().or(self.best()) else {
            return Vec::new();
        };
        let mut d: Vec<(String, f64)> = self
            .float
            .per_class
            .iter()
            .zip(&a.report.evaluation.per_class)
            .filter(|(f, _)| f.support > 0)
            .map(|(f, q)| (f.class.clone(), 100.0 * (q.recall - f.recall)))
            .collect();
        d.sort_by(|a, b| a.1.total_cmp(&b.1));
        d
    }

    /// `int8 − float` confusion counts on the report half, only the cells that changed: (truth,
    /// predicted, Δ).
    pub fn confusion_changes(&self) -> Vec<(String, String, i64)> {
        let Some(a) = self.chosen().or(self.best()) else {
            return Vec::new();
        };
        let classes: Vec<&str> = self.float.per_class.iter().map(|c| c.class.as_str()).collect();
        let mut out = Vec::new();
        for (t, (fr, qr)) in self.float.matrix.iter().zip(&a.report.evaluation.matrix).enumerate() {
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

/// The bundle's logits on every held-out image, through the runtime.
fn held_logits(bundle: Bundle, path: &Path, held: &Held) -> Result<Vec<f32>, QuantizeError> {
    let err = |source| QuantizeError::Evaluate {
        path: path.to_path_buf(),
        source,
    };
    let classifier = Classifier::from_bundle(bundle, path, &LoadOptions::default()).map_err(|e| err(e.into()))?;
    logits(&classifier, &held.crops).map_err(err)
}

/// Logits of a model on the held-out set, scored on one half.
struct Half<'a> {
    logits: &'a [f32],
    held: &'a Held,
    images: &'a [usize],
}

impl Half<'_> {
    fn rows(&self) -> impl Iterator<Item = &[f32]> {
        let n = self.held.classes.len().max(1);
        self.images.iter().map(move |&i| &self.logits[i * n..(i + 1) * n])
    }

    fn labels(&self) -> Vec<usize> {
        self.images.iter().map(|&i| self.held.labels[i]).collect()
    }

    fn evaluation(&self) -> Evaluation {
        let logits: Vec<f32> = self.rows().flatten().copied().collect();
        metrics::evaluate(&logits, &self.labels(), &self.held.classes)
    }

    fn top1(&self) -> Vec<usize> {
        self.rows().map(metrics::argmax).collect()
    }
}

/// The float bundle on one half: scored once, compared with every candidate.
struct FloatHalf {
    evaluation: Evaluation,
    top1: Vec<usize>,
}

impl FloatHalf {
    fn of(half: &Half) -> FloatHalf {
        FloatHalf {
            evaluation: half.evaluation(),
            top1: half.top1(),
        }
    }
}

/// int8 against float on one half.
fn score(float: &FloatHalf, int8: &Half) -> Scored {
    let q = int8.evaluation();
    Scored {
        drop_pts: 100.0 * (float.evaluation.top1 - q.top1),
        agreement: agreement(&float.top1, &int8.top1(), &int8.labels(), &int8.held.classes),
        evaluation: q,
    }
}

/// Without labels only the float model's confident answers are a reference worth matching: a
/// flip between two near-equal guesses on an out-of-domain photo says nothing about int8.
pub const CONFIDENT: f32 = 0.5;

/// The held-out images the float model answers with probability ≥ [`CONFIDENT`], labelled with
/// those answers.
pub fn confident_float_answers(bundle: &Bundle, path: &Path, held: &Held) -> Result<Held, QuantizeError> {
    let classes = bundle.metadata.labels.len().max(1);
    let logits = held_logits(bundle.clone(), path, held)?;
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
    let halves = Halves::of(&held.labels);
    let float_logits = held_logits(float.clone(), path, held)?;
    let [float_selection, float_report] = [&halves.selection, &halves.report].map(|images| {
        FloatHalf::of(&Half {
            logits: &float_logits,
            held,
            images,
        })
    });
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut bundles: Vec<Bundle> = Vec::new();
    let mut try_options = |options: Options, attempts: &mut Vec<Attempt>| -> Result<bool, QuantizeError> {
        let (bundle, rewritten) = quantize(float, calibration, &options, path)?;
        let logits = held_logits(bundle.clone(), path, held)?;
        let int8 = |images| Half {
            logits: &logits,
            held,
            images,
        };
        let selection = score(&float_selection, &int8(&halves.selection));
        let report = score(&float_report, &int8(&halves.report));
        let passed = selection.drop_pts <= request.max_drop + 1e-9;
        let attempt = Attempt {
            label: options.label(),
            options,
            rewritten,
            selection,
            report,
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
        bias_correction: request.bias_correction && calibration.is_some(),
        ..Options::new(request.scheme)
    };
    for &m in &methods {
        try_options(base(m), &mut attempts)?;
    }
    let best_method = attempts
        .iter()
        .max_by(|a, b| a.selection.evaluation.top1.total_cmp(&b.selection.evaluation.top1))
        .map_or(RangeMethod::MinMax, |a| a.options.method);
    if request.fallbacks && !attempts.iter().any(|a| a.passed) {
        let flipped = Options {
            per_channel: !request.per_channel,
            ..base(best_method)
        };
        let passed = try_options(flipped, &mut attempts)?;
        if let (false, true, Some(c)) = (passed, request.scheme.needs_calibration(), calibration) {
            let ranked = sensitivity(&float.proto, c, best_method);
            let mut passed = false;
            for keep in [2usize, 4, 8, 16] {
                let options = Options {
                    keep_float: ranked.iter().take(keep).map(|(n, _)| n.clone()).collect(),
                    ..base(best_method)
                };
                passed = try_options(options, &mut attempts)?;
                if passed {
                    break;
                }
            }
            // Last: int8 weights only (float activations, float speed), the least lossy form,
            // rather than no int8 file at all.
            if !passed {
                let weights_only = Options {
                    per_channel: request.per_channel,
                    bias_correction: request.bias_correction,
                    ..Options::new(Scheme::WeightOnly)
                };
                try_options(weights_only, &mut attempts)?;
            }
        }
    }
    let chosen = attempts
        .iter()
        .enumerate()
        .filter(|(_, a)| a.passed)
        .max_by(|(i, a), (j, b)| {
            a.selection
                .evaluation
                .top1
                .total_cmp(&b.selection.evaluation.top1)
                .then(j.cmp(i))
        })
        .map(|(i, _)| i);
    let bundle = chosen.map(|i| bundles.swap_remove(i));
    Ok(Outcome {
        float: float_report.evaluation,
        float_selection: float_selection.evaluation,
        halves,
        labelled: held.labelled,
        attempts,
        chosen,
        bundle,
    })
}

/// The gate's result in a line, from the report half: "float top-1 91.8% · int8 top-1 91.5%
/// (−0.3 pt) on 200 held-out images not used to choose · int8 gives float's answer on 197/200
/// (2 lost, 1 gained) · worst class 'cat' −2.0 pt".
pub fn summary(outcome: &Outcome) -> String {
    let Some(a) = outcome.chosen().or(outcome.best()) else {
        return String::new();
    };
    let r = &a.report;
    let images = if outcome.halves.shared() {
        format!(
            "{} held-out images (too few to split: also those that chose)",
            r.evaluation.images
        )
    } else {
        format!("{} held-out images not used to choose", r.evaluation.images)
    };
    let mut s = if outcome.labelled {
        format!(
            "float top-1 {:.1}% · int8 top-1 {:.1}% ({:+.1} pt) on {images}",
            100.0 * outcome.float.top1,
            100.0 * r.evaluation.top1,
            // + 0.0: no "−0.0 pt" for an unchanged score.
            -r.drop_pts + 0.0
        )
    } else {
        format!(
            "int8 agreement with float's confident answers {:.1}% on {images}",
            100.0 * r.evaluation.top1,
        )
    };
    let g = &r.agreement;
    s.push_str(&format!(
        " · int8 gives float's answer on {}/{} ({} lost, {} gained)",
        g.same,
        g.images,
        g.lost(),
        g.gained()
    ));
    if let Some((class, d)) = outcome.class_deltas().first().filter(|(_, d)| *d < 0.0) {
        s.push_str(&format!(" · worst class '{class}' {d:+.1} pt"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_alternate_within_each_class() {
        let h = Halves::of(&[0, 0, 1, 0, 1, 1, 2]);
        assert_eq!(h.selection, [0, 2, 3, 5, 6]);
        assert_eq!(h.report, [1, 4]);
        assert!(!h.shared());
        let one = Halves::of(&[3]);
        assert!(one.shared() && one.report == [0]);
    }

    #[test]
    fn flips_are_counted_both_ways_per_class() {
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        // truth:  a  a  a  b  b  c
        // float:  a  a  b  b  c  a
        // int8:   a  b  a  b  a  b
        let g = agreement(&[0, 0, 1, 1, 2, 0], &[0, 1, 0, 1, 0, 1], &[0, 0, 0, 1, 1, 2], &classes);
        assert_eq!((g.images, g.same), (6, 2));
        let counts: Vec<_> = g
            .per_class
            .iter()
            .map(|c| (c.support, c.lost, c.gained, c.other))
            .collect();
        assert_eq!(counts, [(3, 1, 1, 0), (2, 0, 0, 1), (1, 0, 0, 1)]);
        assert_eq!(
            (g.lost(), g.gained()),
            (1, 1),
            "net top-1 unchanged, two images flipped"
        );
    }
}
