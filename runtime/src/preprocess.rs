//! Image → model input tensor. The only preprocessing code in Kestrel: the trainer builds its
//! batches with these functions too, so what a model sees in training is bit-for-bit what it sees
//! on the device.

use image::imageops::FilterType;

use crate::resample;
use image::{DynamicImage, RgbImage};
use serde::{Deserialize, Serialize};

/// How the image is brought to the model's input size. Serialised in `kestrel.preprocess`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum ResizePolicy {
    /// The centred region with the input's aspect ratio, `crop_fraction` of the largest such
    /// region, resized to the input size. Same as "resize the shorter side to size/crop_fraction,
    /// then centre-crop", done in the cheaper order (crop first, resize once).
    ShorterSideCrop { crop_fraction: f32 },
    /// The whole image resized to the input size, aspect ratio not kept.
    Stretch,
}

/// Resampling filter, by the names a user of PIL or the `image` crate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    Nearest,
    /// Bilinear, antialiased when downscaling.
    Triangle,
    /// Bicubic.
    CatmullRom,
    Lanczos3,
}

impl From<Filter> for FilterType {
    fn from(f: Filter) -> Self {
        match f {
            Filter::Nearest => FilterType::Nearest,
            Filter::Triangle => FilterType::Triangle,
            Filter::CatmullRom => FilterType::CatmullRom,
            Filter::Lanczos3 => FilterType::Lanczos3,
        }
    }
}

/// Channel order of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// Memory layout of the input tensor. Only NCHW f32 exists today; the field is in the contract
/// so a later layout is a format change a loader can refuse, not a silent misread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    NchwF32,
}

/// Everything needed to turn a decoded image into the model's input: `kestrel.preprocess`.
///
/// Pixel values are taken as 0..=255 and normalised per channel as `(v - mean[c]) / std[c]`,
/// which also expresses scale/offset schemes (`v / 255` is mean 0, std 255).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessSpec {
    pub width: u32,
    pub height: u32,
    pub resize: ResizePolicy,
    pub filter: Filter,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub channels: ChannelOrder,
    pub layout: Layout,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("input size {width}x{height} is empty")]
    EmptyInput { width: u32, height: u32 },
    #[error("input size {width}x{height} is over {max} per side: no classifier this runtime serves needs that")]
    InputTooLarge { width: u32, height: u32, max: u32 },
    #[error("crop_fraction {0} must be in (0, 1]")]
    CropFraction(f32),
    #[error("std[{channel}] = {value} must be finite and non-zero")]
    Std { channel: usize, value: f32 },
    #[error("mean[{channel}] = {value} must be finite")]
    Mean { channel: usize, value: f32 },
}

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("image is empty ({width}x{height})")]
    EmptyImage { width: u32, height: u32 },
    #[error("output buffer holds {found} values, the model input needs {expected}")]
    BufferSize { expected: usize, found: usize },
}

impl PreprocessSpec {
    /// The largest input side a spec may ask for. A corrupt or hostile spec could otherwise make
    /// every frame allocate gigabytes; real classifier inputs are a few hundred pixels.
    pub const MAX_SIDE: u32 = 4096;

