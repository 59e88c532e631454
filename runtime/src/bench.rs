//! Latency of bundles side by side, in one process: models load one after another, then their
//! inferences interleave (A, B, A, B, …) so a noisy machine slows them alike and the ratio holds.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::classifier::{Classifier, ClassifierError, LoadOptions};

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
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub threads: usize,
    pub results: Vec<BenchResult>,
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

/// The value at quantile `q` (0..=1) of sorted `values`, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
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
        // A fixed, deterministic input: inference time does not depend on pixel values.
        let input: Vec<f32> = (0..classifier.metadata().preprocess.tensor_len())
            .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
            .collect();
        loaded.push((classifier, input, load_ms, load_rss_mib));
    }
    for _ in 0..warmup {
        for (c, input, ..) in &loaded {
            c.logits(input)?;
        }
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
        .map(|((c, _, load_ms, load_rss_mib), mut s)| {
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
            }
        })
        .collect();
    Ok(BenchReport {
        threads: options.threads,
        results,
        peak_rss_mib: proc_status_mib("VmHWM:"),
    })
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
    }
    s += &format!(
        "{} thread(s), {} interleaved iterations each; peak RSS of the process {:.0} MiB\n",
        report.threads,
        report.results.first().map_or(0, |r| r.iterations),
        report.peak_rss_mib
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 10.0);
        assert_eq!(quantile(&v, 0.95), 19.0);
        assert_eq!(quantile(&v, 1.0), 20.0);
        assert_eq!(quantile(&[3.0], 0.95), 3.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(proc_status_mib("VmRSS:") > 0.0);
        }
    }
}
