//! Frames from files: a folder of images played in name order, or one image.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{Frame, FrameSource, Next, Payload, SourceError};

/// A folder of images in name order, or a single image.
pub struct FolderSource {
    what: String,
    files: Vec<PathBuf>,
    next: usize,
}

impl FolderSource {
    pub fn new(dir: &Path) -> Result<Self, SourceError> {
        let entries = std::fs::read_dir(dir).map_err(|source| SourceError::Io {
            what: dir.display().to_string(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && crate::image_files::is_image_name(p))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(SourceError::EmptyFolder { path: dir.into() });
        }
        Ok(FolderSource {
            what: format!("folder {} ({} images, name order)", dir.display(), files.len()),
            files,
            next: 0,
        })
    }

    pub fn single(path: &Path) -> Self {
        FolderSource {
            what: format!("image {}", path.display()),
            files: vec![path.to_path_buf()],
            next: 0,
        }
    }
}

impl FrameSource for FolderSource {
    fn describe(&self) -> String {
        self.what.clone()
    }

    fn is_live(&self) -> bool {
        false
    }

    fn next(&mut self) -> Result<Next, SourceError> {
        let Some(path) = self.files.get(self.next).cloned() else {
            return Ok(Next::End);
        };
        let index = self.next as u64;
        self.next += 1;
        let captured = Instant::now();
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Next::Frame(Frame {
                index,
                captured,
                name: Some(path.display().to_string()),
                payload: Payload::Encoded(bytes),
            })),
            // A file that vanished or cannot be read is one bad frame, not the end of the folder.
            Err(e) => Ok(Next::Corrupt {
                index,
                reason: format!("cannot read {}: {e}", path.display()),
            }),
        }
    }
}
