//! Fine-tuning's frozen part, run once per view instead of once per epoch.
//!
//! Fine-tuning trains only the top blocks; the stem and the blocks below the unfreeze boundary
//! are frozen, BatchNorm included, so their output for a given input never changes. When the
//! inputs are fixed views (plain, or plain and mirrored: `finetune_augment = none | flip`), that
//! output is computed the first time a view is drawn and kept in a [`Store`] on disk, and every
//! later step runs only the unfrozen top: the first epoch costs what it did, later ones a
//! fraction (the frozen blocks hold most of the network's multiply-adds, at the highest
//! resolutions). The head phase caches pooled features for the same reason.
//!
//! Only worth it, and only done, when a kept row is no larger than the input tensor it replaces.

use std::sync::Mutex;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

use super::FitError;
use super::features::to_vec;
use super::prepare::Prepared;
use super::recipe::rng_for;
use crate::config::{FinetuneAugment, FitConfig};
use crate::data::store::Store;
use crate::model::Network;

/// Kept activations at the unfreeze boundary, filled on first use.
pub(crate) struct Boundary {
    /// The first trainable block: rows are the activations entering it.
    pub first: usize,
    /// `[channels, height, width]` of one row.
    shape: [usize; 3],
    /// 1 (plain) or 2 (plain, mirrored) views per training image.
    views: usize,
    frozen: Network,
    device: Device,
    train: Mutex<Rows>,
    /// Every validation image's row, in order, once the first validation has run.
    val: Mutex<Option<Vec<f32>>>,
}

/// Rows in a store, with where each (image, view) landed.
struct Rows {
    store: Store,
    slot: Vec<Option<usize>>,
}

impl Boundary {
    /// A boundary for `network` (frozen below block `first`) when `config`'s fine-tuning inputs
    /// are fixed views and a row is no larger than an input; `None` means run every step whole.
    pub fn new(config: &FitConfig, network: &Network, data: &Prepared, first: usize) -> Result<Option<Self>, FitError> {
        let views = match config.finetune_augment {
            FinetuneAugment::None => 1,
            FinetuneAugment::Flip => 2,
            FinetuneAugment::Same => return Ok(None),
        };
        if first == 0 {
            return Ok(None);
        }
        let device = config.device()?;
        let frozen = network.valid();
        let side = config.input_size() as usize;
        let probe = Tensor::<4>::zeros([1, 3, side, side], &device);
        let [_, c, h, w] = frozen.trunk(probe, first).dims();
        if c * h * w > data.spec.tensor_len() {
            tracing::info!(
                "fine-tuning runs the frozen blocks every step: their output ({c}×{h}×{w}) is larger than an input"
            );
            return Ok(None);
        }
        tracing::info!("fine-tuning keeps the frozen blocks' output ({c}×{h}×{w} per view, {views} view(s) per image)");
        Ok(Some(Boundary {
            first,
            shape: [c, h, w],
            views,
            frozen,
            device,
            train: Mutex::new(Rows {
                store: Store::on_disk(&config.out)?,
                slot: vec![None; data.train.len() * views],
            }),
            val: Mutex::new(None),
        }))
    }

    fn row_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// `[n, c, h, w]` of `n` rows.
    pub fn batch_shape(&self, n: usize) -> [usize; 4] {
        [n, self.shape[0], self.shape[1], self.shape[2]]
    }

    /// The view of training image `image` drawn in `epoch`: 0 plain, 1 mirrored.
    fn view(&self, config: &FitConfig, image: usize, epoch: usize) -> usize {
        if self.views == 1 {
            return 0;
        }
        let mut rng = rng_for(config.seed, 4, epoch as u64, image as u64);
        usize::from(rng.next_f64() < 0.5)
    }

    /// The rows of training images `batch` for `epoch`, packed: kept ones read back, the others
    /// computed through the frozen blocks (in one batch) and kept.
    pub fn train_rows(
        &self,
        config: &FitConfig,
        data: &Prepared,
        batch: &[usize],
        epoch: usize,
    ) -> Result<Vec<f32>, FitError> {
        let len = self.row_len();
        let keys: Vec<usize> = batch
            .iter()
            .map(|&i| i * self.views + self.view(config, i, epoch))
            .collect();
        let missing: Vec<usize> = {
            let rows = self.train.lock().unwrap_or_else(|e| e.into_inner());
            keys.iter().copied().filter(|&k| rows.slot[k].is_none()).collect()
        };
        if !missing.is_empty() {
            let computed = self.through_frozen(data, &missing, |k, out| {
                data.train.plain_into(k / self.views, &data.spec, out)?;
                if k % self.views == 1 {
                    mirror(out, data.spec.width as usize);
                }
                Ok(())
            })?;
            let mut rows = self.train.lock().unwrap_or_else(|e| e.into_inner());
            for (&k, row) in missing.iter().zip(computed.chunks_exact(len)) {
                let at = rows.store.push_f32(row)?;
                rows.slot[k] = Some(at);
            }
        }
        let rows = self.train.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = vec![0.0f32; keys.len() * len];
        for (chunk, &k) in out.chunks_exact_mut(len).zip(&keys) {
            let at = rows.slot[k].ok_or_else(|| FitError::Tensor(format!("boundary row {k} missing")))?;
            rows.store.f32_into(at, chunk)?;
        }
        Ok(out)
    }

