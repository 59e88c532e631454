//! The training recipe's parts: loss, optimiser, learning-rate schedule, seeded randomness.

use burn::grad_clipping::GradientClippingConfig;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::{ClassWeights, FitConfig, Monitor, OptimizerKind, Schedule};
use crate::data::dataset::{Dataset, SplitMix64};
use crate::metrics::Evaluation;

/// A random stream per (seed, purpose, a, b): the same image and epoch always get the same
/// augmentation, whatever the batch or thread that draws it.
pub fn rng_for(seed: u64, stream: u64, a: u64, b: u64) -> SplitMix64 {
    let mut r = SplitMix64(seed ^ stream.wrapping_mul(0x9E37_79B9));
    let s = r.next_u64() ^ a.wrapping_mul(0xA24B_AED4_963E_E407) ^ b.wrapping_mul(0x9FB2_1C65_1E98_DF25);
    SplitMix64(s)
}

pub fn loss_fn(config: &FitConfig, dataset: &Dataset, device: &Device) -> CrossEntropyLoss {
    let weights = match config.class_weights {
        ClassWeights::None => None,
        ClassWeights::Auto => {
            let counts = dataset.train_counts();
            let inv: Vec<f32> = counts.iter().map(|&c| 1.0 / c.max(1) as f32).collect();
            let mean = inv.iter().sum::<f32>() / inv.len() as f32;
            Some(inv.iter().map(|w| w / mean).collect())
        }
    };
    CrossEntropyLossConfig::new()
        .with_smoothing((config.label_smoothing > 0.0).then_some(config.label_smoothing))
        .with_weights(weights)
        .init(device)
}

pub fn optimizer(config: &FitConfig) -> ModuleOptimizer {
    let clip = (config.grad_clip > 0.0).then_some(GradientClippingConfig::Norm(config.grad_clip));
    match config.optimizer {
        OptimizerKind::Adamw => AdamWConfig::new()
            .with_weight_decay(config.weight_decay as f32)
            .with_grad_clipping(clip)
            .init(),
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum(Some(
                MomentumConfig::new().with_momentum(config.momentum).with_dampening(0.0),
            ))
            .with_weight_decay((config.weight_decay > 0.0).then_some(WeightDecayConfig {
                penalty: config.weight_decay as f32,
            }))
            .with_gradient_clipping(clip)
            .init(),
    }
}

/// Learning rate at `step` of `total` steps in a phase with peak `peak`.
pub fn learning_rate(config: &FitConfig, peak: f64, step: usize, total: usize, steps_per_epoch: usize) -> f64 {
    match config.schedule {
        Schedule::Plateau => peak,
        Schedule::Cosine => {
            let warmup = (config.warmup_epochs * steps_per_epoch as f64).round() as usize;
            if step < warmup {
                return peak * (step + 1) as f64 / warmup as f64;
            }
            let span = total.saturating_sub(warmup).max(1);
            let t = ((step - warmup) as f64 / span as f64).min(1.0);
            let floor = 0.01 * peak;
            floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
    }
}

pub fn labels_tensor(labels: &[usize], device: &Device) -> Tensor<1, Int> {
    let data: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(data, [labels.len()]), device)
}

/// The monitored metric, oriented so that lower is better.
pub fn monitored(config: &FitConfig, eval: &Evaluation) -> f64 {
    match config.monitor {
        Monitor::ValLoss => eval.mean_loss,
        Monitor::ValAcc => -eval.top1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_warms_up_then_decays_to_the_floor() {
        let config = FitConfig {
            warmup_epochs: 1.0,
            ..FitConfig::default()
        };
        let lr = |step| learning_rate(&config, 1.0, step, 100, 10);
        assert!((lr(0) - 0.1).abs() < 1e-12);
        assert!((lr(9) - 1.0).abs() < 1e-12);
        assert!(lr(50) < lr(20) && lr(20) < 1.0);
        assert!((lr(100) - 0.01).abs() < 1e-9);
    }
}
