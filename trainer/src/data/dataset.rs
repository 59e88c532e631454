//! A labelled image folder: `root/<class>/*.jpg` (split here, stratified, seeded) or
//! `root/{train,val[,test]}/<class>/*`. Checked before any training starts.
//!
//! Near-duplicates (frames of one video, bursts of one scene) must not straddle the split, or
//! validation measures memory rather than generalisation. Files whose names share a group key
//! ([`SplitOptions::group_by`], a regex on the file name: its first capture group, or the whole
//! match) always land on the same side; by default, frames saved by `kestrel run
//! --save-uncertain` (`frame-<run>-<index>.jpg`) are grouped by the run that saved them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Serialize;

/// Group key of the frames `kestrel run --save-uncertain` saves (`frame-<run>-<index>.jpg`): the
/// run. Used when no `--group-by` is given.
pub const SAVED_FRAMES_GROUP: &str = r"^frame-(\d+)-\d+\.";

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(transparent)]
    Scan(#[from] super::classes::ScanError),
    #[error("{path} has no class folders; expected {path}/<class>/<image> or {path}/train/<class>/<image>")]
    NoClasses { path: PathBuf },
    #[error("{path} has only one class (`{class}`); a classifier needs at least two")]
    OneClass { path: PathBuf, class: String },
    #[error("class folder {path} holds no images ({})", kestrel_runtime::image_files::listed())]
    EmptyClass { path: PathBuf },
    #[error("class `{class}` has {found} images in {path}; at least {needed} are needed to train and validate")]
    TooFew {
        class: String,
        path: PathBuf,
        found: usize,
        needed: usize,
    },
    #[error(
        "{path} is already split into train/ and val/, so --folds would run {folds} identical trainings; \
         remove --folds, or move the images into {path}/<class>/ to cross-validate"
    )]
    FoldsOnPresplit { path: PathBuf, folds: usize },
    #[error(
        "class `{class}` in {path}: all {images} images fall in one group of --group-by `{pattern}`, so it \
         cannot be on both sides of the split; use a pattern that separates them, or pre-split the folder"
    )]
    OneGroup {
        class: String,
        path: PathBuf,
        images: usize,
        pattern: String,
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
    /// The group pattern of the split (none for a pre-split folder), and how many groups (of
    /// more than one image) it kept together.
    pub grouping: Option<Grouping>,
}

/// How a split kept near-duplicates together, for the run's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grouping {
    pub pattern: String,
    /// Groups of two or more images.
    pub groups: usize,
    /// Images in those groups.
    pub grouped_images: usize,
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
    /// Files whose names give the same key stay on one side (module docs); `None` groups
    /// saved frames by run ([`SAVED_FRAMES_GROUP`]).
    pub group_by: Option<Regex>,
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions {
            fold: None,
            val_fraction: 0.1,
            seed: 42,
            group_by: None,
        }
    }
}

/// The group key of `path` under `pattern`: the first capture group, or the whole match; a file
/// that does not match is a group of its own.
fn group_key(pattern: &Regex, path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy();
    let captures = pattern.captures(&name)?;
    Some(captures.get(1).or_else(|| captures.get(0))?.as_str().to_string())
}

