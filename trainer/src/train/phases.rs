//! The two phases of transfer learning, on one epoch loop ([`run_epochs`]) and one optimiser
//! step ([`step`]) that lr-find uses too. A phase differs only in what it trains (the head on
//! cached features, or the unfrozen top of the backbone on augmented images), how a batch
//! becomes a loss, and how it validates.

use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLoss;
use burn::nn::{Dropout, Linear};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

use super::FitError;
use super::boundary::Boundary;
use super::checkpoint::{self, Phase, RunState};
use super::epoch::{EpochTrain, best_so_far, end_epoch};
use super::features::{head_features, predict, to_vec};
use super::meter::{BAR_REFRESH, LossMeter};
use super::prefetch;
use super::prepare::Prepared;
use super::recipe::{labels_tensor, learning_rate, loss_fn, optimizer, rng_for};
use super::run_dir::RunDir;
use crate::backend::Backend;
use crate::config::FitConfig;
use crate::data::augment;
use crate::metrics::{self, Evaluation};
use crate::model::{Backbone, Network};
use crate::progress::Progress;

/// One optimiser step that first reads the loss (lr-find needs each value): backward and
/// update unless the loss is not finite, when the module comes back untouched. The epoch loop
/// uses [`update`] and reads its losses in bulk instead.
pub(crate) fn step<M: Module>(module: M, optim: &mut ModuleOptimizer, lr: f64, loss: Tensor<1>) -> (M, f64) {
    let value = loss.clone().into_scalar::<f32>() as f64;
    if !value.is_finite() {
        return (module, value);
    }
    (update(module, optim, lr, loss), value)
}

/// Backward and update, without waiting for the device.
pub(crate) fn update<M: Module>(module: M, optim: &mut ModuleOptimizer, lr: f64, loss: Tensor<1>) -> M {
    let grads = GradientsParams::from_grads(loss.backward(), &module);
    optim.step(lr, module, grads)
}

/// The head's loss on a batch of feature rows and their labels, as
/// [`HeadFeatures::batch`](super::HeadFeatures::batch) gathers them: dropout, then the classifier.
pub(crate) fn head_loss(
    head: &Linear,
    dropout: &Dropout,
    loss_fn: &CrossEntropyLoss,
    width: usize,
    (rows, labels): (Vec<f32>, Vec<usize>),
    device: &Device,
) -> Tensor<1> {
    let x = Tensor::<2>::from_data(TensorData::new(rows, [labels.len(), width]), device);
    loss_fn.forward(head.forward(dropout.forward(x)), labels_tensor(&labels, device))
}

/// What distinguishes one phase's run through [`run_epochs`].
pub(crate) struct PhasePlan<'a> {
    pub phase: Phase,
    pub epochs: usize,
    pub peak_lr: f64,
    /// Training items per epoch: feature rows or images.
    pub items: usize,
    /// The random stream that shuffles each epoch.
    pub shuffle_stream: u64,
    /// The autodiff device; reseeded every epoch so that a resumed run draws what an
    /// uninterrupted one would.
    pub device: &'a Device,
}

