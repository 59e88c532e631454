//! `kestrel cameras`: the V4L2 devices, what each offers, and which one `--source camera` takes.

use kestrel_runtime::exit::Status;

#[cfg(feature = "camera")]
pub fn cameras() -> anyhow::Result<Status> {
    use kestrel_runtime::source::discover;
    let list = kestrel_runtime::source::camera::list().map_err(|e| anyhow::anyhow!("listing cameras: {e}"))?;
    if list.is_empty() {
        println!(
            "no V4L2 cameras found. A Raspberry Pi CSI camera is reached through libcamera instead: \
             rpicam-vid -t 0 --codec mjpeg -o - | kestrel run --source mjpeg:-"
        );
    }
    for c in list {
        println!("camera:{}  {}  ({})", c.index, c.name, c.description);
        for f in c.formats {
            println!("    {f}");
        }
    }
    let probes = discover::probe_all();
    for p in &probes {
        match discover::verdict(p) {
            Ok(()) => println!("{}: captures ({} `{}`)", p.path.display(), p.driver, p.card),
            Err(why) => println!("{}: skipped: {why}", p.path.display()),
        }
    }
    match discover::first_capture(&probes) {
        Some(p) => println!("--source camera uses {}", p.path.display()),
        None if !probes.is_empty() => println!("--source camera finds no device that captures"),
        None => {}
    }
    Ok(Status::Success)
}

#[cfg(not(feature = "camera"))]
pub fn cameras() -> anyhow::Result<Status> {
    Err(kestrel_runtime::source::SourceError::NoCameraSupport.into())
}