/// Class name → image files (sorted), for the class folders directly under `root`; a class
/// folder without images is an error here, where training would silently lose the class.
fn scan_classes(root: &Path) -> Result<BTreeMap<String, Vec<PathBuf>>, DatasetError> {
    let mut classes = BTreeMap::new();
    for class in super::classes::class_folders(root)? {
        if class.images.is_empty() {
            return Err(DatasetError::EmptyClass { path: class.dir });
        }
        classes.insert(class.name, class.images);
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
            if let Some((folds, _)) = options.fold {
                return Err(DatasetError::FoldsOnPresplit {
                    path: root.to_path_buf(),
                    folds,
                });
            }
            return Self::presplit(root, &train_dir, &val_dir);
        }
        let default_pattern;
        let pattern = match &options.group_by {
            Some(p) => p,
            None => {
                default_pattern = Regex::new(SAVED_FRAMES_GROUP).expect("a valid constant pattern");
                &default_pattern
            }
        };
        let mut grouping = Grouping {
            pattern: pattern.as_str().to_string(),
            groups: 0,
            grouped_images: 0,
        };
        let classes = scan_classes(root)?;
        check_class_count(root, &classes)?;
        let mut rng = SplitMix64(options.seed);
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (label, (name, files)) in classes.iter().map(|(n, f)| (n, f.clone())).enumerate() {
            if files.len() < 2 {
                return Err(DatasetError::TooFew {
                    class: name.clone(),
                    path: root.join(name),
                    found: files.len(),
                    needed: 2,
                });
            }
            // Groups in file order (deterministic), then shuffled as units: a group is one
            // draw, so its images land together.
            let mut groups: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
            for path in files {
                let key = group_key(pattern, &path).unwrap_or_else(|| format!("\0{}", path.display()));
                groups.entry(key).or_default().push(path);
            }
            let mut groups: Vec<Vec<PathBuf>> = groups.into_values().collect();
            let images: usize = groups.iter().map(Vec::len).sum();
            for g in groups.iter().filter(|g| g.len() > 1) {
                grouping.groups += 1;
                grouping.grouped_images += g.len();
            }
            if groups.len() < 2 {
                return Err(DatasetError::OneGroup {
                    class: name.clone(),
                    path: root.join(name),
                    images,
                    pattern: pattern.as_str().to_string(),
                });
            }
            if let Some((k, _)) = options.fold
                && groups.len() < k
            {
                return Err(DatasetError::TooFew {
                    class: name.clone(),
                    path: root.join(name),
                    found: groups.len(),
                    needed: k,
                });
            }
            rng.shuffle(&mut groups);
            // Whole groups to validation until it holds its share of images, keeping at least
            // one group of every class on each side of the split.
            let target = ((images as f64 * options.val_fraction).round() as usize).clamp(1, images - 1);
            let mut in_val = 0;
            for (i, group) in groups.into_iter().enumerate() {
                let is_val = match options.fold {
                    Some((k, fold)) => i % k == fold,
                    // Never all of them: every group but the first only if it fits below the
                    // target, which is below the class's image count.
                    None => i == 0 || in_val + group.len() <= target,
                };
                if is_val {
                    in_val += group.len();
                }
                for path in group {
                    let sample = Sample { path, label };
                    if is_val { val.push(sample) } else { train.push(sample) }
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
            grouping: Some(grouping),
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
            grouping: None,
        })
    }

    /// One sentence on how train and validation were split, for the run's report and card.
    pub fn split_summary(&self) -> String {
        match &self.grouping {
            None => format!(
                "as given: {}/train and {}/val{}",
                self.root.display(),
                self.root.display(),
                if self.test.is_empty() { "" } else { " (and test)" }
            ),
            Some(g) if g.groups == 0 => format!(
                "split here, stratified and seeded; no two file names share a key of `{}`, so every image was \
                 placed on its own",
                g.pattern
            ),
            Some(g) => format!(
                "split here, stratified and seeded; {} groups of near-duplicates ({} images, key `{}`) each kept \
                 on one side",
                g.groups, g.grouped_images, g.pattern
            ),
        }
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

    /// Which side of the split each file went to, by file name.
    fn sides(d: &Dataset) -> BTreeMap<String, bool> {
        let name = |s: &Sample| s.path.file_name().expect("name").to_string_lossy().into_owned();
        d.train
            .iter()
            .map(|s| (name(s), false))
            .chain(d.val.iter().map(|s| (name(s), true)))
            .collect()
    }

    /// Every group's files on one side, whatever the seed; and both sides hold every class.
    fn assert_groups_whole(d: &Dataset, key: impl Fn(&str) -> String) {
        let mut side_of: BTreeMap<String, bool> = BTreeMap::new();
        for (file, in_val) in sides(d) {
            let k = key(&file);
            if let Some(&side) = side_of.get(&k) {
                assert_eq!(side, in_val, "group {k} straddles the split ({file})");
            }
            side_of.insert(k, in_val);
        }
        for label in 0..d.classes.len() {
            assert!(d.train.iter().any(|s| s.label == label) && d.val.iter().any(|s| s.label == label));
        }
    }

    #[test]
    fn near_duplicates_stay_on_one_side_of_the_split() {
        let dir = tempfile::tempdir().expect("tempdir");
        for class in ["cat", "dog"] {
            for scene in 0..6 {
                for shot in 0..5 {
                    touch(&dir.path().join(class).join(format!("{class}{scene}_{shot:03}.jpg")));
                }
            }
        }
        let scenes = Regex::new(r"^(.+)_\d+\.jpg$").expect("regex");
        for seed in 0..20 {
            let options = SplitOptions {
                val_fraction: 0.3,
                seed,
                group_by: Some(scenes.clone()),
                ..SplitOptions::default()
            };
            let d = Dataset::scan(dir.path(), &options).expect("scan");
            assert_groups_whole(&d, |f| f.split('_').next().expect("scene").to_string());
            assert_eq!(d.val.len() % 5, 0, "whole scenes only");
            let g = d.grouping.as_ref().expect("grouping recorded");
            assert_eq!((g.groups, g.grouped_images), (12, 60));
            assert!(d.split_summary().contains("12 groups"), "{}", d.split_summary());
            // Folds partition whole groups too.
            for fold in 0..3 {
                let options = SplitOptions {
                    fold: Some((3, fold)),
                    ..options.clone()
                };
                let d = Dataset::scan(dir.path(), &options).expect("fold");
                assert_groups_whole(&d, |f| f.split('_').next().expect("scene").to_string());
            }
        }
    }

    #[test]
    fn saved_frames_group_by_the_run_that_saved_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        for class in ["cat", "dog"] {
            for run in [1_764_470_000_000u64, 1_764_480_000_000, 1_764_490_000_000] {
                for i in 0..4 {
                    touch(&dir.path().join(class).join(format!("frame-{run}-{i:08}.jpg")));
                }
            }
            for i in 0..3 {
                touch(&dir.path().join(class).join(format!("photo{i}.jpg")));
            }
        }
        for seed in 0..20 {
            let options = SplitOptions {
                val_fraction: 0.3,
                seed,
                ..SplitOptions::default()
            };
            let d = Dataset::scan(dir.path(), &options).expect("scan");
            let run_of = |f: &str| match f.strip_prefix("frame-") {
                Some(rest) => rest.split('-').next().expect("run").to_string(),
                None => f.to_string(),
            };
            assert_groups_whole(&d, run_of);
        }
    }

    #[test]
    fn a_class_in_one_group_and_folds_on_a_presplit_folder_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        for class in ["cat", "dog"] {
            for i in 0..4 {
                touch(&dir.path().join(class).join(format!("clip_{i}.jpg")));
            }
        }
        let options = SplitOptions {
            group_by: Some(Regex::new(r"^clip").expect("regex")),
            ..SplitOptions::default()
        };
        let err = Dataset::scan(dir.path(), &options).expect_err("one group").to_string();
        assert!(
            err.contains("one group") && err.contains("cat") && err.contains("^clip"),
            "{err}"
        );

        let split = tempfile::tempdir().expect("tempdir");
        for part in ["train", "val"] {
            for class in ["cat", "dog"] {
                touch(&split.path().join(part).join(class).join("a.jpg"));
            }
        }
        let options = SplitOptions {
            fold: Some((5, 0)),
            ..SplitOptions::default()
        };
        let err = Dataset::scan(split.path(), &options)
            .expect_err("folds on pre-split")
            .to_string();
        assert!(
            err.contains("5 identical trainings") && err.contains(&split.path().display().to_string()),
            "{err}"
        );
    }
}
