//! Timing statistics shared by the benchmarks and the frame loop: nearest-rank quantiles, and a
//! bounded window of recent values with an all-time mean.

use std::collections::VecDeque;

use serde::Serialize;

/// Frames whose stage timings the percentiles are taken over (a fixed window: a loop that runs
/// for weeks must not grow).
pub const TIMING_WINDOW: usize = 1024;

/// The value at quantile `q` (0..=1) of sorted `values`, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub mean: f64,
}

/// The latest [`TIMING_WINDOW`] values (percentiles) and the mean of every value pushed.
#[derive(Default)]
pub struct Window {
    values: VecDeque<f64>,
    sum: f64,
    count: u64,
}

impl Window {
    pub fn push(&mut self, v: f64) {
        if self.values.len() == TIMING_WINDOW {
            self.values.pop_front();
        }
        self.values.push_back(v);
        self.sum += v;
        self.count += 1;
    }

    pub fn percentiles(&self) -> Percentiles {
        let mut sorted: Vec<f64> = self.values.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        Percentiles {
            p50: if sorted.is_empty() { 0.0 } else { quantile(&sorted, 0.5) },
            p95: if sorted.is_empty() {
                0.0
            } else {
                quantile(&sorted, 0.95)
            },
            mean: self.sum / self.count.max(1) as f64,
        }
    }
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
    fn timing_window_is_bounded_and_keeps_the_overall_mean() {
        let mut w = Window::default();
        for i in 0..(TIMING_WINDOW as u64 * 3) {
            w.push(i as f64);
        }
        assert_eq!(w.values.len(), TIMING_WINDOW);
        let p = w.percentiles();
        assert!(
            p.p50 >= (TIMING_WINDOW * 2) as f64,
            "p50 over the latest window: {}",
            p.p50
        );
        assert!((p.mean - (TIMING_WINDOW as f64 * 3.0 - 1.0) / 2.0).abs() < 1e-6);
    }
}
