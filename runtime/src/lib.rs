//! Kestrel's runtime: load a Kestrel model bundle (an ONNX file with its labels, preprocessing and
//! model card in `metadata_props`) with tract and classify images on a CPU.
//!
//! Layers, bottom up: [`atomic`] (file writes), [`onnx_proto`] (tensors and attributes),
//! [`preprocess`] (image → tensor, the only copy of that code in Kestrel), [`bundle`] (the
//! metadata contract), [`decode`] (files → images), [`int8`] (integer kernels and the QDQ
//! lowering), [`classifier`] (tract).

pub mod atomic;
pub mod bench;
pub mod bundle;
pub mod classifier;
pub mod decode;
pub mod exit;
pub mod image_files;
pub mod int8;
pub mod live;
pub mod mqtt;
pub mod onnx_proto;
pub mod preprocess;
mod resample;
pub mod source;
pub mod stats;
mod threads;
pub mod web;

pub use bundle::{Bundle, BundleError, ContractError, Metadata, ModelCard};
pub use classifier::{Classifier, ClassifierError, LoadOptions, Prediction, Scored};
pub use decode::{DecodeError, load_image};
pub use preprocess::{PreprocessSpec, preprocess};

/// The version written into model cards and printed by `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An error and its causes on one line, `outer: cause: root`, leaving out a cause whose text an
/// outer message already carries (many errors print their source too, and `{:#}` would repeat
/// it).
pub fn error_report(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("cannot write {path}: {source}")]
    struct Outer {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn error_report_names_each_cause_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let err = Outer {
            path: "run/last.ckpt",
            source: inner,
        };
        assert_eq!(
            super::error_report(&err),
            "cannot write run/last.ckpt: No space left on device"
        );
        let wrapped = anyhow::Error::new(err).context("saving the checkpoint");
        assert_eq!(
            super::error_report(wrapped.as_ref()),
            "saving the checkpoint: cannot write run/last.ckpt: No space left on device"
        );
    }
}
