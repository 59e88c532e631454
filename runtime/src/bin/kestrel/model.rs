//! Which model a command runs: `--model`, else `$KESTREL_MODEL`, else the config file's `model`,
//! else the bundle built into the binary, so that `kestrel` works from any folder with nothing
//! else installed.

use std::path::PathBuf;

/// The shipped int8 ImageNet bundle, built into the binary: what `kestrel` runs unless told
/// otherwise, from any folder, with nothing else installed.
const BUILTIN_MODEL: &[u8] = include_bytes!("../../../../models/efficientnet-lite0-imagenet.int8.onnx");
pub const BUILTIN_NAME: &str = "efficientnet-lite0-imagenet.int8.onnx";

/// Where the model a command runs came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Origin {
    Flag,
    Env,
    Config,
    BuiltIn,
}

/// `--model`, else `$KESTREL_MODEL`, else the config file's `model` (already relative to the
/// file), else the built-in bundle. The built-in one is unpacked once into the cache folder
/// (`$XDG_CACHE_HOME/kestrel`, `~/.cache/kestrel`, or the temp folder) so that every command, the
/// benchmarks included, reads a file like any other model.
pub fn resolve_model(flag: Option<&PathBuf>, config: Option<&PathBuf>) -> anyhow::Result<(PathBuf, Origin)> {
    if let Some(path) = flag {
        return Ok((path.clone(), Origin::Flag));
    }
    if let Some(path) = std::env::var_os("KESTREL_MODEL").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "KESTREL_MODEL is {}, which is not a file; point it at a model bundle, or unset it to use the \
             built-in model",
            path.display()
        );
        return Ok((path, Origin::Env));
    }
    if let Some(path) = config {
        return Ok((path.clone(), Origin::Config));
    }
    Ok((unpack_builtin()?, Origin::BuiltIn))
}

fn unpack_builtin() -> anyhow::Result<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("kestrel"));
    // A file of another build is never trusted by name: its bytes are compared, and replaced
    // (atomically) when they differ.
    let name = format!("builtin-{}-{BUILTIN_NAME}", kestrel_runtime::VERSION);
    let mut last_error = None;
    for dir in cache.into_iter().chain([std::env::temp_dir()]) {
        let path = dir.join(&name);
        if std::fs::read(&path).is_ok_and(|b| b == BUILTIN_MODEL) {
            return Ok(path);
        }
        match std::fs::create_dir_all(&dir).and_then(|_| kestrel_runtime::atomic::write_atomic(&path, BUILTIN_MODEL)) {
            Ok(()) => return Ok(path),
            Err(e) => last_error = Some(format!("{}: {e}", path.display())),
        }
    }
    anyhow::bail!(
        "cannot unpack the built-in model ({}); pass --model FILE",
        last_error.unwrap_or_default()
    )
}
