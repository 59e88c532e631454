//! Which Burn device the trainer computes on. Burn 0.22 dispatches at run time, so the model
//! and training code are the same for every backend; only the device differs.

use burn::tensor::Device;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A hardware GPU through wgpu when there is one, else `flex`.
    Auto,
    /// Burn's wgpu backend (Vulkan/Metal/DX12); on a machine without a GPU, Mesa's lavapipe.
    Wgpu,
    /// Burn's `flex` CPU backend: ~9× faster than ndarray on EfficientNet here.
    Flex,
    /// Burn's `ndarray` CPU backend (deprecated upstream, kept for comparison).
    Ndarray,
}

/// Software rasterisers that present themselves as GPUs: correct, but slower than `flex`.
const SOFTWARE_ADAPTERS: [&str; 4] = ["llvmpipe", "lavapipe", "swiftshader", "software"];

impl Backend {
    /// `Auto` settled to a concrete backend (the others are returned as they are).
    pub fn resolve(self) -> Backend {
        match self {
            Backend::Auto if hardware_gpu().is_some() => Backend::Wgpu,
            Backend::Auto => Backend::Flex,
            other => other,
        }
    }

    pub fn device(self) -> Device {
        match self.resolve() {
            Backend::Wgpu => wgpu_device(),
            // Deprecated upstream in favour of flex; kept because users ask for it by name.
            #[allow(deprecated)]
            Backend::Ndarray => Device::ndarray(),
            Backend::Flex | Backend::Auto => Device::flex(),
        }
    }

    /// How closely the trained network's logits on this backend must match the exported graph's
    /// in tract (max |Δlogit|) for the export to pass. On the CPU both sides are f32 on the same
    /// kind of cores: 1e-3 (the ImageNet bundles measure ≤ 1e-5). A GPU sums in other orders,
    /// may contract multiply-adds and flush denormals: 1e-2, ten times the CPU's, where lavapipe
    /// (CI) measured 5e-6 after a fit and 3e-5 on the ImageNet logits; no hardware GPU has been
    /// measured yet (issue 19). An export bug (padding, a BatchNorm epsilon, a layer out of
    /// order) moves logits by 0.1 and more, so both bounds catch it.
    pub fn parity_tolerance(self) -> f32 {
        match self.resolve() {
            Backend::Wgpu => 1e-2,
            Backend::Flex | Backend::Ndarray | Backend::Auto => 1e-3,
        }
    }

    /// What the device is, for logs: the adapter's name on wgpu.
    pub fn describe(self) -> String {
        match self.resolve() {
            Backend::Wgpu => format!(
                "wgpu ({})",
                adapter_name(&wgpu_device()).unwrap_or_else(|| "adapter".into())
            ),
            Backend::Ndarray => "ndarray (CPU)".into(),
            Backend::Flex | Backend::Auto => "flex (CPU)".into(),
        }
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Device {
    Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)
}

/// Without the `wgpu` feature the request falls back to the CPU, said in the log.
#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Device {
    tracing::warn!("this kestrel-train was built without the `wgpu` feature; training on the CPU (flex)");
    Device::flex()
}

#[cfg(feature = "wgpu")]
fn adapter_name(device: &Device) -> Option<String> {
    device.identity().map(|i| i.name)
}

#[cfg(not(feature = "wgpu"))]
fn adapter_name(_device: &Device) -> Option<String> {
    None
}

/// The first wgpu adapter that is a real GPU.
#[cfg(feature = "wgpu")]
fn hardware_gpu() -> Option<Device> {
    Device::enumerate(burn::tensor::DeviceType::Wgpu).into_iter().find(|d| {
        adapter_name(d).is_some_and(|name| {
            let name = name.to_ascii_lowercase();
            !SOFTWARE_ADAPTERS.iter().any(|s| name.contains(s))
        })
    })
}

#[cfg(not(feature = "wgpu"))]
fn hardware_gpu() -> Option<Device> {
    let _ = SOFTWARE_ADAPTERS;
    None
}