/// The epoch loop of both phases: shuffle, step through the batches at the scheduled rate,
/// validate, record (history, metrics.csv, checkpoints, early stopping). `prepare(batch,
/// epoch)` is a batch's CPU work (decoding, augmenting, gathering), done one batch ahead on a
/// helper thread; `loss_of(module, prepared)` is its loss; `validate(module)` scores the module
/// on the validation split and returns the whole network to checkpoint.
///
/// Nothing here waits for the device within an epoch, except to refresh a bar on a terminal:
/// the losses are summed on the device and read once at the end (see [`LossMeter`]). A batch
/// whose loss is not finite is found there and ends the run before anything is saved, so the
/// last checkpoint is still the last good state.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_epochs<M: Module, B: Send>(
    config: &FitConfig,
    run: &RunDir,
    state: &mut RunState,
    plan: &PhasePlan,
    mut module: M,
    optim: &mut ModuleOptimizer,
    progress: &Progress,
    prepare: impl Fn(&[usize], usize) -> Result<B, FitError> + Sync,
    mut loss_of: impl FnMut(&M, B) -> Tensor<1>,
    mut validate: impl FnMut(&M) -> Result<(Evaluation, Network), FitError>,
) -> Result<M, FitError> {
    let steps_per_epoch = plan.items.div_ceil(config.batch_size);
    let total = steps_per_epoch * plan.epochs;
    while state.epochs_done < plan.epochs && !state.stopped_early {
        let epoch = state.epochs_done;
        let t0 = Instant::now();
        plan.device.seed(config.seed.wrapping_add(epoch as u64));
        let mut order: Vec<usize> = (0..plan.items).collect();
        rng_for(config.seed, plan.shuffle_stream, epoch as u64, 0).shuffle(&mut order);
        let batches: Vec<&[usize]> = order.chunks(config.batch_size).collect();
        let mut meter = LossMeter::new(progress.interactive().then_some(BAR_REFRESH));
        let bar = progress.bar(plan.items as u64, &format!("{} epoch {}", plan.phase.name(), epoch + 1));
        let mut lr = 0.0;
        module = prefetch::in_order(
            &batches,
            prefetch::DEPTH,
            |batch| prepare(batch, epoch),
            |prepared| {
                for (b, (batch, items)) in prepared.zip(&batches).enumerate() {
                    let n = items.len();
                    let loss = loss_of(&module, batch?);
                    lr = learning_rate(
                        config,
                        plan.peak_lr,
                        epoch * steps_per_epoch + b,
                        total,
                        steps_per_epoch,
                    ) * state.lr_scale;
                    meter.add(loss.clone(), n);
                    module = update(module, optim, lr, loss);
                    bar.inc(n as u64);
                    if meter.due() {
                        bar.set_message(format!("loss {:.4}", meter.mean()));
                    }
                }
                Ok::<_, FitError>(module)
            },
        )?;
        bar.finish_and_clear();
        let train_loss = meter.mean();
        if !train_loss.is_finite() {
            return Err(FitError::Diverged {
                loss: train_loss,
                phase: plan.phase,
                epoch: epoch + 1,
                checkpoint: run.last(),
            });
        }
        let (eval, network) = validate(&module)?;
        let train = EpochTrain {
            phase: plan.phase,
            epoch: epoch + 1,
            lr,
            train_loss,
            images_per_second: plan.items as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        };
        end_epoch(config, run, state, train, &eval, &network, optim, progress)?;
    }
    Ok(module)
}

/// Phase 1: the new head on the frozen backbone's cached features.
#[allow(clippy::too_many_arguments)]
pub(crate) fn head_phase(
    config: &FitConfig,
    backbone: &dyn Backbone,
    run: &RunDir,
    data: &Prepared,
    mut model: Network,
    state: &mut RunState,
    optim_bytes: &[u8],
    progress: &Progress,
) -> Result<Network, FitError> {
    let device = config.device()?;
    let features = head_features(config, &model, data, progress)?;
    let train_device = device.clone().autodiff();
    // fork moves to the autodiff device; train() then turns gradient tracking on.
    let head: Linear = model.fc.clone().fork(&train_device).train();
    let dropout = model.dropout.clone();
    let loss_fn = loss_fn(config, &data.dataset, &train_device);
    let mut optim = checkpoint::restore_optimizer(&run.last(), optimizer(config), optim_bytes)?;
    let val_x = Tensor::<2>::from_data(
        TensorData::new(features.val.clone(), [data.val.len(), features.width]),
        &device,
    );
    let plan = PhasePlan {
        phase: Phase::Head,
        epochs: config.head_epochs,
        peak_lr: config.head_lr,
        items: features.labels.len(),
        shuffle_stream: 2,
        device: &train_device,
    };
    run_epochs(
        config,
        run,
        state,
        &plan,
        head,
        &mut optim,
        progress,
        |batch, _| Ok(features.batch(batch)?),
        |head, batch| head_loss(head, &dropout, &loss_fn, features.width, batch, &train_device),
        |head| {
            model.fc = head.valid();
            let logits = to_vec(model.fc.forward(val_x.clone()))?;
            Ok((
                metrics::evaluate(&logits, &data.val.labels, &data.dataset.classes),
                model.clone(),
            ))
        },
    )?;
    let template = model.clone();
    Ok(best_so_far(backbone, run, model, template))
}

