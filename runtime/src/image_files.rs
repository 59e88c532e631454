//! The one list of image file extensions: what a folder source plays, what the trainer reads as
//! training, calibration and evaluation images. It imports nothing of the crate's.

use std::path::Path;

/// Extensions read as images (lower-case; matched case-insensitively). Every one decodes with
/// the `image` crate features the runtime is built with.
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp"];

/// Whether `path` has an image extension (case-insensitive). Says nothing of the contents.
pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The list as users read it in messages: `.jpg, .jpeg, …`.
pub fn listed() -> String {
    IMAGE_EXTENSIONS.map(|e| format!(".{e}")).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_match_in_any_case_and_nothing_else() {
        for name in ["a.jpg", "b.JPEG", "c.Png", "d.webp", "e.TIF", "f.gif"] {
            assert!(is_image_name(Path::new(name)), "{name}");
        }
        for name in ["a.txt", "jpg", "a.jpg.part", "a."] {
            assert!(!is_image_name(Path::new(name)), "{name}");
        }
        assert!(listed().starts_with(".jpg, .jpeg, .png"));
    }
}
