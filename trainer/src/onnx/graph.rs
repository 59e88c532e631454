//! A small writer of ONNX graphs over the protobuf types tract-onnx exposes. All ModelProto
//! construction in Kestrel goes through here.

use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;

/// Opset 13: Clip takes min/max as inputs, every op we emit is stable there, and tract is tested
/// on 9..=18.
pub const OPSET: i64 = 13;
/// IR version 8 goes with opset 13 in the ONNX release that introduced it.
pub const IR_VERSION: i64 = 8;

/// One attribute of a node.
#[derive(Debug, Clone)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
}

/// A dimension of a graph input or output.
#[derive(Debug, Clone)]
pub enum Dim {
    Fixed(usize),
    Named(&'static str),
}

fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(v) => dimension::Value::DimValue(*v as i64),
                Dim::Named(n) => dimension::Value::DimParam(n.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An f32 tensor, stored as little-endian raw bytes (what every ONNX producer writes).
pub fn f32_tensor(name: &str, dims: &[usize], data: &[f32]) -> pb::TensorProto {
    let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    kestrel_runtime::onnx_proto::f32_tensor(name, &dims, data)
}

impl GraphBuilder {
    pub fn input(&mut self, name: &str, dims: &[Dim]) {
        self.inputs.push(value_info(name, DataType::Float, dims));
    }

    pub fn output(&mut self, name: &str, dims: &[Dim]) {
        self.outputs.push(value_info(name, DataType::Float, dims));
    }

    pub fn initializer(&mut self, tensor: pb::TensorProto) -> String {
        let name = tensor.name.clone();
        self.initializers.push(tensor);
        name
    }

    /// Add a node named after its (single) output.
    pub fn node(&mut self, op: &str, inputs: &[&str], output: &str, attrs: &[(&str, Attr)]) -> String {
        let attribute = attrs
            .iter()
            .map(|(name, value)| {
                let mut a = pb::AttributeProto {
                    name: name.to_string(),
                    ..Default::default()
                };
                match value {
                    Attr::Int(i) => {
                        a.r#type = AttributeType::Int as i32;
                        a.i = *i;
                    }
                    Attr::Ints(v) => {
                        a.r#type = AttributeType::Ints as i32;
                        a.ints = v.clone();
                    }
                    Attr::Float(f) => {
                        a.r#type = AttributeType::Float as i32;
                        a.f = *f;
                    }
                }
                a
            })
            .collect();
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: output.to_string(),
            op_type: op.to_string(),
            attribute,
            ..Default::default()
        });
        output.to_string()
    }

    pub fn into_model(self, graph_name: &str, producer_version: &str) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "kestrel-train".into(),
            producer_version: producer_version.into(),
            graph: Some(pb::GraphProto {
                name: graph_name.into(),
                node: self.nodes,
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}
