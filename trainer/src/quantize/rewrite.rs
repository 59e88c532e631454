//! The int8 graph rewrite. One pass over our exported graph (topologically ordered), deciding per
//! Conv whether it computes in int8, and inserting QuantizeLinear / DequantizeLinear only where a
//! tensor crosses between an int8 and a float consumer. Every op written is standard ONNX
//! (tract rejects `com.microsoft` ones, so there is no QLinearAdd: residual Adds and the pooling
//! stay float).
//!
//! - weight-only: every Conv/Gemm weight int8 + DequantizeLinear; activations float.
//! - QOperator: int8 Convs become QLinearConv (u8 activations, i8 weights, i32 bias), a following
//!   ReLU6 `Clip` folded into the output range ([0, 6] saturates exactly like the clip).
//! - QDQ: the same int8 decisions written as DequantizeLinear → float Conv → QuantizeLinear, the
//!   form ONNX Runtime and most converters produce.
//! - int8: QDQ with signed int8 activations (zero point 0 when the range is near symmetric), int32
//!   biases behind a DequantizeLinear, a ReLU6 `Clip` folded into the output range (no Clip node:
//!   [0, 6] saturates exactly like it), and residual Adds as DQ → Add → Q. Every Conv and Add is
//!   then a pattern Kestrel's runtime lowers to its integer kernels (`kestrel_runtime::int8`), and
//!   onnxruntime fuses the same way.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

use super::bias::{self, Rounded};
use super::params::{ActParams, BIAS_LIMIT, PixelGrid, quantize_weights_floored};
use super::{QuantizeError, Scheme};
use crate::onnx::graph::f32_tensor;
use kestrel_runtime::onnx_proto::{f32s, i8_tensor, int_attr, node, raw_tensor};

/// What the rewrite needs to know beyond the graph.
pub struct Plan<'a> {
    pub scheme: Scheme,
    pub per_channel: bool,
    /// Calibrated `[min, max]` of every float tensor an int8 Conv reads or writes.
    pub ranges: &'a HashMap<String, (f32, f32)>,
    /// Conv node names kept in float whatever the scheme says (the sensitive-layer fallback).
    pub keep_float: &'a HashSet<String>,
    /// Per-channel means of each tensor on the calibration images: every Conv/Gemm reading one
    /// gets its bias corrected for its weights' rounding ([`super::bias`]). `None`: no correction.
    pub means: Option<&'a HashMap<String, Vec<f32>>>,
    /// The graph input's pixel grid, when it has one: quantised exactly ([`PixelGrid::params`])
    /// rather than from its calibrated range.
    pub pixels: Option<PixelGrid>,
}

/// Is this Conv depthwise (one input channel per group)?
pub fn is_depthwise(node: &pb::NodeProto, inits: &HashMap<&str, &pb::TensorProto>) -> bool {
    let group = attr_int(node, "group").unwrap_or(1);
    let in_per_group = node
        .input
        .get(1)
        .and_then(|w| inits.get(w.as_str()))
        .and_then(|t| t.dims.get(1).copied());
    group > 1 && in_per_group == Some(1)
}

fn attr_int(node: &pb::NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

impl Plan<'_> {
    /// Whether `node` (a Conv) computes in int8 under this plan.
    pub fn int8_conv(&self, node: &pb::NodeProto, inits: &HashMap<&str, &pb::TensorProto>) -> bool {
        if self.keep_float.contains(&node.name) {
            return false;
        }
        match self.scheme {
            Scheme::WeightOnly => false,
            Scheme::Int8 | Scheme::Qdq | Scheme::QOperator => true,
            Scheme::Mixed => !is_depthwise(node, inits),
        }
    }
}

