//! Splitting a Motion-JPEG byte stream (concatenated JPEG files, as `rpicam-vid --codec mjpeg -o -`
//! writes them) into frames. The splitter walks JPEG segment lengths up to the scan, then scans
//! the entropy-coded data for the next real marker, so an EXIF thumbnail (a JPEG inside APP1)
//! cannot end a frame early. Garbage between frames is skipped; a frame cut short by a new SOI
//! is reported as corrupt; nothing grows without bound.

use std::io::Read;

/// A frame larger than this is treated as corrupt (a stream without EOI would otherwise buffer
/// forever).
pub const MAX_FRAME_BYTES: usize = 32 << 20;

/// What the splitter found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// One complete JPEG, SOI to EOI.
    Frame(Vec<u8>),
    /// Bytes that were not a complete JPEG (a truncated frame, or an oversized one).
    Corrupt { bytes: usize, reason: &'static str },
}

enum Scan {
    /// A frame spans `start..end`.
    Frame { start: usize, end: usize },
    /// The frame starting at `start` is cut by a new SOI at `next`.
    Truncated { start: usize, next: usize },
    /// Not enough data yet; keep bytes from `keep` on. `resume`, when a frame has started (at
    /// `keep`), is where to carry on once more bytes arrive.
    NeedMore { keep: usize, resume: Option<Resume> },
}

/// How far into a started frame the scan got: the next byte to look at (relative to the
/// frame's SOI) and whether it is inside entropy-coded data. Carrying it between pushes keeps
/// splitting linear in the stream length: a frame arriving in many small reads (TCP segments)
/// is not rescanned from its SOI on every read.
#[derive(Debug, Clone, Copy)]
struct Resume {
    at: usize,
    in_scan: bool,
}

fn scan(buf: &[u8], resume: Option<Resume>) -> Scan {
    let (start, mut i, mut in_scan) = match resume {
        // A resumed frame always starts at 0: everything before it was drained.
        Some(r) => (0, r.at, r.in_scan),
        None => {
            let Some(start) = buf.windows(2).position(|w| w == [0xFF, 0xD8]) else {
                // Keep a trailing 0xFF: it may be the first half of the next SOI.
                let keep = if buf.last() == Some(&0xFF) {
                    buf.len() - 1
                } else {
                    buf.len()
                };
                return Scan::NeedMore { keep, resume: None };
            };
            (start, start + 2, false)
        }
    };
    let more = |at: usize, in_scan: bool| Scan::NeedMore {
        keep: start,
        resume: Some(Resume {
            at: at - start,
            in_scan,
        }),
    };
    loop {
        if i > buf.len() {
            // Inside a segment whose length points past what has arrived.
            return more(i, in_scan);
        }
        if in_scan {
            // Entropy-coded data: 0xFF 0x00 is a stuffed byte, 0xFF 0xD0..=0xD7 a restart
            // marker; any other 0xFF xx is the next marker.
            match buf[i..]
                .windows(2)
                .position(|w| w[0] == 0xFF && w[1] != 0x00 && !(0xD0..=0xD7).contains(&w[1]))
            {
                Some(p) => {
                    i += p;
                    in_scan = false;
                }
                // The last byte may be half of a marker: look at it again next time.
                None => return more(i.max(buf.len().saturating_sub(1)), true),
            }
        }
        if i + 2 > buf.len() {
            return more(i, false);
        }
        if buf[i] != 0xFF {
            // Not a marker where one must be: the frame is damaged. Resynchronise on the next SOI.
            return match buf[i..].windows(2).position(|w| w == [0xFF, 0xD8]) {
                Some(p) => Scan::Truncated { start, next: i + p },
                None => more(i, false),
            };
        }
        let marker = buf[i + 1];
        match marker {
            0xD9 => return Scan::Frame { start, end: i + 2 },
            0xD8 => return Scan::Truncated { start, next: i },
            // Fill bytes before a marker.
            0xFF => i += 1,
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                if i + 4 > buf.len() {
                    return more(i, false);
                }
                let len = u16::from_be_bytes([buf[i + 2], buf[i + 3]]) as usize;
                if len < 2 {
                    return match buf[i + 2..].windows(2).position(|w| w == [0xFF, 0xD8]) {
                        Some(p) => Scan::Truncated { start, next: i + 2 + p },
                        None => more(i, false),
                    };
                }
                i += 2 + len;
                in_scan = marker == 0xDA;
            }
        }
    }
}

/// Incremental splitter: push bytes in, take pieces out.
#[derive(Debug, Default)]
pub struct Splitter {
    buf: Vec<u8>,
    resume: Option<Resume>,
    /// Bytes dropped as garbage between frames (not counted as corrupt frames).
    pub skipped_bytes: u64,
}

impl Splitter {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete piece, or `None` until more bytes arrive.
    pub fn next_piece(&mut self) -> Option<Piece> {
        match scan(&self.buf, self.resume.take()) {
            Scan::Frame { start, end } => {
                self.skipped_bytes += start as u64;
                let frame = self.buf[start..end].to_vec();
                self.buf.drain(..end);
                Some(Piece::Frame(frame))
            }
            Scan::Truncated { start, next } => {
                self.skipped_bytes += start as u64;
                self.buf.drain(..next);
                Some(Piece::Corrupt {
                    bytes: next - start,
                    reason: "frame cut short (a new frame started before its end marker)",
                })
            }
            Scan::NeedMore { keep, resume } => {
                self.skipped_bytes += keep as u64;
                self.buf.drain(..keep);
                if self.buf.len() <= MAX_FRAME_BYTES {
                    self.resume = resume;
                    return None;
                }
                // Drop the oversized frame up to the next SOI in what is left (or all of it).
                let bytes = match self.buf[2..].windows(2).position(|w| w == [0xFF, 0xD8]) {
                    Some(p) => 2 + p,
                    None => self.buf.len(),
                };
                self.buf.drain(..bytes);
                Some(Piece::Corrupt {
                    bytes,
                    reason: "frame larger than the 32 MiB limit",
                })
            }
        }
    }

