//! Which `/dev/video*` node `--source camera` opens. Raspberry Pi OS lists its codec and ISP
//! nodes (`/dev/video10`…`/dev/video23`, `/dev/video20+` on a Pi 5) beside the cameras, and a CSI
//! sensor's own node gives raw Bayer data: "the first device" is often not a camera. A node is
//! taken when its device capabilities say single-planar video capture (not memory-to-memory, not
//! metadata), its driver is not an image signal processor's, and it offers a format we decode.
//! The decision ([`verdict`]) is a pure function of what V4L2 reports, so it is tested on
//! listings recorded from real boards; only [`probe_all`] touches devices.

use std::path::PathBuf;

/// `struct v4l2_capability.device_caps` bits (linux/videodev2.h).
pub mod caps {
    pub const VIDEO_CAPTURE: u32 = 0x0000_0001;
    pub const VIDEO_OUTPUT: u32 = 0x0000_0002;
    pub const VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
    pub const VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
    pub const VIDEO_M2M: u32 = 0x0000_8000;
    pub const EXT_PIX_FORMAT: u32 = 0x0020_0000;
    pub const META_CAPTURE: u32 = 0x0080_0000;
    pub const READWRITE: u32 = 0x0100_0000;
    pub const STREAMING: u32 = 0x0400_0000;
    pub const IO_MC: u32 = 0x2000_0000;
}

/// Formats the camera source decodes (MJPEG ourselves, the rest in `convert`), by FourCC.
pub const DECODED: [&[u8; 4]; 6] = [b"MJPG", b"YUYV", b"NV12", b"GREY", b"RGB3", b"BGR3"];

/// Drivers whose capture nodes are an image signal processor's outputs: they only produce
/// frames while libcamera feeds them, so they never "capture" on their own.
const ISP_DRIVERS: [&str; 4] = ["bcm2835-isp", "pispbe", "rkisp1", "mali-c55"];

/// What V4L2 says about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub path: PathBuf,
    pub driver: String,
    pub card: String,
    pub device_caps: u32,
    /// FourCCs of the capture formats it offers.
    pub formats: Vec<[u8; 4]>,
    /// Why the node could not be asked (in use, no permission, not V4L2), if it could not.
    pub unreadable: Option<String>,
}

impl Probe {
    /// The N of `/dev/videoN`.
    pub fn index(&self) -> Option<u32> {
        self.path.to_str()?.strip_prefix("/dev/video")?.parse().ok()
    }
}

fn fourcc(f: &[u8; 4]) -> String {
    String::from_utf8_lossy(f).trim_end().to_string()
}

/// Ok if the node is a camera we can read, else why not.
pub fn verdict(p: &Probe) -> Result<(), String> {
    if let Some(why) = &p.unreadable {
        return Err(why.clone());
    }
    let c = p.device_caps;
    if c & (caps::VIDEO_M2M | caps::VIDEO_M2M_MPLANE) != 0 {
        return Err(format!(
            "`{}` ({}) is a memory-to-memory device (codec or ISP), not a camera",
            p.card, p.driver
        ));
    }
    if c & caps::VIDEO_CAPTURE == 0 {
        let what = if c & caps::META_CAPTURE != 0 {
            "a metadata node"
        } else if c & caps::VIDEO_CAPTURE_MPLANE != 0 {
            "multi-planar capture only, which the V4L2 camera backend does not read"
        } else if c & caps::VIDEO_OUTPUT != 0 {
            "an output node"
        } else {
            "not a video capture node"
        };
        return Err(format!("`{}` ({}) is {what}", p.card, p.driver));
    }
    if ISP_DRIVERS.contains(&p.driver.as_str()) {
        return Err(format!(
            "`{}` ({}) is an image signal processor's output, fed only by libcamera",
            p.card, p.driver
        ));
    }
    if !p.formats.iter().any(|f| DECODED.contains(&f)) {
        let offered: Vec<String> = p.formats.iter().map(fourcc).collect();
        return Err(format!(
            "`{}` ({}) offers only {} (raw sensor data: a Pi CSI camera is read through `rpicam-vid -t 0 --codec mjpeg -o - | kestrel run --source mjpeg:-`)",
            p.card,
            p.driver,
            if offered.is_empty() {
                "no formats".to_string()
            } else {
                offered.join(", ")
            }
        ));
    }
    Ok(())
}

/// The first node, in device-number order, that captures.
pub fn first_capture(probes: &[Probe]) -> Option<&Probe> {
    probes.iter().find(|p| verdict(p).is_ok())
}

/// Every `/dev/videoN`, in number order, as V4L2 reports it. Nodes that cannot be opened (in use,
/// no permission) are listed with no capabilities, so the reason shows.
#[cfg(feature = "camera")]
pub fn probe_all() -> Vec<Probe> {
    let mut paths: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let n: u32 = name.strip_prefix("video")?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
        .into_iter()
        .map(|(_, path)| {
            // A node that cannot be read is listed (and skipped) with the reason.
            probe(&path).unwrap_or_else(|why| Probe {
                path,
                driver: String::new(),
                card: String::new(),
                device_caps: 0,
                formats: Vec::new(),
                unreadable: Some(why),
            })
        })
        .collect()
}

