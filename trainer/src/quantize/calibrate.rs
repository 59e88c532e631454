//! Activation ranges from the user's own images: the float bundle runs in tract with every
//! intermediate tensor exposed as an output, and each tensor's values go into a histogram. From
//! one pass we get both min/max and percentile ranges, so the quantiser can try each and keep the
//! one that measures better, and each channel's mean, which bias correction (see [`super::bias`])
//! needs.

use std::collections::HashMap;
use std::path::Path;

use rayon::prelude::*;
use tract_onnx::pb;
use tract_onnx::prelude::*;

use super::QuantizeError;

const BINS: usize = 2048;

/// Counts of |x| for positive and negative values separately over `[0, limit)`, `limit` a power
/// of two that doubles (merging bin pairs) when a larger value arrives, so any two histograms
/// align exactly and merge.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    positive: Vec<u64>,
    negative: Vec<u64>,
    limit: f32,
    pub min: f32,
    pub max: f32,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            positive: vec![0; BINS],
            negative: vec![0; BINS],
            limit: 0.0,
            min: 0.0,
            max: 0.0,
        }
    }
}

fn halve(bins: &mut [u64]) {
    for i in 0..BINS / 2 {
        bins[i] = bins[2 * i] + bins[2 * i + 1];
    }
    bins[BINS / 2..].fill(0);
}

impl Histogram {
    fn grow_to(&mut self, magnitude: f32) {
        if self.limit == 0.0 {
            self.limit = magnitude.max(f32::MIN_POSITIVE).log2().ceil().exp2();
            // log2/exp2 rounding can land a hair below; one more doubling fixes it.
            if self.limit <= magnitude {
                self.limit *= 2.0;
            }
            return;
        }
        while self.limit <= magnitude {
            halve(&mut self.positive);
            halve(&mut self.negative);
            self.limit *= 2.0;
        }
    }

    pub fn add(&mut self, values: &[f32]) {
        let (lo, hi) = values
            .iter()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        if lo > hi {
            return;
        }
        self.min = self.min.min(lo);
        self.max = self.max.max(hi);
        self.grow_to(lo.abs().max(hi.abs()));
        let per_bin = BINS as f32 / self.limit;
        for &v in values.iter().filter(|v| v.is_finite()) {
            let bin = ((v.abs() * per_bin) as usize).min(BINS - 1);
            if v >= 0.0 {
                self.positive[bin] += 1;
            } else {
                self.negative[bin] += 1;
            }
        }
    }

    pub fn merge(mut self, mut other: Histogram) -> Histogram {
        if other.limit > self.limit {
            std::mem::swap(&mut self, &mut other);
        }
        if other.limit > 0.0 {
            while other.limit < self.limit {
                halve(&mut other.positive);
                halve(&mut other.negative);
                other.limit *= 2.0;
            }
            for (a, b) in self.positive.iter_mut().zip(&other.positive) {
                *a += b;
            }
            for (a, b) in self.negative.iter_mut().zip(&other.negative) {
                *a += b;
            }
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self
    }

    /// The magnitude below which a `fraction` of the counts in `bins` lie (upper bin edge).
    fn quantile(&self, bins: &[u64], fraction: f64) -> f32 {
        let total: u64 = bins.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let target = (total as f64 * fraction).ceil() as u64;
        let mut seen = 0;
        for (i, &c) in bins.iter().enumerate() {
            seen += c;
            if seen >= target {
                return (i + 1) as f32 * self.limit / BINS as f32;
            }
        }
        self.limit
    }

    /// Estimated quantisation noise over signal power for u8 over `[lo, hi]`: rounding noise
    /// (step²/12) inside the range, squared clipping error outside. A cheap per-tensor
    /// sensitivity, from the histogram alone.
    pub fn noise_to_signal(&self, (lo, hi): (f32, f32)) -> f64 {
        let step = ((hi - lo).max(1e-8) / 255.0) as f64;
        let width = self.limit as f64 / BINS as f64;
        let (mut signal, mut noise, mut count) = (0.0f64, 0.0f64, 0u64);
        for (bins, sign) in [(&self.positive, 1.0f64), (&self.negative, -1.0)] {
            for (i, &c) in bins.iter().enumerate().filter(|(_, c)| **c > 0) {
                let x = sign * (i as f64 + 0.5) * width;
                let clipped = x.clamp(lo as f64, hi as f64);
                signal += c as f64 * x * x;
                noise += c as f64 * ((x - clipped).powi(2) + step * step / 12.0);
                count += c;
            }
        }
        if count == 0 || signal == 0.0 {
            return 0.0;
        }
        noise / signal
    }

    /// `[min, max]` with the top `1 − fraction` of each sign's magnitudes clipped off.
    pub fn percentile(&self, fraction: f64) -> (f32, f32) {
        let hi = self.quantile(&self.positive, fraction).min(self.max);
        let lo = -self.quantile(&self.negative, fraction).min(-self.min);
        (lo.min(0.0), hi.max(0.0))
    }
}

/// Running sums of one tensor's values per channel (axis 1 of `[N, C, …]`). The sums are kept in
/// fixed point (units of 2⁻⁴⁰) so that adding them is exact, whatever order the parallel
/// calibration merges images in: the same images give the same means bit for bit, and the
/// corrected biases, hence the int8 file, are reproducible.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelMeans {
    sums: Vec<i128>,
    /// Values summed per channel.
    count: u64,
}

