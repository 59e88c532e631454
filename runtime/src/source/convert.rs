//! Raw camera buffers → RGB. MJPEG frames are not here: they are decoded by the same JPEG decoder
//! as every other source ([`crate::decode::decode_bytes`]).

use image::RgbImage;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a {format} frame of {width}x{height} needs {expected} bytes, got {got}")]
pub struct BufferSizeError {
    pub format: &'static str,
    pub width: u32,
    pub height: u32,
    pub expected: usize,
    pub got: usize,
}

fn check(
    format: &'static str,
    width: u32,
    height: u32,
    per_pixel_x2: usize,
    got: usize,
) -> Result<(), BufferSizeError> {
    let expected = width as usize * height as usize * per_pixel_x2 / 2;
    if got < expected || width == 0 || height == 0 {
        return Err(BufferSizeError {
            format,
            width,
            height,
            expected,
            got,
        });
    }
    Ok(())
}

/// Bytes per line of a buffer of `lines` lines whose pixels take `natural` bytes a line. V4L2
/// drivers may pad every line (`bytesperline` above the pixels' bytes, e.g. to a multiple of 32
/// or 64) and hand over `bytesperline × lines` bytes; the capture layer (nokhwa) does not pass
/// `bytesperline` on, so it is read off the length: a buffer that divides into `lines` equal
/// lines longer than `natural` is padded, anything else is packed.
fn stride(natural: usize, lines: usize, len: usize) -> usize {
    if lines > 0 && len.is_multiple_of(lines) && len / lines > natural {
        len / lines
    } else {
        natural
    }
}

/// BT.601 limited-range YCbCr → RGB, integer arithmetic (what UVC webcams send).
#[inline]
fn ycbcr(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = (y as i32 - 16).max(0) * 298;
    let d = u as i32 - 128;
    let e = v as i32 - 128;
    let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
    [clamp(c + 409 * e), clamp(c - 100 * d - 208 * e), clamp(c + 516 * d)]
}

/// YUYV 4:2:2 (YUY2): `Y0 U Y1 V` per two pixels; lines may be padded (see [`stride`]).
pub fn yuyv_to_rgb(width: u32, height: u32, data: &[u8]) -> Result<RgbImage, BufferSizeError> {
    check("YUYV", width, height, 4, data.len())?;
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    let row_bytes = width as usize * 2;
    let line = stride(row_bytes, height as usize, data.len());
    for line in data.chunks(line).take(height as usize) {
        let row = &line[..row_bytes];
        for px in row.chunks_exact(4) {
            out.extend(ycbcr(px[0], px[1], px[3]));
            out.extend(ycbcr(px[2], px[1], px[3]));
        }
        if width % 2 == 1 {
            // An odd width's last pixel shares a half macropixel.
            let px = &row[row_bytes - 2..];
            out.extend(ycbcr(px[0], px[1], px[1]));
        }
    }
    Ok(RgbImage::from_raw(width, height, out).unwrap_or_default())
}

/// NV12: a full-resolution Y plane, then interleaved U/V at half resolution both ways, both
/// planes at one line length, which may be padded (see [`stride`]).
pub fn nv12_to_rgb(width: u32, height: u32, data: &[u8]) -> Result<RgbImage, BufferSizeError> {
    let (w, h) = (width as usize, height as usize);
    let chroma = w.div_ceil(2) * 2 * h.div_ceil(2);
    let expected = w * h + chroma;
    if data.len() < expected || w == 0 || h == 0 {
        return Err(BufferSizeError {
            format: "NV12",
            width,
            height,
            expected,
            got: data.len(),
        });
    }
    let uv_row = w.div_ceil(2) * 2;
    let line = stride(uv_row, h + h.div_ceil(2), data.len());
    // Packed, the luma lines are `w` long and the chroma lines `uv_row`; padded, both `line`.
    let (luma_line, uv_line) = if line > uv_row { (line, line) } else { (w, uv_row) };
    let (luma, uv) = data.split_at(luma_line * h);
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let c = (y / 2) * uv_line + (x / 2) * 2;
            out.extend(ycbcr(luma[y * luma_line + x], uv[c], uv[c + 1]));
        }
    }
    Ok(RgbImage::from_raw(width, height, out).unwrap_or_default())
}

/// Packed 8-bit RGB.
pub fn rgb24(width: u32, height: u32, data: &[u8]) -> Result<RgbImage, BufferSizeError> {
    check("RGB24", width, height, 6, data.len())?;
    let row = width as usize * 3;
    let line = stride(row, height as usize, data.len());
    let pixels = data
        .chunks(line)
        .take(height as usize)
        .flat_map(|l| &l[..row])
        .copied()
        .collect();
    Ok(RgbImage::from_raw(width, height, pixels).unwrap_or_default())
}