#[cfg(feature = "camera")]
fn probe(path: &std::path::Path) -> Result<Probe, String> {
    use v4l::video::Capture;
    let dev = v4l::Device::with_path(path).map_err(|e| format!("cannot open: {e} (are you in the `video` group?)"))?;
    let caps = dev.query_caps().map_err(|e| format!("cannot query: {e}"))?;
    let formats = dev
        .enum_formats()
        .map(|fs| fs.iter().map(|f| f.fourcc.repr).collect())
        .unwrap_or_default();
    Ok(Probe {
        path: path.to_path_buf(),
        driver: caps.driver,
        card: caps.card,
        device_caps: caps.capabilities.bits(),
        formats,
        unreadable: None,
    })
}

#[cfg(not(feature = "camera"))]
pub fn probe_all() -> Vec<Probe> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::caps::*;
    use super::*;

    fn node(n: u32, driver: &str, card: &str, device_caps: u32, formats: &[&[u8; 4]]) -> Probe {
        Probe {
            path: PathBuf::from(format!("/dev/video{n}")),
            driver: driver.into(),
            card: card.into(),
            device_caps,
            formats: formats.iter().map(|f| **f).collect(),
            unreadable: None,
        }
    }

    const CAP: u32 = VIDEO_CAPTURE | STREAMING | EXT_PIX_FORMAT;
    const M2M: u32 = VIDEO_M2M_MPLANE | STREAMING | EXT_PIX_FORMAT;
    const META: u32 = META_CAPTURE | STREAMING | EXT_PIX_FORMAT;

    /// A Raspberry Pi 4 on Bookworm with a CSI sensor (unicam) and a USB webcam plugged in after
    /// boot, as `v4l2-ctl --list-devices`, `--info` and `--list-formats` report the nodes: the
    /// sensor's raw node first, then codec and ISP nodes, the webcam last.
    fn pi4_with_csi_and_webcam() -> Vec<Probe> {
        vec![
            node(0, "unicam", "unicam", CAP | READWRITE | IO_MC, &[b"pRAA", b"RG10"]),
            node(1, "unicam", "unicam", META | READWRITE | IO_MC, &[b"SENS"]),
            node(10, "bcm2835-codec", "bcm2835-codec-decode", M2M, &[b"YU12", b"NV12"]),
            node(11, "bcm2835-codec", "bcm2835-codec-encode", M2M, &[b"H264"]),
            node(12, "bcm2835-codec", "bcm2835-codec-isp", M2M, &[b"YUYV", b"RGB3"]),
            node(
                13,
                "bcm2835-isp",
                "bcm2835-isp",
                VIDEO_OUTPUT | STREAMING | EXT_PIX_FORMAT,
                &[],
            ),
            node(
                14,
                "bcm2835-isp",
                "bcm2835-isp",
                CAP,
                &[b"YUYV", b"YU12", b"NV12", b"RGB3"],
            ),
            node(15, "bcm2835-isp", "bcm2835-isp", CAP, &[b"YUYV", b"YU12", b"NV12"]),
            node(16, "bcm2835-isp", "bcm2835-isp", META, &[b"BSTA"]),
            node(18, "bcm2835-codec", "bcm2835-codec-image_fx", M2M, &[b"YU12"]),
            node(19, "rpivid", "rpivid", M2M, &[b"NC12"]),
            node(
                20,
                "bcm2835-isp",
                "bcm2835-isp",
                VIDEO_OUTPUT | STREAMING | EXT_PIX_FORMAT,
                &[],
            ),
            node(21, "bcm2835-isp", "bcm2835-isp", CAP, &[b"YUYV", b"NV12"]),
            node(24, "uvcvideo", "HD Pro Webcam C920", CAP, &[b"YUYV", b"MJPG", b"H264"]),
            node(25, "uvcvideo", "HD Pro Webcam C920", META, &[b"UVCH"]),
        ]
    }

    #[test]
    fn on_a_pi_the_webcam_is_chosen_over_isp_codec_and_raw_sensor_nodes() {
        let probes = pi4_with_csi_and_webcam();
        let chosen = first_capture(&probes).expect("the webcam captures");
        assert_eq!(chosen.path, PathBuf::from("/dev/video24"));
        assert_eq!(chosen.index(), Some(24));
        let why = |n: usize| verdict(&probes[n]).expect_err("skipped");
        assert!(why(0).contains("pRAA, RG10"), "{}", why(0));
        assert!(why(1).contains("metadata"), "{}", why(1));
        assert!(why(2).contains("memory-to-memory"), "{}", why(2));
        assert!(why(5).contains("output node"), "{}", why(5));
        assert!(why(6).contains("image signal processor"), "{}", why(6));
    }

    #[test]
    fn a_pi_with_only_a_csi_sensor_has_no_v4l2_camera() {
        let probes: Vec<Probe> = pi4_with_csi_and_webcam()
            .into_iter()
            .filter(|p| p.driver != "uvcvideo")
            .collect();
        assert_eq!(first_capture(&probes), None);
    }

    #[test]
    fn a_laptop_webcam_is_its_first_node() {
        let probes = vec![
            node(0, "uvcvideo", "Integrated Camera", CAP, &[b"MJPG", b"YUYV"]),
            node(1, "uvcvideo", "Integrated Camera", META, &[b"UVCH"]),
            node(2, "uvcvideo", "Integrated IR Camera", CAP, &[b"GREY"]),
        ];
        assert_eq!(first_capture(&probes).and_then(Probe::index), Some(0));
        // Multi-planar-only capture (Pi 5's rp1-cfe exposes both; some SoCs only this) is skipped.
        let mplane = node(3, "rkcif", "rkcif", VIDEO_CAPTURE_MPLANE | STREAMING, &[b"NV12"]);
        assert!(verdict(&mplane).expect_err("skipped").contains("multi-planar"));
    }
}
