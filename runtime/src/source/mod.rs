//! Where frames come from, behind one trait: a camera (V4L2/UVC through nokhwa, feature
//! `camera`), an MJPEG byte stream (stdin, a pipe, a file or a TCP address: how a Pi CSI camera
//! arrives from `rpicam-vid --codec mjpeg -o -`), a folder of images played in name order, one
//! image, or a synthetic pattern for benchmarks.
//!
//! A source hands out frames still encoded where they came encoded (JPEG bytes), so decoding is
//! timed as its own stage and uses the same decoder for every source.

#[cfg(feature = "camera")]
pub mod camera;
pub mod convert;
pub mod mjpeg;

use std::fs::File;
use std::io::{BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use image::{DynamicImage, RgbImage};

use crate::decode::{self, DecodeError};

/// One frame as the source produced it.
#[derive(Debug, Clone)]
pub enum Payload {
    /// An encoded image (JPEG from a camera or stream, any format from a file).
    Encoded(Vec<u8>),
    /// Pixels already converted by the source (raw camera formats, synthetic frames).
    Rgb(RgbImage),
}

#[derive(Debug, Clone)]
pub struct Frame {
    /// Position in the source, from 0 (dropped frames leave gaps).
    pub index: u64,
    pub captured: Instant,
    /// A file name for folder and image sources.
    pub name: Option<String>,
    pub payload: Payload,
}

impl Frame {
    /// Decode to pixels (JPEG through [`decode::decode_bytes`], EXIF orientation applied).
    pub fn decode(&self, max_pixels: u64) -> Result<DynamicImage, DecodeError> {
        match &self.payload {
            Payload::Rgb(rgb) => Ok(DynamicImage::ImageRgb8(rgb.clone())),
            Payload::Encoded(bytes) => {
                let name = self.name.clone().unwrap_or_else(|| format!("frame {}", self.index));
                decode::decode_bytes(bytes, Path::new(&name), max_pixels)
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no images (.jpg, .jpeg, .png, .bmp, .webp, .tif)")]
    EmptyFolder { path: PathBuf },
    #[error("{0}")]
    Spec(String),
    #[error("camera {camera}: {message}")]
    Camera { camera: String, message: String },
    #[error(
        "this kestrel was built without camera support (cargo feature `camera`); use --source mjpeg:- with \
         rpicam-vid, or rebuild with the feature"
    )]
    NoCameraSupport,
}

/// What a source yields next.
#[derive(Debug)]
pub enum Next {
    Frame(Frame),
    /// Bytes that were meant to be a frame but are not (truncated JPEG in a stream).
    Corrupt {
        index: u64,
        reason: String,
    },
    End,
}

/// Not `Send`: a camera handle may not cross threads, so the frame loop opens its source on the
/// thread that reads it.
pub trait FrameSource {
    /// One line for the start-up log: what this is, its format.
    fn describe(&self) -> String;
    /// Live sources produce frames in real time whether or not we keep up: the frame loop reads
    /// them on a thread and keeps only the latest.
    fn is_live(&self) -> bool;
    fn next(&mut self) -> Result<Next, SourceError>;
}

/// A source named on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// `camera`, `camera:1`, `camera:/dev/video2` or `camera:<name substring>`.
    Camera(String),
    /// `mjpeg:-` (stdin), `mjpeg:PATH` (file or named pipe), `mjpeg:tcp://HOST:PORT`.
    Mjpeg(MjpegInput),
    /// A folder of images, played in name order.
    Folder(PathBuf),
    Image(PathBuf),
    /// `synthetic:WxH[:FRAMES]`, JPEG-encoded like a camera's MJPEG.
    Synthetic {
        width: u32,
        height: u32,
        frames: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum MjpegInput {
    Stdin,
    Path(PathBuf),
    Tcp(String),
}

impl FromStr for SourceSpec {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "camera" {
            return Ok(SourceSpec::Camera("0".into()));
        }
        if let Some(rest) = s.strip_prefix("camera:") {
            return Ok(SourceSpec::Camera(rest.into()));
        }
        if let Some(rest) = s.strip_prefix("mjpeg:") {
            return Ok(SourceSpec::Mjpeg(match rest {
                "-" => MjpegInput::Stdin,
                _ => match rest.strip_prefix("tcp://") {
                    Some(addr) => MjpegInput::Tcp(addr.into()),
                    None => MjpegInput::Path(rest.into()),
                },
            }));
        }
        if let Some(rest) = s.strip_prefix("synthetic") {
            let mut parts = rest.trim_start_matches(':').split(':');
            let size = parts.next().filter(|p| !p.is_empty()).unwrap_or("640x480");
            let (w, h) = size
                .split_once('x')
                .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                .filter(|&(w, h): &(u32, u32)| w > 0 && h > 0 && w <= 8192 && h <= 8192)
                .ok_or_else(|| SourceError::Spec(format!("synthetic source size `{size}`: expected e.g. 640x480")))?;
            let frames = match parts.next() {
                Some(n) => n
                    .parse()
                    .map_err(|_| SourceError::Spec(format!("synthetic frame count `{n}` is not a number")))?,
                None => u64::MAX,
            };
            return Ok(SourceSpec::Synthetic {
                width: w,
                height: h,
                frames,
            });
        }
        let path = PathBuf::from(s);
        if path.is_dir() {
            Ok(SourceSpec::Folder(path))
        } else if path.is_file() {
            Ok(SourceSpec::Image(path))
        } else {
            Err(SourceError::Spec(format!(
                "source `{s}` is not a folder, an image file, `camera[:N]`, `mjpeg:-|PATH|tcp://HOST:PORT` or \
                 `synthetic[:WxH[:FRAMES]]`"
            )))
        }
    }
}

/// Options a source may use.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Requested camera resolution and frame rate (the nearest supported is used).
    pub resolution: Option<(u32, u32)>,
    pub fps: Option<u32>,
    /// Treat an MJPEG file as live (a named pipe fed by a camera) rather than as a recording.
    pub live: Option<bool>,
}

pub fn open(spec: &SourceSpec, options: &OpenOptions) -> Result<Box<dyn FrameSource>, SourceError> {
    Ok(match spec {
        SourceSpec::Folder(p) => Box::new(FolderSource::new(p)?),
        SourceSpec::Image(p) => Box::new(FolderSource::single(p)),
        SourceSpec::Synthetic { width, height, frames } => Box::new(SyntheticSource::new(*width, *height, *frames)),
        SourceSpec::Mjpeg(input) => Box::new(MjpegSource::open(input, options)?),
        SourceSpec::Camera(which) => open_camera(which, options)?,
    })
}

#[cfg(feature = "camera")]
fn open_camera(which: &str, options: &OpenOptions) -> Result<Box<dyn FrameSource>, SourceError> {
    Ok(Box::new(camera::CameraSource::open(which, options)?))
}

#[cfg(not(feature = "camera"))]
fn open_camera(_: &str, _: &OpenOptions) -> Result<Box<dyn FrameSource>, SourceError> {
    Err(SourceError::NoCameraSupport)
}

/// Image extensions a folder source plays.
pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .is_some_and(|e| {
            matches!(
                e.as_str(),
                "jpg" | "jpeg" | "png" | "bmp" | "webp" | "tif" | "tiff" | "gif"
            )
        })
}

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
            .filter(|p| p.is_file() && is_image_name(p))
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

