//! Loading the ImageNet EfficientNet-Lite0 checkpoint into the Burn model, with Burn's own
//! PyTorch reader (it handles the legacy pre-1.6 pickle and the stored strides).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use burn_store::{ModuleSnapshot, PytorchStore};

use crate::efficientnet::EfficientNet;

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot load weights from {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("weights {path} do not fit EfficientNet-Lite0: {missing} tensors missing, {errors} mismatched:\n{detail}")]
    Mismatch {
        path: PathBuf,
        missing: usize,
        errors: usize,
        detail: String,
    },
}

/// EfficientNet-Lite0 with the ImageNet weights at `path` (1000 classes).
pub fn load_lite0_imagenet(path: &Path, device: &Device) -> Result<EfficientNet, WeightsError> {
    let mut model = EfficientNet::lite0(device);
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
            missing: result.missing.len(),
            errors: result.errors.len(),
            detail: result.to_string(),
        });
    }
    tracing::debug!(applied = result.applied.len(), unused = ?result.unused, "loaded ImageNet weights");
    Ok(model)
}