/// Phase 2: the top blocks, the head conv and the classifier, on the views `finetune_augment`
/// names: fixed views through the kept frozen-block output ([`Boundary`]) when it applies, else
/// images augmented afresh each step through the whole network.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finetune_phase(
    config: &FitConfig,
    backbone: &dyn Backbone,
    run: &RunDir,
    data: &Prepared,
    model: Network,
    state: &mut RunState,
    optim_bytes: &[u8],
    progress: &Progress,
) -> Result<Network, FitError> {
    let (spec, dataset) = (&data.spec, &data.dataset);
    let device = config.device()?;
    let train_device = device.clone().autodiff();
    let template = model.clone();
    let first = model.first_trainable(config.unfreeze_blocks);
    let boundary = Boundary::new(config, &model, data, first)?;
    let trainable = backbone.freeze_for_finetune(model, config.unfreeze_blocks);
    // On the CPU the trainable 1×1 convolutions train several times faster as matrix products;
    // a GPU keeps its convolution kernels.
    let trainable = match config.backend.settle(config.device) {
        Backend::Flex | Backend::Ndarray => trainable.with_matmul_pointwise_from(first),
        Backend::Wgpu | Backend::Auto => trainable,
    };
    let trainable = trainable.fork(&train_device).train();
    let loss_fn = loss_fn(config, dataset, &train_device);
    let mut optim = checkpoint::restore_optimizer(&run.last(), optimizer(config), optim_bytes)?;
    let plan = PhasePlan {
        phase: Phase::Finetune,
        epochs: config.finetune_epochs,
        peak_lr: config.finetune_lr,
        items: data.train.len(),
        shuffle_stream: 3,
        device: &train_device,
    };
    let augment = config.finetune_augment.settings(&config.augment);
    let len = spec.tensor_len();
    let trained = run_epochs(
        config,
        run,
        state,
        &plan,
        trainable,
        &mut optim,
        progress,
        |batch, epoch| {
            let labels: Vec<usize> = batch.iter().map(|&i| data.train.labels[i]).collect();
            if let Some(boundary) = &boundary {
                return Ok((boundary.train_rows(config, data, batch, epoch)?, labels));
            }
            let mut pixels = vec![0.0f32; batch.len() * len];
            pixels.par_chunks_exact_mut(len).zip(batch.par_iter()).try_for_each(
                |(out, &i)| -> Result<(), FitError> {
                    let mut rng = rng_for(config.seed, 4, epoch as u64, i as u64);
                    augment::augmented(&data.train.image(i)?, spec, &augment, &mut rng, out)?;
                    Ok(())
                },
            )?;
            Ok((pixels, labels))
        },
        |model, (x, labels): (Vec<f32>, Vec<usize>)| {
            let n = labels.len();
            let logits = match &boundary {
                Some(b) => model.forward_from(
                    Tensor::from_data(TensorData::new(x, b.batch_shape(n)), &train_device),
                    b.first,
                ),
                None => model.forward(Tensor::from_data(
                    TensorData::new(x, spec.batch_shape(n)),
                    &train_device,
                )),
            };
            loss_fn.forward(logits, labels_tensor(&labels, &train_device))
        },
        |model| {
            let network = model.valid();
            let logits = match &boundary {
                Some(b) => b.val_logits(&network, data, config.batch_size)?,
                None => predict(&network, spec, &data.val, config.batch_size, &device)?,
            };
            Ok((metrics::evaluate(&logits, &data.val.labels, &dataset.classes), network))
        },
    )?;
    Ok(best_so_far(backbone, run, trained.valid(), template))
}
