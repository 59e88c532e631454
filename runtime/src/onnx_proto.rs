//! Reading and writing ONNX protobuf pieces (tensors and attributes) by hand: the one copy the
//! runtime's int8 lowering and the trainer's quantiser both use. Imports nothing of Kestrel's.

use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;

/// A tensor's values from its raw little-endian bytes, or from its typed field.
fn values_le<T: Copy, const N: usize>(
    t: &pb::TensorProto,
    data_type: DataType,
    typed: &[T],
    from_le: fn([u8; N]) -> T,
) -> Option<Vec<T>> {
    if t.data_type != data_type as i32 {
        return None;
    }
    if !typed.is_empty() {
        return Some(typed.to_vec());
    }
    t.raw_data.len().is_multiple_of(N).then(|| {
        t.raw_data
            .chunks_exact(N)
            .filter_map(|b| b.try_into().ok().map(from_le))
            .collect()
    })
}

/// The values of a float32 tensor, `None` for any other type or malformed data.
pub fn f32s(t: &pb::TensorProto) -> Option<Vec<f32>> {
    values_le(t, DataType::Float, &t.float_data, f32::from_le_bytes)
}

/// The values of an int32 tensor.
pub fn i32s(t: &pb::TensorProto) -> Option<Vec<i32>> {
    values_le(t, DataType::Int32, &t.int32_data, i32::from_le_bytes)
}

/// The values of an int8 tensor (raw bytes, or widened into `int32_data`).
pub fn i8s(t: &pb::TensorProto) -> Option<Vec<i8>> {
    if t.data_type != DataType::Int8 as i32 {
        return None;
    }
    if !t.int32_data.is_empty() {
        return t.int32_data.iter().map(|&v| i8::try_from(v).ok()).collect();
    }
    Some(t.raw_data.iter().map(|&b| b as i8).collect())
}

/// The values of an int8, uint8 or int32 tensor (quantised data and zero points), as f64.
pub fn integers(t: &pb::TensorProto) -> Option<Vec<f64>> {
    if let Some(v) = i8s(t) {
        return Some(v.into_iter().map(f64::from).collect());
    }
    if let Some(v) = i32s(t) {
        return Some(v.into_iter().map(f64::from).collect());
    }
    (t.data_type == DataType::Uint8 as i32).then(|| t.raw_data.iter().map(|&b| f64::from(b)).collect())
}

/// A tensor stored as little-endian raw bytes (what every ONNX producer writes).
pub fn raw_tensor(name: &str, dims: &[i64], data_type: DataType, raw_data: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type as i32,
        raw_data,
        ..Default::default()
    }
}

pub fn f32_tensor(name: &str, dims: &[i64], data: &[f32]) -> pb::TensorProto {
    raw_tensor(
        name,
        dims,
        DataType::Float,
        data.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

pub fn i32_tensor(name: &str, dims: &[i64], data: &[i32]) -> pb::TensorProto {
    raw_tensor(
        name,
        dims,
        DataType::Int32,
        data.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

pub fn i8_tensor(name: &str, dims: &[i64], data: &[i8]) -> pb::TensorProto {
    raw_tensor(name, dims, DataType::Int8, data.iter().map(|&v| v as u8).collect())
}

pub fn int_attr(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

pub fn ints_attr(name: &str, ints: Vec<i64>) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints,
        ..Default::default()
    }
}

pub fn float_attr(name: &str, f: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}

/// A node with one output, named after it.
pub fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: output.to_string(),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

/// The named attribute of `node`.
pub fn attr<'n>(node: &'n pb::NodeProto, name: &str) -> Option<&'n pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_through_raw_bytes_and_typed_fields() {
        assert_eq!(f32s(&f32_tensor("a", &[2], &[1.5, -2.0])), Some(vec![1.5, -2.0]));
        assert_eq!(i32s(&i32_tensor("b", &[2], &[7, -9])), Some(vec![7, -9]));
        assert_eq!(i8s(&i8_tensor("c", &[3], &[-128, 0, 127])), Some(vec![-128, 0, 127]));
        let widened = pb::TensorProto {
            data_type: DataType::Int8 as i32,
            int32_data: vec![-3, 4],
            ..Default::default()
        };
        assert_eq!(integers(&widened), Some(vec![-3.0, 4.0]));
        let u8s = raw_tensor("d", &[2], DataType::Uint8, vec![0, 255]);
        assert_eq!(integers(&u8s), Some(vec![0.0, 255.0]));
        assert_eq!(f32s(&u8s), None, "the wrong type reads as nothing");
        let torn = raw_tensor("e", &[1], DataType::Float, vec![0, 0, 128]);
        assert_eq!(f32s(&torn), None, "a length that is not whole values reads as nothing");
    }
}
