//! Which Burn device the trainer computes on. Burn 0.22 dispatches at run time, so the model
//! and training code are the same for every backend; only the device differs.

use burn::tensor::Device;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Burn's `flex` CPU backend: ~9× faster than ndarray on EfficientNet here.
    Flex,
    /// Burn's `ndarray` CPU backend (deprecated upstream, kept for comparison).
    Ndarray,
}

impl Backend {
    pub fn device(self) -> Device {
        match self {
            Backend::Flex => Device::flex(),
            // Deprecated upstream in favour of flex; kept because users ask for it by name.
            #[allow(deprecated)]
            Backend::Ndarray => Device::ndarray(),
        }
    }
}
