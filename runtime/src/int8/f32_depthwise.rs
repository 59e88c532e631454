//! Float depthwise convolutions on Kestrel's depthwise kernel ([`kernels::depthwise_f32`]): the
//! ONNX rewrite and the op tract runs.
//!
//! tract 0.23.9's f32 depthwise convolution (`DepthWiseConv`) took 37% of EfficientNet-Lite0's
//! float inference here for under a tenth of its arithmetic (`kestrel bench --profile`), and
//! every float bundle, the shipped weight-only int8 one included, runs it. The int8 depthwise
//! kernel already computes in f32, so float models get the same blocks. Like the int8 ops,
//! the rewrite happens on the ONNX graph and tract still parses, checks and plans everything.

use std::sync::Arc;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{self, NodeProto};
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::{Expansion, expand};

use super::kernels::{self, DepthwiseF32, Geometry};
use crate::onnx_proto::{attr, f32_tensor, f32s, ints_attr};

pub const OP: &str = "KestrelF32Depthwise";

/// Rewrite every f32 depthwise `Conv` whose weights (and bias) are constants into
/// `KestrelF32Depthwise`, in place; returns how many. Run after the int8 lowering and after
/// constant DequantizeLinear nodes are folded, so weight-only files qualify too.
pub fn lower(proto: &mut pb::ModelProto) -> usize {
    let Some(graph) = proto.graph.as_mut() else {
        return 0;
    };
    let mut new_inits = Vec::new();
    let mut count = 0;
    for i in 0..graph.node.len() {
        let n = &graph.node[i];
        if n.op_type != "Conv" || !n.domain.is_empty() {
            continue;
        }
        let Some(replacement) = depthwise(graph, n) else {
            continue;
        };
        let (node, bias) = replacement;
        new_inits.extend(bias);
        graph.node[i] = node;
        count += 1;
    }
    graph.initializer.extend(new_inits);
    count
}

/// The replacement node for `conv` when it is a depthwise convolution we compute, and a zero
/// bias initializer when it has none.
fn depthwise(graph: &pb::GraphProto, conv: &NodeProto) -> Option<(NodeProto, Option<pb::TensorProto>)> {
    let init = |name: &str| graph.initializer.iter().find(|t| t.name == name);
    let w = init(conv.input.get(1)?)?;
    if w.dims.len() != 4 || w.dims[1] != 1 || w.data_type != pb::tensor_proto::DataType::Float as i32 {
        return None;
    }
    let channels = w.dims[0];
    let group = attr(conv, "group").map_or(1, |a| a.i);
    if group != channels || channels < 2 {
        return None;
    }
    if attr(conv, "dilations").is_some_and(|a| a.ints.iter().any(|&d| d != 1)) {
        return None;
    }
    if attr(conv, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET") {
        return None;
    }
    let strides = attr(conv, "strides").map_or(vec![1, 1], |a| a.ints.clone());
    let pads = attr(conv, "pads").map_or(vec![0; 4], |a| a.ints.clone());
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
    let node = NodeProto {
        input: vec![conv.input[0].clone(), conv.input[1].clone(), bias_name],
        output: conv.output.clone(),
        name,
        op_type: OP.into(),
        domain: "ai.kestrel".into(),
        attribute: vec![ints_attr("strides", strides), ints_attr("pads", pads)],
        ..Default::default()
    };
    Some((node, zero_bias))
}

pub fn node(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let ints = |name: &str| -> TractResult<Vec<usize>> {
        let v: Vec<i64> = node.get_attr_vec(name)?;
        v.into_iter()
            .map(|d| usize::try_from(d).with_context(|| format!("{}: negative {name}", node.name)))
            .collect()
    };
    let (strides, pads) = (ints("strides")?, ints("pads")?);
    ensure!(
        strides.len() == 2 && pads.len() == 4,
        "{}: 2-D convolutions only",
        node.name
    );
    Ok((
        expand(Node {
            strides: [strides[0], strides[1]],
            pads: [pads[0], pads[1], pads[2], pads[3]],
        }),
        vec![],
    ))
}

/// `KestrelF32Depthwise(x: f32 NCHW, w: f32 C×1×kh×kw, bias: f32 C) -> f32`, dilation 1.
#[derive(Debug, Clone)]
struct Node {
    strides: [usize; 2],
    /// ONNX order: top, left, bottom, right.
    pads: [usize; 4],
}