/// Graph state during the pass: where each tensor is available, float and/or u8.
struct Pass<'p> {
    ranges: &'p HashMap<String, (f32, f32)>,
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    float: HashSet<String>,
    quantized: HashMap<String, String>,
    params: HashMap<String, ActParams>,
    /// Dequantised copies (`{tensor}.dq`) already written, so a tensor read by several int8 ops
    /// is dequantised once.
    dequantized: HashSet<String>,
    /// Activations in i8 (the int8 scheme), else u8.
    signed: bool,
    means: Option<&'p HashMap<String, Vec<f32>>>,
    pixels: Option<PixelGrid>,
    /// The graph's inputs (what `pixels` applies to).
    inputs: HashSet<String>,
    path: &'p std::path::Path,
}

impl Pass<'_> {
    fn params(&mut self, tensor: &str) -> Result<ActParams, QuantizeError> {
        if let Some(p) = self.params.get(tensor) {
            return Ok(*p);
        }
        let zero_type = if self.signed { DataType::Int8 } else { DataType::Uint8 };
        let p = match self.pixels.filter(|_| self.inputs.contains(tensor)) {
            Some(grid) => grid.params(self.signed),
            None => {
                let &(min, max) = self.ranges.get(tensor).ok_or_else(|| QuantizeError::Uncalibrated {
                    tensor: tensor.into(),
                    path: self.path.to_path_buf(),
                })?;
                if self.signed {
                    ActParams::from_range_i8(min, max)
                } else {
                    ActParams::from_range(min, max)
                }
            }
        };
        self.inits
            .push(f32_tensor(&format!("{tensor}.q_scale"), &[], &[p.scale]));
        self.inits.push(raw_tensor(
            &format!("{tensor}.q_zero"),
            &[],
            zero_type,
            // The byte of the zero point, i8 or u8 alike.
            vec![p.zero_point as u8],
        ));
        self.params.insert(tensor.into(), p);
        Ok(p)
    }

    /// The float tensor `name`, dequantising it first if it only exists in u8.
    fn need_float(&mut self, name: &str) -> Result<(), QuantizeError> {
        if self.float.contains(name) {
            return Ok(());
        }
        if let Some(q) = self.quantized.get(name).cloned() {
            self.params(name)?;
            self.nodes.push(node(
                "DequantizeLinear",
                &[&q, &format!("{name}.q_scale"), &format!("{name}.q_zero")],
                name,
                vec![],
            ));
        }
        // Initializers and graph inputs are float already.
        self.float.insert(name.into());
        Ok(())
    }

    /// The u8 tensor for `name`, quantising the float one on first use.
    fn need_quantized(&mut self, name: &str) -> Result<(String, ActParams), QuantizeError> {
        let p = self.params(name)?;
        if let Some(q) = self.quantized.get(name) {
            return Ok((q.clone(), p));
        }
        self.need_float(name)?;
        let q = format!("{name}.q");
        self.nodes.push(node(
            "QuantizeLinear",
            &[name, &format!("{name}.q_scale"), &format!("{name}.q_zero")],
            &q,
            vec![],
        ));
        self.quantized.insert(name.into(), q.clone());
        Ok((q, p))
    }

    /// `{name}.dq`: the quantised activation `name` dequantised for an int8 op's float form.
    fn dequantized_act(&mut self, name: &str) -> Result<String, QuantizeError> {
        let (q, _) = self.need_quantized(name)?;
        let dq = format!("{name}.dq");
        if self.dequantized.insert(dq.clone()) {
            self.nodes.push(node(
                "DequantizeLinear",
                &[&q, &format!("{name}.q_scale"), &format!("{name}.q_zero")],
                &dq,
                vec![],
            ));
        }
        Ok(dq)
    }

    /// `{out}.f32 → QuantizeLinear → {out}.q`: the int8 op's result, quantised with `out`'s
    /// calibrated range.
    fn quantize_output(&mut self, out: &str, raw: &str) -> Result<(), QuantizeError> {
        self.params(out)?;
        let q_out = format!("{out}.q");
        self.nodes.push(node(
            "QuantizeLinear",
            &[raw, &format!("{out}.q_scale"), &format!("{out}.q_zero")],
            &q_out,
            vec![],
        ));
        self.quantized.insert(out.into(), q_out);
        Ok(())
    }

    /// The float bias `b` as int32 in the unit `x_scale · w_scale[c]`, behind a per-channel
    /// DequantizeLinear: the bias form ONNX QDQ tools write.
    fn int32_bias(&mut self, b: &pb::TensorProto, x_scale: f32, w_scales: &[f32]) -> Result<String, QuantizeError> {
        let (q_name, scales) = self.int32_tensor(b, x_scale, w_scales)?;
        self.inits
            .push(f32_tensor(&format!("{}.scale", b.name), &[scales.len()], &scales));
        self.nodes.push(node(
            "DequantizeLinear",
            &[&q_name, &format!("{}.scale", b.name)],
            &b.name,
            vec![int_attr("axis", 0)],
        ));
        Ok(b.name.clone())
    }

    /// Adds `{b}.int32`, the float bias `b` in units of `x_scale · w_scale[c]` (one weight scale
    /// for all channels when `w_scales` has one); returns its name and those units.
    fn int32_tensor(
        &mut self,
        b: &pb::TensorProto,
        x_scale: f32,
        w_scales: &[f32],
    ) -> Result<(String, Vec<f32>), QuantizeError> {
        let data = f32s(b).ok_or_else(|| QuantizeError::Unsupported {
            name: b.name.clone(),
            path: self.path.to_path_buf(),
        })?;
        let scales: Vec<f32> = (0..data.len())
            .map(|c| x_scale * w_scales.get(c).or(w_scales.first()).copied().unwrap_or(1.0))
            .collect();
        let q: Vec<u8> = data
            .iter()
            .zip(&scales)
            .flat_map(|(v, s)| {
                let q = (*v as f64 / *s as f64).round().clamp(i32::MIN as f64, i32::MAX as f64) as i32;
                q.to_le_bytes()
            })
            .collect();
        let q_name = format!("{}.int32", b.name);
        self.inits
            .push(raw_tensor(&q_name, &[data.len() as i64], DataType::Int32, q));
        Ok((q_name, scales))
    }

    /// `DequantizeLinear(int8 weight)` standing in for the float initializer `name`.
    fn dequantized_weight(
        &mut self,
        name: &str,
        tensor: &pb::TensorProto,
        per_channel: bool,
        floor: &[f32],
    ) -> Result<Int8Weight, QuantizeError> {
        let w = self.int8_weight(name, tensor, per_channel, floor)?;
        self.nodes.push(node(
            "DequantizeLinear",
            &[&w.name, &format!("{name}.scale")],
            name,
            vec![int_attr("axis", 0)],
        ));
        Ok(w)
    }

    /// Adds `{name}.int8` and `{name}.scale`.
    fn int8_weight(
        &mut self,
        name: &str,
        tensor: &pb::TensorProto,
        per_channel: bool,
        floor: &[f32],
    ) -> Result<Int8Weight, QuantizeError> {
        let data = f32s(tensor).ok_or_else(|| QuantizeError::Unsupported {
            name: name.into(),
            path: self.path.to_path_buf(),
        })?;
        let rows = tensor.dims.first().copied().unwrap_or(1).max(1) as usize;
        let (q, scales) = quantize_weights_floored(&data, rows, per_channel, floor);
        let q_name = format!("{name}.int8");
        self.inits.push(i8_tensor(&q_name, &tensor.dims, &q));
        let scale_dims: &[usize] = if per_channel { &[rows] } else { &[] };
        self.inits
            .push(f32_tensor(&format!("{name}.scale"), scale_dims, &scales));
        Ok(Int8Weight {
            name: q_name,
            scales,
            float: data,
            q,
        })
    }

    /// The bias `b` of `layer` (weights now `w`) corrected for the rounding's mean shift, when
    /// the plan has means for the layer's input; `None` leaves `b` as it is.
    fn corrected_bias(&self, layer: &pb::NodeProto, b: &pb::TensorProto, w: &Int8Weight) -> Option<pb::TensorProto> {
        let means = self.means?.get(layer.input.first()?)?;
        let bias = f32s(b)?;
        let rounded = w.rounded();
        let rounded = Rounded {
            weights: &w.float,
            rounded: &rounded,
            out_channels: bias.len(),
            groups: attr_int(layer, "group").unwrap_or(1).max(1) as usize,
        };
        let values = bias::corrected(&bias, &rounded, means)?;
        Some(f32_tensor(&b.name, &[values.len()], &values))
    }

    /// A float bias replaced in place by its corrected form, if it has one (see
    /// [`Self::corrected_bias`]); returns whether it was.
    fn correct_float_bias(&mut self, layer: &pb::NodeProto, b: &pb::TensorProto, w: &Int8Weight) -> bool {
        let Some(fixed) = self.corrected_bias(layer, b, w) else {
            return false;
        };
        self.inits.push(fixed);
        true
    }
}

