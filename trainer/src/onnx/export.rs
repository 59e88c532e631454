//! A backbone (Burn) → a Kestrel bundle: an ONNX graph of standard ops that tract and
//! quantisers handle well — BatchNorm folded into Conv, ReLU6 as Clip, explicit (asymmetric)
//! pads, GlobalAveragePool → Flatten → Gemm — plus the `kestrel.*` metadata.
//!
//! We write the graph ourselves rather than tracing it with `burn-onnx`: its exporter cannot
//! lower `clamp` (ReLU6) and leaves BatchNorm unfolded, both bad for int8.

use std::path::Path;

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor, TensorData};
use kestrel_runtime::bundle::{Bundle, BundleError, Metadata};
use kestrel_runtime::{Classifier, LoadOptions};
use tract_onnx::pb;

use crate::model::{Backbone, EfficientNet, Network};
use crate::onnx::graph::{Attr, Dim, GraphBuilder, f32_tensor};

pub const INPUT_NAME: &str = "image";
pub const OUTPUT_NAME: &str = "logits";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read tensor `{name}` from the model: {message}")]
    Tensor { name: String, message: String },
    #[error("the model outputs {model} classes but {labels} labels were given")]
    Labels { model: usize, labels: usize },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("checking the exported model in tract: {0}")]
    Check(#[from] kestrel_runtime::ClassifierError),
    #[error("exported model disagrees with Burn: max |Δlogit| = {max_abs_diff:e} > {tolerance:e}")]
    Parity { max_abs_diff: f32, tolerance: f32 },
}

fn floats(name: &str, t: Tensor<1>) -> Result<Vec<f32>, ExportError> {
    t.into_data().try_into_vec::<f32>().map_err(|e| ExportError::Tensor {
        name: name.to_string(),
        message: format!("{e:?}"),
    })
}

