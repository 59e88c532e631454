//! The bad-input corpus: every kind of awkward image file a user's folder holds, generated on the
//! fly (no committed binaries) with what Kestrel must do with it.
//!
//! The PNG, TIFF and EXIF bytes that the `image` crate cannot write (palette PNG, CMYK TIFF, an
//! orientation tag, a header promising a gigapixel) are assembled here by hand, to the format
//! specs.

use std::io;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb, RgbImage, Rgba, RgbaImage};

/// What decoding the file must give.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Decodes, upright, to this size.
    Decodes { width: u32, height: u32 },
    /// Refused with an error whose text contains this and the file's path.
    Refused(&'static str),
}

#[derive(Debug, Clone)]
pub struct Case {
    pub kind: &'static str,
    pub path: PathBuf,
    pub expect: Expect,
}

/// A photo-like test card: gradients plus a little noise, so codecs have real work to do.
pub fn card(width: u32, height: u32) -> RgbImage {
    let mut s = 0x9e37_79b9u32;
    RgbImage::from_fn(width, height, |x, y| {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        Rgb([
            (x * 255 / width.max(1)) as u8,
            (y * 255 / height.max(1)) as u8,
            ((x + y) as u8).wrapping_add((s & 15) as u8),
        ])
    })
}

pub fn jpeg_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    // Encoding an in-memory RGB buffer into a Vec has no failure mode.
    let _ = JpegEncoder::new_with_quality(&mut out, 90).encode_image(img);
    out
}

pub fn png_bytes(img: &DynamicImage) -> Vec<u8> {
    let mut out = io::Cursor::new(Vec::new());
    let _ = img.write_to(&mut out, ImageFormat::Png);
    out.into_inner()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// zlib with stored (uncompressed) deflate blocks: valid, and needs no compressor.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let chunks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, c) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        out.extend_from_slice(&(c.len() as u16).to_le_bytes());
        out.extend_from_slice(&(!(c.len() as u16)).to_le_bytes());
        out.extend_from_slice(c);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65_521;
        b = (b + a) % 65_521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

fn png_header(width: u32, height: u32, bit_depth: u8, colour_type: u8) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[bit_depth, colour_type, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    out
}

/// An 8-bit palette PNG with three colours in horizontal bands.
pub fn palette_png(width: u32, height: u32) -> Vec<u8> {
    let mut out = png_header(width, height, 8, 3);
    png_chunk(&mut out, b"PLTE", &[255, 0, 0, 0, 255, 0, 0, 0, 255]);
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0);
        raw.extend(std::iter::repeat_n((y * 3 / height) as u8, width as usize));
    }
    png_chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A PNG whose header promises `width`×`height` RGB pixels over one tiny IDAT: a decompression
