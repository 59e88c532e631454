//! The lowering on a small hand-written QDQ graph: it finds both patterns, and the lowered graph
//! computes what tract's own f32 simulation of the same file computes, within a quantisation step.

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::prelude::*;

use super::*;
use crate::onnx_proto::{i8_tensor, node};

fn value(name: &str) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        ..Default::default()
    }
}

fn f32_input(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value as Dim};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Dim::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `graph` as an opset-13 model.
fn model(graph: pb::GraphProto) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// x → Q → DQ → depthwise 3×3 (pads 1, int32 bias) → Relu → Q → DQ ┐
///                                                   x's DQ ────────┴→ Add → Q → DQ
///   → pointwise 1×1 (4 → 6 channels, no bias) → Q → DQ → y
fn qdq_model(zero_x: i8, zero_y: i8) -> pb::ModelProto {
    let c = 4usize;
    let weights: Vec<i8> = (0..c * 9).map(|i| ((i * 37) % 255) as i8).collect();
    let w_scales: Vec<f32> = (0..c).map(|i| 0.01 + 0.005 * i as f32).collect();
    let x_scale = 0.03f32;
    let bias: Vec<i32> = (0..c as i32).map(|i| i * 150 - 200).collect();
    let bias_scales: Vec<f32> = w_scales.iter().map(|s| s * x_scale).collect();
    let graph = pb::GraphProto {
        name: "qdq".into(),
        node: vec![
            node("QuantizeLinear", &["x", "sx", "zx"], "xq", vec![]),
            node("DequantizeLinear", &["xq", "sx", "zx"], "xd", vec![]),
            node("DequantizeLinear", &["wq", "sw"], "w", vec![int_attr("axis", 0)]),
            node("DequantizeLinear", &["bq", "sb"], "b", vec![int_attr("axis", 0)]),
            node(
                "Conv",
                &["xd", "w", "b"],
                "conv",
                vec![
                    int_attr("group", c as i64),
                    ints_attr("pads", vec![1, 1, 1, 1]),
                    ints_attr("strides", vec![1, 1]),
                    ints_attr("kernel_shape", vec![3, 3]),
                ],
            ),
            node("Relu", &["conv"], "relu", vec![]),
            node("QuantizeLinear", &["relu", "sy", "zy"], "yq", vec![]),
            node("DequantizeLinear", &["yq", "sy", "zy"], "yd", vec![]),
            node("Add", &["xd", "yd"], "sum", vec![]),
            node("QuantizeLinear", &["sum", "sa", "za"], "aq", vec![]),
            node("DequantizeLinear", &["aq", "sa", "za"], "ad", vec![]),
            // A pointwise conv: the GEMM path, where the input zero point is folded into the bias.
            node("DequantizeLinear", &["pq", "sp"], "p", vec![int_attr("axis", 0)]),
            node("Conv", &["ad", "p"], "proj", vec![]),
            node("QuantizeLinear", &["proj", "so", "zo"], "oq", vec![]),
            node("DequantizeLinear", &["oq", "so", "zo"], "y", vec![]),
        ],
        initializer: vec![
            f32_tensor("sx", &[], &[x_scale]),
            i8_tensor("zx", &[], &[zero_x]),
            i8_tensor("wq", &[c as i64, 1, 3, 3], &weights),
            f32_tensor("sw", &[c as i64], &w_scales),
            i32_tensor("bq", &[c as i64], &bias),
            f32_tensor("sb", &[c as i64], &bias_scales),
            f32_tensor("sy", &[], &[0.05]),
            i8_tensor("zy", &[], &[zero_y]),
            f32_tensor("sa", &[], &[0.07]),
            i8_tensor("za", &[], &[-3]),
            i8_tensor(
                "pq",
                &[6, c as i64, 1, 1],
                &(0..6 * c).map(|i| ((i * 53) % 251) as i8).collect::<Vec<_>>(),
            ),
            f32_tensor("sp", &[6], &[0.02, 0.01, 0.015, 0.03, 0.005, 0.02]),
            f32_tensor("so", &[], &[0.04]),
            i8_tensor("zo", &[], &[9]),
        ],
        input: vec![f32_input("x", &[1, 4, 7, 9])],
        output: vec![value("y")],
        ..Default::default()
    };
    model(graph)
}

/// The op types of `proto`'s nodes, in order.
fn op_types(proto: &pb::ModelProto) -> Vec<&str> {
    let graph = proto.graph.as_ref().expect("graph");
    graph.node.iter().map(|n| n.op_type.as_str()).collect()
}

