//! Kestrel's trainer: EfficientNet-Lite0 in Burn, ImageNet weights, transfer learning on a
//! folder of photos, and export to Kestrel model bundles that the runtime (`kestrel_runtime`)
//! loads. Preprocessing is the runtime's: this crate never resizes or normalises an image for
//! the model itself.

pub mod assets;
pub mod augment;
pub mod backend;
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod dataset;
pub mod efficientnet;
pub mod evaluate;
pub mod experiments;
pub mod export;
pub mod fit;
pub mod idx;
pub mod imagenet;
pub mod images;
pub mod lr_find;
pub mod metrics;
pub mod onnx_graph;
pub mod plots;
pub mod pretrained;
pub mod progress;
pub mod quantize;
pub mod report;
pub mod sample_data;
pub mod store;
pub mod weights;

pub use efficientnet::EfficientNet;
