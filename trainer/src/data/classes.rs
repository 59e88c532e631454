//! The one class-folder scanner: `root/<class>/<image>`, as `fit` splits it and `eval` scores
//! it. Dot-folders (`.git`, `.thumbnails`) are not classes; files whose names are not images
//! are not samples; everything is in name order, so a run is reproducible.

use std::path::{Path, PathBuf};

use kestrel_runtime::image_files::is_image_name;

#[derive(Debug, thiserror::Error)]
#[error("cannot read data folder {path}: {source}")]
pub struct ScanError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// One class folder and its image files (sorted; possibly none).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassFolder {
    pub name: String,
    pub dir: PathBuf,
    pub images: Vec<PathBuf>,
}

/// The entries of `path`, sorted by name.
pub fn read_dir_sorted(path: &Path) -> Result<Vec<PathBuf>, ScanError> {
    let err = |source| ScanError {
        path: path.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(path).map_err(err)? {
        entries.push(entry.map_err(err)?.path());
    }
    entries.sort();
    Ok(entries)
}

/// The class folders directly under `root`, in name order.
pub fn class_folders(root: &Path) -> Result<Vec<ClassFolder>, ScanError> {
    let mut classes = Vec::new();
    for dir in read_dir_sorted(root)? {
        // `is_dir` follows symlinks; a dangling or looping link is simply not a class folder.
        if !dir.is_dir() {
            continue;
        }
        let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let images = read_dir_sorted(&dir)?
            .into_iter()
            .filter(|p| is_image_name(p) && !p.is_dir())
            .collect();
        classes.push(ClassFolder { name, dir, images });
    }
    Ok(classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_sorted_folders_of_images_and_dot_folders_are_not_classes() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in [
            "b/2.png",
            "b/1.JPG",
            "b/notes.txt",
            "a/x.webp",
            ".thumbnails/t.jpg",
            "c/sub.jpg/y.png",
        ] {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, b"").expect("touch");
        }
        std::fs::write(dir.path().join("loose.jpg"), b"").expect("touch");
        let found: Vec<(String, Vec<String>)> = class_folders(dir.path())
            .expect("scan")
            .into_iter()
            .map(|c| {
                let names = c
                    .images
                    .iter()
                    .map(|p| p.file_name().expect("name").to_string_lossy().into_owned());
                (c.name, names.collect())
            })
            .collect();
        let expect = |n: &str, f: &[&str]| (n.to_string(), f.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            found,
            [
                expect("a", &["x.webp"]),
                expect("b", &["1.JPG", "2.png"]),
                expect("c", &[])
            ]
        );
    }
}