/// `proto`'s output for `input`, planned and run by `onnx`.
fn run(onnx: &tract_onnx::Onnx, proto: &pb::ModelProto, input: &Tensor) -> Vec<f32> {
    let plan = onnx
        .model_for_proto_model(proto)
        .and_then(|m| m.with_input_fact(0, f32::fact(input.shape()).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .expect("plan");
    let out = plan.run(tvec!(input.clone().into())).expect("run");
    out[0]
        .to_plain_array_view::<f32>()
        .expect("f32")
        .iter()
        .copied()
        .collect()
}

#[test]
fn a_qdq_conv_and_add_lower_to_integer_ops_that_match_tract() {
    for (zero_x, zero_y) in [(0, -128), (17, -128), (-40, 5)] {
        let original = qdq_model(zero_x, zero_y);
        let mut lowered = original.clone();
        let done = lower(&mut lowered);
        assert_eq!(
            done,
            Lowered {
                int8_convs: 2,
                int8_adds: 1,
                int8_quantize: 1,
                other_convs: 0,
                f32_depthwise: 0,
                f32_pointwise: 0,
                int8_weight_gemms: 0
            }
        );
        let ops = op_types(&lowered);
        assert_eq!(ops, [ops::QUANTIZE, ops::CONV, ops::ADD, ops::CONV, "DequantizeLinear"]);

        // Off the rounding ties of x / 0.03: there, tract's QuantizeLinear (x times 1/scale)
        // and ONNX's (x / scale, which Kestrel's and onnxruntime's follow) may differ by a step,
        // which this test is not about (`kernels::tests::quantize_matches_the_reference` is).
        let input: Vec<f32> = (0..4 * 7 * 9)
            .map(|i| ((i * 7919) % 211) as f32 / 40.0 - 2.5 + 0.0037)
            .collect();
        let input = Tensor::from_shape(&[1, 4, 7, 9], &input).expect("input");
        let ours = run(&super::super::onnx(), &lowered, &input);
        let tracts = run(&tract_onnx::onnx(), &original, &input);
        assert_eq!((ours.len(), tracts.len()), (6 * 7 * 9, 6 * 7 * 9));
        let step = 0.04;
        let off: Vec<f32> = ours.iter().zip(&tracts).map(|(a, b)| (a - b).abs()).collect();
        let worst = off.iter().fold(0f32, |m, &d| m.max(d));
        let exact = off.iter().filter(|&&d| d < 1e-6).count();
        println!(
            "zero points {zero_x}/{zero_y}: {exact}/{} equal, worst {worst}",
            off.len()
        );
        // f32 convolution in tract rounds where the integer kernels are exact: a value on a
        // rounding boundary may land one step away, no more.
        assert!(worst <= 2.0 * step + 1e-5, "worst |Δ| {worst}");
        assert!(exact * 10 >= off.len() * 9, "{exact}/{} equal", off.len());
    }
}

#[test]
fn graphs_without_the_patterns_are_left_alone() {
    // u8 activations (no zero point: ONNX's default type) are not ours to lower.
    let mut proto = qdq_model(0, 0);
    if let Some(g) = proto.graph.as_mut() {
        for n in g.node.iter_mut() {
            n.input.retain(|i| !matches!(i.as_str(), "zx" | "zy" | "za" | "zo"));
        }
    }
    let before = proto.clone();
    assert_eq!(lower(&mut proto).int8_convs, 0);
    assert_eq!(proto, before);
}

/// x (f32, 2 × 40) → Gemm(x, DequantizeLinear(w: rows × 40 int8, a scale per row), bias, transB).
fn classifier_model(trans_b: i64, rows: usize) -> pb::ModelProto {
    let depth = 40usize;
    let w: Vec<i8> = (0..rows * depth).map(|i| ((i * 89) % 253) as i8).collect();
    let scales: Vec<f32> = (0..rows).map(|i| 0.002 + 0.0007 * i as f32).collect();
    let bias: Vec<f32> = (0..rows).map(|i| i as f32 * 0.1 - 1.0).collect();
    let graph = pb::GraphProto {
        name: "classifier".into(),
        node: vec![
            node("DequantizeLinear", &["wq", "sw"], "w", vec![int_attr("axis", 0)]),
            node("Gemm", &["x", "w", "b"], "y", vec![int_attr("transB", trans_b)]),
        ],
        initializer: vec![
            i8_tensor("wq", &[rows as i64, depth as i64], &w),
            f32_tensor("sw", &[rows as i64], &scales),
            f32_tensor("b", &[rows as i64], &bias),
        ],
        input: vec![f32_input("x", &[2, depth as i64])],
        output: vec![value("y")],
        ..Default::default()
    };
    model(graph)
}

#[test]
fn a_gemm_with_int8_weights_keeps_them_int8_and_matches_tract() {
    let original = classifier_model(1, 30);
    let mut lowered = original.clone();
    assert_eq!(lower(&mut lowered).int8_weight_gemms, 1);
    let ops = op_types(&lowered);
    assert_eq!(
        ops,
        [super::super::gemm_w8::OP],
        "the weights' DequantizeLinear goes with the Gemm"
    );
    let input: Vec<f32> = (0..80).map(|i| ((i * 7919) % 211) as f32 / 40.0 - 2.5).collect();
    let input = Tensor::from_shape(&[2, 40], &input).expect("input");
    let ours = run(&super::super::onnx(), &lowered, &input);
    let tracts = run(&tract_onnx::onnx(), &original, &input);
    assert_eq!((ours.len(), tracts.len()), (60, 60));
    for (i, (a, b)) in ours.iter().zip(&tracts).enumerate() {
        // The same products summed in another order: f32 rounding of values about 1 in size.
        assert!(
            (a - b).abs() <= 1e-5 * b.abs().max(1.0),
            "output {i}: {a} vs tract's {b}"
        );
    }

    // Weights not transposed as the classifier stores them (square, so that only the layout
    // stops it): left to tract.
    let mut untouched = classifier_model(0, 40);
    let before = untouched.clone();
    assert_eq!(lower(&mut untouched).int8_weight_gemms, 0);
    assert_eq!(untouched, before);
}
