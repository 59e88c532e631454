//! The backbones a run can start from. Everything else in the trainer (fit, checkpoints,
//! export, lr-find, quantisation, the model card) reaches a backbone through the [`Backbone`]
//! trait and [`BACKBONES`], so adding one is its own module plus one line in that list.

pub mod efficientnet;
pub mod imagenet;
mod lite;
pub mod pretrained;
pub mod weights;

use burn::tensor::Device;
use tract_onnx::pb;

pub use efficientnet::EfficientNet;
pub use lite::Lite;

use crate::onnx::export::ExportError;

/// The Burn network a backbone builds. Today every backbone is an EfficientNet-Lite; a backbone
/// of another family would make this an enum of networks (Burn derives `Module` for enums).
pub type Network = EfficientNet;

/// The ImageNet weights a backbone starts from: a file fetched by `scripts/fetch-assets.sh`.
#[derive(Debug, Clone, Copy)]
pub struct PretrainedWeights {
    /// Path inside the asset cache (see [`crate::assets`]).
    pub file: &'static str,
    /// Provenance, for the model card.
    pub source: &'static str,
}

/// What the trainer needs to know about, and do with, one backbone.
pub trait Backbone: Sync + std::fmt::Debug {
    /// The name users type: `--backbone lite1`, `backbone = "lite1"`.
    fn name(&self) -> &'static str;
    /// The architecture as the model card names it, e.g. `efficientnet-lite1`.
    fn architecture(&self) -> &'static str;
    /// Input side the ImageNet weights were trained at: `fit`'s default image size.
    fn native_size(&self) -> u32;
    /// Width of the pooled features the classifier reads.
    fn features(&self) -> usize;
    /// Blocks between stem and head; `unfreeze_blocks` counts these from the top.
    fn blocks(&self) -> usize;
    fn weights(&self) -> PretrainedWeights;
    /// A network with fresh weights and an ImageNet-sized (1000-class) classifier.
    fn build(&self, device: &Device) -> Network;
    /// Freeze all but the top `unfreeze_blocks` blocks (all when 0) for fine-tuning.
    fn freeze_for_finetune(&self, network: Network, unfreeze_blocks: usize) -> Network;
    /// The ONNX graph of `network` for `height`×`width` inputs (batch dimension symbolic).
    fn onnx(&self, network: &Network, height: usize, width: usize) -> Result<pb::ModelProto, ExportError>;
}

/// Every backbone, the default first.
pub const BACKBONES: &[&dyn Backbone] = &[&lite::LITE0, &lite::LITE1, &lite::LITE2];

/// The backbone `fit` uses unless told otherwise.
pub fn default_backbone() -> &'static dyn Backbone {
    BACKBONES[0]
}

#[derive(Debug, thiserror::Error)]
#[error("unknown backbone `{name}`; choose one of: {}", names().join(", "))]
pub struct UnknownBackbone {
    pub name: String,
}

/// The names of every backbone, in [`BACKBONES`] order.
pub fn names() -> Vec<&'static str> {
    BACKBONES.iter().map(|b| b.name()).collect()
}

/// The backbone called `name` (its `--backbone` name or its architecture name).
pub fn backbone(name: &str) -> Result<&'static dyn Backbone, UnknownBackbone> {
    BACKBONES
        .iter()
        .copied()
        .find(|b| b.name() == name || b.architecture() == name)
        .ok_or_else(|| UnknownBackbone { name: name.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backbones_are_found_by_either_name_and_unknown_ones_list_the_choices() {
        for b in BACKBONES {
            assert_eq!(backbone(b.name()).map(|f| f.name()).ok(), Some(b.name()));
            assert_eq!(backbone(b.architecture()).map(|f| f.name()).ok(), Some(b.name()));
        }
        let err = backbone("resnet50").expect_err("unknown").to_string();
        assert!(err.contains("lite0, lite1, lite2"), "{err}");
    }

    #[test]
    fn each_backbone_builds_the_network_it_describes() {
        let device = Device::flex();
        for b in BACKBONES {
            let net = b.build(&device);
            assert_eq!(net.blocks.len(), b.blocks(), "{}", b.name());
            assert_eq!(net.fc.weight.dims(), [b.features(), efficientnet::IMAGENET_CLASSES]);
        }
    }
}
