//! int8 bundles, calibrated on the user's own images and checked before they are written.
//!
//! - [`calibrate`]: activation histograms and channel means from the float bundle run in tract;
//! - [`bias`]: each layer's bias corrected for the mean shift its rounded weights cause;
//! - [`rewrite`]: the int8 graph, in one of the [`Scheme`]s, all standard ONNX;
//! - [`gate`]: float vs int8 through the runtime on held-out images, the accuracy gate and its
//!   fallbacks.

pub mod bias;
pub mod calibrate;
pub mod gate;
pub mod inputs;
pub mod params;
pub mod rewrite;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use kestrel_runtime::bundle::{Bundle, BundleError};
use serde::Serialize;

pub use calibrate::{Calibration, RangeMethod};
pub use rewrite::Rewritten;

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("initializer `{name}` of {path} is not float32 data this quantiser reads")]
    Unsupported { name: String, path: PathBuf },
    #[error("{path} has no Conv or Gemm weights to quantise")]
    Nothing { path: PathBuf },
    #[error("tensor `{tensor}` of {path} has no calibrated range (calibrate with the same model)")]
    Uncalibrated { tensor: String, path: PathBuf },
    #[error("calibrating {path} in tract: {message}")]
    Calibrate { path: PathBuf, message: String },
    #[error("evaluating an int8 candidate of {path}: {source}")]
    Evaluate {
        path: PathBuf,
        #[source]
        source: crate::data::images::CacheError,
    },
    #[error(transparent)]
    Store(#[from] crate::data::store::StoreError),
    #[error("no calibration images: {hint}")]
    NoImages { hint: String },
}

/// The form of the int8 graph (see [`rewrite`]). Measured on EfficientNet-Lite0 in tract 0.23.9
/// (`scripts/bench.sh`, docs/benchmarks.md): weight-only runs at float speed, the others slower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// int8 weights + DequantizeLinear, float activations: 4× smaller, float speed in tract.
    WeightOnly,
    /// Signed int8 QDQ that runs on Kestrel's integer kernels: s8 activations, per-channel int8
    /// weights, int32 biases, ReLU6 folded into the output range, int8 residual Adds. Standard
    /// ONNX (onnxruntime runs the same file).
    Int8,
    /// QuantizeLinear/DequantizeLinear around float Convs (the ONNX Runtime "QDQ" form).
    Qdq,
    /// QLinearConv everywhere: u8 activations, i8 weights, i32 bias (the "QOperator" form).
    #[value(name = "qoperator")]
    #[serde(rename = "qoperator")]
    QOperator,
    /// QLinearConv for the stem and pointwise Convs, depthwise Convs float (weight-only).
    Mixed,
}

impl Scheme {
    pub const ALL: [Scheme; 5] = [
        Scheme::WeightOnly,
        Scheme::Int8,
        Scheme::Qdq,
        Scheme::QOperator,
        Scheme::Mixed,
    ];

    /// What the model card's `precision` says.
    pub fn precision(self) -> &'static str {
        match self {
            Scheme::WeightOnly => WEIGHT_ONLY,
            Scheme::Int8 => "int8",
            Scheme::Qdq => "int8-qdq",
            Scheme::QOperator => "int8-qoperator",
            Scheme::Mixed => "int8-mixed",
        }
    }

    pub fn needs_calibration(self) -> bool {
        self != Scheme::WeightOnly
    }

    fn describe(self) -> &'static str {
        match self {
            Scheme::WeightOnly => {
                "weights int8 (symmetric), activations float32: tract folds the dequantisation at load, so it \
                 runs at float speed from a 4x smaller file"
            }
            Scheme::Int8 => {
                "int8: activations s8 (calibrated), weights int8 per channel, biases int32, ReLU6 folded into the \
                 output range, residual adds int8; Kestrel's runtime runs every Conv and Add on integer kernels"
            }
            Scheme::Qdq => {
                "QDQ: activations u8 (calibrated), weights int8, QuantizeLinear/DequantizeLinear around float Convs"
            }
            Scheme::QOperator => "QOperator: every Conv a QLinearConv (u8 activations, int8 weights, int32 bias)",
            Scheme::Mixed => "QOperator for stem and pointwise Convs, depthwise Convs float with int8 weights",
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scheme::WeightOnly => "weight-only",
            Scheme::Int8 => "int8",
            Scheme::Qdq => "qdq",
            Scheme::QOperator => "qoperator",
            Scheme::Mixed => "mixed",
        })
    }
}

pub const WEIGHT_ONLY: &str = "int8-weight-only";

/// One way to quantise a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Options {
    pub scheme: Scheme,
    /// Per-output-channel weight scales (else one per tensor).
    pub per_channel: bool,
    pub method: RangeMethod,
    /// Conv node names kept in float (weight-only) whatever the scheme.
    pub keep_float: Vec<String>,
    /// Correct each layer's bias for its weights' rounding ([`bias`]), from the calibration
    /// images' channel means (without images there is nothing to correct with).
    pub bias_correction: bool,
}

impl Options {
    pub fn new(scheme: Scheme) -> Self {
        Options {
            scheme,
            per_channel: true,
            method: RangeMethod::MinMax,
            keep_float: Vec::new(),
            bias_correction: true,
        }
    }

