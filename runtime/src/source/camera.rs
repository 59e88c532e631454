//! V4L2/UVC cameras through nokhwa. We ask for MJPEG first (a USB camera's only full-rate
//! format at 720p and above) and decode it ourselves like every other source; raw formats go
//! through [`super::convert`].

use std::time::Instant;

use nokhwa::Camera;
use nokhwa::utils::{ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType};

use super::{Frame, FrameSource, Next, OpenOptions, Payload, SourceError, convert};

/// Formats we can take, most preferred first.
const FORMATS: [FrameFormat; 5] = [
    FrameFormat::MJPEG,
    FrameFormat::YUYV,
    FrameFormat::NV12,
    FrameFormat::GRAY,
    FrameFormat::RAWRGB,
];

/// A camera named like `auto`, `0`, `/dev/video2`, or part of its name.
fn index_of(which: &str) -> Result<CameraIndex, SourceError> {
    if which == "auto" {
        return auto();
    }
    if let Ok(n) = which.parse::<u32>() {
        return Ok(CameraIndex::Index(n));
    }
    if let Some(n) = which.strip_prefix("/dev/video").and_then(|n| n.parse::<u32>().ok()) {
        return Ok(CameraIndex::Index(n));
    }
    let cameras = list().map_err(|message| SourceError::Camera {
        camera: which.into(),
        message,
    })?;
    cameras
        .iter()
        .find(|c| c.name.to_lowercase().contains(&which.to_lowercase()))
        .map(|c| CameraIndex::Index(c.index))
        .ok_or_else(|| SourceError::Camera {
            camera: which.into(),
            message: format!(
                "no camera's name contains `{which}` (cameras: {}); `kestrel cameras` lists them",
                cameras.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        })
}

/// The first node that captures ([`super::discover`]), or every node's reason for being skipped.
fn auto() -> Result<CameraIndex, SourceError> {
    let probes = super::discover::probe_all();
    if let Some(n) = super::discover::first_capture(&probes).and_then(super::discover::Probe::index) {
        return Ok(CameraIndex::Index(n));
    }
    let skipped: Vec<String> = probes
        .iter()
        .filter_map(|p| {
            super::discover::verdict(p)
                .err()
                .map(|why| format!("{}: {why}", p.path.display()))
        })
        .collect();
    Err(SourceError::Camera {
        camera: "auto".into(),
        message: if skipped.is_empty() {
            "no /dev/video* device: plug in a USB camera, or read a Pi CSI camera through \
             `rpicam-vid -t 0 --codec mjpeg -o - | kestrel run --source mjpeg:-`"
                .into()
        } else {
            format!("no V4L2 device captures ({})", skipped.join("; "))
        },
    })
}

/// One camera as `kestrel cameras` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CameraListing {
    pub index: u32,
    pub name: String,
    pub description: String,
    /// `MJPEG 1280x720@30`, … (empty if the camera could not be opened to ask).
    pub formats: Vec<String>,
}

/// Every V4L2 camera with its formats.
pub fn list() -> Result<Vec<CameraListing>, String> {
    let infos = nokhwa::query(ApiBackend::Video4Linux).map_err(|e| e.to_string())?;
    Ok(infos
        .into_iter()
        .map(|info| {
            let index = match info.index() {
                CameraIndex::Index(n) => *n,
                CameraIndex::String(s) => s.parse().unwrap_or(0),
            };
            let formats = Camera::new(
                info.index().clone(),
                RequestedFormat::with_formats(RequestedFormatType::None, &FORMATS),
            )
            .and_then(|mut c| c.compatible_camera_formats())
            .map(|fs| {
                fs.iter()
                    .map(|f| format!("{} {}@{}", f.format(), f.resolution(), f.frame_rate()))
                    .collect()
            })
            .unwrap_or_default();
            CameraListing {
                index,
                name: info.human_name(),
                description: info.description().to_string(),
                formats,
            }
        })
        .collect())
}

pub struct CameraSource {
    camera: Camera,
    what: String,
    next: u64,
}

impl CameraSource {
    pub fn open(which: &str, options: &OpenOptions) -> Result<Self, SourceError> {
        let index = index_of(which)?;
        let node = match &index {
            CameraIndex::Index(n) => format!("/dev/video{n}"),
            CameraIndex::String(s) => s.clone(),
        };
        let err = |e: nokhwa::NokhwaError| SourceError::Camera {
            camera: which.into(),
            message: format!("{e} (is it plugged in, and are you in the `video` group?)"),
        };
        let (w, h) = options.resolution.unwrap_or((640, 480));
        let wanted = CameraFormat::new_from(w, h, FrameFormat::MJPEG, options.fps.unwrap_or(30));
        let request = RequestedFormat::with_formats(RequestedFormatType::Closest(wanted), &FORMATS);
        let mut camera = Camera::with_backend(index, request, ApiBackend::Video4Linux).map_err(err)?;
        camera.open_stream().map_err(err)?;
        let f = camera.camera_format();
        let what = format!(
            "camera {} ({node}) `{}`: {} {}@{}",
            which,
            camera.info().human_name(),
            f.format(),
            f.resolution(),
            f.frame_rate()
        );
        Ok(CameraSource { camera, what, next: 0 })
    }
}

impl FrameSource for CameraSource {
    fn describe(&self) -> String {
        self.what.clone()
    }

    fn is_live(&self) -> bool {
        true
    }

    fn next(&mut self) -> Result<Next, SourceError> {
        let buffer = self.camera.frame().map_err(|e| SourceError::Camera {
            camera: self.what.clone(),
            message: format!("lost the camera: {e}"),
        })?;
        let index = self.next;
        self.next += 1;
        let res = buffer.resolution();
        let (w, h) = (res.width(), res.height());
        let data = buffer.buffer();
        let converted = match buffer.source_frame_format() {
            FrameFormat::MJPEG => Ok(Payload::Encoded(data.to_vec())),
            FrameFormat::YUYV => convert::yuyv_to_rgb(w, h, data).map(Payload::Rgb),
            FrameFormat::NV12 => convert::nv12_to_rgb(w, h, data).map(Payload::Rgb),
            FrameFormat::GRAY => convert::grey8(w, h, data).map(Payload::Rgb),
            FrameFormat::RAWRGB => convert::rgb24(w, h, data).map(Payload::Rgb),
            FrameFormat::RAWBGR => convert::rgb24(w, h, data).map(|mut img| {
                img.pixels_mut().for_each(|p| p.0.swap(0, 2));
                Payload::Rgb(img)
            }),
        };
        Ok(match converted {
            Ok(payload) => Next::Frame(Frame {
                index,
                captured: Instant::now(),
                name: None,
                payload,
            }),
            Err(e) => Next::Corrupt {
                index,
                reason: e.to_string(),
            },
        })
    }
}
