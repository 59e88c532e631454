//! A frame as the live loop meets it: arbitrary bytes decoded as an image (any format the
//! decoder sniffs, under a pixel limit) or as a raw camera buffer, then preprocessed for the
//! model. Any input must give a tensor or an error.
#![no_main]

use std::path::Path;

use image::DynamicImage;
use kestrel_runtime::decode::decode_bytes;
use kestrel_runtime::preprocess::{PreprocessSpec, ResizePolicy, preprocess};
use kestrel_runtime::source::convert;
use libfuzzer_sys::fuzz_target;

/// A 512×512 frame: enough to reach every decoder path, small enough that an unoptimised build
/// decodes a few hundred a second, and a bomb is refused like any image over the limit.
const MAX_PIXELS: u64 = 1 << 18;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let image = if mode < 0xF0 {
        decode_bytes(rest, Path::new("fuzz.jpg"), MAX_PIXELS).ok()
    } else {
        // Raw camera buffers: width and height from the next two bytes.
        let [w, h, pixels @ ..] = rest else {
            return;
        };
        let (w, h) = (u32::from(*w), u32::from(*h));
        match mode & 3 {
            0 => convert::yuyv_to_rgb(w, h, pixels),
            1 => convert::nv12_to_rgb(w, h, pixels),
            2 => convert::rgb24(w, h, pixels),
            _ => convert::grey8(w, h, pixels),
        }
        .ok()
        .map(DynamicImage::ImageRgb8)
    };
    let Some(image) = image else {
        return;
    };
    let mut spec = PreprocessSpec::efficientnet_lite(224);
    if let Ok(t) = preprocess(&image, &spec) {
        assert_eq!(t.len(), spec.tensor_len());
        assert!(t.iter().all(|v| v.is_finite()));
    }
    // The other policy, an odd size, upscaling.
    spec.resize = ResizePolicy::Stretch;
    spec.width = 1 + u32::from(mode % 97);
    spec.height = 1 + u32::from(mode % 13);
    let _ = preprocess(&image, &spec);
});
