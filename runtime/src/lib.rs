//! Kestrel's runtime: load a Kestrel model bundle (an ONNX file with its labels, preprocessing and
//! model card in `metadata_props`) with tract and classify images on a CPU.
//!
//! Layers, bottom up: [`preprocess`] (image → tensor, the only copy of that code in Kestrel),
//! [`bundle`] (the metadata contract), [`decode`] (files → images), [`classifier`] (tract).

pub mod bench;
pub mod bundle;
pub mod classifier;
pub mod decode;
pub mod live;
pub mod preprocess;
mod resample;
pub mod source;

pub use bundle::{Bundle, BundleError, ContractError, Metadata, ModelCard};
pub use classifier::{Classifier, ClassifierError, LoadOptions, Prediction, Scored};
pub use decode::{DecodeError, load_image};
pub use preprocess::{PreprocessSpec, preprocess};

/// The version written into model cards and printed by `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
