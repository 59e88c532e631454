//! A labelled image folder: `root/<class>/*.jpg` (split here, stratified, seeded) or
//! `root/{train,val[,test]}/<class>/*`. Checked before any training starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// File extensions read as images (lower-case).
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp"];

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read data folder {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} has no class folders; expected {path}/<class>/<image> or {path}/train/<class>/<image>")]
    NoClasses { path: PathBuf },
    #[error("{path} has only one class (`{class}`); a classifier needs at least two")]
    OneClass { path: PathBuf, class: String },
    #[error("class folder {path} holds no images ({})", IMAGE_EXTENSIONS.join(", "))]
    EmptyClass { path: PathBuf },
    #[error("class `{class}` has {found} images in {path}; at least {needed} are needed to train and validate")]
    TooFew {
        class: String,
        path: PathBuf,
        found: usize,
        needed: usize,
    },
    #[error("{split} split {path} has classes {found:?}, but train has {expected:?}")]
    SplitClasses {
        split: &'static str,
        path: PathBuf,
        expected: Vec<String>,
        found: Vec<String>,
    },
}

/// One labelled image file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    pub path: PathBuf,
    pub label: usize,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub classes: Vec<String>,
    pub train: Vec<Sample>,
    pub val: Vec<Sample>,
    pub test: Vec<Sample>,
    /// True when the folder came pre-split into train/val.
    pub presplit: bool,
}

/// Options for [`Dataset::scan`].
#[derive(Debug, Clone)]
pub struct SplitOptions {
    /// Share of each class held out for validation when the folder is not pre-split.
    pub val_fraction: f64,
    pub seed: u64,
    /// K-fold cross-validation: `(k, i)` validates on fold `i` of `k` (stratified) instead of
    /// `val_fraction`; the folds partition every class.
    pub fold: Option<(usize, usize)>,
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions {
            fold: None,
            val_fraction: 0.1,
            seed: 42,
        }
    }
}

/// Whether `path` has an image file extension (case-insensitive).
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn read_dir_sorted(path: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let err = |source| DatasetError::Read {
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

/// Class name → image files (sorted), for the class folders directly under `root`.
fn scan_classes(root: &Path) -> Result<BTreeMap<String, Vec<PathBuf>>, DatasetError> {
    let mut classes = BTreeMap::new();
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
        let files: Vec<PathBuf> = read_dir_sorted(&dir)?
            .into_iter()
            .filter(|p| is_image(p) && !p.is_dir())
            .collect();
        if files.is_empty() {
            return Err(DatasetError::EmptyClass { path: dir });
        }
        classes.insert(name, files);
    }
    Ok(classes)
}

/// SplitMix64: a tiny, well-mixed PRNG so splits are reproducible without a dependency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_f64() * n as f64) as usize % n.max(1)
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

impl Dataset {
    /// Scan `root` and split it (see the module docs). Fails on layouts no training can use.
    pub fn scan(root: &Path, options: &SplitOptions) -> Result<Self, DatasetError> {
        let train_dir = root.join("train");
        let val_dir = ["val", "valid", "validation"]
            .iter()
            .map(|d| root.join(d))
            .find(|d| d.is_dir());
        if let (true, Some(val_dir)) = (train_dir.is_dir(), val_dir) {
            return Self::presplit(root, &train_dir, &val_dir);
        }
        let classes = scan_classes(root)?;
        check_class_count(root, &classes)?;
        let mut rng = SplitMix64(options.seed);
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (label, (name, mut files)) in classes.iter().map(|(n, f)| (n, f.clone())).enumerate() {
            if files.len() < 2 {
                return Err(DatasetError::TooFew {
                    class: name.clone(),
                    path: root.join(name),
                    found: files.len(),
                    needed: 2,
                });
            }
            rng.shuffle(&mut files);
            // At least one image of every class on each side of the split.
            let n_val = ((files.len() as f64 * options.val_fraction).round() as usize).clamp(1, files.len() - 1);
            let is_val = |i: usize| match options.fold {
                Some((k, fold)) => i % k == fold,
                None => i < n_val,
            };
            if let Some((k, _)) = options.fold
                && files.len() < k
            {
                return Err(DatasetError::TooFew {
                    class: name.clone(),
                    path: root.join(name),
                    found: files.len(),
                    needed: k,
                });
            }
            for (i, path) in files.into_iter().enumerate() {
                let sample = Sample { path, label };
                if is_val(i) {
                    val.push(sample)
                } else {
                    train.push(sample)
                }
            }
        }
        Ok(Dataset {
            root: root.to_path_buf(),
            classes: classes.into_keys().collect(),
            train,
            val,
            test: Vec::new(),
            presplit: false,
        })
    }

    fn presplit(root: &Path, train_dir: &Path, val_dir: &Path) -> Result<Self, DatasetError> {
        let train = scan_classes(train_dir)?;
        check_class_count(train_dir, &train)?;
        let classes: Vec<String> = train.keys().cloned().collect();
        let samples = |map: BTreeMap<String, Vec<PathBuf>>| -> Vec<Sample> {
            map.into_iter()
                .flat_map(|(name, files)| {
                    let label = classes.iter().position(|c| *c == name).unwrap_or(usize::MAX);
                    files.into_iter().map(move |path| Sample { path, label })
                })
                .collect()
        };
        let check_split = |split: &'static str, dir: &Path, map: &BTreeMap<String, Vec<PathBuf>>| {
            let found: Vec<String> = map.keys().cloned().collect();
            if found.iter().any(|c| !classes.contains(c)) {
                return Err(DatasetError::SplitClasses {
                    split,
                    path: dir.to_path_buf(),
                    expected: classes.clone(),
                    found,
                });
            }
            Ok(())
        };
        let val = scan_classes(val_dir)?;
        check_split("val", val_dir, &val)?;
        let test_dir = root.join("test");
        let test = if test_dir.is_dir() {
            scan_classes(&test_dir)?
        } else {
            BTreeMap::new()
        };
        check_split("test", &test_dir, &test)?;
        Ok(Dataset {
            root: root.to_path_buf(),
            train: samples(train),
            val: samples(val),
            test: samples(test),
            classes: classes.clone(),
            presplit: true,
        })
    }

    /// Images per class in the training split.
    pub fn train_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for s in &self.train {
            counts[s.label] += 1;
        }
        counts
    }
}

