//! `kestrel cameras`: the V4L2 devices, what each offers, and which one `--source camera` takes.

use kestrel_runtime::exit::Status;

#[cfg(feature = "camera")]
pub fn cameras() -> anyhow::Result<Status> {
    use kestrel_runtime::source::discover;
    use std::io::Write;
    // Lines are written, not println!'d: `kestrel cameras | head` closing the pipe ends the
    // command quietly instead of panicking.
    let mut out = std::io::stdout().lock();
    macro_rules! say {
        ($($t:tt)*) => { if writeln!(out, $($t)*).is_err() { return Ok(Status::Success); } };
    }
    let list = kestrel_runtime::source::camera::list().map_err(|e| anyhow::anyhow!("listing cameras: {e}"))?;
    if list.is_empty() {
        say!(
            "no V4L2 cameras found. A Raspberry Pi CSI camera is reached through libcamera instead: \
             rpicam-vid -t 0 --codec mjpeg -o - | kestrel run --source mjpeg:-"
        );
    }
    for c in list {
        say!("camera:{}  {}  ({})", c.index, c.name, c.description);
        for f in c.formats {
            say!("    {f}");
        }
    }
    let probes = discover::probe_all();
    for p in &probes {
        match discover::verdict(p) {
            Ok(()) => say!("{}: captures ({} `{}`)", p.path.display(), p.driver, p.card),
            Err(why) => say!("{}: skipped: {why}", p.path.display()),
        }
    }
    match discover::first_capture(&probes) {
        Some(p) => say!("--source camera uses {}", p.path.display()),
        None if !probes.is_empty() => say!("--source camera finds no device that captures"),
        None => {}
    }
    Ok(Status::Success)
}

#[cfg(not(feature = "camera"))]
pub fn cameras() -> anyhow::Result<Status> {
    Err(kestrel_runtime::source::SourceError::NoCameraSupport.into())
}
