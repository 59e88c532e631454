//! Atomic file writes, and the clean-up of what a killed writer leaves behind.
//!
//! Every file Kestrel writes goes to `.NAME.tmp-PID` beside its final name, is flushed, then
//! renamed over `NAME`. A writer that fails removes its temp file. A writer that is *killed*
//! (SIGKILL, OOM killer, power cut) cannot: its temp file stays until someone who owns the folder
//! removes it. [`remove_stale_temps`] is that someone: callers that take over a folder a previous
//! process wrote into (`kestrel-train fit --resume`) run it first.
//!
//! This module imports nothing of Kestrel's: everything that writes files sits above it.

use std::path::{Path, PathBuf};

const TMP_MARK: &str = ".tmp-";

/// The temp name [`write_atomic`] uses for `file_name` in process `pid`.
fn temp_name(file_name: &str, pid: u32) -> String {
    format!(".{file_name}{TMP_MARK}{pid}")
}

/// The PID in a name [`temp_name`] made, or `None` for any other name.
fn temp_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (file_name, pid) = rest.rsplit_once(TMP_MARK)?;
    if file_name.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` may still be writing. Where this cannot be known (no `/proc`), every
/// process counts as alive: a temp file kept is a little disk, one removed under a live writer is
/// a failed write.
fn may_be_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    pid == std::process::id() || proc.join(pid.to_string()).exists()
}

/// Write `bytes` to a temporary file beside `path`, then rename it into place.
/// Callers add the path to the error: they know what the file is.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(temp_name(&file_name, std::process::id()));
    let written = (|| {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        // On the data before the name: after a power cut the final name holds the old file or
        // the new one, never a zero-length one (SD cards on a Pi lose power).
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // A full disk leaves no half-written temp file behind to fill it further.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Best effort: make the rename itself durable.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Remove the temp files in `dir` (not below it) that a writer which no longer runs left behind,
/// and return their paths. Temp files of live processes, and every other file, are kept. A
/// missing `dir` has nothing to clean.
pub fn remove_stale_temps(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_owner) else {
            continue;
        };
        if may_be_alive(pid) || !entry.file_type()?.is_file() {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PID of a process that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("reap");
        pid
    }

    #[test]
    fn temp_names_round_trip_and_nothing_else_parses() {
        assert_eq!(temp_owner(&temp_name("last.ckpt", 4242)), Some(4242));
        assert_eq!(temp_owner(&temp_name("a.tmp-1", 7)), Some(7));
        for other in [
            "last.ckpt",
            ".last.ckpt",
            "last.ckpt.tmp-12",
            ".last.ckpt.tmp-",
            ".last.ckpt.tmp-12x",
            "..tmp-12",
            ".x.tmp-99999999999",
        ] {
            assert_eq!(temp_owner(other), None, "{other}");
        }
    }

    #[test]
    fn a_killed_writers_temp_is_removed_and_live_ones_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dead = dir.path().join(temp_name("last.ckpt", dead_pid()));
        let mine = dir.path().join(temp_name("best.ckpt", std::process::id()));
        let keep = ["last.ckpt", ".hidden", "notes.tmp-3"].map(|n| dir.path().join(n));
        for p in keep.iter().chain([&dead, &mine]) {
            std::fs::write(p, b"x").expect("write");
        }
        let removed = remove_stale_temps(dir.path()).expect("clean");
        assert_eq!(removed, vec![dead.clone()]);
        assert!(!dead.exists());
        for p in keep.iter().chain([&mine]) {
            assert!(p.exists(), "{} was removed", p.display());
        }
        assert_eq!(
            remove_stale_temps(&dir.path().join("missing")).expect("missing dir"),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("model.onnx");
        write_atomic(&path, b"old").expect("write");
        // A directory where the final name is makes the rename fail after the data is written.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(blocked.join("inside")).expect("mkdir");
        assert!(write_atomic(&blocked, b"new").is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| temp_owner(n).is_none()), "{names:?}");
    }
}
