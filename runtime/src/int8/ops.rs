//! The int8 ops as tract sees them. [`lower`](super::lower) writes `KestrelInt8Conv` and
//! `KestrelInt8Add` nodes into the ONNX graph; [`register`] teaches tract's ONNX parser to build
//! them. Each parses as an `Expansion` (shape inference in tract's solver) and wires one typed op
//! that runs our kernels, so tract still loads, checks shapes and plans the whole graph.

use std::sync::Arc;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::{Expansion, expand};

use super::kernels::{self, AddParams, GemmWeights, Geometry, Requant};

pub const CONV: &str = "KestrelInt8Conv";
pub const ADD: &str = "KestrelInt8Add";
pub const QUANTIZE: &str = "KestrelInt8Quantize";

/// Add the int8 ops to an ONNX parser.
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert(CONV, conv_node);
    onnx.op_register.insert(ADD, add_node);
    onnx.op_register.insert(QUANTIZE, quantize_node);
    onnx.op_register.insert(super::f32_conv::OP, super::f32_conv::node);
    onnx.op_register.insert(super::gemm_w8::OP, super::gemm_w8::node);
}

fn int_attr(node: &NodeProto, name: &str) -> TractResult<i32> {
    let v: i64 = node.get_attr(name)?;
    i32::try_from(v).with_context(|| format!("{}: attribute {name} out of range", node.name))
}

fn usize_attrs(node: &NodeProto, name: &str) -> TractResult<Vec<usize>> {
    let v: Vec<i64> = node.get_attr_vec(name)?;
    v.into_iter()
        .map(|d| usize::try_from(d).with_context(|| format!("{}: negative {name}", node.name)))
        .collect()
}

/// Strides and pads of a 2-D convolution node (dilation 1): what Kestrel's int8 and f32
/// convolution ops parse, infer and wire alike.
#[derive(Debug, Clone, Copy)]
pub(super) struct Conv2d {
    strides: [usize; 2],
    /// ONNX order: top, left, bottom, right.
    pads: [usize; 4],
}

impl Conv2d {
    pub(super) fn parse(node: &NodeProto) -> TractResult<Self> {
        let strides = usize_attrs(node, "strides")?;
        let pads = usize_attrs(node, "pads")?;
        ensure!(
            strides.len() == 2 && pads.len() == 4,
            "{}: 2-D convolutions only",
            node.name
        );
        Ok(Conv2d {
            strides: [strides[0], strides[1]],
            pads: [pads[0], pads[1], pads[2], pads[3]],
        })
    }

    fn out_dim(&self, input: usize, kernel: usize, axis: usize) -> Option<usize> {
        let padded = input + self.pads[axis] + self.pads[axis + 2];
        padded.checked_sub(kernel).map(|d| d / self.strides[axis] + 1)
    }

    /// Shape inference: `arity` inputs, input 0 NCHW of type `x`, the output NCHW of type `y`
    /// with one channel per row of the weights (input 1) and the size the window gives.
    pub(super) fn rules<'r, 'p: 'r>(
        self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
        arity: usize,
        (x, y): (DatumType, DatumType),
    ) -> InferenceResult {
        check_input_arity(inputs, arity)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, x)?;
        s.equals(&outputs[0].datum_type, y)?;
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

    /// The checked geometry of input 0 (concrete shape) with weights of `w_shape` (OIHW), in
    /// `groups(x_shape, w_shape)` groups.
    pub(super) fn geometry(
        self,
        prefix: &str,
        model: &TypedModel,
        x: OutletId,
        w_shape: &[usize],
        groups: impl Fn(&[usize], &[usize]) -> usize,
    ) -> TractResult<Geometry> {
        let x = model.outlet_fact(x)?;
        let x_shape = x
            .shape
            .as_concrete()
            .with_context(|| format!("{prefix}: input shape unknown"))?;
        ensure!(
            x_shape.len() == 4 && w_shape.len() == 4,
            "{prefix}: 2-D convolutions only"
        );
        let geometry = Geometry {
            in_channels: x_shape[1],
            out_channels: w_shape[0],
            groups: groups(x_shape, w_shape),
            in_h: x_shape[2],
            in_w: x_shape[3],
            kernel_h: w_shape[2],
            kernel_w: w_shape[3],
            stride_h: self.strides[0],
            stride_w: self.strides[1],
            pads: self.pads,
        };
        ensure!(
            geometry.is_valid() && w_shape[1] * geometry.groups == geometry.in_channels,
            "{prefix}: inconsistent convolution {geometry:?}"
        );
        Ok(geometry)
    }
}