const FIXED_POINT: f64 = (1u64 << 40) as f64;

impl ChannelMeans {
    /// Sums `values` of `shape` (rank ≥ 2, C-contiguous); other shapes are left out.
    pub fn add(&mut self, shape: &[usize], values: &[f32]) {
        let [_, channels, rest @ ..] = shape else { return };
        let inner: usize = rest.iter().product();
        if *channels == 0 || inner == 0 || !values.len().is_multiple_of(channels * inner) {
            return;
        }
        if self.sums.len() != *channels {
            if self.count > 0 {
                return;
            }
            self.sums = vec![0; *channels];
        }
        for block in values.chunks(channels * inner) {
            for (sum, channel) in self.sums.iter_mut().zip(block.chunks(inner)) {
                *sum += channel
                    .iter()
                    .filter(|v| v.is_finite())
                    .map(|&v| (v as f64 * FIXED_POINT).round() as i128)
                    .sum::<i128>();
            }
        }
        self.count += (values.len() / channels) as u64;
    }

    pub fn merge(mut self, other: ChannelMeans) -> ChannelMeans {
        if self.count == 0 {
            return other;
        }
        if other.sums.len() == self.sums.len() {
            for (a, b) in self.sums.iter_mut().zip(&other.sums) {
                *a += b;
            }
            self.count += other.count;
        }
        self
    }

    pub fn means(&self) -> Vec<f32> {
        let n = self.count.max(1) as f64;
        self.sums.iter().map(|&s| (s as f64 / FIXED_POINT / n) as f32).collect()
    }
}

/// How activation ranges are chosen from the histograms.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum RangeMethod {
    MinMax,
    /// Keep this share of each tensor's values inside the range (e.g. 0.9999).
    Percentile(f64),
}

impl std::fmt::Display for RangeMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RangeMethod::MinMax => write!(f, "min/max"),
            RangeMethod::Percentile(p) => write!(f, "percentile {}", p * 100.0),
        }
    }
}

/// Histograms of every activation tensor of one model over the calibration images.
#[derive(Debug, Clone, Default)]
pub struct Calibration {
    pub images: usize,
    pub tensors: HashMap<String, Histogram>,
    /// Per-channel means of the same tensors (those of rank ≥ 2).
    pub channels: HashMap<String, ChannelMeans>,
}

impl Calibration {
    pub fn ranges(&self, method: RangeMethod) -> HashMap<String, (f32, f32)> {
        self.tensors
            .iter()
            .map(|(name, h)| {
                let range = match method {
                    RangeMethod::MinMax => (h.min, h.max),
                    RangeMethod::Percentile(p) => h.percentile(p),
                };
                (name.clone(), range)
            })
            .collect()
    }

    /// Each tensor's per-channel means.
    pub fn channel_means(&self) -> HashMap<String, Vec<f32>> {
        self.channels.iter().map(|(k, c)| (k.clone(), c.means())).collect()
    }
}

/// The float activations of `proto`: its input and every node output.
fn activation_names(proto: &pb::ModelProto) -> Vec<String> {
    let Some(graph) = proto.graph.as_ref() else {
        return Vec::new();
    };
    graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .filter(|o| !o.is_empty())
        .collect()
}