/// Deterministic JPEG frames: moving gradients and a bright square, so decode and preprocess
/// cost what a real frame costs.
pub struct SyntheticSource {
    width: u32,
    height: u32,
    frames: u64,
    next: u64,
    encoded: Vec<Vec<u8>>,
}

impl SyntheticSource {
    pub fn new(width: u32, height: u32, frames: u64) -> Self {
        let encoded = (0..8).map(|i| synthetic_jpeg(width, height, i)).collect();
        SyntheticSource {
            width,
            height,
            frames,
            next: 0,
            encoded,
        }
    }
}

/// Frame `i` of the synthetic pattern as JPEG (quality 85, like a webcam's MJPEG).
pub fn synthetic_jpeg(width: u32, height: u32, i: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(width, height, |x, y| {
        let s = (i * 37) % 255;
        let inside = x / 64 % 4 == i % 4 && y / 64 % 3 == i % 3;
        if inside {
            image::Rgb([250, 240, 40])
        } else {
            image::Rgb([
                ((x * 255 / width.max(1)) + s) as u8,
                ((y * 255 / height.max(1)) as u8).wrapping_add(s as u8),
                ((x + y) % 256) as u8,
            ])
        }
    });
    let mut out = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
    // Encoding an in-memory RGB image cannot fail short of allocation failure.
    let _ = img.write_with_encoder(encoder);
    out
}

impl FrameSource for SyntheticSource {
    fn describe(&self) -> String {
        format!("synthetic {}x{} MJPEG pattern", self.width, self.height)
    }

    fn is_live(&self) -> bool {
        false
    }

    fn next(&mut self) -> Result<Next, SourceError> {
        if self.next >= self.frames {
            return Ok(Next::End);
        }
        let index = self.next;
        self.next += 1;
        Ok(Next::Frame(Frame {
            index,
            captured: Instant::now(),
            name: None,
            payload: Payload::Encoded(self.encoded[(index % self.encoded.len() as u64) as usize].clone()),
        }))
    }
}

