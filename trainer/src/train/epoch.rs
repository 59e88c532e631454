//! The end of an epoch: its row in the history and metrics.csv, early stopping and
//! reduce-on-plateau bookkeeping, and the checkpoints.

use burn::optim::ModuleOptimizer;

use super::FitError;
use super::checkpoint::{self, EpochRow, Phase, RunState};
use super::recipe::monitored;
use super::run_dir::{RunDir, write};
use crate::config::{FitConfig, Schedule};
use crate::metrics::Evaluation;
use crate::model::{Backbone, Network};
use crate::progress::Progress;

pub(crate) fn new_state(backbone: &dyn Backbone, phase: Phase, history: Vec<EpochRow>) -> RunState {
    RunState {
        backbone: backbone.name().to_string(),
        phase,
        epochs_done: 0,
        best: None,
        epochs_without_improvement: 0,
        lr_scale: 1.0,
        stopped_early: false,
        history,
    }
}

/// The training side of an epoch's numbers; validation comes from its [`Evaluation`].
pub(crate) struct EpochTrain {
    pub phase: Phase,
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub images_per_second: f64,
}

/// Record an epoch: history, metrics.csv, early-stopping bookkeeping, checkpoints.
#[allow(clippy::too_many_arguments)]
pub(crate) fn end_epoch(
    config: &FitConfig,
    run: &RunDir,
    state: &mut RunState,
    train: EpochTrain,
    eval: &Evaluation,
    model: &Network,
    optim: &ModuleOptimizer,
    progress: &Progress,
) -> Result<(), FitError> {
    // Checked before anything is written: the last checkpoint stays the last good state.
    let row = EpochRow {
        phase: train.phase,
        epoch: train.epoch,
        lr: train.lr,
        train_loss: train.train_loss,
        val_loss: eval.mean_loss,
        val_top1: eval.top1,
        val_topk: eval.topk,
        images_per_second: train.images_per_second,
    };
    if !row.train_loss.is_finite() || !row.val_loss.is_finite() {
        let loss = if row.train_loss.is_finite() {
            row.val_loss
        } else {
            row.train_loss
        };
        return Err(FitError::Diverged {
            loss,
            phase: row.phase,
            epoch: row.epoch,
            checkpoint: run.last(),
        });
    }
    progress.line(&format!(
        "{:?} epoch {:>3} · lr {:.2e} · train loss {:.4} · val loss {:.4} · top-1 {:.1}% · top-{} {:.1}% · {:.0} img/s",
        row.phase,
        row.epoch,
        row.lr,
        row.train_loss,
        row.val_loss,
        100.0 * row.val_top1,
        eval.k,
        100.0 * row.val_topk,
        row.images_per_second
    ));
    state.history.push(row);
    state.epochs_done += 1;
    let value = monitored(config, eval);
    let improved = state.best.is_none_or(|b| value < b - 1e-9);
    if improved {
        state.best = Some(value);
        state.epochs_without_improvement = 0;
    } else {
        state.epochs_without_improvement += 1;
        if config.schedule == Schedule::Plateau
            && state.epochs_without_improvement > 0
            && state
                .epochs_without_improvement
                .is_multiple_of(config.plateau_patience.max(1))
        {
            state.lr_scale *= 0.1;
        }
    }
    let patience = config.early_stopping_patience;
    state.stopped_early = patience > 0 && state.epochs_without_improvement >= patience;
    // Checkpoints before the row: an epoch in metrics.csv is an epoch a resume starts after.
    if improved {
        checkpoint::save(&run.best(), state, model, None)?;
    }
    checkpoint::save(&run.last(), state, model, Some(optim))?;
    write(&run.metrics(), &metrics_csv(&state.history))?;
    if state.stopped_early {
        progress.line(&format!(
            "early stopping: no improvement for {} epochs",
            state.epochs_without_improvement
        ));
    }
    Ok(())
}

pub fn metrics_csv(history: &[EpochRow]) -> String {
    let mut s = String::from("phase,epoch,lr,train_loss,val_loss,val_top1,val_topk,images_per_second\n");
    for r in history {
        let phase = r.phase.name();
        s.push_str(&format!(
            "{phase},{},{:.6e},{:.6},{:.6},{:.6},{:.6},{:.4}\n",
            r.epoch, r.lr, r.train_loss, r.val_loss, r.val_top1, r.val_topk, r.images_per_second
        ));
    }
    s
}

/// The best weights of the run so far (the current ones when no epoch improved).
pub(crate) fn best_so_far(backbone: &dyn Backbone, run: &RunDir, current: Network, template: Network) -> Network {
    match checkpoint::load(&run.best(), backbone, template) {
        Ok(best) => best.model,
        Err(_) => current,
    }
}
