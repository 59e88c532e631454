//! Which Burn device the trainer computes on. Burn 0.22 dispatches at run time, so the model
//! and training code are the same for every backend; only the device differs.

#[cfg(feature = "wgpu")]
mod adapter_info;

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

/// How much memory an adapter has, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// The card's own, as the graphics API, the kernel driver or `nvidia-smi` states it.
    Dedicated(u64),
    /// A rasteriser or an integrated GPU computes in the machine's memory: its total.
    System(u64),
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        match *self {
            Memory::Dedicated(b) => write!(f, "{:.1} GiB", gib(b)),
            Memory::System(b) => write!(f, "{:.1} GiB shared system memory", gib(b)),
        }
    }
}

/// One wgpu adapter, as `kestrel-train devices` lists it and `--device N` picks it.
#[derive(Debug, Clone)]
pub struct Adapter {
    /// What `--device` takes: the position in [`adapters`], which is the wgpu runtime's own
    /// order.
    pub index: usize,
    pub name: String,
    /// `discrete GPU`, `integrated GPU`, `virtual GPU`, `CPU` (a software rasteriser) or `other`.
    pub kind: &'static str,
    /// A rasteriser on the CPU (lavapipe, llvmpipe, SwiftShader): correct, slower than `flex`.
    pub software: bool,
    pub device: Device,
}

/// What `kestrel-train devices` shows of an adapter beyond [`Adapter`]. Asked by that command
/// only ([`details`]): finding it probes every graphics API again and may run `nvidia-smi`,
/// start-up work a training run has no use for.
#[derive(Debug, Clone, Default)]
pub struct AdapterDetails {
    /// The graphics API the adapter is reached through: `Vulkan`, `Metal`, `DX12`, `OpenGL`.
    pub api: &'static str,
    /// The driver, as it names itself (`Mesa 24.2.8-1~bpo12+1 (LLVM 15.0.6)`), where it does.
    pub driver: Option<String>,
    /// The memory a training run may fill, and where the figure comes from.
    pub memory: Option<Memory>,
}

/// [`AdapterDetails`] of each of `adapters`, in order (empty without the `wgpu` feature).
pub fn details(adapters: &[Adapter]) -> Vec<AdapterDetails> {
    #[cfg(feature = "wgpu")]
    return adapter_info::details(adapters);
    #[cfg(not(feature = "wgpu"))]
    adapters.iter().map(|_| AdapterDetails::default()).collect()
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeviceError {
    #[error("--device {index}: {}", match .available.as_str() {
        "" => "this machine has no wgpu adapter (`kestrel-train devices` lists what there is)".to_string(),
        a => format!("there is no such adapter; `kestrel-train devices` lists them: {a}"),
    })]
    NoSuchAdapter { index: usize, available: String },
    #[error("--device {index} picks a GPU adapter, but --backend {backend} computes on the CPU; use --backend wgpu")]
    CpuBackend { index: usize, backend: String },
}

/// Every wgpu adapter this build can use, in the runtime's order (empty without the `wgpu`
/// feature). Asked once per process: enumerating opens each adapter, and a run asks for its
/// device in every phase.
pub fn adapters() -> &'static [Adapter] {
    static ADAPTERS: std::sync::OnceLock<Vec<Adapter>> = std::sync::OnceLock::new();
    ADAPTERS.get_or_init(enumerate)
}

fn enumerate() -> Vec<Adapter> {
    #[cfg(feature = "wgpu")]
    return Device::enumerate(burn::tensor::DeviceType::Wgpu)
        .into_vec()
        .into_iter()
        .enumerate()
        .map(|(index, device)| {
            let name = device.identity().map(|i| i.name).unwrap_or_else(|| "adapter".into());
            let kind = wgpu_kind(&device);
            let lower = name.to_ascii_lowercase();
            let software = kind == "CPU" || SOFTWARE_ADAPTERS.iter().any(|s| lower.contains(s));
            Adapter {
                index,
                name,
                kind,
                software,
                device,
            }
        })
        .collect();
    #[allow(unreachable_code)]
    Vec::new()
}

/// The adapter's type as the graphics API reports it (wgpu's `DeviceType`).
#[cfg(feature = "wgpu")]
fn wgpu_kind(device: &Device) -> &'static str {
    use burn_dispatch::DispatchDevice;
    use burn_dispatch::devices::{CubeDevice, WgpuDeviceKind};
    match device.as_dispatch() {
        DispatchDevice::Cube(CubeDevice::Wgpu(w)) => match w.kind {
            WgpuDeviceKind::DiscreteGpu(_) => "discrete GPU",
            WgpuDeviceKind::IntegratedGpu(_) => "integrated GPU",
            WgpuDeviceKind::VirtualGpu(_) => "virtual GPU",
            WgpuDeviceKind::Cpu => "CPU",
            _ => "other",
        },
        _ => "other",
    }
}

