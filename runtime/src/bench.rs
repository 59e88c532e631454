//! Latency of bundles side by side, in one process: models load one after another, then their
//! inferences interleave (A, B, A, B, …) so a noisy machine slows them alike and the ratio holds.

use crate::stats::quantile;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::Cost;

use crate::classifier::{Classifier, ClassifierError, LoadOptions, prepare_error};

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub model: PathBuf,
    pub precision: String,
    pub file_bytes: u64,
    /// Parse + validate + optimise, milliseconds.
    pub load_ms: f64,
    /// Resident memory the process gained while loading this model, MiB (Linux; 0 elsewhere).
    pub load_rss_mib: f64,
    pub iterations: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub mean_ms: f64,
    pub images_per_second: f64,
    /// Multiply-accumulates of one inference, counted by tract on the decluttered graph
    /// (integer and float alike).
    pub macs: u64,
    /// What runs the model: Kestrel's int8 kernels for the lowered part, tract for the rest.
    pub kernels: String,
    pub int8: crate::int8::Lowered,
    /// The logits of the fixed input, so another engine fed the same input can be compared.
    pub logits: Vec<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub threads: usize,
    pub results: Vec<BenchResult>,
    /// This CPU's f32 matrix-product rate through tract's own kernels at these threads, MAC/s:
    /// the denominator of each model's arithmetic floor.
    pub matmul_macs_per_second: f64,
    /// Peak resident memory of the whole process, MiB (Linux; 0 elsewhere).
    pub peak_rss_mib: f64,
}

/// A `/proc/self/status` field in MiB (`VmRSS`, `VmHWM`); 0 where there is no procfs.
pub fn proc_status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The benchmarks' input: fixed and deterministic (inference time does not depend on pixel
/// values), and the same pattern `scripts/ort_bench.py` feeds onnxruntime, so outputs compare.
pub fn fixed_input(len: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0).collect()
}

