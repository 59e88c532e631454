//! The int8 path: QDQ graphs lowered to integer ops that run Kestrel's own kernels inside tract's
//! plan. [`lower`] rewrites the ONNX graph, [`ops`] are the ops tract runs, [`kernels`] the
//! arithmetic. Nothing here knows about bundles or images.

pub mod kernels;
pub mod lower;
pub mod ops;

pub use kernels::isa;
pub use lower::{Lowered, lower};

/// tract's ONNX parser with Kestrel's int8 ops registered.
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    ops::register(&mut onnx);
    onnx
}