/// The adapter `auto` and `wgpu` train on when no `--device` is given: the first discrete GPU,
/// else the first other hardware adapter, else (for `wgpu` only) the first of any kind.
pub fn preferred(adapters: &[Adapter], allow_software: bool) -> Option<&Adapter> {
    adapters
        .iter()
        .find(|a| a.kind == "discrete GPU")
        .or_else(|| adapters.iter().find(|a| !a.software))
        .or_else(|| adapters.first().filter(|_| allow_software))
}

impl Backend {
    /// `Auto` settled to a concrete backend (the others are returned as they are).
    pub fn resolve(self) -> Backend {
        match self {
            Backend::Auto if preferred(adapters(), false).is_some() => Backend::Wgpu,
            Backend::Auto => Backend::Flex,
            other => other,
        }
    }

    /// `resolve`, except that `auto` with a `--device` is that wgpu adapter.
    pub fn settle(self, device: Option<usize>) -> Backend {
        match (self, device) {
            (Backend::Auto, Some(_)) => Backend::Wgpu,
            _ => self.resolve(),
        }
    }

    /// The device to train on: `index` (`--device`) picks a wgpu adapter by its place in
    /// [`adapters`]; without it, wgpu and `auto` use [`preferred`].
    pub fn device_at(self, index: Option<usize>) -> Result<Device, DeviceError> {
        match (self, index) {
            (Backend::Flex | Backend::Ndarray, Some(index)) => Err(DeviceError::CpuBackend {
                index,
                backend: format!("{self:?}").to_lowercase(),
            }),
            (Backend::Wgpu | Backend::Auto, Some(index)) => {
                let all = adapters();
                all.get(index)
                    .map(|a| a.device.clone())
                    .ok_or_else(|| DeviceError::NoSuchAdapter {
                        index,
                        available: all
                            .iter()
                            .map(|a| format!("{}: {}", a.index, a.name))
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
            (_, None) => Ok(self.device()),
        }
    }

    /// The device without a `--device` choice.
    pub fn device(self) -> Device {
        match self.resolve() {
            Backend::Wgpu => preferred(adapters(), true).map_or_else(default_wgpu_device, |a| a.device.clone()),
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

    /// What the device is, for logs: the adapter's name and type on wgpu.
    pub fn describe_at(self, index: Option<usize>) -> String {
        match self.resolve() {
            Backend::Wgpu => {
                let all = adapters();
                let chosen = match index {
                    Some(i) => all.get(i),
                    None => preferred(all, true),
                };
                chosen.map_or_else(
                    || "wgpu (default adapter)".into(),
                    |a| format!("wgpu ({}, {}, --device {})", a.name, a.kind, a.index),
                )
            }
            Backend::Ndarray => "ndarray (CPU)".into(),
            Backend::Flex | Backend::Auto => "flex (CPU)".into(),
        }
    }

    pub fn describe(self) -> String {
        self.describe_at(None)
    }
}

#[cfg(feature = "wgpu")]
fn default_wgpu_device() -> Device {
    Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)
}

/// Without the `wgpu` feature the request falls back to the CPU, said in the log.
#[cfg(not(feature = "wgpu"))]
fn default_wgpu_device() -> Device {
    tracing::warn!("this kestrel-train was built without the `wgpu` feature; training on the CPU (flex)");
    Device::flex()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(index: usize, name: &str, kind: &'static str, software: bool) -> Adapter {
        Adapter {
            index,
            name: name.into(),
            kind,
            software,
            device: Device::flex(),
        }
    }

    /// A workstation as wgpu lists it: the software rasteriser first, then the laptop's
    /// integrated GPU, then the discrete one.
    #[test]
    fn the_discrete_gpu_is_preferred_and_software_only_when_allowed() {
        let all = [
            adapter(0, "llvmpipe (LLVM 15.0.6, 256 bits)", "CPU", true),
            adapter(1, "Intel(R) UHD Graphics 620", "integrated GPU", false),
            adapter(2, "NVIDIA GeForce RTX 4070", "discrete GPU", false),
        ];
        assert_eq!(preferred(&all, false).map(|a| a.index), Some(2));
        assert_eq!(preferred(&all[..2], false).map(|a| a.index), Some(1));
        assert_eq!(preferred(&all[..1], false).map(|a| a.index), None);
        assert_eq!(preferred(&all[..1], true).map(|a| a.index), Some(0));
        assert!(preferred(&[], true).is_none());
    }

    #[test]
    fn a_device_needs_a_gpu_backend() {
        assert_eq!(
            Backend::Flex.device_at(Some(0)).err(),
            Some(DeviceError::CpuBackend {
                index: 0,
                backend: "flex".into()
            })
        );
        assert_eq!(Backend::Auto.settle(Some(1)), Backend::Wgpu);
    }
}
