//! Frames from an MJPEG byte stream: stdin (`rpicam-vid … -o -`), a file or named pipe, or TCP.

use std::fs::File;
use std::io::{BufReader, Read};
use std::net::TcpStream;
use std::time::Instant;

use super::{Frame, FrameSource, MjpegInput, Next, OpenOptions, Payload, SourceError, mjpeg};

/// An MJPEG byte stream.
pub struct MjpegSource {
    what: String,
    live: bool,
    reader: mjpeg::MjpegReader<Box<dyn Read + Send>>,
    next: u64,
}

impl MjpegSource {
    pub fn open(input: &MjpegInput, options: &OpenOptions) -> Result<Self, SourceError> {
        let (what, live, reader): (String, bool, Box<dyn Read + Send>) = match input {
            MjpegInput::Stdin => ("MJPEG stream on stdin".into(), true, Box::new(std::io::stdin())),
            MjpegInput::Path(p) => {
                let file = File::open(p).map_err(|source| SourceError::Io {
                    what: p.display().to_string(),
                    source,
                })?;
                // A named pipe is fed in real time (a camera); a regular file is a recording.
                let is_fifo = file_is_fifo(&file);
                let live = options.live.unwrap_or(is_fifo);
                let kind = if is_fifo { "pipe" } else { "file" };
                (
                    format!("MJPEG {kind} {}", p.display()),
                    live,
                    Box::new(BufReader::new(file)),
                )
            }
            MjpegInput::Tcp(addr) => {
                let stream = TcpStream::connect(addr).map_err(|source| SourceError::Io {
                    what: format!("tcp://{addr}"),
                    source,
                })?;
                (format!("MJPEG over TCP from {addr}"), true, Box::new(stream))
            }
        };
        Ok(MjpegSource {
            what,
            live,
            reader: mjpeg::MjpegReader::new(reader),
            next: 0,
        })
    }

    /// A source over any reader (tests, and callers with their own transport).
    pub fn from_reader(what: &str, live: bool, reader: Box<dyn Read + Send>) -> Self {
        MjpegSource {
            what: what.into(),
            live,
            reader: mjpeg::MjpegReader::new(reader),
            next: 0,
        }
    }
}

#[cfg(unix)]
fn file_is_fifo(file: &File) -> bool {
    use std::os::unix::fs::FileTypeExt;
    file.metadata().map(|m| m.file_type().is_fifo()).unwrap_or(false)
}

#[cfg(not(unix))]
fn file_is_fifo(_: &File) -> bool {
    false
}

impl FrameSource for MjpegSource {
    fn describe(&self) -> String {
        self.what.clone()
    }

    fn is_live(&self) -> bool {
        self.live
    }

    fn next(&mut self) -> Result<Next, SourceError> {
        let piece = self.reader.next_piece().map_err(|source| SourceError::Io {
            what: self.what.clone(),
            source,
        })?;
        let index = self.next;
        Ok(match piece {
            None => Next::End,
            Some(p) => {
                self.next += 1;
                match p {
                    mjpeg::Piece::Frame(bytes) => Next::Frame(Frame {
                        index,
                        captured: Instant::now(),
                        name: None,
                        payload: Payload::Encoded(bytes),
                    }),
                    mjpeg::Piece::Corrupt { bytes, reason } => Next::Corrupt {
                        index,
                        reason: format!("{reason}, {bytes} bytes"),
                    },
                }
            }
        })
    }
}
