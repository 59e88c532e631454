//! Writes the seed corpus of each fuzz target under the given folder (default `fuzz/corpus`):
//! small valid inputs the fuzzer mutates from. `scripts/fuzz.sh` runs it when a seed is missing.

use std::path::PathBuf;

use anyhow::Context;
use image::{DynamicImage, ImageFormat};
use kestrel_e2e::corpus;
use kestrel_runtime::source::synthetic_jpeg;

fn main() -> anyhow::Result<()> {
    let root = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("fuzz/corpus"), PathBuf::from);
    let write = |target: &str, name: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };

    write("bundle", "tiny.onnx", &kestrel_e2e::tiny_bundle_bytes()?)?;

    let (a, b) = (synthetic_jpeg(16, 8, 0), synthetic_jpeg(8, 16, 1));
    let mut stream = vec![7u8];
    stream.extend_from_slice(&a);
    stream.extend_from_slice(b"\x00garbage\xff");
    stream.extend_from_slice(&b);
    write("mjpeg", "two-frames", &stream)?;
    let mut cut = vec![3u8];
    cut.extend_from_slice(&a[..a.len() / 2]);
    cut.extend_from_slice(&b);
    write("mjpeg", "truncated-then-good", &cut)?;

    let photo = corpus::card(24, 16);
    let image = DynamicImage::ImageRgb8(photo.clone());
    let mut formats = vec![("jpeg", corpus::jpeg_bytes(&photo))];
    for (name, format) in [
        ("png", ImageFormat::Png),
        ("gif", ImageFormat::Gif),
        ("bmp", ImageFormat::Bmp),
        ("tiff", ImageFormat::Tiff),
        ("webp", ImageFormat::WebP),
    ] {
        let mut out = std::io::Cursor::new(Vec::new());
        image
            .write_to(&mut out, format)
            .with_context(|| format!("encoding {name}"))?;
        formats.push((name, out.into_inner()));
    }
    formats.push(("exif-rotated", corpus::with_exif_orientation(&formats[0].1, 6)));
    formats.push(("palette-png", corpus::palette_png(9, 7)));
    formats.push(("cmyk-tiff", corpus::cmyk_tiff(6, 4, [10, 200, 30, 5])));
    for (name, bytes) in formats {
        let mut seed = vec![0u8];
        seed.extend_from_slice(&bytes);
        write("frame", name, &seed)?;
    }
    // Raw camera buffers: mode byte (0xF0 | format), width, height, pixels.
    for (mode, name, bytes_per_pixel) in [
        (0xF0u8, "yuyv", 2usize),
        (0xF1, "nv12", 0),
        (0xF2, "rgb24", 3),
        (0xF3, "grey", 1),
    ] {
        let (w, h) = (8u8, 6u8);
        let len = if bytes_per_pixel == 0 {
            8 * 6 * 3 / 2
        } else {
            8 * 6 * bytes_per_pixel
        };
        let mut seed = vec![mode, w, h];
        seed.extend((0..len).map(|i| (i * 37 % 251) as u8));
        write("frame", name, &seed)?;
    }
    println!("seeds written under {}", root.display());
    Ok(())
}
