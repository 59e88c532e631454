//! Kestrel's trainer: EfficientNet-Lite0 in Burn, ImageNet weights, and export to Kestrel model
//! bundles that the runtime (`kestrel_runtime`) loads. Preprocessing is the runtime's: this crate
//! never resizes or normalises an image itself.

pub mod assets;
pub mod backend;
pub mod batch;
pub mod efficientnet;
pub mod export;
pub mod imagenet;
pub mod onnx_graph;
pub mod pretrained;
pub mod weights;

pub use efficientnet::EfficientNet;