/// 8-bit grey, replicated to RGB.
pub fn grey8(width: u32, height: u32, data: &[u8]) -> Result<RgbImage, BufferSizeError> {
    check("GRAY", width, height, 2, data.len())?;
    let row = width as usize;
    let line = stride(row, height as usize, data.len());
    let pixels = data
        .chunks(line)
        .take(height as usize)
        .flat_map(|l| &l[..row])
        .flat_map(|&g| [g, g, g])
        .collect();
    Ok(RgbImage::from_raw(width, height, pixels).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_reference_colours() {
        // Black, white, and saturated red / blue in BT.601 limited range.
        let data = [16, 128, 235, 128, 81, 90, 81, 240, 41, 240, 41, 110];
        let rgb = yuyv_to_rgb(6, 1, &data).expect("convert");
        let px: Vec<[u8; 3]> = rgb.pixels().map(|p| p.0).collect();
        assert_eq!(px[0], [0, 0, 0]);
        assert_eq!(px[1], [255, 255, 255]);
        assert!(px[2][0] > 240 && px[2][1] < 10 && px[2][2] < 10, "red: {:?}", px[2]);
        assert!(px[4][2] > 240 && px[4][0] < 10 && px[4][1] < 10, "blue: {:?}", px[4]);
    }

    #[test]
    fn short_buffers_are_errors_not_panics() {
        assert_eq!(
            yuyv_to_rgb(4, 2, &[0; 10]),
            Err(BufferSizeError {
                format: "YUYV",
                width: 4,
                height: 2,
                expected: 16,
                got: 10
            })
        );
        assert!(nv12_to_rgb(4, 4, &[0; 20]).is_err());
        assert!(rgb24(2, 2, &[0; 11]).is_err());
        assert!(grey8(0, 2, &[]).is_err());
        assert!(yuyv_to_rgb(3, 1, &[16, 128, 16, 128, 16, 128]).is_ok(), "odd width");
    }

    /// A YUYV buffer as a UVC camera records it (BT.601 limited range, 4:2:2), made from a photo-like
    /// gradient: converting it back lands within the chroma subsampling error of the original.
    #[test]
    fn yuyv_buffer_round_trips_a_gradient() {
        let (w, h) = (64u32, 8u32);
        let rgb = |x: u32, y: u32| [(x * 4) as u8, (y * 30) as u8, 200 - (x * 2) as u8];
        let to_yuv = |[r, g, b]: [u8; 3]| {
            let (r, g, b) = (r as f64, g as f64, b as f64);
            let y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0;
            let u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0;
            let v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0;
            (y.round() as u8, u, v)
        };
        let mut buf = Vec::new();
        for y in 0..h {
            for x in (0..w).step_by(2) {
                let (y0, u0, v0) = to_yuv(rgb(x, y));
                let (y1, u1, v1) = to_yuv(rgb(x + 1, y));
                buf.extend([y0, ((u0 + u1) / 2.0).round() as u8, y1, ((v0 + v1) / 2.0).round() as u8]);
            }
        }
        let out = yuyv_to_rgb(w, h, &buf).expect("convert");
        for (x, y, p) in out.enumerate_pixels() {
            for (got, want) in p.0.iter().zip(rgb(x, y)) {
                assert!(
                    (*got as i32 - want as i32).abs() <= 6,
                    "({x},{y}): {:?} vs {:?}",
                    p.0,
                    rgb(x, y)
                );
            }
        }
    }

    /// `bytes` with each of its `lines` lines of `natural` bytes padded to `padded` with 0x77.
    fn pad(bytes: &[u8], natural: usize, padded: usize) -> Vec<u8> {
        bytes
            .chunks(natural)
            .flat_map(|l| l.iter().copied().chain(std::iter::repeat_n(0x77, padded - natural)))
            .collect()
    }

    /// Drivers that pad lines (bytesperline 64 for a 20-pixel YUYV line of 40 bytes, say) give
    /// the same picture as a packed buffer, for every format; the padding bytes are never read as
    /// pixels.
    #[test]
    fn padded_lines_convert_like_packed_ones() {
        let (w, h) = (20u32, 6u32);
        let packed: Vec<u8> = (0..w * h * 2).map(|i| (16 + (i * 37) % 220) as u8).collect();
        let want = yuyv_to_rgb(w, h, &packed).expect("packed");
        assert_eq!(yuyv_to_rgb(w, h, &pad(&packed, 40, 64)).expect("padded"), want);

        let grey: Vec<u8> = (0..w * h).map(|i| (i * 7) as u8).collect();
        let want = grey8(w, h, &grey).expect("packed");
        assert_eq!(grey8(w, h, &pad(&grey, 20, 32)).expect("padded"), want);

        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 3) as u8).collect();
        let want = rgb24(w, h, &rgb).expect("packed");
        assert_eq!(rgb24(w, h, &pad(&rgb, 60, 64)).expect("padded"), want);

        // NV12: 6 luma lines then 3 chroma lines, all padded to 32 bytes.
        let nv12: Vec<u8> = (0..w * h + w * h / 2).map(|i| (16 + (i * 11) % 220) as u8).collect();
        let want = nv12_to_rgb(w, h, &nv12).expect("packed");
        assert_eq!(nv12_to_rgb(w, h, &pad(&nv12, 20, 32)).expect("padded"), want);
    }

    #[test]
    fn nv12_grey_stays_grey() {
        let mut data = vec![126u8; 16];
        data.extend([128u8; 8]);
        let rgb = nv12_to_rgb(4, 4, &data).expect("convert");
        assert!(
            rgb.pixels().all(|p| p.0 == [128, 128, 128]),
            "{:?}",
            rgb.get_pixel(0, 0)
        );
    }
}