    /// The normalisation the EfficientNet-Lite ImageNet weights were trained with:
    /// `(v - 127) / 128` on RGB, bilinear, 87.5% centre crop.
    pub fn efficientnet_lite(size: u32) -> Self {
        PreprocessSpec {
            width: size,
            height: size,
            resize: ResizePolicy::ShorterSideCrop { crop_fraction: 0.875 },
            filter: Filter::Triangle,
            mean: [127.0; 3],
            std: [128.0; 3],
            channels: ChannelOrder::Rgb,
            layout: Layout::NchwF32,
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if self.width == 0 || self.height == 0 {
            return Err(SpecError::EmptyInput {
                width: self.width,
                height: self.height,
            });
        }
        if self.width > Self::MAX_SIDE || self.height > Self::MAX_SIDE {
            return Err(SpecError::InputTooLarge {
                width: self.width,
                height: self.height,
                max: Self::MAX_SIDE,
            });
        }
        if let ResizePolicy::ShorterSideCrop { crop_fraction } = self.resize
            && !(crop_fraction > 0.0 && crop_fraction <= 1.0)
        {
            return Err(SpecError::CropFraction(crop_fraction));
        }
        for channel in 0..3 {
            let value = self.std[channel];
            if !value.is_finite() || value == 0.0 {
                return Err(SpecError::Std { channel, value });
            }
            let value = self.mean[channel];
            if !value.is_finite() {
                return Err(SpecError::Mean { channel, value });
            }
        }
        Ok(())
    }

    /// Number of f32 values in one image's tensor (C·H·W).
    pub fn tensor_len(&self) -> usize {
        3 * self.width as usize * self.height as usize
    }

    /// The tensor shape for a batch of `n`.
    pub fn batch_shape(&self, n: usize) -> [usize; 4] {
        [n, 3, self.height as usize, self.width as usize]
    }

    /// The region of a `w`×`h` source image that the resize policy keeps: (x, y, width, height).
    pub fn source_region(&self, w: u32, h: u32) -> (u32, u32, u32, u32) {
        match self.resize {
            ResizePolicy::Stretch => (0, 0, w, h),
            ResizePolicy::ShorterSideCrop { crop_fraction } => {
                // The largest centred region with the target aspect ratio, then shrunk.
                let target_aspect = self.width as f64 / self.height as f64;
                let (mut cw, mut ch) = if w as f64 / h as f64 > target_aspect {
                    (h as f64 * target_aspect, h as f64)
                } else {
                    (w as f64, w as f64 / target_aspect)
                };
                cw *= crop_fraction as f64;
                ch *= crop_fraction as f64;
                let cw = (cw.round() as u32).clamp(1, w);
                let ch = (ch.round() as u32).clamp(1, h);
                ((w - cw) / 2, (h - ch) / 2, cw, ch)
            }
        }
    }
}

/// Crop and resize per the spec, to 8-bit RGB at the model's input size. Any colour type the
/// `image` crate decodes is accepted: grey is replicated, alpha dropped, 16-bit and float scaled
/// to 0..=255.
pub fn resize_to_input(image: &DynamicImage, spec: &PreprocessSpec) -> Result<RgbImage, PreprocessError> {
    resize_region(image, spec.source_region(image.width(), image.height()), spec)
}

/// Crop `region` (x, y, width, height) and resize it to the input size with the spec's filter.
/// [`resize_to_input`] with the policy's region; the trainer's random crops pass their own.
pub fn resize_region(
    image: &DynamicImage,
    (x, y, cw, ch): (u32, u32, u32, u32),
    spec: &PreprocessSpec,
) -> Result<RgbImage, PreprocessError> {
    let (w, h) = (image.width(), image.height());
    // Clamped to the image the way `crop_imm` clamps.
    let (x, y) = (x.min(w), y.min(h));
    let (cw, ch) = (cw.min(w - x), ch.min(h - y));
    if cw == 0 || ch == 0 {
        return Err(PreprocessError::EmptyImage { width: w, height: h });
    }
    let (cwu, chu) = (cw as usize, ch as usize);
    // Camera frames and JPEGs decode to RGB8: resample straight out of the decoded buffer.
    // Other colour types are converted (crop first, so only the region is copied).
    let converted;
    let (pixels, stride) = match image {
        DynamicImage::ImageRgb8(rgb) => {
            let stride = 3 * w as usize;
            (&rgb.as_raw()[y as usize * stride + 3 * x as usize..], stride)
        }
        other => {
            converted = other.crop_imm(x, y, cw, ch).to_rgb8();
            (&converted.as_raw()[..], 3 * cwu)
        }
    };
    if (cw, ch) == (spec.width, spec.height) {
        let mut out = Vec::with_capacity(3 * cwu * chu);
        for row in 0..chu {
            out.extend_from_slice(&pixels[row * stride..][..3 * cwu]);
        }
        return RgbImage::from_raw(cw, ch, out).ok_or(PreprocessError::EmptyImage { width: w, height: h });
    }
    Ok(resample::resize_rgb8(
        pixels,
        stride,
        (cwu, chu),
        (spec.width, spec.height),
        spec.filter,
    ))
}

/// Normalise an RGB image already at the input size into `out` (C·H·W, channel order per spec).
pub fn normalize_into(rgb: &RgbImage, spec: &PreprocessSpec, out: &mut [f32]) -> Result<(), PreprocessError> {
    let plane = spec.width as usize * spec.height as usize;
    let expected = 3 * plane;
    if out.len() != expected || rgb.dimensions() != (spec.width, spec.height) {
        return Err(PreprocessError::BufferSize {
            expected,
            found: out.len().min(3 * rgb.width() as usize * rgb.height() as usize),
        });
    }
    let source_channel = match spec.channels {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    };
    let (planes, _) = out.split_at_mut(expected);
    for (c, dst) in planes.chunks_exact_mut(plane).enumerate() {
        let (mean, std) = (spec.mean[c], spec.std[c]);
        let src = source_channel[c];
        for (d, px) in dst.iter_mut().zip(rgb.pixels()) {
            *d = (px.0[src] as f32 - mean) / std;
        }
    }
    Ok(())
}

/// Decoded image → the model's input for one image (C·H·W), written into `out`.
pub fn preprocess_into(image: &DynamicImage, spec: &PreprocessSpec, out: &mut [f32]) -> Result<(), PreprocessError> {
    let rgb = resize_to_input(image, spec)?;
    normalize_into(&rgb, spec, out)
}

/// Decoded image → the model's input for one image (C·H·W).
pub fn preprocess(image: &DynamicImage, spec: &PreprocessSpec) -> Result<Vec<f32>, PreprocessError> {
    let mut out = vec![0.0; spec.tensor_len()];
    preprocess_into(image, spec, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageBuffer, Luma, Rgb, Rgba, RgbaImage};

    fn stretch(width: u32, height: u32) -> PreprocessSpec {
        PreprocessSpec {
            resize: ResizePolicy::Stretch,
            width,
            height,
            ..PreprocessSpec::efficientnet_lite(width)
        }
    }

    #[test]
    fn solid_colour_gives_known_constants() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(40, 30, Rgb([255, 127, 0])));
        let spec = PreprocessSpec::efficientnet_lite(8);
        let t = preprocess(&img, &spec).expect("preprocess");
        assert_eq!(t.len(), 3 * 8 * 8);
        // (255-127)/128 = 1, (127-127)/128 = 0, (0-127)/128 = -0.9921875: exact in f32.
        assert!(t[..64].iter().all(|&v| v == 1.0));
        assert!(t[64..128].iter().all(|&v| v == 0.0));
        assert!(t[128..].iter().all(|&v| v == -0.9921875));
    }

    #[test]
    fn two_by_three_keeps_orientation_and_channel_order() {
        // 2 wide, 3 high; each pixel distinct per channel.
        let img = RgbImage::from_fn(2, 3, |x, y| {
            let i = (y * 2 + x) as u8;
            Rgb([i, 100 + i, 200 + i])
        });
        let mut spec = stretch(2, 3);
        spec.mean = [0.0; 3];
        spec.std = [1.0; 3];
        let t = preprocess(&DynamicImage::ImageRgb8(img.clone()), &spec).expect("preprocess");
        // CHW: plane R is row-major over (y, x).
        assert_eq!(&t[0..6], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(&t[6..12], &[100.0, 101.0, 102.0, 103.0, 104.0, 105.0]);
        assert_eq!(&t[12..18], &[200.0, 201.0, 202.0, 203.0, 204.0, 205.0]);

        spec.channels = ChannelOrder::Bgr;
        let t = preprocess(&DynamicImage::ImageRgb8(img), &spec).expect("preprocess");
        assert_eq!(&t[0..6], &[200.0, 201.0, 202.0, 203.0, 204.0, 205.0]);
        assert_eq!(&t[12..18], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn per_channel_mean_and_std() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 4, Rgb([10, 20, 30])));
        let mut spec = stretch(2, 2);
        spec.mean = [10.0, 10.0, 10.0];
        spec.std = [1.0, 2.0, 4.0];
        let t = preprocess(&img, &spec).expect("preprocess");
        assert_eq!(&t, &[0.0, 0.0, 0.0, 0.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]);
    }

    #[test]
    fn every_colour_mode_matches_rgb8() {
        let spec = stretch(3, 3);
        let rgb = DynamicImage::ImageRgb8(RgbImage::from_pixel(6, 6, Rgb([51, 51, 51])));
        let expected = preprocess(&rgb, &spec).expect("rgb");
        let grey = DynamicImage::ImageLuma8(GrayImage::from_pixel(6, 6, Luma([51])));
        let rgba = DynamicImage::ImageRgba8(RgbaImage::from_pixel(6, 6, Rgba([51, 51, 51, 7])));
        // 51 * 257 is 51 in 16-bit.
        let grey16 = DynamicImage::ImageLuma16(ImageBuffer::from_pixel(6, 6, Luma([51u16 * 257])));
        let rgb16 = DynamicImage::ImageRgb16(ImageBuffer::from_pixel(6, 6, Rgb([51u16 * 257; 3])));
        for (name, img) in [("grey", grey), ("rgba", rgba), ("grey16", grey16), ("rgb16", rgb16)] {
            assert_eq!(preprocess(&img, &spec).expect(name), expected, "{name}");
        }
    }

    #[test]
    fn shorter_side_crop_takes_the_centre() {
        let spec = PreprocessSpec::efficientnet_lite(224);
        // Landscape 400x200: square of side 200*0.875 = 175, centred.
        assert_eq!(spec.source_region(400, 200), (112, 12, 175, 175));
        // Portrait.
        assert_eq!(spec.source_region(200, 400), (12, 112, 175, 175));
        let mut full = spec.clone();
        full.resize = ResizePolicy::ShorterSideCrop { crop_fraction: 1.0 };
        assert_eq!(full.source_region(300, 100), (100, 0, 100, 100));
        // A left half black, right half white image: a centre crop of fraction 0.5 of a wide
        // image sees only the middle, so both halves stay visible and symmetric.
        let img = RgbImage::from_fn(8, 4, |x, _| if x < 4 { Rgb([0; 3]) } else { Rgb([255; 3]) });
        let mut spec = PreprocessSpec::efficientnet_lite(2);
        spec.resize = ResizePolicy::ShorterSideCrop { crop_fraction: 1.0 };
        spec.filter = Filter::Nearest;
        let t = preprocess(&DynamicImage::ImageRgb8(img), &spec).expect("preprocess");
        assert_eq!(&t[0..4], &[-0.9921875, 1.0, -0.9921875, 1.0]);
    }

    #[test]
    fn regions_are_clamped_like_crop_imm_in_every_colour_type() {
        let rgb = RgbImage::from_fn(30, 20, |x, y| Rgb([(x * 8) as u8, (y * 12) as u8, (x * y) as u8]));
        let spec = stretch(7, 5);
        for region in [(3, 2, 20, 10), (25, 15, 20, 20), (0, 0, 30, 20), (29, 19, 1, 1)] {
            let (x, y, w, h) = region;
            let crop = image::imageops::crop_imm(&rgb, x, y, w, h).to_image();
            let expected = image::imageops::resize(&crop, 7, 5, FilterType::Triangle);
            let as_rgb = resize_region(&DynamicImage::ImageRgb8(rgb.clone()), region, &spec).expect("rgb");
            let as_rgba = resize_region(
                &DynamicImage::ImageRgba8(DynamicImage::ImageRgb8(rgb.clone()).to_rgba8()),
                region,
                &spec,
            )
            .expect("rgba");
            assert!(as_rgb == expected, "{region:?}");
            assert!(as_rgba == expected, "{region:?} rgba");
        }
        let outside = resize_region(&DynamicImage::ImageRgb8(rgb), (30, 0, 5, 5), &spec);
        assert!(matches!(outside, Err(PreprocessError::EmptyImage { .. })));
    }

    #[test]
    fn invalid_specs_are_refused() {
        let good = PreprocessSpec::efficientnet_lite(224);
        assert_eq!(good.validate(), Ok(()));
        let mut s = good.clone();
        s.std[1] = 0.0;
        assert_eq!(s.validate(), Err(SpecError::Std { channel: 1, value: 0.0 }));
        let mut s = good.clone();
        s.width = 0;
        assert!(matches!(s.validate(), Err(SpecError::EmptyInput { .. })));
        let mut s = good.clone();
        s.height = PreprocessSpec::MAX_SIDE + 1;
        assert!(matches!(s.validate(), Err(SpecError::InputTooLarge { .. })));
        s.height = PreprocessSpec::MAX_SIDE;
        assert_eq!(s.validate(), Ok(()));
        let mut s = good;
        s.resize = ResizePolicy::ShorterSideCrop { crop_fraction: 1.5 };
        assert_eq!(s.validate(), Err(SpecError::CropFraction(1.5)));
    }

    #[test]
    fn wrong_buffer_is_an_error() {
        let spec = stretch(2, 2);
        let img = DynamicImage::ImageRgb8(RgbImage::new(2, 2));
        let mut small = vec![0.0; 5];
        assert!(matches!(
            preprocess_into(&img, &spec, &mut small),
            Err(PreprocessError::BufferSize { expected: 12, .. })
        ));
    }
}
