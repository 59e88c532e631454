//! Writing ONNX: a small graph builder and the backbone's exporter with its parity check.

pub mod export;
pub mod graph;