    /// A short line for logs and the model card.
    pub fn label(&self) -> String {
        let mut s = format!(
            "{} · {} weights",
            self.scheme,
            if self.per_channel { "per-channel" } else { "per-tensor" }
        );
        if self.scheme.needs_calibration() {
            s.push_str(&format!(" · {}", self.method));
        }
        if self.bias_correction {
            s.push_str(" · bias-corrected");
        }
        if self.scheme.needs_calibration() && !self.keep_float.is_empty() {
            s.push_str(&format!(" · {} layers float", self.keep_float.len()));
        }
        s
    }
}

/// The float `bundle` (read from `path`) quantised per `options`; `calibration` is needed for
/// every scheme but weight-only. The metadata is kept; the model card says what was done.
pub fn quantize(
    bundle: &Bundle,
    calibration: Option<&Calibration>,
    options: &Options,
    path: &Path,
) -> Result<(Bundle, Rewritten), QuantizeError> {
    let mut proto = bundle.proto.clone();
    let ranges = match (options.scheme.needs_calibration(), calibration) {
        (false, _) => Default::default(),
        (true, Some(c)) => c.ranges(options.method),
        (true, None) => {
            return Err(QuantizeError::NoImages {
                hint: format!("scheme {} needs calibration images (--calibrate DIR)", options.scheme),
            });
        }
    };
    // Without images there are no means to correct with: the card must not claim a correction.
    let options = &Options {
        bias_correction: options.bias_correction && calibration.is_some(),
        ..options.clone()
    };
    let keep_float: HashSet<String> = options.keep_float.iter().cloned().collect();
    // Weight-only reads no ranges, but its weights round all the same: corrected too when images
    // were given.
    let means = calibration
        .filter(|_| options.bias_correction)
        .map(Calibration::channel_means);
    let plan = rewrite::Plan {
        scheme: options.scheme,
        per_channel: options.per_channel,
        ranges: &ranges,
        keep_float: &keep_float,
        means: means.as_ref(),
        pixels: params::PixelGrid::of(&bundle.metadata.preprocess),
    };
    let rewritten = rewrite::rewrite(&mut proto, &plan, path)?;
    let mut metadata = bundle.metadata.clone();
    metadata.model_card.precision = options.scheme.precision().into();
    let mut note = format!("{}; {}", options.label(), options.scheme.describe());
    if let Some(c) = calibration.filter(|_| options.scheme.needs_calibration() || means.is_some()) {
        note.push_str(&format!("; calibrated on {} images", c.images));
    }
    metadata.model_card.notes = Some(match bundle.metadata.model_card.notes.as_deref() {
        Some(n) => format!("{n}; {note}"),
        None => note,
    });
    Ok((Bundle { proto, metadata }, rewritten))
}

/// Weight-only quantisation of the bundle at `input` into `output` (needs no images). Returns
/// the number of int8 weight tensors.
pub fn quantize_bundle(input: &Path, output: &Path) -> Result<usize, QuantizeError> {
    let bundle = Bundle::read(input)?;
    let (q, done) = quantize(&bundle, None, &Options::new(Scheme::WeightOnly), input)?;
    Bundle::write(q.proto, &q.metadata, output)?;
    Ok(done.int8_weights)
}

/// Calibrate `float` on `inputs`, search per `request`, and write the chosen candidate to `out`
/// with both accuracies in its model card. Nothing is written when no candidate passes the gate
/// (`outcome.chosen` is `None`); the float bundle is never touched.
pub fn calibrate_and_write(
    float: &Bundle,
    model: &Path,
    inputs: &inputs::Inputs,
    request: &gate::Request,
    out: &Path,
    on_attempt: impl FnMut(&gate::Attempt),
) -> Result<gate::Outcome, QuantizeError> {
    let calibration = if request.scheme.needs_calibration() || request.bias_correction {
        let shape = float.metadata.preprocess.batch_shape(1);
        Some(calibrate::calibrate(&float.proto, shape, &inputs.calibration, model)?)
    } else {
        None
    };
    let mut outcome = gate::search(float, model, calibration.as_ref(), &inputs.held, request, on_attempt)?;
    let (Some(attempt), Some(mut bundle)) = (outcome.chosen().cloned(), outcome.bundle.take()) else {
        return Ok(outcome);
    };
    // The bundle's own accuracy under the usual keys, the float reference beside it.
    // From the held-out half that did not choose this candidate.
    let metrics = &mut bundle.metadata.model_card.metrics;
    let e = &attempt.report.evaluation;
    if outcome.labelled {
        metrics.insert("val_top1".into(), e.top1);
        metrics.insert(format!("val_top{}", e.k), e.topk);
        metrics.insert("float_val_top1".into(), outcome.float.top1);
        metrics.insert("val_images".into(), e.images as f64);
        metrics.insert("int8_float_agreement".into(), attempt.report.agreement.rate());
    } else {
        metrics.insert("held_out_agreement_with_float".into(), e.top1);
        metrics.insert("held_out_images".into(), e.images as f64);
    }
    let calibrated = attempt.options.scheme.needs_calibration() || attempt.options.bias_correction;
    if calibrated {
        metrics.insert("calibration_views".into(), inputs.calibration.len() as f64);
    }
    if let Some(notes) = bundle.metadata.model_card.notes.as_mut() {
        let role = if calibrated { "calibration" } else { "checked on" };
        notes.push_str(&format!("; {role}: {}", inputs.source));
    }
    Bundle::write(bundle.proto.clone(), &bundle.metadata, out)?;
    outcome.bundle = Some(bundle);
    Ok(outcome)
}