impl Node {
    fn out_dim(&self, input: usize, kernel: usize, axis: usize) -> Option<usize> {
        let padded = input + self.pads[axis] + self.pads[axis + 2];
        padded.checked_sub(kernel).map(|d| d / self.strides[axis] + 1)
    }
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
        check_input_arity(inputs, 3)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].rank, 4)?;
        s.equals(&outputs[0].rank, 4)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[0].shape[1], &inputs[1].shape[0])?;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, x, w| {
            let concrete = |d: &TDim| d.to_usize().ok();
            if let (Some(h), Some(wd), Some(kh), Some(kw)) =
                (concrete(&x[2]), concrete(&x[3]), concrete(&w[2]), concrete(&w[3]))
                && let (Some(oh), Some(ow)) = (self.out_dim(h, kh, 0), self.out_dim(wd, kw, 1))
            {
                s.equals(&outputs[0].shape[2], oh.to_dim())?;
                s.equals(&outputs[0].shape[3], ow.to_dim())?;
            }
            Ok(())
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let konst = |i: usize, what: &str| -> TractResult<Arc<Tensor>> {
            model
                .outlet_fact(inputs[i])?
                .konst
                .clone()
                .with_context(|| format!("{prefix}: {what} must be a constant"))
        };
        let (w, bias) = (konst(1, "weights")?, konst(2, "bias")?);
        let x = model.outlet_fact(inputs[0])?.clone();
        let x_shape = x
            .shape
            .as_concrete()
            .with_context(|| format!("{prefix}: input shape unknown"))?;
        let w_shape = w.shape();
        ensure!(
            x_shape.len() == 4 && w_shape.len() == 4 && w_shape[1] == 1,
            "{prefix}: depthwise 2-D convolutions only"
        );
        let geometry = Geometry {
            in_channels: x_shape[1],
            out_channels: w_shape[0],
            groups: w_shape[0],
            in_h: x_shape[2],
            in_w: x_shape[3],
            kernel_h: w_shape[2],
            kernel_w: w_shape[3],
            stride_h: self.strides[0],
            stride_w: self.strides[1],
            pads: self.pads,
        };
        ensure!(
            geometry.is_valid() && geometry.is_depthwise(),
            "{prefix}: not a depthwise convolution {geometry:?}"
        );
        let w = w.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        ensure!(bias.len() == geometry.out_channels, "{prefix}: one bias per channel");
        let op = F32Depthwise {
            geometry,
            w: Arc::new(w),
            bias: Arc::new(bias),
        };
        model.wire_node(prefix, op, &[inputs[0]])
    }
}

/// The typed op running a float depthwise convolution with Kestrel's kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct F32Depthwise {
    pub geometry: Geometry,
    w: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
}

// Weights are compared bit for bit (NaN weights would make two identical ops unequal: harmless).
impl Eq for F32Depthwise {}

impl Op for F32Depthwise {
    fn name(&self) -> StaticName {
        OP.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self.geometry)])
    }

    op_as_typed_op!();
}

impl EvalOp for F32Depthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let g = &self.geometry;
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let per_image = g.in_channels * g.in_h * g.in_w;
        ensure!(
            per_image > 0 && x.len().is_multiple_of(per_image),
            "{OP}: input does not match {g:?}"
        );
        let batch = x.len() / per_image;
        let out_per_image = g.out_channels * g.out_h() * g.out_w();
        let mut out = vec![0f32; batch * out_per_image];
        let executor = tract_linalg::multithread::current_tract_executor();
        let pool = match &executor {
            tract_linalg::multithread::Executor::MultiThread(pool) => Some(pool.as_ref()),
            _ => None,
        };
        for (x, out) in x.chunks_exact(per_image).zip(out.chunks_exact_mut(out_per_image)) {
            let d = DepthwiseF32 {
                g,
                x,
                w: &self.w,
                bias: &self.bias,
            };
            kernels::depthwise_f32(&d, pool, out);
        }
        let shape = [batch, g.out_channels, g.out_h(), g.out_w()];
        Ok(tvec!(Tensor::from_shape(&shape, &out)?.into_tvalue()))
    }
}

impl TypedOp for F32Depthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let g = &self.geometry;
        let shape = tvec![
            inputs[0].shape[0].clone(),
            g.out_channels.to_dim(),
            g.out_h().to_dim(),
            g.out_w().to_dim()
        ];
        Ok(tvec!(f32::datum_type().fact(shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let g = &self.geometry;
        let macs = g.out_channels * g.taps() * g.out_h() * g.out_w();
        Ok(tvec!((Cost::FMA(f32::datum_type()), inputs[0].shape[0].clone() * macs)))
    }

    as_op!();
}
