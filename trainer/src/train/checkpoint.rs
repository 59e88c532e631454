//! Training checkpoints: one file holding the run state (JSON), the model and the optimiser
//! (Burn's burnpack format), written atomically (temp file + rename) so a killed run never
//! leaves a half-written checkpoint under the final name.
//!
//! Layout (v2): magic, three length-prefixed (u64 LE) sections (state JSON, model, optimiser),
//! then the CRC-32 (LE) of every byte before it. The lengths alone catch a truncated file; the
//! checksum catches a flipped bit anywhere, a weight included, which would otherwise load as a
//! silently different model. v1 files (no checksum) still load.

use std::path::{Path, PathBuf};

use burn::optim::ModuleOptimizer;
use burn::tensor::Bytes;
use burn_store::{BurnpackStore, ModuleSnapshot};
use serde::{Deserialize, Serialize};

use crate::model::{Backbone, Network};

const MAGIC: &[u8; 16] = b"KESTREL-CKPT-v2\n";
/// Checkpoints written before the checksum: same sections, nothing after them.
const MAGIC_V1: &[u8; 16] = b"KESTREL-CKPT-v1\n";

/// Which phase of transfer learning a checkpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Head only, on cached features of the frozen backbone.
    Head,
    /// Backbone (partly) unfrozen.
    Finetune,
}

impl Phase {
    /// As metrics.csv and progress lines write it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Head => "head",
            Phase::Finetune => "finetune",
        }
    }
}

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub phase: Phase,
    /// 1-based within the phase.
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_top1: f64,
    pub val_topk: f64,
    pub images_per_second: f64,
}

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The backbone's name (`lite0`, …); checkpoints written before there was a choice are
    /// Lite0's.
    #[serde(default = "lite0")]
    pub backbone: String,
    pub phase: Phase,
    /// Epochs completed in `phase`.
    pub epochs_done: usize,
    /// Best monitored value so far in this phase (already oriented: lower is better).
    pub best: Option<f64>,
    pub epochs_without_improvement: usize,
    /// Reduce-on-plateau multiplier of the phase's learning rate.
    pub lr_scale: f64,
    /// True once early stopping ended `phase`.
    pub stopped_early: bool,
    pub history: Vec<EpochRow>,
}

fn lite0() -> String {
    "lite0".into()
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "checkpoint {path} holds a {found} model but this run trains {expected}; set backbone = \"{found}\" \
         (--backbone {found}) to resume it, or choose another --out"
    )]
    Backbone {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {path} is corrupt ({what}); delete it to start over, or resume from another")]
    Corrupt { path: PathBuf, what: String },
    #[error("cannot write checkpoint {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serialise {what} for checkpoint {path}: {message}")]
    Serialise {
        path: PathBuf,
        what: &'static str,
        message: String,
    },
}

/// A checkpoint read back from disk.
pub struct Checkpoint {
    pub state: RunState,
    pub model: Network,
    pub optimizer_bytes: Vec<u8>,
}

/// Write a checkpoint atomically.
pub fn save(
    path: &Path,
    state: &RunState,
    model: &Network,
    optimizer: Option<&ModuleOptimizer>,
) -> Result<(), CheckpointError> {
    let ser = |what, message: String| CheckpointError::Serialise {
        path: path.to_path_buf(),
        what,
        message,
    };
    let json = serde_json::to_vec(state).map_err(|e| ser("state", e.to_string()))?;
    let mut store = BurnpackStore::from_bytes(None);
    model.save_into(&mut store).map_err(|e| ser("model", e.to_string()))?;
    let model_bytes = store.get_bytes().map_err(|e| ser("model", e.to_string()))?;
    let optim_bytes = match optimizer {
        Some(o) => o.into_bytes().map_err(|e| ser("optimizer", e.to_string()))?.to_vec(),
        None => Vec::new(),
    };
    let mut out = Vec::with_capacity(MAGIC.len() + 28 + json.len() + model_bytes.len() + optim_bytes.len());
    out.extend_from_slice(MAGIC);
    for section in [&json[..], &model_bytes[..], &optim_bytes[..]] {
        out.extend_from_slice(&(section.len() as u64).to_le_bytes());
        out.extend_from_slice(section);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    kestrel_runtime::atomic::write_atomic(path, &out).map_err(|source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Read a checkpoint of `backbone` into `template` (a network of the same shape on the target
/// device).
pub fn load(path: &Path, backbone: &dyn Backbone, mut template: Network) -> Result<Checkpoint, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |what: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
    let rest = if let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) {
        let (body, crc) = rest
            .split_last_chunk::<4>()
            .ok_or_else(|| corrupt("checksum missing: the file is truncated".into()))?;
        let stored = u32::from_le_bytes(*crc);
        let actual = crc32fast::hash(&bytes[..MAGIC.len() + body.len()]);
        if stored != actual {
            return Err(corrupt(format!(
                "checksum mismatch: stored {stored:08x}, content {actual:08x}; the file changed after it was \
                 written (a flipped bit, a partial copy)"
            )));
        }
        body
    } else {
        bytes
            .strip_prefix(MAGIC_V1.as_slice())
            .ok_or_else(|| corrupt("not a Kestrel checkpoint".into()))?
    };
    let mut sections = Vec::new();
    let mut cursor = rest;
    for name in ["state", "model", "optimizer"] {
        let (len, tail) = cursor
            .split_first_chunk::<8>()
            .ok_or_else(|| corrupt(format!("{name} section truncated")))?;
        let len = u64::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(corrupt(format!("{name} section truncated")));
        }
        let (section, tail) = tail.split_at(len);
        sections.push(section);
        cursor = tail;
    }
    if !cursor.is_empty() {
        return Err(corrupt(format!(
            "{} unexpected bytes after the last section",
            cursor.len()
        )));
    }
    let state: RunState = serde_json::from_slice(sections[0]).map_err(|e| corrupt(format!("state: {e}")))?;
    if state.backbone != backbone.name() {
        return Err(CheckpointError::Backbone {
            path: path.to_path_buf(),
            found: state.backbone,
            expected: backbone.name(),
        });
    }
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(sections[1].to_vec())));
    template
        .load_from(&mut store)
        .map_err(|e| corrupt(format!("model: {e}")))?;
    Ok(Checkpoint {
        state,
        model: template,
        optimizer_bytes: sections[2].to_vec(),
    })
}

/// Restore optimiser state saved by [`save`]; empty bytes leave `optimizer` fresh.
pub fn restore_optimizer(
    path: &Path,
    optimizer: ModuleOptimizer,
    bytes: &[u8],
) -> Result<ModuleOptimizer, CheckpointError> {
    if bytes.is_empty() {
        return Ok(optimizer);
    }
    optimizer
        .from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            what: format!("optimizer: {e}"),
        })
}
