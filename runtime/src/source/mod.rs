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
pub mod discover;
pub mod folder;
pub mod mjpeg;
mod stream;
pub mod synthetic;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

pub use folder::FolderSource;
pub use stream::MjpegSource;
pub use synthetic::{SyntheticSource, synthetic_jpeg};

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
    #[error("{path} holds no images ({})", crate::image_files::listed())]
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
    /// `camera` (`auto`: the first node that captures, see [`discover`]), `camera:1`,
    /// `camera:/dev/video2` or `camera:<name substring>`.
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
            return Ok(SourceSpec::Camera("auto".into()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_specs_parse() {
        assert_eq!(
            "camera".parse::<SourceSpec>().ok(),
            Some(SourceSpec::Camera("auto".into()))
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
}
