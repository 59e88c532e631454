//! Synthetic frames for benchmarks and tests: no camera needed, same decode cost as one.

use std::time::Instant;

use image::RgbImage;

use super::{Frame, FrameSource, Next, Payload, SourceError};

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

#[cfg(test)]
mod tests {
    use super::*;

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
