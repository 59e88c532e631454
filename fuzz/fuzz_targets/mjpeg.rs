//! The MJPEG stream splitter on arbitrary bytes in arbitrary chunkings. Besides not panicking,
//! it must account for every byte (frame + corrupt + skipped bytes = input), and how the pipe
//! happened to cut the stream must not change what comes out.
#![no_main]

use kestrel_runtime::source::mjpeg::{Piece, Splitter};
use libfuzzer_sys::fuzz_target;

fn split(stream: &[u8], chunk: usize) -> (Vec<Piece>, u64) {
    let mut splitter = Splitter::default();
    let mut pieces = Vec::new();
    for part in stream.chunks(chunk) {
        splitter.push(part);
        while let Some(piece) = splitter.next_piece() {
            pieces.push(piece);
        }
    }
    pieces.extend(splitter.finish());
    (pieces, splitter.skipped_bytes)
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so one input explores one way the pipe may split it.
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let (pieces, skipped) = split(stream, usize::from(chunk).max(1));
    let (mut framed, mut corrupt) = (0usize, 0usize);
    for piece in &pieces {
        match piece {
            Piece::Frame(f) => {
                assert!(
                    f.starts_with(&[0xFF, 0xD8]) && f.ends_with(&[0xFF, 0xD9]),
                    "frame not SOI..EOI"
                );
                framed += f.len();
            }
            Piece::Corrupt { bytes, .. } => corrupt += bytes,
        }
    }
    assert_eq!(
        framed + corrupt + skipped as usize,
        stream.len(),
        "bytes lost or counted twice"
    );
    assert_eq!(
        split(stream, stream.len().max(1)),
        (pieces, skipped),
        "chunking changed the result"
    );
});