/// An MJPEG byte stream.
pub struct MjpegSource {
    what: String,
    live: bool,
    reader: mjpeg::MjpegReader<Box<dyn Read + Send>>,
    next: u64,
}

impl MjpegSource {
    pub fn open(input: &MjpegInput, options: &OpenOptions) -> Result<Self, SourceError> {
        let (what, live, reader): (String, bool, Box<dyn Read + Send>) = match input {
            MjpegInput::Stdin => ("MJPEG stream on stdin".into(), true, Box::new(std::io::stdin())),
            MjpegInput::Path(p) => {
                let file = File::open(p).map_err(|source| SourceError::Io {
                    what: p.display().to_string(),
                    source,
                })?;
                // A named pipe is fed in real time (a camera); a regular file is a recording.
                let is_fifo = file_is_fifo(&file);
                let live = options.live.unwrap_or(is_fifo);
                let kind = if is_fifo { "pipe" } else { "file" };
                (
                    format!("MJPEG {kind} {}", p.display()),
                    live,
                    Box::new(BufReader::new(file)),
                )
            }
            MjpegInput::Tcp(addr) => {
                let stream = TcpStream::connect(addr).map_err(|source| SourceError::Io {
                    what: format!("tcp://{addr}"),
                    source,
                })?;
                (format!("MJPEG over TCP from {addr}"), true, Box::new(stream))
            }
        };
        Ok(MjpegSource {
            what,
            live,
            reader: mjpeg::MjpegReader::new(reader),
            next: 0,
        })
    }

    /// A source over any reader (tests, and callers with their own transport).
    pub fn from_reader(what: &str, live: bool, reader: Box<dyn Read + Send>) -> Self {
        MjpegSource {
            what: what.into(),
            live,
            reader: mjpeg::MjpegReader::new(reader),
            next: 0,
        }
    }
}

#[cfg(unix)]
fn file_is_fifo(file: &File) -> bool {
    use std::os::unix::fs::FileTypeExt;
    file.metadata().map(|m| m.file_type().is_fifo()).unwrap_or(false)
}

#[cfg(not(unix))]
fn file_is_fifo(_: &File) -> bool {
    false
}

impl FrameSource for MjpegSource {
    fn describe(&self) -> String {
        self.what.clone()
    }

    fn is_live(&self) -> bool {
        self.live
    }

    fn next(&mut self) -> Result<Next, SourceError> {
        let piece = self.reader.next_piece().map_err(|source| SourceError::Io {
            what: self.what.clone(),
            source,
        })?;
        let index = self.next;
        Ok(match piece {
            None => Next::End,
            Some(p) => {
                self.next += 1;
                match p {
                    mjpeg::Piece::Frame(bytes) => Next::Frame(Frame {
                        index,
                        captured: Instant::now(),
                        name: None,
                        payload: Payload::Encoded(bytes),
                    }),
                    mjpeg::Piece::Corrupt { bytes, reason } => Next::Corrupt {
                        index,
                        reason: format!("{reason}, {bytes} bytes"),
                    },
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_specs_parse() {
        assert_eq!(
            "camera".parse::<SourceSpec>().ok(),
            Some(SourceSpec::Camera("0".into()))
        );
        assert_eq!(
            "camera:/dev/video2".parse::<SourceSpec>().ok(),
            Some(SourceSpec::Camera("/dev/video2".into()))
        );
        assert_eq!(
            "mjpeg:-".parse::<SourceSpec>().ok(),
            Some(SourceSpec::Mjpeg(MjpegInput::Stdin))
        );
        assert_eq!(
            "mjpeg:tcp://pi.local:8888".parse::<SourceSpec>().ok(),
            Some(SourceSpec::Mjpeg(MjpegInput::Tcp("pi.local:8888".into())))
        );
        assert_eq!(
            "synthetic:320x240:10".parse::<SourceSpec>().ok(),
            Some(SourceSpec::Synthetic {
                width: 320,
                height: 240,
                frames: 10
            })
        );
        assert!("synthetic:0x5".parse::<SourceSpec>().is_err());
        let err = "no/such/place".parse::<SourceSpec>().err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("mjpeg:-")));
    }

    #[test]
    fn synthetic_frames_are_deterministic_jpegs() {
        let mut s = SyntheticSource::new(96, 64, 3);
        let mut frames = Vec::new();
        while let Ok(Next::Frame(f)) = s.next() {
            let img = f.decode(1 << 20).expect("decodes");
            assert_eq!((img.width(), img.height()), (96, 64));
            frames.push(f);
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(synthetic_jpeg(96, 64, 1), synthetic_jpeg(96, 64, 1));
    }
}
