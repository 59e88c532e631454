//! Import IDX data sets (MNIST, Fashion-MNIST: Debian's `dataset-fashion-mnist`) as a
//! folder-per-class of PNG files, the layout `fit` reads.

use std::path::{Path, PathBuf};

use image::GrayImage;

#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an IDX {kind} file ({why}); gunzip .gz files first")]
    Format {
        path: PathBuf,
        kind: &'static str,
        why: String,
    },
    #[error("{images} images but {labels} labels")]
    Count { images: usize, labels: usize },
    #[error("label {label} has no name (pass --names with one name per class)")]
    Unnamed { label: u8 },
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
}

/// Fashion-MNIST's classes, in label order, as folder names.
pub const FASHION_MNIST: [&str; 10] = [
    "tshirt-top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
];

fn read(path: &Path) -> Result<Vec<u8>, IdxError> {
    std::fs::read(path).map_err(|source| IdxError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn header(bytes: &[u8], path: &Path, kind: &'static str, magic: u32, dims: usize) -> Result<Vec<usize>, IdxError> {
    let format = |why: String| IdxError::Format {
        path: path.to_path_buf(),
        kind,
        why,
    };
    let word = |i: usize| -> Result<u32, IdxError> {
        let b = bytes
            .get(4 * i..4 * i + 4)
            .ok_or_else(|| format("truncated header".into()))?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let found = word(0)?;
    if found != magic {
        return Err(format(format!("magic {found:#010x}, expected {magic:#010x}")));
    }
    let shape: Vec<usize> = (1..=dims)
        .map(|i| word(i).map(|v| v as usize))
        .collect::<Result<_, _>>()?;
    let expected = 4 * (dims + 1) + shape.iter().product::<usize>();
    if bytes.len() != expected {
        return Err(format(format!("{} bytes, header says {expected}", bytes.len())));
    }
    Ok(shape)
}

/// Write at most `per_class` images of each class (the first ones, in file order) under
/// `out/<name>/<index>.png`. Returns images written per class.
pub fn import(
    images: &Path,
    labels: &Path,
    names: &[String],
    per_class: usize,
    out: &Path,
) -> Result<Vec<usize>, IdxError> {
    let image_bytes = read(images)?;
    let label_bytes = read(labels)?;
    let shape = header(&image_bytes, images, "images", 0x0000_0803, 3)?;
    let n_labels = header(&label_bytes, labels, "labels", 0x0000_0801, 1)?[0];
    let (n, rows, cols) = (shape[0], shape[1], shape[2]);
    if n != n_labels {
        return Err(IdxError::Count {
            images: n,
            labels: n_labels,
        });
    }
    let mut written = vec![0usize; names.len()];
    let pixels = &image_bytes[16..];
    for (i, &label) in label_bytes[8..].iter().enumerate() {
        let class = label as usize;
        let name = names.get(class).ok_or(IdxError::Unnamed { label })?;
        if written[class] >= per_class {
            continue;
        }
        let dir = out.join(name);
        let path = dir.join(format!("{i:05}.png"));
        let write_err = |message: String| IdxError::Write {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(&dir).map_err(|e| write_err(e.to_string()))?;
        let data = pixels[i * rows * cols..(i + 1) * rows * cols].to_vec();
        let img = GrayImage::from_raw(cols as u32, rows as u32, data).ok_or_else(|| write_err("size".into()))?;
        // In memory first, then atomically: an interrupted conversion leaves whole PNGs only.
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png)
            .map_err(|e| write_err(e.to_string()))?;
        kestrel_runtime::atomic::write_atomic(&path, png.get_ref()).map_err(|e| write_err(e.to_string()))?;
        written[class] += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_hand_made_idx_pair() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut images = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2];
        images.extend([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let labels = vec![0, 0, 8, 1, 0, 0, 0, 3, 1, 0, 1];
        std::fs::write(dir.path().join("i"), &images).expect("write");
        std::fs::write(dir.path().join("l"), &labels).expect("write");
        let names = vec!["a".to_string(), "b".to_string()];
        let out = dir.path().join("out");
        let counts = import(&dir.path().join("i"), &dir.path().join("l"), &names, 1, &out).expect("import");
        assert_eq!(counts, [1, 1], "at most one per class");
        let b = image::open(out.join("b/00000.png")).expect("png").to_luma8();
        assert_eq!(b.as_raw(), &[1, 2, 3, 4]);
        let err = import(&dir.path().join("l"), &dir.path().join("l"), &names, 1, &out).expect_err("swapped");
        assert!(err.to_string().contains("magic"), "{err}");
    }
}
