//! ImageNet-1k class names in the order of the classifier's outputs, read from timm's synset
//! files (fetched by `scripts/fetch-assets.sh`). The first lemma of each synset is the name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: synset {synset} has no name in the lemma file")]
    Unnamed { path: PathBuf, synset: String },
    #[error("{path} lists {found} synsets, ImageNet-1k has 1000")]
    Count { path: PathBuf, found: usize },
}

fn read(path: &Path) -> Result<String, LabelsError> {
    std::fs::read_to_string(path).map_err(|source| LabelsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// 1000 unique class names. Names that repeat across synsets (ImageNet has two "crane"s and
/// two "maillot"s) get their synset id appended, since the bundle contract wants unique labels.
pub fn labels(synsets: &Path, lemmas: &Path) -> Result<Vec<String>, LabelsError> {
    let lemma_text = read(lemmas)?;
    let names: HashMap<&str, &str> = lemma_text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(id, lemma)| (id.trim(), lemma.split(',').next().unwrap_or(lemma).trim()))
        .collect();
    let synset_text = read(synsets)?;
    let ids: Vec<&str> = synset_text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if ids.len() != 1000 {
        return Err(LabelsError::Count {
            path: synsets.to_path_buf(),
            found: ids.len(),
        });
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in &ids {
        let name = names.get(id).ok_or_else(|| LabelsError::Unnamed {
            path: lemmas.to_path_buf(),
            synset: id.to_string(),
        })?;
        out.push(name.to_string());
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for name in &out {
        *counts.entry(name.clone()).or_default() += 1;
    }
    for (name, id) in out.iter_mut().zip(&ids) {
        if counts[name.as_str()] > 1 {
            *name = format!("{name} ({id})");
        }
    }
    Ok(out)
}
