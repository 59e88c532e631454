//! Preprocessing, ours against the `image` crate's reference path, interleaved in one run.
//!
//! `cargo bench -p kestrel-runtime --bench preprocess [-- ITERATIONS]`
//!
//! For each camera size: JPEG decode, Kestrel's crop + resize + normalise, and the same steps done
//! with `image::imageops` (what Kestrel did before its own resampler). Both must give the same
//! tensor, bit for bit, or the bench stops: a faster resize that changed pixels would be train/
//! serve skew for every model trained before it.

use std::hint::black_box;
use std::time::Instant;

use image::imageops;
use kestrel_runtime::decode::decode_bytes;
use kestrel_runtime::preprocess::{self, PreprocessSpec, normalize_into};
use kestrel_runtime::source::synthetic_jpeg;

fn median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() * 9 / 10])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; the first number, if any, is the iteration count.
    let iterations = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(200);
    let spec = PreprocessSpec::efficientnet_lite(224);
    println!(
        "| frame | decode p50 ms | image-crate preprocess p50 (p90) ms | Kestrel preprocess p50 (p90) ms | speed-up |"
    );
    println!("|---|---|---|---|---|");
    for (w, h) in [(640, 480), (1280, 720), (1920, 1080)] {
        let jpeg = synthetic_jpeg(w, h, 1);
        let name = std::path::Path::new("synthetic.jpg");
        let (mut decode, mut reference, mut ours) = (vec![], vec![], vec![]);
        let mut a = vec![0.0; spec.tensor_len()];
        let mut b = vec![0.0; spec.tensor_len()];
        for _ in 0..iterations {
            let t = Instant::now();
            let image = decode_bytes(&jpeg, name, u64::MAX)?;
            decode.push(t.elapsed().as_secs_f64() * 1e3);

            let t = Instant::now();
            let (x, y, cw, ch) = spec.source_region(w, h);
            let crop = image.crop_imm(x, y, cw, ch).to_rgb8();
            let resized = imageops::resize(&crop, spec.width, spec.height, spec.filter.into());
            normalize_into(&resized, &spec, &mut a)?;
            reference.push(t.elapsed().as_secs_f64() * 1e3);

            let t = Instant::now();
            preprocess::preprocess_into(&image, &spec, &mut b)?;
            ours.push(t.elapsed().as_secs_f64() * 1e3);
            black_box((&a, &b));
            if a != b {
                return Err(format!("{w}x{h}: Kestrel's preprocessing differs from the image crate's").into());
            }
        }
        let (d, _) = median(decode);
        let (r50, r90) = median(reference);
        let (o50, o90) = median(ours);
        println!(
            "| {w}×{h} | {d:.2} | {r50:.2} ({r90:.2}) | {o50:.2} ({o90:.2}) | {:.2}× |",
            r50 / o50
        );
    }
    Ok(())
}