    /// Logits of every validation image under `network` (trained above the boundary), in order.
    pub fn val_logits(&self, network: &Network, data: &Prepared, batch: usize) -> Result<Vec<f32>, FitError> {
        let len = self.row_len();
        let n = data.val.len();
        let mut val = self.val.lock().unwrap_or_else(|e| e.into_inner());
        let rows = match val.take() {
            Some(rows) => rows,
            None => {
                let mut rows = Vec::with_capacity(n * len);
                let all: Vec<usize> = (0..n).collect();
                for chunk in all.chunks(batch.max(1)) {
                    rows.extend(
                        self.through_frozen(data, chunk, |i, out| Ok(data.val.tensor_into(i, &data.spec, out)?))?,
                    );
                }
                rows
            }
        };
        let rows = val.insert(rows);
        let mut logits = Vec::with_capacity(n * network.classes());
        for start in (0..n).step_by(batch.max(1)) {
            let end = (start + batch.max(1)).min(n);
            let x = rows[start * len..end * len].to_vec();
            let x = Tensor::<4>::from_data(TensorData::new(x, self.batch_shape(end - start)), &self.device);
            logits.extend(to_vec(network.forward_from(x, self.first))?);
        }
        Ok(logits)
    }

    /// The frozen blocks' output for `items`, their input tensors filled by `fill(item, out)`.
    fn through_frozen(
        &self,
        data: &Prepared,
        items: &[usize],
        fill: impl Fn(usize, &mut [f32]) -> Result<(), FitError> + Sync,
    ) -> Result<Vec<f32>, FitError> {
        let len = data.spec.tensor_len();
        let mut input = vec![0.0f32; items.len() * len];
        input
            .par_chunks_exact_mut(len)
            .zip(items.par_iter())
            .try_for_each(|(out, &k)| fill(k, out))?;
        let x = Tensor::<4>::from_data(TensorData::new(input, data.spec.batch_shape(items.len())), &self.device);
        to_vec(self.frozen.trunk(x, self.first).flatten(1, 3))
    }
}

/// Mirrors a `[channels, height, width]` tensor left to right, in place.
fn mirror(tensor: &mut [f32], width: usize) {
    for row in tensor.chunks_exact_mut(width.max(1)) {
        row.reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::progress::Progress;

    #[test]
    fn mirror_reverses_each_row_of_each_channel() {
        let mut t: Vec<f32> = (0..12).map(|v| v as f32).collect();
        mirror(&mut t, 3);
        assert_eq!(t, [2., 1., 0., 5., 4., 3., 8., 7., 6., 11., 10., 9.]);
    }

    /// Largest difference relative to `b`'s largest magnitude, which must not be negligible.
    fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 1e-3, "values too small to compare: {scale}");
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
    }

    /// Kept rows are the frozen blocks' output of the view the epoch draws (plain or mirrored),
    /// computed once; validation through them gives the whole network's logits.
    #[test]
    fn kept_rows_are_the_frozen_blocks_output_of_the_drawn_view() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::data::sample_data::make_photo_folder(&dir.path().join("data"), 6, 96, 7).expect("photos");
        let config = FitConfig {
            data: dir.path().join("data"),
            out: dir.path().join("run"),
            backend: Backend::Flex,
            image_size: Some(64),
            val_fraction: 0.34,
            finetune_augment: FinetuneAugment::Flip,
            ..FitConfig::default()
        };
        std::fs::create_dir_all(&config.out).expect("run dir");
        let data = super::super::prepare(&config, &Progress::plain()).expect("prepare");
        let device = config.device().expect("device");
        // ImageNet weights: activations of real size (a fresh network's can be tiny).
        let (net, _) = crate::model::pretrained::load_imagenet(crate::model::default_backbone(), &device, 64)
            .expect("weights (scripts/fetch-assets.sh)");
        let net = net.with_classes(3, &device);
        let first = net.first_trainable(config.unfreeze_blocks);
        assert_eq!(first, 12);
        let boundary = Boundary::new(&config, &net, &data, first)
            .expect("boundary")
            .expect("kept");
        let (len, input) = (boundary.row_len(), data.spec.tensor_len());
        let n = data.train.len();
        let items: Vec<usize> = (0..n).collect();
        let mut views_seen = [0; 2];
        for epoch in 0..4 {
            let rows = boundary.train_rows(&config, &data, &items, epoch).expect("rows");
            for (i, row) in rows.chunks_exact(len).enumerate() {
                let view = boundary.view(&config, i, epoch);
                views_seen[view] += 1;
                let mut x = vec![0.0f32; input];
                data.train.plain_into(i, &data.spec, &mut x).expect("plain");
                if view == 1 {
                    mirror(&mut x, data.spec.width as usize);
                }
                let x = Tensor::<4>::from_data(TensorData::new(x, data.spec.batch_shape(1)), &device);
                let want = to_vec(net.trunk(x, first).flatten(1, 3)).expect("trunk");
                let d = rel_diff(row, &want);
                assert!(d < 1e-4, "image {i}, view {view}, epoch {epoch}: off by {d}");
            }
        }
        assert!(views_seen[0] > 0 && views_seen[1] > 0, "views drawn: {views_seen:?}");
        let kept = boundary.train.lock().expect("rows").store.len();
        assert!(kept <= 2 * n, "{kept} rows kept for {n} images × 2 views: recomputed");

        let got = boundary.val_logits(&net, &data, 4).expect("val logits");
        let want = super::super::predict(&net, &data.spec, &data.val, 4, &device).expect("predict");
        let d = rel_diff(&got, &want);
        assert!(d < 1e-4, "validation logits off by {d}");

        let same = FitConfig {
            finetune_augment: FinetuneAugment::Same,
            ..config.clone()
        };
        assert!(Boundary::new(&same, &net, &data, first).expect("boundary").is_none());
        assert!(Boundary::new(&config, &net, &data, 0).expect("boundary").is_none());
    }
}
