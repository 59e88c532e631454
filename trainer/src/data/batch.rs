//! Batches for Burn, built with the runtime's preprocessing — the same function `kestrel`
//! calls on the device — so train/serve skew cannot creep in here.

use burn::tensor::{Device, Tensor, TensorData};
use image::DynamicImage;
use kestrel_runtime::PreprocessSpec;
use kestrel_runtime::preprocess::{PreprocessError, preprocess_into};

/// `[N, 3, H, W]` for `images`, each preprocessed per `spec`.
pub fn images_to_tensor(
    images: &[DynamicImage],
    spec: &PreprocessSpec,
    device: &Device,
) -> Result<Tensor<4>, PreprocessError> {
    let len = spec.tensor_len();
    let mut data = vec![0.0f32; images.len() * len];
    for (image, out) in images.iter().zip(data.chunks_exact_mut(len)) {
        preprocess_into(image, spec, out)?;
    }
    Ok(Tensor::from_data(
        TensorData::new(data, spec.batch_shape(images.len())),
        device,
    ))
}
