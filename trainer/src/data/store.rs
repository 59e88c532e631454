//! Decoded data kept out of the process's memory: records (8-bit RGB images, feature rows) in
//! one file with no name, read back by index.
//!
//! A training run used to hold every decoded image (≈ 0.34 MB each) and every validation tensor
//! (≈ 0.6 MB) in RAM, so memory grew with the data set. A [`Store`] on disk appends records to a
//! file created with `O_TMPFILE` (`tempfile::tempfile_in`): it has no name, so nothing is left
//! behind when the run ends or is killed, and its pages live in the kernel's page cache, which
//! the kernel gives back under pressure instead of counting them against the process. Reads are
//! positioned (`pread`), so any number of threads read at once. A store in memory is the same
//! thing for small sets (the quantiser's held-out images).
//!
//! This module imports nothing of the trainer's: everything that caches decoded data uses it.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use image::RgbImage;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot write the decoded-image cache in {dir}: {source}; it needs about as much free disk as the images \
         take decoded — free space there or choose another --out"
    )]
    Write {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the decoded-image cache in {dir}: {source}")]
    Read {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("record {index} of the decoded-image cache is not an image of its recorded size")]
    Corrupt { index: usize },
}

#[derive(Debug)]
enum Backing {
    Memory(Vec<u8>),
    /// `dir` is where the nameless file lives, for messages.
    File {
        file: File,
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy)]
struct Record {
    offset: u64,
    len: u32,
    width: u32,
    height: u32,
}

/// Append-only records, read back by index.
#[derive(Debug)]
pub struct Store {
    backing: Backing,
    records: Vec<Record>,
    end: u64,
}

impl Store {
    pub fn in_memory() -> Self {
        Store {
            backing: Backing::Memory(Vec::new()),
            records: Vec::new(),
            end: 0,
        }
    }

    /// A store in a nameless file in `dir` (created if missing).
    pub fn on_disk(dir: &Path) -> Result<Self, StoreError> {
        let write = |source| StoreError::Write {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(write)?;
        let file = tempfile::tempfile_in(dir).map_err(write)?;
        Ok(Store {
            backing: Backing::File {
                file,
                dir: dir.to_path_buf(),
            },
            records: Vec::new(),
            end: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes held (on disk or in memory).
    pub fn bytes(&self) -> u64 {
        self.end
    }

    /// Whether records live in RAM.
    pub fn is_in_memory(&self) -> bool {
        matches!(self.backing, Backing::Memory(_))
    }

    fn push_record(&mut self, bytes: &[u8], width: u32, height: u32) -> Result<usize, StoreError> {
        match &mut self.backing {
            Backing::Memory(data) => data.extend_from_slice(bytes),
            Backing::File { file, dir } => file.write_all(bytes).map_err(|source| StoreError::Write {
                dir: dir.clone(),
                source,
            })?,
        }
        self.records.push(Record {
            offset: self.end,
            len: bytes.len() as u32,
            width,
            height,
        });
        self.end += bytes.len() as u64;
        Ok(self.records.len() - 1)
    }

    fn read_record(&self, index: usize, out: &mut [u8]) -> Result<(), StoreError> {
        let r = self.records[index];
        if out.len() != r.len as usize {
            return Err(StoreError::Corrupt { index });
        }
        match &self.backing {
            Backing::Memory(data) => {
                let start = r.offset as usize;
                out.copy_from_slice(&data[start..start + out.len()]);
                Ok(())
            }
            Backing::File { file, dir } => file.read_exact_at(out, r.offset).map_err(|source| StoreError::Read {
                dir: dir.clone(),
                source,
            }),
        }
    }

    /// Append an image; returns its index.
    pub fn push_image(&mut self, image: &RgbImage) -> Result<usize, StoreError> {
        self.push_record(image.as_raw(), image.width(), image.height())
    }

    /// The image at `index` (panics if out of range, like slice indexing).
    pub fn image(&self, index: usize) -> Result<RgbImage, StoreError> {
        let r = self.records[index];
        let mut raw = vec![0u8; r.len as usize];
        self.read_record(index, &mut raw)?;
        RgbImage::from_raw(r.width, r.height, raw).ok_or(StoreError::Corrupt { index })
    }

    /// Append a row of f32 values (native byte order: the file never outlives the process).
    pub fn push_f32(&mut self, row: &[f32]) -> Result<usize, StoreError> {
        let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_ne_bytes()).collect();
        self.push_record(&bytes, row.len() as u32, 1)
    }

    /// The f32 row at `index`, written into `out` (which must have the row's length).
    pub fn f32_into(&self, index: usize, out: &mut [f32]) -> Result<(), StoreError> {
        let mut raw = vec![0u8; out.len() * 4];
        self.read_record(index, &mut raw)?;
        for (o, b) in out.iter_mut().zip(raw.chunks_exact(4)) {
            *o = f32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: u32, h: u32, seed: u8) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([seed, x as u8, y as u8]))
    }

    #[test]
    fn records_come_back_as_written_in_memory_and_on_disk() {
        let dir = tempfile::tempdir().expect("test step");
        for mut store in [Store::in_memory(), Store::on_disk(dir.path()).expect("test step")] {
            let images = [image(5, 3, 1), image(2, 9, 2), image(7, 7, 3)];
            for im in &images {
                store.push_image(im).expect("test step");
            }
            let row = [1.5f32, -2.0, f32::MIN_POSITIVE];
            let at = store.push_f32(&row).expect("test step");
            assert_eq!(store.len(), 4);
            // Out of order, as shuffled batches read them.
            for i in [2, 0, 1] {
                assert_eq!(store.image(i).expect("test step"), images[i]);
            }
            let mut back = [0.0f32; 3];
            store.f32_into(at, &mut back).expect("test step");
            assert_eq!(back, row);
            assert!(store.f32_into(at, &mut [0.0; 2]).is_err(), "a wrong length is refused");
        }
    }

    #[test]
    fn a_disk_store_leaves_no_file_behind() {
        let dir = tempfile::tempdir().expect("test step");
        let mut store = Store::on_disk(dir.path()).expect("test step");
        store.push_image(&image(64, 64, 9)).expect("test step");
        assert_eq!(store.bytes(), 64 * 64 * 3);
        assert!(!store.is_in_memory());
        let names: Vec<_> = std::fs::read_dir(dir.path()).expect("test step").collect();
        assert!(names.is_empty(), "the cache file has a name: {names:?}");
    }
}
