//! What `kestrel-train devices` says about an adapter beyond Burn's name and type: the graphics
//! API it is reached through, its driver, and its memory. Burn's wgpu runtime (cubecl) knows the
//! API but keeps it private, and states memory only when built for SPIR-V or Metal, not for the
//! WGSL path Burn's `wgpu` feature uses; wgpu itself states no memory without `unsafe` calls into
//! the driver. So the API comes from wgpu's own adapter list, and memory from what the operating
//! system says about the card (Linux: amdgpu's sysfs files, `nvidia-smi`), else the machine's
//! memory for an adapter that computes in it.

use burn::tensor::Device;
use burn_dispatch::devices::wgpu::AutoGraphicsApi;
use burn_dispatch::devices::wgpu::wgpu::{self, AdapterInfo, DeviceType};

use super::{Adapter, AdapterDetails, Memory};

/// The details of `adapters` (Burn's list, [`super::adapters`]).
pub(super) fn details(adapters: &[Adapter]) -> Vec<AdapterDetails> {
    let (api, infos) = settled();
    // One `nvidia-smi` for every NVIDIA card, asked only if there is one.
    let nvidia = std::cell::OnceCell::new();
    adapters
        .iter()
        .map(|a| {
            // Burn lists the settled API's adapters in wgpu's order; the name guards the pairing.
            let info = infos.get(a.index).filter(|i| i.name == a.name);
            AdapterDetails {
                api,
                driver: info
                    .map(|i| format!("{} {}", i.driver, i.driver_info).trim().to_string())
                    .filter(|d| !d.is_empty()),
                memory: stated_memory(&a.device).or_else(|| info.and_then(|i| memory(i, &nvidia))),
            }
        })
        .collect()
}

/// The graphics API Burn's wgpu devices come up on, and that API's adapters in wgpu's order.
/// cubecl decides this privately; this is its rule (cubecl-wgpu 0.11.3, `runtime::settle`),
/// asked of wgpu the same way: the first API of `AutoGraphicsApi::chain()` with a hardware
/// adapter, else the first with any.
fn settled() -> (&'static str, Vec<AdapterInfo>) {
    let mut software_only = None;
    for api in AutoGraphicsApi::chain() {
        let infos = probe(api);
        if infos.iter().any(|i| i.device_type != DeviceType::Cpu) {
            return (name(api), infos);
        }
        if software_only.is_none() && !infos.is_empty() {
            software_only = Some((name(api), infos));
        }
    }
    software_only.unwrap_or(("none", Vec::new()))
}

/// For `kestrel-train devices`, on its one thread: cubecl serialises instance creation because
/// the Vulkan loader crashes when instances come and go on several threads at once, so this
/// must never run beside training.
fn probe(api: wgpu::Backend) -> Vec<AdapterInfo> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: api.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    block_on(instance.enumerate_adapters(api.into()))
        .iter()
        .map(wgpu::Adapter::get_info)
        .collect()
}

fn name(api: wgpu::Backend) -> &'static str {
    match api {
        wgpu::Backend::Vulkan => "Vulkan",
        wgpu::Backend::Metal => "Metal",
        wgpu::Backend::Dx12 => "DX12",
        wgpu::Backend::Gl => "OpenGL",
        wgpu::Backend::BrowserWebGpu => "WebGPU",
        wgpu::Backend::Noop => "none",
    }
}

/// Native adapter enumeration completes at once; the loop only covers a backend that yields
/// before answering.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

/// The memory cubecl states for the device (SPIR-V and Metal builds only).
fn stated_memory(device: &Device) -> Option<Memory> {
    use burn_dispatch::DispatchDevice;
    match device.as_dispatch() {
        DispatchDevice::Cube(cube) => cube.client().properties().memory.max_memory().map(Memory::Dedicated),
        _ => None,
    }
}

/// The card's memory as the operating system states it, or the machine's for an adapter that
/// computes in it.
fn memory(info: &AdapterInfo, nvidia_smi: &std::cell::OnceCell<Option<String>>) -> Option<Memory> {
    match info.device_type {
        DeviceType::Cpu | DeviceType::IntegratedGpu => system_memory().map(Memory::System),
        _ => card_memory(info, nvidia_smi).map(Memory::Dedicated),
    }
}

const AMD: u32 = 0x1002;
const NVIDIA: u32 = 0x10de;

fn card_memory(info: &AdapterInfo, nvidia_smi: &std::cell::OnceCell<Option<String>>) -> Option<u64> {
    let bus = info.device_pci_bus_id.to_ascii_lowercase();
    if bus.is_empty() {
        return None;
    }
    match info.vendor {
        AMD => std::fs::read_to_string(format!("/sys/bus/pci/devices/{bus}/mem_info_vram_total"))
            .ok()?
            .trim()
            .parse()
            .ok(),
        // Absent where the proprietary driver is not installed: then there is nothing to say.
        NVIDIA => {
            let csv = nvidia_smi.get_or_init(|| {
                std::process::Command::new("nvidia-smi")
                    .args(["--query-gpu=pci.bus_id,memory.total", "--format=csv,noheader,nounits"])
                    .stderr(std::process::Stdio::null())
                    .output()
                    .ok()
                    .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            });
            nvidia_memory(csv.as_deref()?, &bus)
        }
        _ => None,
    }
}

/// `nvidia-smi`'s line for the card at `bus` (wgpu writes `0000:01:00.0`, nvidia-smi
/// `00000000:01:00.0`), in bytes (it reports MiB).
fn nvidia_memory(csv: &str, bus: &str) -> Option<u64> {
    let tail = |b: &str| {
        b.rsplit_once(':').map(|(domain_bus, rest)| {
            let bus = domain_bus.rsplit(':').next().unwrap_or(domain_bus);
            format!("{}:{rest}", bus.to_ascii_lowercase())
        })
    };
    let want = tail(bus)?;
    csv.lines().find_map(|line| {
        let (id, mib) = line.split_once(',')?;
        (tail(id.trim())? == want).then(|| mib.trim().parse::<u64>().ok().map(|m| m << 20))?
    })
}

/// `MemTotal` from /proc/meminfo (Linux).
fn system_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib << 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_lines_are_matched_by_bus_address() {
        let csv = "00000000:17:00.0, 81559\n00000000:65:00.0, 143771\n";
        assert_eq!(nvidia_memory(csv, "0000:65:00.0"), Some(143_771 << 20));
        assert_eq!(nvidia_memory(csv, "0000:17:00.0"), Some(81_559 << 20));
        assert_eq!(nvidia_memory(csv, "0000:18:00.0"), None);
        assert_eq!(nvidia_memory("", "0000:17:00.0"), None);
    }
}