/// Run the float bundle `proto` over `inputs` (each one image, `shape`), in parallel, and
/// histogram every activation. The graph input is included: the first Conv reads it.
pub fn calibrate(
    proto: &pb::ModelProto,
    shape: [usize; 4],
    inputs: &[Vec<f32>],
    path: &Path,
) -> Result<Calibration, QuantizeError> {
    let tract_err = |e: TractError| QuantizeError::Calibrate {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    };
    let mut probe = proto.clone();
    let names = activation_names(&probe);
    if let Some(graph) = probe.graph.as_mut() {
        graph.output = names
            .iter()
            .map(|n| pb::ValueInfoProto {
                name: n.clone(),
                ..Default::default()
            })
            .collect();
    }
    let input_name = proto
        .graph
        .as_ref()
        .and_then(|g| g.input.first())
        .map(|i| i.name.clone())
        .unwrap_or_default();
    // Kestrel's parser: the same tract settings as the runtime (see int8::onnx).
    let plan = kestrel_runtime::int8::onnx()
        .model_for_proto_model(&probe)
        .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(tract_err)?;
    type Stats = (HashMap<String, Histogram>, HashMap<String, ChannelMeans>);
    fn merge_into<T>(
        mut a: HashMap<String, T>,
        b: HashMap<String, T>,
        merge: impl Fn(T, T) -> T,
    ) -> HashMap<String, T> {
        for (k, v) in b {
            let merged = match a.remove(&k) {
                Some(prev) => merge(prev, v),
                None => v,
            };
            a.insert(k, merged);
        }
        a
    }
    let (tensors, channels) = inputs
        .par_iter()
        .map(|input| -> Result<Stats, QuantizeError> {
            let tensor = Tensor::from_shape(&shape, input).map_err(tract_err)?;
            let outputs = plan.run(tvec!(tensor.into())).map_err(tract_err)?;
            let mut hists = HashMap::with_capacity(names.len() + 1);
            let mut means = HashMap::with_capacity(names.len() + 1);
            let mut add = |name: &str, dims: &[usize], values: &[f32]| {
                let mut h = Histogram::default();
                h.add(values);
                hists.insert(name.to_string(), h);
                let mut m = ChannelMeans::default();
                m.add(dims, values);
                means.insert(name.to_string(), m);
            };
            add(&input_name, &shape, input);
            for (name, value) in names.iter().zip(outputs.iter()) {
                if let Ok(view) = value.to_plain_array_view::<f32>() {
                    match view.as_slice() {
                        Some(s) => add(name, view.shape(), s),
                        None => add(name, view.shape(), &view.iter().copied().collect::<Vec<_>>()),
                    }
                }
            }
            Ok((hists, means))
        })
        .try_reduce(
            || (HashMap::new(), HashMap::new()),
            |(ha, ma), (hb, mb)| {
                Ok((
                    merge_into(ha, hb, Histogram::merge),
                    merge_into(ma, mb, ChannelMeans::merge),
                ))
            },
        )?;
    Ok(Calibration {
        images: inputs.len(),
        tensors,
        channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_clips_rare_outliers_and_min_max_keeps_them() {
        let mut h = Histogram::default();
        let mut values: Vec<f32> = (0..10_000).map(|i| (i % 100) as f32 / 100.0).collect();
        values.push(50.0);
        values.push(-0.5);
        h.add(&values);
        assert_eq!((h.min, h.max), (-0.5, 50.0));
        let (lo, hi) = h.percentile(0.999);
        assert!(hi < 1.1 && hi > 0.9, "{hi}");
        assert!(lo <= -0.45, "a lone negative value sets the negative side: {lo}");
    }

    #[test]
    fn channel_means_are_per_channel_over_batch_and_space() {
        // [2, 3, 2]: two images, three channels of two values each.
        let values = [1.0f32, 3.0, 10.0, 10.0, -1.0, 0.0, 3.0, 5.0, 20.0, 20.0, -3.0, 0.0];
        let mut whole = ChannelMeans::default();
        whole.add(&[2, 3, 2], &values);
        assert_eq!(whole.means(), [3.0, 15.0, -1.0]);
        let (mut a, mut b) = (ChannelMeans::default(), ChannelMeans::default());
        a.add(&[1, 3, 2], &values[..6]);
        b.add(&[1, 3, 2], &values[6..]);
        assert_eq!(a.clone().merge(b.clone()), whole);
        assert_eq!(b.merge(a), whole, "merged in either order, the sums are the same");
        let mut vector = ChannelMeans::default();
        vector.add(&[4], &[1.0, 2.0, 3.0, 4.0]);
        assert!(vector.means().is_empty(), "rank 1 has no channel axis");
    }

    #[test]
    fn histograms_merge_across_limits() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        a.add(&[0.1, 0.2, 0.3]);
        b.add(&[3.0, -7.0]);
        let m = a.clone().merge(b.clone());
        assert_eq!(m.merge(Histogram::default()), b.merge(a));
    }
}
