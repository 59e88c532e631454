//! `/metrics` in the Prometheus text format (version 0.0.4): what a fleet's existing
//! Prometheus/Grafana scrapes from every Pi.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::live::{FrameReport, Totals};

/// Upper bounds of the latency buckets, seconds: 1 ms (a decode on a desktop) to 2.5 s (a large
/// model on a Pi Zero).
const BUCKETS: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
const STAGES: [&str; 4] = ["capture", "decode", "preprocess", "inference"];

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Per bucket (not cumulative); the last slot is +Inf.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let slot = BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(BUCKETS.len());
        self.counts[slot] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Metrics {
    stages: [Histogram; 4],
    /// Reported labels; `uncertain` for results under the threshold. Bounded by the classes.
    labels: BTreeMap<String, u64>,
}

impl Metrics {
    pub fn record(&mut self, r: &FrameReport) {
        let t = r.timings_ms;
        for (h, ms) in self
            .stages
            .iter_mut()
            .zip([t.capture, t.decode, t.preprocess, t.inference])
        {
            h.observe(ms / 1e3);
        }
        let label = r.label.as_deref().unwrap_or("uncertain");
        *self.labels.entry(label.to_string()).or_default() += 1;
    }
}

/// A label value with `\`, `"` and newlines escaped as the format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The whole exposition.
pub(crate) fn render(m: &Metrics, totals: &Totals, fps: f64, clients: usize, dropped_clients: u64) -> String {
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    };
    counter("kestrel_frames_total", "Frames the source produced.", totals.frames);
    counter("kestrel_frames_inferred_total", "Frames classified.", totals.inferred);
    counter(
        "kestrel_frames_skipped_total",
        "Frames skipped by --every.",
        totals.skipped,
    );
    counter(
        "kestrel_frames_dropped_total",
        "Frames dropped as stale because inference was busy.",
        totals.dropped,
    );
    counter(
        "kestrel_frames_corrupt_total",
        "Frames that could not be decoded.",
        totals.corrupt,
    );
    counter(
        "kestrel_http_clients_dropped_total",
        "Web clients dropped for falling behind.",
        dropped_clients,
    );
    let _ = writeln!(
        out,
        "# HELP kestrel_fps Inferred frames per second over the last 5 s.\n# TYPE kestrel_fps gauge\nkestrel_fps {fps:.3}"
    );
    let _ = writeln!(
        out,
        "# HELP kestrel_http_clients Open web connections.\n# TYPE kestrel_http_clients gauge\nkestrel_http_clients {clients}"
    );
    let _ = writeln!(
        out,
        "# HELP kestrel_stage_seconds Time per frame in each stage.\n# TYPE kestrel_stage_seconds histogram"
    );
    for (stage, h) in STAGES.iter().zip(&m.stages) {
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&h.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "kestrel_stage_seconds_bucket{{stage=\"{stage}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "kestrel_stage_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {}\n\
             kestrel_stage_seconds_sum{{stage=\"{stage}\"}} {:.6}\n\
             kestrel_stage_seconds_count{{stage=\"{stage}\"}} {}",
            h.count, h.sum, h.count
        );
    }
    let _ = writeln!(
        out,
        "# HELP kestrel_label_total Results per reported label (`uncertain` below --threshold).\n\
         # TYPE kestrel_label_total counter"
    );
    for (label, n) in &m.labels {
        let _ = writeln!(out, "kestrel_label_total{{label=\"{}\"}} {n}", escape(label));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::StageTimes;

    fn report(label: Option<&str>, inference_ms: f64) -> FrameReport {
        FrameReport {
            frame: 0,
            timestamp_ms: 0.0,
            name: None,
            top: vec![],
            label: label.map(str::to_string),
            changed: true,
            timings_ms: StageTimes {
                inference: inference_ms,
                ..StageTimes::default()
            },
            saved: None,
        }
    }

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let mut m = Metrics::default();
        m.record(&report(Some("tabby"), 7.0));
        m.record(&report(Some("tabby"), 30.0));
        m.record(&report(Some("a \"quoted\\\" label"), 3000.0));
        m.record(&report(None, 1.0));
        let text = render(&m, &Totals::default(), 0.0, 0, 0);
        assert!(
            text.contains("kestrel_stage_seconds_bucket{stage=\"inference\",le=\"0.01\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("kestrel_stage_seconds_bucket{stage=\"inference\",le=\"0.05\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("kestrel_stage_seconds_bucket{stage=\"inference\",le=\"2.5\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("kestrel_stage_seconds_bucket{stage=\"inference\",le=\"+Inf\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("kestrel_stage_seconds_count{stage=\"inference\"} 4"),
            "{text}"
        );
        assert!(text.contains("kestrel_label_total{label=\"tabby\"} 2"), "{text}");
        assert!(text.contains("kestrel_label_total{label=\"uncertain\"} 1"), "{text}");
        assert!(
            text.contains(r#"kestrel_label_total{label="a \"quoted\\\" label"} 1"#),
            "{text}"
        );
    }
}
