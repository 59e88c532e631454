//! Kestrel's trainer: EfficientNet-Lite backbones in Burn, ImageNet weights, transfer learning
//! on a folder of photos, and export to Kestrel model bundles that the runtime
//! (`kestrel_runtime`) loads. Preprocessing is the runtime's: this crate never resizes or
//! normalises an image for the model itself.
//!
//! Where things are:
//! - [`data`]: scanning and splitting a photo folder, decoding, the on-disk image store,
//!   augmentation;
//! - [`model`]: the backbones (one [`model::Backbone`] trait, one registration list), the Burn
//!   network, pretrained weights;
//! - [`train`]: `fit` (both phases), checkpoints, the run folder, lr-find, sweeps and folds,
//!   and the end of a run (export, runtime evaluation, int8);
//! - [`onnx`]: the ONNX writer and the Burn↔tract parity check;
//! - [`quantize`]: int8 bundles, calibration and the accuracy gate;
//! - [`report`]: what a person reads (HTML, SVG and PNG plots, JSON).

pub mod assets;
pub mod backend;
pub mod config;
pub mod data;
pub mod evaluate;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod progress;
pub mod quantize;
pub mod report;
pub mod train;