/// bomb's shape, without the bomb.
pub fn bomb_png(width: u32, height: u32) -> Vec<u8> {
    let mut out = png_header(width, height, 8, 2);
    png_chunk(&mut out, b"IDAT", &zlib_stored(&[0; 64]));
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// An uncompressed, little-endian, chunky CMYK TIFF of one flat ink mix.
pub fn cmyk_tiff(width: u32, height: u32, ink: [u8; 4]) -> Vec<u8> {
    const SHORT: u16 = 3;
    const LONG: u16 = 4;
    let entries: [(u16, u16, u32, u32); 10] = [
        (256, LONG, 1, width),
        (257, LONG, 1, height),
        (258, SHORT, 4, 0), // BitsPerSample: four values, stored at `bits_at`.
        (259, SHORT, 1, 1), // no compression
        (262, SHORT, 1, 5), // separated (CMYK)
        (273, LONG, 1, 0),  // StripOffsets: `pixels_at`.
        (277, SHORT, 1, 4),
        (278, LONG, 1, height),
        (279, LONG, 1, width * height * 4),
        (284, SHORT, 1, 1), // chunky
    ];
    let ifd_at = 8u32;
    let bits_at = ifd_at + 2 + 12 * entries.len() as u32 + 4;
    let pixels_at = bits_at + 8;
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&ifd_at.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, kind, count, value) in entries {
        let value = match tag {
            258 => bits_at,
            273 => pixels_at,
            _ => value,
        };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        if kind == SHORT && count == 1 {
            out.extend_from_slice(&(value as u16).to_le_bytes());
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    for _ in 0..4 {
        out.extend_from_slice(&8u16.to_le_bytes());
    }
    for _ in 0..width * height {
        out.extend_from_slice(&ink);
    }
    out
}

/// `jpeg` with an EXIF APP1 segment carrying `orientation` inserted after SOI.
pub fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes());
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// Byte offset of the first marker `marker` (e.g. 0xc0 for SOF0) in a JPEG.
fn marker_at(jpeg: &[u8], marker: u8) -> Option<usize> {
    jpeg.windows(2).position(|w| w == [0xff, marker])
}

/// Write every image kind into `dir` (created) and return the cases. Names carry spaces and
/// non-ASCII on purpose.
pub fn images(dir: &Path) -> io::Result<Vec<Case>> {
    std::fs::create_dir_all(dir)?;
    let photo = card(64, 48);
    let jpeg = jpeg_bytes(&photo);
    let png = png_bytes(&DynamicImage::ImageRgb8(photo.clone()));
    let decodes = |width, height| Expect::Decodes { width, height };
    let mut files: Vec<(&'static str, &'static str, Vec<u8>, Expect)> = vec![
        ("jpeg", "plain photo.jpg", jpeg.clone(), decodes(64, 48)),
        (
            "truncated JPEG",
            "truncated.jpg",
            jpeg[..jpeg.len() / 3].to_vec(),
            Expect::Refused("not a readable image"),
        ),
        (
            "JPEG with a zero-size frame header",
            "zero frame.jpg",
            {
                let mut b = jpeg.clone();
                let sof = marker_at(&b, 0xc0).unwrap_or(2);
                // SOF0: marker, length(2), precision(1), height(2), width(2).
                for i in sof + 5..sof + 9 {
                    if let Some(v) = b.get_mut(i) {
                        *v = 0;
                    }
                }
                b
            },
            Expect::Refused("not a readable image"),
        ),
        (
            "JPEG header only",
            "header only.jpg",
            jpeg[..marker_at(&jpeg, 0xda).unwrap_or(20)].to_vec(),
            Expect::Refused("not a readable image"),
        ),
        (
            "truncated PNG",
            "truncated.png",
            png[..png.len() / 2].to_vec(),
            Expect::Refused("not a readable image"),
        ),
        (
            "PNG with a bad CRC",
            "bad crc.png",
            {
                let mut b = png.clone();
                // The last byte of IHDR's CRC.
                b[32] ^= 0xff;
                b
            },
            Expect::Refused("not a readable image"),
        ),
        (
            "zero-byte file",
            "empty.jpg",
            Vec::new(),
            Expect::Refused("not a readable image"),
        ),
        (
            "text with an image extension",
            "notes.png",
            b"shopping list: milk, eggs\n".to_vec(),
            Expect::Refused("not a readable image"),
        ),
        (
            "ONNX model with an image extension",
            "model.jpeg",
            b"\x08\x07\x12\x07pytorch\x1a\x032.1".to_vec(),
            Expect::Refused("not a readable image"),
        ),
        (
            "decompression bomb (PNG header of 100000x100000)",
            "bomb.png",
            bomb_png(100_000, 100_000),
            Expect::Refused("above the limit"),
        ),
        (
            "1x1 image",
            "one pixel.png",
            png_bytes(&DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, Rgb([200, 10, 10])))),
            decodes(1, 1),
        ),
        (
            "CMYK TIFF",
            "cmyk.tiff",
            cmyk_tiff(20, 10, [255, 0, 0, 0]),
            decodes(20, 10),
        ),
        (
            "16-bit RGB PNG",
            "deep colour.png",
            png_bytes(&DynamicImage::ImageRgb16(
                DynamicImage::ImageRgb8(photo.clone()).to_rgb16(),
            )),
            decodes(64, 48),
        ),
        (
            "16-bit grey PNG",
            "deep grey.png",
            png_bytes(&DynamicImage::ImageLuma16(ImageBuffer::from_fn(30, 20, |x, _| {
                Luma([(x * 2000) as u16])
            }))),
            decodes(30, 20),
        ),
        (
            "grey JPEG",
            "grey.jpg",
            {
                let mut out = Vec::new();
                let grey = DynamicImage::ImageRgb8(photo.clone()).to_luma8();
                JpegEncoder::new(&mut out)
                    .encode_image(&grey)
                    .map_err(io::Error::other)?;
                out
            },
            decodes(64, 48),
        ),
        (
            "RGBA PNG",
            "transparent.png",
            png_bytes(&DynamicImage::ImageRgba8(RgbaImage::from_fn(40, 30, |x, y| {
                Rgba([x as u8 * 6, y as u8 * 8, 90, (x * 6) as u8])
            }))),
            decodes(40, 30),
        ),
        ("palette PNG", "palette.png", palette_png(33, 21), decodes(33, 21)),
        (
            "EXIF-rotated JPEG (orientation 6)",
            "rotated.jpg",
            with_exif_orientation(&jpeg, 6),
            decodes(48, 64),
        ),
        (
            "GIF",
            "anim.gif",
            {
                let mut out = io::Cursor::new(Vec::new());
                DynamicImage::ImageRgb8(photo.clone())
                    .write_to(&mut out, ImageFormat::Gif)
                    .map_err(io::Error::other)?;
                out.into_inner()
            },
            decodes(64, 48),
        ),
        ("PNG named .jpg", "really a png.jpg", png.clone(), decodes(64, 48)),
        ("non-ASCII file name", "фото 猫 é.jpg", jpeg.clone(), decodes(64, 48)),
    ];
    let mut cases = Vec::new();
    for (kind, name, bytes, expect) in files.drain(..) {
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        cases.push(Case { kind, path, expect });
    }
    #[cfg(unix)]
    {
        let path = dir.join("gone.jpg");
        std::os::unix::fs::symlink(dir.join("deleted long ago.jpg"), &path)?;
        cases.push(Case {
            kind: "dangling symlink",
            path,
            expect: Expect::Refused("cannot open image"),
        });
        let path = dir.join("pipe.jpg");
        let status = std::process::Command::new("mkfifo").arg(&path).status()?;
        if !status.success() {
            return Err(io::Error::other(format!("mkfifo {} failed", path.display())));
        }
        cases.push(Case {
            kind: "named pipe with an image extension",
            path,
            expect: Expect::Refused("not a regular file"),
        });
    }
    Ok(cases)
}