/// Input `i` of a node being wired, which must be a constant.
pub(super) fn constant(
    model: &TypedModel,
    inputs: &[OutletId],
    i: usize,
    prefix: &str,
    what: &str,
) -> TractResult<Arc<Tensor>> {
    model
        .outlet_fact(inputs[i])?
        .konst
        .clone()
        .with_context(|| format!("{prefix}: {what} must be a constant"))
}

/// A convolution's eval: `run(image, pool, out)` on each image of the batch in `input`, with the
/// pool tract's plan runs under (`LoadOptions::threads`, so both share the threads), into one
/// NCHW output of `Y`.
pub(super) fn eval_images<X: Datum, Y: Datum>(
    name: &str,
    g: &Geometry,
    input: &TValue,
    run: impl Fn(&[X], Option<&rayon::ThreadPool>, &mut [Y]),
) -> TractResult<TVec<TValue>> {
    let x = input.try_as_plain_ram()?;
    let x = x.as_slice::<X>()?;
    let per_image = g.in_channels * g.in_h * g.in_w;
    ensure!(
        per_image > 0 && x.len().is_multiple_of(per_image),
        "{name}: input does not match {g:?}"
    );
    let batch = x.len() / per_image;
    let out_per_image = g.out_channels * g.out_h() * g.out_w();
    let executor = tract_linalg::multithread::current_tract_executor();
    let pool = crate::threads::pool_of(&executor).map(|pool| pool.as_ref());
    let shape = [batch, g.out_channels, g.out_h(), g.out_w()];
    output::<Y>(&shape, |out| {
        for (x, out) in x.chunks_exact(per_image).zip(out.chunks_exact_mut(out_per_image)) {
            run(x, pool, out);
        }
    })
}

/// A new tensor of `shape` whose values `fill` writes in place: the kernels write straight into
/// what the next op reads (building it from a `Vec` would copy every activation once more).
pub(super) fn output<Y: Datum>(shape: &[usize], fill: impl FnOnce(&mut [Y])) -> TractResult<TVec<TValue>> {
    let mut t = Tensor::zero_dt(Y::datum_type(), shape)?;
    fill(t.try_as_plain_ram_mut()?.as_slice_mut::<Y>()?);
    Ok(tvec!(t.into_tvalue()))
}

/// A convolution's output fact (NCHW of `dt`) and cost (`dt` multiply-adds), for `TypedOp`.
pub(super) fn conv_fact(g: &Geometry, input: &TypedFact, dt: DatumType) -> TypedFact {
    let shape = tvec![
        input.shape[0].clone(),
        g.out_channels.to_dim(),
        g.out_h().to_dim(),
        g.out_w().to_dim()
    ];
    dt.fact(shape)
}

pub(super) fn conv_cost(g: &Geometry, input: &TypedFact, dt: DatumType) -> TVec<(Cost, TDim)> {
    let macs = g.out_channels * g.taps() * g.out_h() * g.out_w();
    tvec!((Cost::FMA(dt), input.shape[0].clone() * macs))
}

fn conv_node(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((
        expand(ConvNode {
            groups: usize::try_from(node.get_attr::<i64>("group")?)?,
            conv: Conv2d::parse(node)?,
            x_zero: int_attr(node, "x_zero")?,
            y_zero: int_attr(node, "y_zero")?,
            lo: int_attr(node, "lo")?,
            hi: int_attr(node, "hi")?,
        }),
        vec![],
    ))
}

