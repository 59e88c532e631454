//! Float convolutions on Kestrel's kernels: the ONNX rewrite and the op tract runs.
//!
//! - Depthwise ([`kernels::depthwise_f32`]), on every CPU: tract 0.23.9's f32 depthwise
//!   (`DepthWiseConv`) took 37% of EfficientNet-Lite0's float inference here for under a tenth of
//!   its arithmetic (`kestrel bench --profile`). The int8 depthwise kernel already computes in
//!   f32, so float models get the same blocks.
//! - Pointwise (1×1, [`kernels::gemm_f32`]), where the CPU has AVX-512: tract's matrix products
//!   plus the packing of their inputs took 14.9 of Lite0's 20.7 ms here, for 0.34 GMAC; in NCHW a
//!   pointwise convolution reads its input planes as they are, so our GEMM packs only weights,
//!   once. Elsewhere tract keeps them (no faster kernel of ours is measured there).
//!
//! Every float bundle, and every weight-only int8 one, runs them. Like the int8 ops,
//! the rewrite happens on the ONNX graph and tract still parses, checks and plans everything.

use std::sync::Arc;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{self, NodeProto};
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::{Expansion, expand};

use super::kernels::{self, DepthwiseF32, GemmF32, Geometry};
use super::ops::{Conv2d, constant, conv_cost, conv_fact, eval_images};
use std::collections::HashSet;

use super::lower::{Graph, activation_bounds, drop_nodes};
use crate::onnx_proto::{attr, f32_tensor, f32s, float_attr, ints_attr};

pub const OP: &str = "KestrelF32Conv";

/// What [`lower`] rewrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct F32Lowered {
    pub depthwise: usize,
    pub pointwise: usize,
}

/// Rewrite every f32 depthwise `Conv` (and, where [`kernels::gemm_f32_available`], every f32
/// pointwise one) whose weights and bias are constants into `KestrelF32Conv`, in place. Run
/// after the int8 lowering and after constant DequantizeLinear nodes are folded, so weight-only
/// files qualify too.
pub fn lower(proto: &mut pb::ModelProto) -> F32Lowered {
    let Some(graph) = proto.graph.as_mut() else {
        return F32Lowered::default();
    };
    let pointwise = kernels::gemm_f32_available();
    let mut done = F32Lowered::default();
    let replacements: Vec<(usize, Replacement)> = {
        let g = Graph::new(graph);
        graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op_type == "Conv" && n.domain.is_empty())
            .filter_map(|(i, n)| Some((i, replacement(graph, &g, n, pointwise)?)))
            .collect()
    };
    let mut dropped = HashSet::new();
    for (i, r) in replacements {
        graph.node[i] = r.node;
        graph.initializer.extend(r.zero_bias);
        dropped.extend(r.clamp);
        match r.kind {
            Kind::Depthwise => done.depthwise += 1,
            Kind::Pointwise => done.pointwise += 1,
        }
    }
    drop_nodes(graph, &dropped);
    done
}

struct Replacement {
    node: NodeProto,
    /// A zero bias initializer, when the Conv has no bias.
    zero_bias: Option<pb::TensorProto>,
    kind: Kind,
    /// The Relu or Clip folded into the op (its node is dropped).
    clamp: Option<usize>,
}

enum Kind {
    Depthwise,
    Pointwise,
}

/// The replacement for `conv` when it is a convolution we compute: its node (with the Relu or
/// Clip that alone reads its output folded in as `lo`/`hi`, as tract folds it into its matrix
/// product's epilogue: a separate clamp op cost 1.5 ms of Lite0's 20 here).
fn replacement(graph: &pb::GraphProto, g: &Graph, conv: &NodeProto, pointwise: bool) -> Option<Replacement> {
    let init = |name: &str| graph.initializer.iter().find(|t| t.name == name);
    let w = init(conv.input.get(1)?)?;
    if w.dims.len() != 4 || w.data_type != pb::tensor_proto::DataType::Float as i32 {
        return None;
    }
    let channels = w.dims[0];
    let group = attr(conv, "group").map_or(1, |a| a.i);
    let strides = attr(conv, "strides").map_or(vec![1, 1], |a| a.ints.clone());
    let pads = attr(conv, "pads").map_or(vec![0; 4], |a| a.ints.clone());
    let kind = if w.dims[1] == 1 && group == channels && channels >= 2 {
        Kind::Depthwise
    } else if pointwise && group == 1 && w.dims[2..] == [1, 1] && strides == [1, 1] && pads == [0; 4] {
        Kind::Pointwise
    } else {
        return None;
    };
    if attr(conv, "dilations").is_some_and(|a| a.ints.iter().any(|&d| d != 1)) {
        return None;
    }
    if attr(conv, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET") {
        return None;
    }
    if strides.len() != 2 || pads.len() != 4 || strides.iter().chain(&pads).any(|&v| v < 0) || strides.contains(&0) {
        return None;
    }
    let name = format!("{}.kestrel_f32", conv.name);
    let (bias_name, zero_bias) = match conv.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => {
            let t = init(b)?;
            (f32s(t).filter(|v| v.len() == channels as usize).is_some()).then_some(())?;
            (b.clone(), None)
        }
        None => {
            let b = format!("{name}.bias");
            let t = f32_tensor(&b, &[channels], &vec![0.0; channels as usize]);
            (b, Some(t))
        }
    };
    let clamp = g
        .only_consumer(conv.output.first()?)
        .and_then(|c| Some((c, activation_bounds(g, &graph.node[c])?)));
    let (output, (lo, hi)) = match clamp {
        Some((c, bounds)) => (graph.node[c].output.clone(), bounds),
        None => (conv.output.clone(), (f32::NEG_INFINITY, f32::INFINITY)),
    };
    let node = NodeProto {
        input: vec![conv.input[0].clone(), conv.input[1].clone(), bias_name],
        output,
        name,
        op_type: OP.into(),
        domain: "ai.kestrel".into(),
        attribute: vec![
            ints_attr("strides", strides),
            ints_attr("pads", pads),
            float_attr("lo", lo),
            float_attr("hi", hi),
        ],
        ..Default::default()
    };
    Some(Replacement {
        node,
        zero_bias,
        kind,
        clamp: clamp.map(|(c, _)| c),
    })
}

