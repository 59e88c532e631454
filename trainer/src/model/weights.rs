//! Loading a backbone's ImageNet checkpoint into its Burn network, with Burn's own PyTorch
//! reader (it handles the legacy pre-1.6 pickle and the stored strides).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use burn_store::{ModuleSnapshot, PytorchStore};

use super::{Backbone, Network};

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot load weights from {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("weights {path} do not fit {architecture}: {missing} tensors missing, {errors} mismatched:\n{detail}")]
    Mismatch {
        path: PathBuf,
        architecture: &'static str,
        missing: usize,
        errors: usize,
        detail: String,
    },
}

/// `backbone`'s network with the ImageNet weights at `path` (1000 classes).
pub fn load_imagenet(backbone: &dyn Backbone, path: &Path, device: &Device) -> Result<Network, WeightsError> {
    let mut model = backbone.build(device);
    // The checkpoint names are the PyTorch attribute names: `_blocks.3._bn1.weight` → `blocks.3.bn1.weight`.
    let mut store = PytorchStore::from_file(path)
        .with_key_remapping(r"(^|\.)_", "${1}")
        .allow_partial(true);
    let result = model.load_from(&mut store).map_err(|e| WeightsError::Load {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if !result.missing.is_empty() || !result.errors.is_empty() {
        return Err(WeightsError::Mismatch {
            path: path.to_path_buf(),
            architecture: backbone.architecture(),
            missing: result.missing.len(),
            errors: result.errors.len(),
            detail: result.to_string(),
        });
    }
    tracing::debug!(applied = result.applied.len(), unused = ?result.unused, "loaded ImageNet weights");
    Ok(model)
}