/// One layer's weights as the rewrite stored them.
struct Int8Weight {
    /// The int8 initializer.
    name: String,
    /// One per output channel, or one for the tensor.
    scales: Vec<f32>,
    float: Vec<f32>,
    q: Vec<i8>,
}

impl Int8Weight {
    /// The int8 values times their scales: what the layer computes with (only bias correction
    /// asks, so it is not kept for every layer).
    fn rounded(&self) -> Vec<f32> {
        let per_row = self.q.len() / self.scales.len().max(1);
        self.q
            .iter()
            .enumerate()
            .map(|(i, &v)| v as f32 * self.scales[(i / per_row.max(1)).min(self.scales.len().saturating_sub(1))])
            .collect()
    }
}

/// Counts of what the rewrite did, for the report and the model card.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Rewritten {
    /// Weight tensors stored as int8.
    pub int8_weights: usize,
    /// Convs computing in int8 (QLinearConv, or DQ→Conv→Q for QDQ).
    pub int8_convs: usize,
    /// Convs computing in float.
    pub float_convs: usize,
}

/// Rewrite `proto` in place per `plan`.
pub fn rewrite(proto: &mut pb::ModelProto, plan: &Plan, path: &std::path::Path) -> Result<Rewritten, QuantizeError> {
    let Some(graph) = proto.graph.as_mut() else {
        return Err(QuantizeError::Nothing { path: path.into() });
    };
    let old_nodes = std::mem::take(&mut graph.node);
    let old_inits = std::mem::take(&mut graph.initializer);
    let inits: HashMap<&str, &pb::TensorProto> = old_inits.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in old_nodes.iter().enumerate() {
        for input in &n.input {
            consumers.entry(input.as_str()).or_default().push(i);
        }
    }
    let graph_outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    // A Conv whose only consumer is a ReLU6 Clip writes the clip's output range directly.
    let fused_clip = |conv: &pb::NodeProto| -> Option<usize> {
        let out = conv.output.first()?;
        if graph_outputs.contains(out.as_str()) {
            return None;
        }
        match consumers.get(out.as_str())?.as_slice() {
            [only] if old_nodes[*only].op_type == "Clip" && is_relu6(&old_nodes[*only], &inits) => Some(*only),
            _ => None,
        }
    };

    let mut pass = Pass {
        ranges: plan.ranges,
        nodes: Vec::new(),
        inits: Vec::new(),
        float: graph.input.iter().map(|i| i.name.clone()).collect(),
        quantized: HashMap::new(),
        params: HashMap::new(),
        dequantized: HashSet::new(),
        signed: plan.scheme == Scheme::Int8,
        means: plan.means,
        pixels: plan.pixels,
        inputs: graph.input.iter().map(|i| i.name.clone()).collect(),
        path,
    };
    let mut replaced: HashSet<&str> = HashSet::new();
    let mut skip: HashSet<usize> = HashSet::new();
    let mut done = Rewritten::default();
    for (i, n) in old_nodes.iter().enumerate() {
        if skip.contains(&i) {
            continue;
        }
        let weight = n.input.get(1).and_then(|w| inits.get(w.as_str()).copied());
        let is_weighted = n.op_type == "Conv" || (n.op_type == "Gemm" && attr_int(n, "transB") == Some(1));
        let int8_add = plan.scheme == Scheme::Int8
            && n.op_type == "Add"
            && n.input.len() == 2
            && n.input
                .iter()
                .all(|i| !inits.contains_key(i.as_str()) && plan.ranges.contains_key(i))
            && n.output.first().is_some_and(|o| plan.ranges.contains_key(o));
        if int8_add {
            let a = pass.dequantized_act(&n.input[0])?;
            let b = pass.dequantized_act(&n.input[1])?;
            let out = n.output[0].clone();
            let raw = format!("{out}.f32");
            let mut add = n.clone();
            add.input = vec![a, b];
            add.output = vec![raw.clone()];
            add.name = raw.clone();
            pass.nodes.push(add);
            pass.quantize_output(&out, &raw)?;
            continue;
        }
        let bias = n.input.get(2).and_then(|b| inits.get(b.as_str()).copied());
        let Some(weight) = weight.filter(|_| is_weighted) else {
            for input in n
                .input
                .iter()
                .filter(|i| !i.is_empty() && !inits.contains_key(i.as_str()))
            {
                pass.need_float(input)?;
            }
            pass.nodes.push(n.clone());
            pass.float.extend(n.output.iter().cloned());
            continue;
        };
        let w_name = weight.name.as_str();
        done.int8_weights += 1;
        if n.op_type == "Gemm" || !plan.int8_conv(n, &inits) {
            // Weight-only: a Gemm always (tract cannot analyse a quantised Gemm bias), and every
            // Conv the plan keeps in float.
            if n.op_type == "Conv" {
                done.float_convs += 1;
            }
            pass.need_float(&n.input[0])?;
            let w = pass.dequantized_weight(w_name, weight, plan.per_channel, &[])?;
            replaced.insert(w_name);
            if let Some(b) = bias.filter(|b| pass.correct_float_bias(n, b, &w)) {
                replaced.insert(b.name.as_str());
            }
            pass.nodes.push(n.clone());
            pass.float.extend(n.output.iter().cloned());
            continue;
        }
        done.int8_convs += 1;
        let clip = fused_clip(n);
        if let Some(c) = clip {
            skip.insert(c);
        }
        let out = clip.map_or(&n.output[0], |c| &old_nodes[c].output[0]).clone();
        let (x_q, x) = pass.need_quantized(&n.input[0])?;
        pass.params(&out)?;
        replaced.insert(w_name);
        let x_scale = format!("{}.q_scale", n.input[0]);
        let x_zero = format!("{}.q_zero", n.input[0]);
        // Weight-only never gets here: it plans no int8 conv.
        match plan.scheme {
            Scheme::QOperator | Scheme::Mixed | Scheme::WeightOnly => {
                let w = pass.int8_weight(w_name, weight, plan.per_channel, &[])?;
                let channels = weight.dims.first().copied().unwrap_or(1) as usize;
                let w_zero = format!("{w_name}.zero");
                let zero_dims: Vec<i64> = if plan.per_channel {
                    vec![channels as i64]
                } else {
                    vec![]
                };
                let zero_len = if plan.per_channel { channels } else { 1 };
                pass.inits
                    .push(raw_tensor(&w_zero, &zero_dims, DataType::Int8, vec![0u8; zero_len]));
                let mut inputs = vec![
                    x_q,
                    x_scale,
                    x_zero,
                    w.name.clone(),
                    format!("{w_name}.scale"),
                    w_zero,
                    format!("{out}.q_scale"),
                    format!("{out}.q_zero"),
                ];
                if let Some(b) = bias {
                    replaced.insert(b.name.as_str());
                    let b = pass.corrected_bias(n, b, &w).unwrap_or_else(|| b.clone());
                    inputs.push(pass.int32_tensor(&b, x.scale, &w.scales)?.0);
                }
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let q_out = format!("{out}.q");
                let attrs = n.attribute.clone();
                pass.nodes.push(pb::NodeProto {
                    input: refs.iter().map(|s| s.to_string()).collect(),
                    output: vec![q_out.clone()],
                    name: format!("{}.qlinear", n.name),
                    op_type: "QLinearConv".into(),
                    attribute: attrs,
                    ..Default::default()
                });
                pass.quantized.insert(out.clone(), q_out);
            }
            Scheme::Int8 => {
                // The clip's output range is within [0, 6], so the Q saturates exactly as the
                // ReLU6 would: no Clip node is written.
                let x_dq = pass.dequantized_act(&n.input[0])?;
                let floor: Vec<f32> = bias
                    .and_then(f32s)
                    .map(|b| b.iter().map(|v| v.abs() / (x.scale * BIAS_LIMIT)).collect())
                    .unwrap_or_default();
                let w = pass.dequantized_weight(w_name, weight, plan.per_channel, &floor)?;
                let mut conv = n.clone();
                conv.input[0] = x_dq;
                if let Some(b) = bias {
                    replaced.insert(b.name.as_str());
                    let b = pass.corrected_bias(n, b, &w).unwrap_or_else(|| b.clone());
                    conv.input[2] = pass.int32_bias(&b, x.scale, &w.scales)?;
                }
                let raw = format!("{out}.f32");
                conv.output = vec![raw.clone()];
                conv.name = raw.clone();
                pass.nodes.push(conv);
                pass.quantize_output(&out, &raw)?;
            }
            Scheme::Qdq => {
                let x_dq = format!("{}.dq", n.input[0]);
                pass.nodes
                    .push(node("DequantizeLinear", &[&x_q, &x_scale, &x_zero], &x_dq, vec![]));
                let w = pass.dequantized_weight(w_name, weight, plan.per_channel, &[])?;
                if let Some(b) = bias.filter(|b| pass.correct_float_bias(n, b, &w)) {
                    replaced.insert(b.name.as_str());
                }
                let raw = format!("{out}.f32");
                let mut conv = n.clone();
                conv.input[0] = x_dq;
                let conv_out = if clip.is_some() {
                    format!("{}.f32", n.output[0])
                } else {
                    raw.clone()
                };
                conv.output = vec![conv_out.clone()];
                conv.name = conv_out.clone();
                pass.nodes.push(conv);
                if let Some(c) = clip {
                    let mut clip = old_nodes[c].clone();
                    clip.input[0] = conv_out;
                    clip.output = vec![raw.clone()];
                    clip.name = raw.clone();
                    pass.nodes.push(clip);
                }
                let q_out = format!("{out}.q");
                pass.nodes.push(node(
                    "QuantizeLinear",
                    &[&raw, &format!("{out}.q_scale"), &format!("{out}.q_zero")],
                    &q_out,
                    vec![],
                ));
                pass.quantized.insert(out.clone(), q_out);
            }
        }
    }
    for o in graph.output.iter() {
        pass.need_float(&o.name)?;
    }
    if done.int8_weights == 0 {
        return Err(QuantizeError::Nothing { path: path.into() });
    }
    // Float weights and biases that now live as int8/int32 go; everything else stays.
    let mut kept: Vec<pb::TensorProto> = old_inits
        .iter()
        .filter(|t| !replaced.contains(t.name.as_str()))
        .cloned()
        .collect();
    kept.append(&mut pass.inits);
    // Fused Clips leave their bounds unused; ONNX Runtime warns about dangling initializers.
    let used: HashSet<&str> = pass
        .nodes
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    kept.retain(|t| used.contains(t.name.as_str()));
    graph.initializer = kept;
    graph.node = pass.nodes;
    Ok(done)
}

fn is_relu6(clip: &pb::NodeProto, inits: &HashMap<&str, &pb::TensorProto>) -> bool {
    let value = |i: usize| {
        clip.input
            .get(i)
            .and_then(|n| inits.get(n.as_str()))
            .and_then(|t| f32s(t))
            .and_then(|v| v.first().copied())
    };
    value(1) == Some(0.0) && value(2) == Some(6.0)
}
