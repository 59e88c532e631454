//! The learning-rate range test (Smith 2015, as fastai's `lr_find`): train the new head on the
//! cached frozen-backbone features while the learning rate grows exponentially, record the
//! smoothed loss, stop once it explodes, and suggest the rate where the loss falls fastest.
//! It tunes phase 1's `head_lr`; fine-tuning conventionally uses a tenth of it.

use std::fmt::Write as _;

use burn::module::Module;
use burn::nn::Linear;
use serde::Serialize;

use super::phases::{head_loss, step};
use super::recipe::{loss_fn, optimizer};
use super::{FitError, HeadFeatures, head_features, prepare, pretrained_model};
use crate::config::FitConfig;
use crate::data::dataset::SplitMix64;
use crate::model::Network;
use crate::progress::Progress;

#[derive(Debug, Clone, Serialize)]
pub struct LrPoint {
    pub lr: f64,
    /// Exponentially smoothed, bias-corrected training loss.
    pub loss: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LrFinding {
    pub points: Vec<LrPoint>,
    /// Rate of steepest descent of the smoothed loss.
    pub suggested: f64,
    /// Rate of the lowest smoothed loss (a tenth of it is a common, safer choice).
    pub min_loss_lr: f64,
}

/// Run the range test from `start` to `end` over at most `steps` steps.
pub fn lr_find(
    config: &FitConfig,
    start: f64,
    end: f64,
    steps: usize,
    progress: &Progress,
) -> Result<LrFinding, FitError> {
    let config = &FitConfig {
        backend: config.backend.settle(config.device),
        ..config.clone()
    };
    let data = prepare(config, progress)?;
    let device = config.device()?;
    let model = pretrained_model(config, data.dataset.classes.len(), &device)?;
    let features = head_features(config, &model, &data, progress)?;
    range_test(config, &model, &features, &data.dataset, start, end, steps)
}

fn range_test(
    config: &FitConfig,
    model: &Network,
    features: &HeadFeatures,
    dataset: &crate::data::dataset::Dataset,
    start: f64,
    end: f64,
    steps: usize,
) -> Result<LrFinding, FitError> {
    let train_device = config.device()?.autodiff();
    let mut head: Linear = model.fc.clone().fork(&train_device).train();
    let dropout = model.dropout.clone();
    let loss_fn = loss_fn(config, dataset, &train_device);
    let mut optim = optimizer(config);
    let n = features.labels.len();
    let mut rng = SplitMix64(config.seed);
    let mut order: Vec<usize> = Vec::new();
    let ratio = (end / start).powf(1.0 / (steps.max(2) - 1) as f64);
    let (beta, mut avg, mut best) = (0.98f64, 0.0, f64::INFINITY);
    let mut points = Vec::new();
    for k in 0..steps {
        if order.len() < config.batch_size {
            order = (0..n).collect();
            rng.shuffle(&mut order);
        }
        let batch: Vec<usize> = order.split_off(order.len() - config.batch_size.min(order.len()));
        let rows = features.batch(&batch)?;
        let loss = head_loss(&head, &dropout, &loss_fn, features.width, rows, &train_device);
        let lr = start * ratio.powi(k as i32);
        // Stepping before the explosion check below changes nothing: after it breaks, the
        // head's weights are not used.
        let value;
        (head, value) = step(head, &mut optim, lr, loss);
        avg = beta * avg + (1.0 - beta) * value;
        let smoothed = avg / (1.0 - beta.powi(k as i32 + 1));
        if !smoothed.is_finite() || (k > 10 && smoothed > 4.0 * best) {
            break;
        }
        best = best.min(smoothed);
        points.push(LrPoint { lr, loss: smoothed });
    }
    let (suggested, min_loss_lr) = suggest(&points);
    Ok(LrFinding {
        points,
        suggested,
        min_loss_lr,
    })
}

/// Steepest negative slope of loss against log(lr), skipping the noisy first and last tenth;
/// and the rate at the minimum loss.
fn suggest(points: &[LrPoint]) -> (f64, f64) {
    let min = points
        .iter()
        .min_by(|a, b| a.loss.total_cmp(&b.loss))
        .map_or(f64::NAN, |p| p.lr);
    let skip = points.len() / 10;
    let window = &points[skip..points.len().saturating_sub(skip).max(skip)];
    let steepest = window
        .windows(2)
        .map(|w| ((w[1].loss - w[0].loss) / (w[1].lr.ln() - w[0].lr.ln()), w[0].lr))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map_or(min / 10.0, |(_, lr)| lr);
    (steepest, min)
}

/// Loss against learning rate (log axis), the suggestion marked.
pub fn plot_svg(finding: &LrFinding) -> String {
    let (w, h, pad) = (640.0, 320.0, 50.0);
    let pts = &finding.points;
    if pts.len() < 2 {
        return format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\"></svg>");
    }
    let (lo, hi) = (pts[0].lr.ln(), pts[pts.len() - 1].lr.ln());
    let (lmin, lmax) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.loss), b.max(p.loss))
    });
    let x = |lr: f64| pad + (w - 2.0 * pad) * (lr.ln() - lo) / (hi - lo).max(1e-12);
    let y = |l: f64| h - pad - (h - 2.0 * pad) * (l - lmin) / (lmax - lmin).max(1e-12);
    let line: Vec<String> = pts.iter().map(|p| format!("{:.1},{:.1}", x(p.lr), y(p.loss))).collect();
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{}\"/>",
        line.join(" ")
    );
    let sx = x(finding.suggested);
    let _ = write!(
        s,
        "<line x1=\"{sx:.1}\" y1=\"{pad}\" x2=\"{sx:.1}\" y2=\"{}\" stroke=\"#d62728\" stroke-dasharray=\"4\"/>\
         <text x=\"{:.1}\" y=\"{}\" fill=\"#d62728\">suggested {:.1e}</text>\
         <text x=\"{pad}\" y=\"{}\">learning rate {:.0e} → {:.0e} (log scale)</text>\
         <text x=\"5\" y=\"{pad}\">loss</text></svg>",
        h - pad,
        sx + 4.0,
        pad + 12.0,
        finding.suggested,
        h - 15.0,
        pts[0].lr,
        pts[pts.len() - 1].lr
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestion_is_where_the_loss_falls_fastest() {
        // Flat, then a steep fall around 1e-3, then a rise.
        let points: Vec<LrPoint> = (0..40)
            .map(|i| {
                let lr = 1e-6 * 10f64.powf(i as f64 / 8.0);
                let loss = 2.0 - 1.5 / (1.0 + (-(lr.log10() + 3.0) * 4.0).exp()) + if lr > 1e-1 { 5.0 } else { 0.0 };
                LrPoint { lr, loss }
            })
            .collect();
        let (steepest, min) = suggest(&points);
        assert!((1e-4..1e-2).contains(&steepest), "{steepest}");
        assert!(min > steepest && min <= 1e-1, "{min}");
    }
}
