//! Reading images from disk or memory: format sniffed from content, EXIF orientation applied,
//! and a pixel limit so a decompression bomb is refused before it is decoded.

use std::io::{BufRead, Cursor, Seek};
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

/// Refuse images above this many pixels unless told otherwise (a 16k × 16k photo passes).
pub const DEFAULT_MAX_PIXELS: u64 = 268_435_456;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot open image {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a regular file (a directory, pipe or device); only image files are read")]
    NotAFile { path: PathBuf },
    #[error("{path} is not a readable image ({source}); is it corrupt, truncated, or not an image?")]
    Decode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("{path} is {width}x{height} pixels, above the limit of {limit}; raise --max-pixels if it is genuine")]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        limit: u64,
    },
}

/// Decode the image at `path`, upright.
pub fn load_image(path: &Path) -> Result<DynamicImage, DecodeError> {
    load_image_with_limit(path, DEFAULT_MAX_PIXELS)
}

pub fn load_image_with_limit(path: &Path, max_pixels: u64) -> Result<DynamicImage, DecodeError> {
    check_regular_file(path)?;
    let reader = ImageReader::open(path).map_err(|source| DecodeError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    decode_reader(reader, path, max_pixels)
}

/// Refuse what is not a regular file before opening it: opening a named pipe that happens to be
/// called `x.jpg` would block until something writes to it.
pub fn check_regular_file(path: &Path) -> Result<(), DecodeError> {
    let meta = std::fs::metadata(path).map_err(|source| DecodeError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(DecodeError::NotAFile {
            path: path.to_path_buf(),
        })
    }
}

/// Decode an in-memory image (a camera frame, a file read elsewhere); `name` is for messages.
pub fn decode_bytes(bytes: &[u8], name: &Path, max_pixels: u64) -> Result<DynamicImage, DecodeError> {
    decode_reader(ImageReader::new(Cursor::new(bytes)), name, max_pixels)
}

fn decode_reader<R: BufRead + Seek>(
    reader: ImageReader<R>,
    path: &Path,
    max_pixels: u64,
) -> Result<DynamicImage, DecodeError> {
    let decode = |source| DecodeError::Decode {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = reader.with_guessed_format().map_err(|source| DecodeError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut limits = Limits::default();
    // Allocation limit sized to the pixel limit at 16-bit RGBA, so the pixel check below decides.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(decode)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(DecodeError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            limit: max_pixels,
        });
    }
    let orientation = decoder.orientation().map_err(decode)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode)?;
    image.apply_orientation(orientation);
    Ok(image)
}