    /// At end of stream: whatever is left, reported as a truncated frame if it started one.
    pub fn finish(&mut self) -> Option<Piece> {
        let rest = std::mem::take(&mut self.buf);
        self.resume = None;
        match rest.windows(2).position(|w| w == [0xFF, 0xD8]) {
            Some(start) => {
                self.skipped_bytes += start as u64;
                Some(Piece::Corrupt {
                    bytes: rest.len() - start,
                    reason: "stream ended inside a frame",
                })
            }
            None => {
                self.skipped_bytes += rest.len() as u64;
                None
            }
        }
    }
}

/// Pieces from a reader, read in chunks; `Ok(None)` at end of stream.
pub struct MjpegReader<R> {
    reader: R,
    splitter: Splitter,
    done: bool,
}

impl<R: Read> MjpegReader<R> {
    pub fn new(reader: R) -> Self {
        MjpegReader {
            reader,
            splitter: Splitter::default(),
            done: false,
        }
    }

    pub fn skipped_bytes(&self) -> u64 {
        self.splitter.skipped_bytes
    }

    pub fn next_piece(&mut self) -> std::io::Result<Option<Piece>> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if let Some(p) = self.splitter.next_piece() {
                return Ok(Some(p));
            }
            if self.done {
                return Ok(self.splitter.finish());
            }
            match self.reader.read(&mut chunk) {
                Ok(0) => self.done = true,
                Ok(n) => self.splitter.push(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal well-formed JPEG-shaped byte string: SOI, APP0, SOS with entropy data holding
    /// a stuffed 0xFF00 and a restart marker, EOI.
    fn fake_jpeg(fill: u8) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x4A, 0x46];
        v.extend([0xFF, 0xDA, 0x00, 0x03, 0x01]);
        v.extend([fill, 0xFF, 0x00, fill, 0xFF, 0xD3, fill]);
        v.extend([0xFF, 0xD9]);
        v
    }

    fn split_all(bytes: &[u8]) -> Vec<Piece> {
        let mut r = MjpegReader::new(std::io::Cursor::new(bytes.to_vec()));
        let mut out = Vec::new();
        while let Some(p) = r.next_piece().expect("read") {
            out.push(p);
        }
        out
    }

    #[test]
    fn an_endless_frame_is_cut_at_the_limit_and_every_byte_accounted() {
        let mut endless = vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02];
        endless.resize(MAX_FRAME_BYTES + 1000, 0x55);
        let good = fake_jpeg(7);
        let mut s = Splitter::default();
        let mut pieces = Vec::new();
        for part in endless.chunks(1 << 20).chain([&good[..]]) {
            s.push(part);
            while let Some(p) = s.next_piece() {
                pieces.push(p);
            }
        }
        assert_eq!(
            pieces,
            vec![
                Piece::Corrupt {
                    bytes: endless.len(),
                    reason: "frame larger than the 32 MiB limit"
                },
                Piece::Frame(good.clone())
            ]
        );
        assert_eq!(s.skipped_bytes, 0);
    }

    #[test]
    fn splits_frames_across_any_chunking_and_skips_garbage() {
        let (a, b) = (fake_jpeg(1), fake_jpeg(2));
        let mut stream = b"garbage".to_vec();
        stream.extend(&a);
        stream.extend([0x00, 0xFF, 0x12]);
        stream.extend(&b);
        for chunk in 1..stream.len() {
            let mut s = Splitter::default();
            let mut frames = Vec::new();
            for piece in stream.chunks(chunk) {
                s.push(piece);
                while let Some(p) = s.next_piece() {
                    frames.push(p);
                }
            }
            assert_eq!(
                frames,
                vec![Piece::Frame(a.clone()), Piece::Frame(b.clone())],
                "chunk {chunk}"
            );
            assert_eq!(s.finish(), None);
            assert_eq!(s.skipped_bytes, 10);
        }
    }

    #[test]
    fn a_thumbnail_inside_app1_does_not_end_the_frame() {
        let thumb = fake_jpeg(9);
        let mut frame = vec![0xFF, 0xD8, 0xFF, 0xE1];
        frame.extend(((thumb.len() + 2) as u16).to_be_bytes());
        frame.extend(&thumb);
        frame.extend(&fake_jpeg(3)[2..]);
        assert_eq!(split_all(&frame), vec![Piece::Frame(frame.clone())]);
    }

    #[test]
    fn truncated_frames_are_reported_and_the_next_one_kept() {
        let good = fake_jpeg(4);
        let mut stream = good[..good.len() - 5].to_vec();
        stream.extend(&good);
        stream.extend(&good[..6]);
        let pieces = split_all(&stream);
        assert!(matches!(pieces[0], Piece::Corrupt { .. }), "{pieces:?}");
        assert_eq!(pieces[1], Piece::Frame(good.clone()));
        assert!(matches!(
            pieces[2],
            Piece::Corrupt {
                reason: "stream ended inside a frame",
                ..
            }
        ));
        assert_eq!(pieces.len(), 3);
    }
}
