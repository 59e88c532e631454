//! `KestrelW8Gemm`: a `Gemm` whose weights are int8 in the file (`DequantizeLinear` of a
//! constant, zero point 0, one scale per output row) and whose input is f32: the classifier of
//! an int8 file, fed by the pooled f32 features. tract folded such weights to f32 (5.1 MB for
//! Lite0's 1000 × 1280, streamed through the cache on every inference); this op keeps them int8
//! and runs [`kernels::gemv_w8`]. The lowering is [`super::lower`]'s `match_gemm`.

use std::sync::Arc;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::{Expansion, expand};

use super::kernels::{self, WeightsI8};
use super::ops::{constant, output};

pub const OP: &str = "KestrelW8Gemm";

pub fn node(_ctx: &ParsingContext, _node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(Node), vec![]))
}

/// `KestrelW8Gemm(a: f32 [M, K], w: i8 [N, K], scale: f32 [N], bias: f32 [N]) -> f32 [M, N]`:
/// `y = a · (scale ⊙ w)ᵀ + bias`, as `Gemm(a, DequantizeLinear(w), bias, transB = 1)`.
#[derive(Debug, Clone)]
struct Node;

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
        check_input_arity(inputs, 4)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[1].datum_type, i8::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].rank, 2)?;
        s.equals(&inputs[1].rank, 2)?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&inputs[0].shape[1], &inputs[1].shape[1])?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[0].shape[1], &inputs[1].shape[0])?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let konst = |i: usize, what: &str| constant(model, inputs, i, prefix, what);
        let (w, scales, bias) = (konst(1, "weights")?, konst(2, "scales")?, konst(3, "bias")?);
        let &[rows, depth] = w.shape() else {
            bail!("{prefix}: weights must be a matrix, not {:?}", w.shape());
        };
        let scales = scales.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        ensure!(
            scales.len() == rows && bias.len() == rows,
            "{prefix}: one scale and one bias per output row"
        );
        let weights = WeightsI8 {
            rows,
            depth,
            w: w.try_as_plain_ram()?.as_slice::<i8>()?.to_vec(),
            scales,
        };
        let op = GemmW8 {
            weights: Arc::new(weights),
            bias: Arc::new(bias),
        };
        model.wire_node(prefix, op, &[inputs[0]])
    }
}

/// The typed op: int8 weights in memory, f32 in and out.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmW8 {
    weights: Arc<WeightsI8>,
    bias: Arc<Vec<f32>>,
}

// Scales and biases are compared bit for bit; the lowering refuses NaN scales.
impl Eq for GemmW8 {}

impl Op for GemmW8 {
    fn name(&self) -> StaticName {
        OP.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} × {} int8 weights",
            self.weights.rows, self.weights.depth
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for GemmW8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (rows, depth) = (self.weights.rows, self.weights.depth);
        let a = inputs[0].try_as_plain_ram()?;
        let a = a.as_slice::<f32>()?;
        ensure!(
            depth > 0 && a.len().is_multiple_of(depth),
            "{OP}: input of {} values is not rows of {depth}",
            a.len()
        );
        let m = a.len() / depth;
        output::<f32>(&[m, rows], |out| {
            for (a, out) in a.chunks_exact(depth).zip(out.chunks_exact_mut(rows)) {
                kernels::gemv_w8(&self.weights, a, &self.bias, out);
            }
        })
    }
}

impl TypedOp for GemmW8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(tvec![
            inputs[0].shape[0].clone(),
            self.weights.rows.to_dim()
        ])))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let macs = self.weights.rows * self.weights.depth;
        Ok(tvec!((Cost::FMA(f32::datum_type()), inputs[0].shape[0].clone() * macs)))
    }

    as_op!();
}