/// TensorFlow "SAME" padding for one dimension: (begin, end); the extra pixel goes at the end.
pub fn same_padding(kernel: usize, stride: usize, size: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out.max(1) - 1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

struct Writer {
    graph: GraphBuilder,
}

impl Writer {
    /// Conv with BatchNorm folded in (`w' = w·γ/σ`, `b' = β − μ·γ/σ`), optionally ReLU6.
    /// Returns the output name and its spatial size.
    fn conv_bn(
        &mut self,
        name: &str,
        input: &str,
        size: [usize; 2],
        conv: &Conv2d,
        bn: &BatchNorm,
        activation: bool,
    ) -> Result<(String, [usize; 2]), ExportError> {
        let weight = conv.weight.val();
        let dims = weight.dims();
        let weight = floats(&format!("{name}.weight"), weight.flatten::<1>(0, 3))?;
        let gamma = floats(&format!("{name}.bn.gamma"), bn.gamma.val())?;
        let beta = floats(&format!("{name}.bn.beta"), bn.beta.val())?;
        let mean = floats(&format!("{name}.bn.mean"), bn.running_mean.value())?;
        let var = floats(&format!("{name}.bn.var"), bn.running_var.value())?;
        let out_channels = dims[0];
        let per_channel = weight.len() / out_channels;
        let mut folded = weight;
        let mut bias = vec![0.0f32; out_channels];
        for c in 0..out_channels {
            // f64 for the fold so the exported weights do not depend on evaluation order.
            let scale = gamma[c] as f64 / (var[c] as f64 + bn.epsilon).sqrt();
            for w in &mut folded[c * per_channel..(c + 1) * per_channel] {
                *w = (*w as f64 * scale) as f32;
            }
            bias[c] = (beta[c] as f64 - mean[c] as f64 * scale) as f32;
        }
        let w = self
            .graph
            .initializer(f32_tensor(&format!("{name}.weight"), &dims, &folded));
        let b = self
            .graph
            .initializer(f32_tensor(&format!("{name}.bias"), &[out_channels], &bias));
        let [kh, kw] = conv.kernel_size;
        let [sh, sw] = conv.stride;
        let (top, bottom) = same_padding(kh, sh, size[0]);
        let (left, right) = same_padding(kw, sw, size[1]);
        let out = self.graph.node(
            "Conv",
            &[input, &w, &b],
            &format!("{name}.conv"),
            &[
                ("kernel_shape", Attr::Ints(vec![kh as i64, kw as i64])),
                ("strides", Attr::Ints(vec![sh as i64, sw as i64])),
                (
                    "pads",
                    Attr::Ints(vec![top as i64, left as i64, bottom as i64, right as i64]),
                ),
                ("dilations", Attr::Ints(vec![1, 1])),
                ("group", Attr::Int(conv.groups as i64)),
            ],
        );
        let size = [size[0].div_ceil(sh), size[1].div_ceil(sw)];
        if !activation {
            return Ok((out, size));
        }
        let relu = self
            .graph
            .node("Clip", &[&out, "relu6.min", "relu6.max"], &format!("{name}.relu6"), &[]);
        Ok((relu, size))
    }
}

/// The ONNX graph of an EfficientNet-Lite `model` for `height`×`width` inputs, batch dimension
/// symbolic; `architecture` names the graph.
pub fn efficientnet_proto(
    model: &EfficientNet,
    height: usize,
    width: usize,
    architecture: &str,
) -> Result<pb::ModelProto, ExportError> {
    let mut w = Writer {
        graph: GraphBuilder::default(),
    };
    w.graph.input(
        INPUT_NAME,
        &[Dim::Named("N"), Dim::Fixed(3), Dim::Fixed(height), Dim::Fixed(width)],
    );
    w.graph.initializer(f32_tensor("relu6.min", &[], &[0.0]));
    w.graph.initializer(f32_tensor("relu6.max", &[], &[6.0]));

    let (mut x, mut size) = w.conv_bn("stem", INPUT_NAME, [height, width], &model.conv_stem, &model.bn0, true)?;
    for (i, block) in model.blocks.iter().enumerate() {
        let block_input = x.clone();
        if let (Some(conv), Some(bn)) = (&block.expand_conv, &block.bn0) {
            (x, size) = w.conv_bn(&format!("blocks.{i}.expand"), &x, size, conv, bn, true)?;
        }
        (x, size) = w.conv_bn(
            &format!("blocks.{i}.depthwise"),
            &x,
            size,
            &block.depthwise_conv,
            &block.bn1,
            true,
        )?;
        (x, size) = w.conv_bn(
            &format!("blocks.{i}.project"),
            &x,
            size,
            &block.project_conv,
            &block.bn2,
            false,
        )?;
        if block.skip {
            x = w
                .graph
                .node("Add", &[&x, &block_input], &format!("blocks.{i}.add"), &[]);
        }
    }
    (x, _) = w.conv_bn("head", &x, size, &model.conv_head, &model.bn1, true)?;
    let pooled = w.graph.node("GlobalAveragePool", &[&x], "pool", &[]);
    let flat = w
        .graph
        .node("Flatten", &[&pooled], "flatten", &[("axis", Attr::Int(1))]);

    // Burn's Linear weight is [in, out]; Gemm with transB takes [out, in].
    let fc_weight = model.fc.weight.val();
    let [features, classes] = fc_weight.dims();
    let fc_t = floats("fc.weight", fc_weight.transpose().flatten::<1>(0, 1))?;
    let fc_w = w
        .graph
        .initializer(f32_tensor("fc.weight", &[classes, features], &fc_t));
    let bias = match &model.fc.bias {
        Some(b) => floats("fc.bias", b.val())?,
        None => vec![0.0; classes],
    };
    let fc_b = w.graph.initializer(f32_tensor("fc.bias", &[classes], &bias));
    w.graph
        .node("Gemm", &[&flat, &fc_w, &fc_b], OUTPUT_NAME, &[("transB", Attr::Int(1))]);
    w.graph.output(OUTPUT_NAME, &[Dim::Named("N"), Dim::Fixed(classes)]);
    Ok(w.graph.into_model(architecture, kestrel_runtime::VERSION))
}

/// A bundle that passed its parity check, still in memory, with the classifier that checked
/// it (the runtime's own loading path), so that evaluation needs no second load.
pub struct Checked {
    pub bundle: Bundle,
    pub classifier: Classifier,
    /// Burn ↔ tract max |Δlogit| over the check images.
    pub parity: f32,
}

impl Checked {
    /// Write the checked bundle to `path` (atomically); returns its parity.
    pub fn save(&self, path: &Path) -> Result<f32, ExportError> {
        self.bundle.save(path)?;
        Ok(self.parity)
    }
}

/// The bundle of `model` with `metadata`, checked without writing anything: the same batch
/// through Burn and through the graph in tract must agree within `tolerance` (max |Δlogit|).
/// `path` is where it will be written, for error messages.
pub fn checked_bundle(
    backbone: &dyn Backbone,
    model: &Network,
    metadata: &Metadata,
    path: &Path,
    check_images: &[Vec<f32>],
    tolerance: f32,
) -> Result<Checked, ExportError> {
    if model.classes() != metadata.labels.len() {
        return Err(ExportError::Labels {
            model: model.classes(),
            labels: metadata.labels.len(),
        });
    }
    let spec = &metadata.preprocess;
    let proto = backbone.onnx(model, spec.height as usize, spec.width as usize)?;
    let bundle = Bundle::new(proto, metadata, path)?;
    let classifier = Classifier::from_bundle(bundle.clone(), path, &LoadOptions::default())?;
    let max_abs_diff = parity(model, &classifier, check_images)?;
    if max_abs_diff.is_nan() || max_abs_diff > tolerance {
        return Err(ExportError::Parity {
            max_abs_diff,
            tolerance,
        });
    }
    Ok(Checked {
        bundle,
        classifier,
        parity: max_abs_diff,
    })
}

/// Max |Δlogit| between Burn (on the model's device) and tract (`classifier`) over
/// preprocessed images.
pub fn parity(model: &Network, classifier: &Classifier, images: &[Vec<f32>]) -> Result<f32, ExportError> {
    let spec = &classifier.metadata().preprocess;
    let device: Device = model.fc.weight.val().device();
    let mut max = 0.0f32;
    for image in images {
        let tract_logits = classifier.logits(image)?;
        let input = Tensor::<4>::from_data(TensorData::new(image.clone(), spec.batch_shape(1)), &device);
        let burn_logits = floats("logits", model.forward(input).flatten::<1>(0, 1))?;
        for (a, b) in tract_logits.iter().zip(&burn_logits) {
            let d = (a - b).abs();
            max = if d.is_nan() { f32::NAN } else { max.max(d) };
        }
    }
    Ok(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // 224 → 112 with a 3×3 stride-2 kernel: TF pads 0 before, 1 after.
        assert_eq!(same_padding(3, 2, 224), (0, 1));
        assert_eq!(same_padding(5, 2, 56), (1, 2));
        assert_eq!(same_padding(3, 1, 17), (1, 1));
        assert_eq!(same_padding(1, 1, 7), (0, 0));
        // Odd input to a stride-2 layer pads symmetrically.
        assert_eq!(same_padding(3, 2, 7), (1, 1));
    }
}
