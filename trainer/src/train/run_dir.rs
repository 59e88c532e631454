//! The run folder: where each file of a run lives, and how a run file is written.

use std::path::{Path, PathBuf};

use super::FitError;

/// Paths inside a run folder.
#[derive(Debug, Clone)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn config(&self) -> PathBuf {
        self.0.join("config.toml")
    }
    pub fn last(&self) -> PathBuf {
        self.0.join("checkpoints/last.ckpt")
    }
    pub fn best(&self) -> PathBuf {
        self.0.join("checkpoints/best.ckpt")
    }
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.csv")
    }
    pub fn model(&self) -> PathBuf {
        self.0.join("model.onnx")
    }
    pub fn int8_model(&self) -> PathBuf {
        self.0.join("model.int8.onnx")
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Create the folder (and `checkpoints/`), and remove what a killed run left half-written.
    pub fn create(&self) -> Result<(), FitError> {
        std::fs::create_dir_all(self.0.join("checkpoints")).map_err(|source| FitError::Write {
            path: self.0.clone(),
            source,
        })?;
        self.remove_stale_temps()
    }

    /// A run killed while writing (SIGKILL, OOM, power cut) leaves its temp file beside the
    /// final name; whoever takes the folder over next removes it, so a killed run costs no disk.
    fn remove_stale_temps(&self) -> Result<(), FitError> {
        for dir in [self.0.clone(), self.0.join("checkpoints")] {
            let removed = kestrel_runtime::atomic::remove_stale_temps(&dir)
                .map_err(|source| FitError::Write { path: dir, source })?;
            for path in removed {
                tracing::info!(
                    "removed {}, left by a run that was killed while writing it",
                    path.display()
                );
            }
        }
        Ok(())
    }
}

/// Write a run file atomically; the error names it.
pub fn write(path: &Path, text: &str) -> Result<(), FitError> {
    kestrel_runtime::atomic::write_atomic(path, text.as_bytes()).map_err(|source| FitError::Write {
        path: path.to_path_buf(),
        source,
    })
}