fn check_class_count(root: &Path, classes: &BTreeMap<String, Vec<PathBuf>>) -> Result<(), DatasetError> {
    match classes.len() {
        0 => Err(DatasetError::NoClasses {
            path: root.to_path_buf(),
        }),
        1 => Err(DatasetError::OneClass {
            path: root.to_path_buf(),
            class: classes.keys().next().cloned().unwrap_or_default(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, b"x").expect("write");
    }

    #[test]
    fn split_is_stratified_seeded_and_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        for class in ["cat", "dog"] {
            for i in 0..20 {
                touch(&dir.path().join(class).join(format!("{i}.JPG")));
            }
        }
        touch(&dir.path().join("cat/notes.txt"));
        let a = Dataset::scan(dir.path(), &SplitOptions::default()).expect("scan");
        let b = Dataset::scan(dir.path(), &SplitOptions::default()).expect("scan");
        assert_eq!(a.classes, ["cat", "dog"]);
        assert_eq!(
            a.train.len() + a.val.len(),
            40,
            "every image is used once; .txt is not an image"
        );
        assert_eq!(a.val.iter().filter(|s| s.label == 0).count(), 2);
        assert_eq!(a.val.iter().filter(|s| s.label == 1).count(), 2);
        assert_eq!(a.val, b.val, "same seed, same split");
        let c = Dataset::scan(
            dir.path(),
            &SplitOptions {
                seed: 7,
                ..Default::default()
            },
        )
        .expect("scan");
        assert_ne!(a.val, c.val, "another seed, another split");
    }

    #[test]
    fn folds_partition_every_class() {
        let dir = tempfile::tempdir().expect("tempdir");
        for class in ["a", "b"] {
            for i in 0..7 {
                touch(&dir.path().join(class).join(format!("{i}.png")));
            }
        }
        let mut seen = Vec::new();
        for fold in 0..3 {
            let options = SplitOptions {
                fold: Some((3, fold)),
                ..SplitOptions::default()
            };
            let d = Dataset::scan(dir.path(), &options).expect("scan");
            assert_eq!(d.train.len() + d.val.len(), 14);
            assert!(d.val.iter().any(|s| s.label == 0) && d.val.iter().any(|s| s.label == 1));
            seen.extend(d.val);
        }
        seen.sort_by(|a, b| a.path.cmp(&b.path));
        seen.dedup();
        assert_eq!(seen.len(), 14, "every image is validated exactly once across folds");
    }

    #[test]
    fn presplit_folders_are_used_as_given() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (split, n) in [("train", 3), ("val", 1)] {
            for class in ["a b", "ünï"] {
                for i in 0..n {
                    touch(&dir.path().join(split).join(class).join(format!("{i}.png")));
                }
            }
        }
        let d = Dataset::scan(dir.path(), &SplitOptions::default()).expect("scan");
        assert!(d.presplit);
        assert_eq!((d.train.len(), d.val.len(), d.test.len()), (6, 2, 0));
        assert_eq!(d.classes, ["a b", "ünï"]);
    }

    #[test]
    fn unusable_layouts_are_refused_before_training() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Dataset::scan(dir.path(), &SplitOptions::default()).expect_err("empty");
        assert!(matches!(err, DatasetError::NoClasses { .. }), "{err}");
        touch(&dir.path().join("only/1.jpg"));
        touch(&dir.path().join("only/2.jpg"));
        let err = Dataset::scan(dir.path(), &SplitOptions::default()).expect_err("one class");
        assert!(err.to_string().contains("only one class (`only`)"), "{err}");
        touch(&dir.path().join("lonely/1.jpg"));
        let err = Dataset::scan(dir.path(), &SplitOptions::default()).expect_err("too few");
        assert!(err.to_string().contains("class `lonely` has 1 images"), "{err}");
        std::fs::create_dir_all(dir.path().join("empty")).expect("mkdir");
        let err = Dataset::scan(dir.path(), &SplitOptions::default()).expect_err("empty class");
        assert!(matches!(err, DatasetError::EmptyClass { .. }), "{err}");
    }
}
