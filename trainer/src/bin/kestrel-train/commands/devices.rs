//! `kestrel-train devices`: where training can run, numbered as `fit --device` takes them.

use kestrel_runtime::exit::Status;
use kestrel_trainer::backend::{self, Backend};

pub fn run() -> anyhow::Result<Status> {
    println!("CPU backends:  flex (--backend flex), ndarray (--backend ndarray)");
    let adapters = backend::adapters();
    if adapters.is_empty() {
        println!("GPU adapters:  none (wgpu found no Vulkan, Metal or DX12 adapter); `auto` trains on flex");
        return Ok(Status::Success);
    }
    println!("GPU adapters (wgpu; `fit --device N`):");
    for (a, d) in adapters.iter().zip(backend::details(adapters)) {
        let note = if a.software {
            " · software rasteriser: correct, slower than flex"
        } else {
            ""
        };
        let memory = d
            .memory
            .map_or_else(|| "memory not stated".to_string(), |m| m.to_string());
        println!("  {}  {}  ({}){note}", a.index, a.name, a.kind);
        println!(
            "     {} · {memory}{}",
            d.api,
            d.driver.as_ref().map_or_else(String::new, |d| format!(" · driver {d}"))
        );
    }
    match backend::preferred(adapters, false) {
        Some(a) => println!("--backend auto trains on {} ({})", a.index, a.name),
        None => println!(
            "--backend auto trains on flex: no hardware GPU (--backend wgpu without --device uses {})",
            Backend::Wgpu.describe()
        ),
    }
    Ok(Status::Success)
}