/// Load each model, run `warmup` untimed then `iterations` timed inferences, interleaved.
pub fn run(
    models: &[PathBuf],
    options: &LoadOptions,
    warmup: usize,
    iterations: usize,
) -> Result<BenchReport, ClassifierError> {
    let mut loaded = Vec::new();
    for path in models {
        let rss = proc_status_mib("VmRSS:");
        let t = Instant::now();
        let classifier = Classifier::load(path, options)?;
        let load_ms = t.elapsed().as_secs_f64() * 1e3;
        let load_rss_mib = (proc_status_mib("VmRSS:") - rss).max(0.0);
        let macs = model_macs(&crate::Bundle::read(path)?, path)?;
        let input = fixed_input(classifier.metadata().preprocess.tensor_len());
        loaded.push((classifier, input, load_ms, load_rss_mib, macs));
    }
    for _ in 0..warmup {
        for (c, input, ..) in &loaded {
            c.logits(input)?;
        }
    }
    let mut outputs = Vec::new();
    for (c, input, ..) in &loaded {
        outputs.push(c.logits(input)?);
    }
    let mut samples = vec![Vec::with_capacity(iterations); loaded.len()];
    for _ in 0..iterations {
        for ((c, input, ..), s) in loaded.iter().zip(&mut samples) {
            let t = Instant::now();
            c.logits(input)?;
            s.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let results = loaded
        .iter()
        .zip(samples)
        .zip(outputs)
        .map(|(((c, _, load_ms, load_rss_mib, macs), mut s), logits)| {
            s.sort_by(f64::total_cmp);
            let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
            BenchResult {
                model: c.path().to_path_buf(),
                precision: c.metadata().model_card.precision.clone(),
                file_bytes: file_size(c.path()),
                load_ms: *load_ms,
                load_rss_mib: *load_rss_mib,
                iterations,
                p50_ms: quantile(&s, 0.5),
                p95_ms: quantile(&s, 0.95),
                mean_ms: mean,
                images_per_second: 1e3 / mean,
                macs: *macs,
                kernels: c.kernels(),
                int8: c.int8(),
                logits,
            }
        })
        .collect();
    Ok(BenchReport {
        threads: options.threads,
        results,
        matmul_macs_per_second: matmul_rate(options, iterations.clamp(3, 20))?,
        peak_rss_mib: proc_status_mib("VmHWM:"),
    })
}

/// Multiply-accumulates of one inference of `bundle`, from tract's cost model on the decluttered
/// graph (before kernel selection, so each Conv/Gemm counts its true arithmetic once).
pub fn model_macs(bundle: &crate::Bundle, path: &Path) -> Result<u64, ClassifierError> {
    let prepare = prepare_error(path);
    let model = crate::int8::onnx()
        .model_for_proto_model(&bundle.proto)
        .and_then(|m| m.with_input_fact(0, f32::fact(bundle.metadata.preprocess.batch_shape(1)).into()))
        .and_then(|m| m.into_typed())
        .and_then(|m| m.into_decluttered())
        .map_err(prepare)?;
    let mut macs = 0u64;
    for node in model.nodes() {
        let inputs = model.node_input_facts(node.id).map_err(prepare)?;
        for (cost, count) in node.op.cost(&inputs).map_err(prepare)? {
            if matches!(cost, Cost::FMA(_)) {
                macs += count.to_i64().map_err(|e| prepare(e.into()))?.max(0) as u64;
            }
        }
    }
    Ok(macs)
}

/// The f32 MAC/s of a 512×512 by 512×512 matrix product through tract (the kernels its convs
/// become), p50 of `iterations`: what "as fast as this CPU multiplies" means for the floor.
pub fn matmul_rate(options: &LoadOptions, iterations: usize) -> Result<f64, ClassifierError> {
    const N: usize = 512;
    crate::int8::avoid_faulty_tract_kernels();
    let prepare = prepare_error(Path::new("<matmul probe>"));
    let mut model = TypedModel::default();
    let a = model.add_source("a", f32::fact([N, N])).map_err(prepare)?;
    let b: Vec<f32> = (0..N * N).map(|i| ((i * 31) % 97) as f32 / 97.0).collect();
    let b = model
        .add_const(
            "b",
            tract_ndarray::Array2::from_shape_vec((N, N), b).map_err(|e| prepare(e.into()))?,
        )
        .map_err(prepare)?;
    let c = model
        .wire_node(
            "c",
            tract_onnx::tract_core::ops::einsum::EinSum::new("mk,kn->mn".parse().map_err(prepare)?, f32::datum_type()),
            &[a, b],
        )
        .map_err(prepare)?;
    model.select_output_outlets(&c).map_err(prepare)?;
    let plan = model
        .into_optimized()
        .and_then(|m| m.into_runnable_with_options(&options.run_options()))
        .map_err(prepare)?;
    let input: Tensor = tract_ndarray::Array2::<f32>::from_elem((N, N), 0.5).into();
    let mut times = Vec::with_capacity(iterations + 1);
    for _ in 0..=iterations {
        let t = Instant::now();
        plan.run(tvec!(input.clone().into())).map_err(prepare)?;
        times.push(t.elapsed().as_secs_f64());
    }
    // The first run pays for packing and page faults.
    let mut times = times.split_off(1);
    times.sort_by(f64::total_cmp);
    Ok((N * N * N) as f64 / quantile(&times, 0.5))
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// An aligned table, with each model's p50 as a ratio to the first model's.
pub fn table(report: &BenchReport) -> String {
    let base = report.results.first().map_or(f64::NAN, |r| r.p50_ms);
    let mut s = format!(
        "{:<44} {:>16} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9} {:>7}\n",
        "model", "precision", "size MiB", "load ms", "p50 ms", "p95 ms", "img/s", "+RSS MiB", "vs #1"
    );
    for r in &report.results {
        let name = r.model.display().to_string();
        let name = if name.len() > 44 {
            format!("…{}", &name[name.len() - 43..])
        } else {
            name
        };
        s += &format!(
            "{:<44} {:>16} {:>9.1} {:>9.0} {:>9.2} {:>8.2} {:>8.1} {:>9.1} {:>6.2}×\n",
            name,
            r.precision,
            r.file_bytes as f64 / 1048576.0,
            r.load_ms,
            r.p50_ms,
            r.p95_ms,
            r.images_per_second,
            r.load_rss_mib,
            base / r.p50_ms
        );
        s += &format!("{:<44} kernels: {}\n", "", r.kernels);
    }
    s += &format!(
        "{} thread(s), {} interleaved iterations each; peak RSS of the process {:.0} MiB\n",
        report.threads,
        report.results.first().map_or(0, |r| r.iterations),
        report.peak_rss_mib
    );
    let rate = report.matmul_macs_per_second;
    s += &format!("f32 matrix products through tract here: {:.1} GMAC/s\n", rate / 1e9);
    for r in &report.results {
        let floor_ms = r.macs as f64 / rate * 1e3;
        s += &format!(
            "  {}: {:.3} GMAC → floor {:.2} ms at that rate; p50 is {:.1}× the floor\n",
            r.model.display(),
            r.macs as f64 / 1e9,
            floor_ms,
            r.p50_ms / floor_ms
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(proc_status_mib("VmRSS:") > 0.0);
        }
    }
}