fn add_node(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((
        expand(AddNode(AddParams {
            a_mult: node.get_attr("a_mult")?,
            a_zero: int_attr(node, "a_zero")?,
            b_mult: node.get_attr("b_mult")?,
            b_zero: int_attr(node, "b_zero")?,
            zero_point: int_attr(node, "y_zero")?,
            lo: int_attr(node, "lo")?,
            hi: int_attr(node, "hi")?,
        })),
        vec![],
    ))
}

/// `KestrelInt8Conv(x: i8 NCHW, w: i8 OIHW, bias: i32, multiplier: f32) -> i8`, dilation 1.
#[derive(Debug, Clone)]
struct ConvNode {
    groups: usize,
    conv: Conv2d,
    x_zero: i32,
    y_zero: i32,
    lo: i32,
    hi: i32,
}

impl Expansion for ConvNode {
    fn name(&self) -> StaticName {
        CONV.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        self.conv
            .rules(s, inputs, outputs, 4, (i8::datum_type(), i8::datum_type()))
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let konst = |i: usize, what: &str| constant(model, inputs, i, prefix, what);
        let (w, bias, multiplier) = (konst(1, "weights")?, konst(2, "bias")?, konst(3, "multiplier")?);
        let geometry = self
            .conv
            .geometry(prefix, model, inputs[0], w.shape(), |_, _| self.groups)?;
        let plain = w.try_as_plain_ram()?.as_slice::<i8>()?.to_vec();
        let bias = bias.cast_to::<i32>()?.try_as_plain_ram()?.as_slice::<i32>()?.to_vec();
        let multiplier = multiplier.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        ensure!(
            bias.len() == geometry.out_channels && multiplier.len() == geometry.out_channels,
            "{prefix}: bias and multiplier need one value per output channel"
        );
        let weights = GemmWeights::new(plain, geometry.out_channels, geometry.taps());
        let (bias, bias_folded) = safe_biases(&bias, &weights.row_sums(), self.x_zero, geometry.taps());
        let op = Int8Conv {
            geometry,
            x_zero: self.x_zero,
            weights: Arc::new(weights),
            bias: Arc::new(bias),
            bias_folded: Arc::new(bias_folded),
            requant: Arc::new(Requant {
                multiplier,
                zero_point: self.y_zero,
                lo: self.lo,
                hi: self.hi,
            }),
        };
        model.wire_node(prefix, op, &[inputs[0]])
    }
}

/// The bias as the depthwise kernel adds it (to `Σ w·(x − zx)`, each product within 128·255) and
/// as the GEMM adds it (`bias − zx·Σw`, to `Σ w·x`, each product within 128·128), each clamped so
/// that no accumulation can overflow i32. Only a bias already saturated in the file moves: a dead
/// channel (weights ≈ 0 after batch-norm folding) whose bias in units of a tiny weight scale does
/// not fit in i32. Its output is saturated either way.
fn safe_biases(bias: &[i32], row_sums: &[i32], x_zero: i32, taps: usize) -> (Vec<i32>, Vec<i32>) {
    let limit = |product: i64| i32::MAX as i64 - taps as i64 * product;
    let clamp = |v: i64, product: i64| v.clamp(-limit(product), limit(product)) as i32;
    let plain = bias.iter().map(|&b| clamp(b as i64, 128 * 255)).collect();
    let folded = bias
        .iter()
        .zip(row_sums)
        .map(|(&b, &s)| clamp(b as i64 - x_zero as i64 * s as i64, 128 * 128))
        .collect();
    (plain, folded)
}

/// The typed op running an int8 convolution with our kernels.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Conv {
    pub geometry: Geometry,
    pub x_zero: i32,
    weights: Arc<GemmWeights>,
    bias: Arc<Vec<i32>>,
    bias_folded: Arc<Vec<i32>>,
    requant: Arc<Requant>,
}

// Multipliers are compared bit for bit; no NaN reaches them (the lowering refuses NaN scales).
impl Eq for Int8Conv {}