pub fn node(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((
        expand(Node {
            conv: Conv2d::parse(node)?,
            clamp: (node.get_attr("lo")?, node.get_attr("hi")?),
        }),
        vec![],
    ))
}

/// `KestrelF32Conv(x: f32 NCHW, w: f32 OIHW, bias: f32 O) -> f32`, dilation 1: depthwise, or
/// pointwise (1×1, stride 1, no padding, one group).
#[derive(Debug, Clone)]
struct Node {
    conv: Conv2d,
    /// The folded Relu/Clip: outputs are clamped to `[lo, hi]` (infinite: none).
    clamp: (f32, f32),
}

impl Expansion for Node {
    fn name(&self) -> StaticName {
        OP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        self.conv
            .rules(s, inputs, outputs, 3, (f32::datum_type(), f32::datum_type()))
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let (w, bias) = (
            constant(model, inputs, 1, prefix, "weights")?,
            constant(model, inputs, 2, prefix, "bias")?,
        );
        // Depthwise: one input channel per group, as many groups as channels; else one group.
        let groups = |x: &[usize], w: &[usize]| if w[1] == 1 && w[0] == x[1] { w[0] } else { 1 };
        let geometry = self.conv.geometry(prefix, model, inputs[0], w.shape(), groups)?;
        let w = w.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        ensure!(bias.len() == geometry.out_channels, "{prefix}: one bias per channel");
        let weights = if geometry.is_depthwise() {
            Weights::Depthwise(w)
        } else if geometry.is_pointwise() {
            let rows = geometry.out_channels;
            Weights::Pointwise(
                GemmF32::new(&w, rows, geometry.in_channels)
                    .with_context(|| format!("{prefix}: no f32 GEMM of ours on this CPU"))?,
            )
        } else {
            bail!("{prefix}: neither depthwise nor pointwise: {geometry:?}");
        };
        let op = F32Conv {
            geometry,
            weights: Arc::new(weights),
            bias: Arc::new(bias),
            clamp: self.clamp,
        };
        model.wire_node(prefix, op, &[inputs[0]])
    }
}

/// A float convolution's weights, as its kernel reads them.
#[derive(Debug, Clone, PartialEq)]
enum Weights {
    /// `channels × kh × kw`, as in the file.
    Depthwise(Vec<f32>),
    Pointwise(GemmF32),
}

/// The typed op running a float convolution with Kestrel's kernels.
#[derive(Debug, Clone, PartialEq)]
pub struct F32Conv {
    pub geometry: Geometry,
    weights: Arc<Weights>,
    bias: Arc<Vec<f32>>,
    clamp: (f32, f32),
}

// Weights are compared bit for bit (NaN weights would make two identical ops unequal: harmless).
impl Eq for F32Conv {}

impl F32Conv {
    /// Which kernel runs this convolution, as plans and profiles show it.
    pub fn kernel(&self) -> &'static str {
        match *self.weights {
            Weights::Depthwise(_) => "depthwise",
            Weights::Pointwise(_) => "pointwise",
        }
    }
}

impl Op for F32Conv {
    fn name(&self) -> StaticName {
        format!("{OP}.{}", self.kernel()).into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}, clamp {:?}", self.geometry, self.clamp)])
    }

    op_as_typed_op!();
}

impl EvalOp for F32Conv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let g = &self.geometry;
        eval_images(OP, g, &inputs[0], |x: &[f32], pool, out: &mut [f32]| {
            match &*self.weights {
                Weights::Depthwise(w) => {
                    let d = DepthwiseF32 {
                        g,
                        x,
                        w,
                        bias: &self.bias,
                        clamp: self.clamp,
                    };
                    kernels::depthwise_f32(&d, pool, out)
                }
                Weights::Pointwise(w) => kernels::gemm_f32(w, x, g.in_h * g.in_w, &self.bias, self.clamp, pool, out),
            }
        })
    }
}

impl TypedOp for F32Conv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(conv_fact(&self.geometry, inputs[0], f32::datum_type())))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(conv_cost(&self.geometry, inputs[0], f32::datum_type()))
    }

    as_op!();
}