impl Int8Conv {
    /// Which kernel runs this convolution, as plans and profiles show it.
    pub fn kernel(&self) -> &'static str {
        if self.geometry.is_depthwise() {
            "depthwise"
        } else if self.geometry.is_pointwise() {
            "pointwise"
        } else {
            "im2col"
        }
    }
}

impl Op for Int8Conv {
    fn name(&self) -> StaticName {
        format!("{CONV}.{}", self.kernel()).into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}, x_zero {}", self.geometry, self.x_zero)])
    }

    op_as_typed_op!();
}

impl EvalOp for Int8Conv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let g = &self.geometry;
        eval_images(CONV, g, &inputs[0], |x: &[i8], pool, out: &mut [i8]| {
            kernels::conv(
                g,
                x,
                self.x_zero,
                &self.weights,
                &self.bias,
                &self.bias_folded,
                &self.requant,
                pool,
                out,
            )
        })
    }
}

impl TypedOp for Int8Conv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(conv_fact(&self.geometry, inputs[0], i8::datum_type())))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(conv_cost(&self.geometry, inputs[0], i8::datum_type()))
    }

    as_op!();
}

/// `KestrelInt8Add(a: i8, b: i8) -> i8`, same shapes.
#[derive(Debug, Clone)]
struct AddNode(AddParams);

impl Expansion for AddNode {
    fn name(&self) -> StaticName {
        ADD.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        for t in [&inputs[0], &inputs[1], &outputs[0]] {
            s.equals(&t.datum_type, i8::datum_type())?;
        }
        s.equals(&inputs[0].shape, &inputs[1].shape)?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, Int8Add(self.0), inputs)
    }
}

/// The typed op running a quantised residual add.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Add(pub AddParams);

impl Eq for Int8Add {}

impl Op for Int8Add {
    fn name(&self) -> StaticName {
        ADD.into()
    }

    op_as_typed_op!();
}

impl EvalOp for Int8Add {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs[0].shape() == inputs[1].shape(), "{ADD}: inputs differ in shape");
        let a = inputs[0].try_as_plain_ram()?;
        let b = inputs[1].try_as_plain_ram()?;
        let (a, b) = (a.as_slice::<i8>()?, b.as_slice::<i8>()?);
        output::<i8>(inputs[0].shape(), |out| kernels::add(&self.0, a, b, out))
    }
}

impl TypedOp for Int8Add {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].shape == inputs[1].shape, "{ADD}: inputs differ in shape");
        Ok(tvec!(i8::datum_type().fact(inputs[0].shape.clone())))
    }

    as_op!();
}

fn quantize_node(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let scale: f32 = node.get_attr("scale")?;
    ensure!(scale.is_finite() && scale > 0.0, "{}: scale {scale}", node.name);
    Ok((
        expand(QuantizeNode(Int8Quantize {
            scale,
            zero: int_attr(node, "zero")?,
        })),
        vec![],
    ))
}

/// `KestrelInt8Quantize(x: f32) -> i8`, same shape: ONNX QuantizeLinear with a scalar scale and
/// int8 zero point.
#[derive(Debug, Clone)]
struct QuantizeNode(Int8Quantize);

impl Expansion for QuantizeNode {
    fn name(&self) -> StaticName {
        QUANTIZE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, i8::datum_type())?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.0, inputs)
    }
}

/// The typed op quantising a float tensor with Kestrel's kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Int8Quantize {
    pub scale: f32,
    pub zero: i32,
}

// The scale is compared bit for bit; the lowering refuses non-finite scales.
impl Eq for Int8Quantize {}

impl Op for Int8Quantize {
    fn name(&self) -> StaticName {
        QUANTIZE.into()
    }

    op_as_typed_op!();
}

impl EvalOp for Int8Quantize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        output::<i8>(inputs[0].shape(), |out| {
            kernels::quantize(x, self.scale, self.zero, out)
        })
    }
}

impl TypedOp for Int8Quantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(i8::datum_type().fact(inputs[0].shape.clone())))
    }

    as_op!();
}
