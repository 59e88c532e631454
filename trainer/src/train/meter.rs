//! The training loss, summed where it is computed. Reading a value back from a GPU waits for
//! every queued kernel, so reading each batch's loss (as the loop once did) stalled the device
//! once per step while the CPU prepared nothing. The sum stays on the device and is read when
//! someone looks: at the end of the epoch, and on a terminal about twice a second for the bar.

use std::cell::Cell;
use std::time::{Duration, Instant};

use burn::tensor::Tensor;

/// How often a progress bar's loss is refreshed; each refresh is one wait for the device.
pub(crate) const BAR_REFRESH: Duration = Duration::from_millis(500);

thread_local! {
    /// Reads of a loss sum made by this thread: what a test counts to prove a loop reads once
    /// per epoch, not once per step.
    static READS: Cell<usize> = const { Cell::new(0) };
}

/// How many times this thread has read a training loss back from its device.
#[doc(hidden)]
pub fn loss_reads_on_this_thread() -> usize {
    READS.with(Cell::get)
}

/// The batch-size-weighted sum of an epoch's losses, on the device.
pub(crate) struct LossMeter {
    sum: Option<Tensor<1>>,
    items: usize,
    /// `None`: read only when asked (no bar to update).
    refresh: Option<Duration>,
    last_read: Instant,
}

impl LossMeter {
    pub(crate) fn new(refresh: Option<Duration>) -> Self {
        LossMeter {
            sum: None,
            items: 0,
            refresh,
            last_read: Instant::now(),
        }
    }

    /// Adds a batch's mean loss over `n` items, without waiting for it. Detached, so the sum
    /// keeps no autodiff graph alive.
    pub(crate) fn add(&mut self, loss: Tensor<1>, n: usize) {
        let weighted = loss.detach().mul_scalar(n as f32);
        self.sum = Some(match self.sum.take() {
            Some(sum) => sum.add(weighted),
            None => weighted,
        });
        self.items += n;
    }

    /// Whether a bar is waiting for a fresh value.
    pub(crate) fn due(&self) -> bool {
        self.refresh.is_some_and(|every| self.last_read.elapsed() >= every)
    }

    /// The mean loss so far (NaN or infinite once any batch was): waits for the device.
    pub(crate) fn mean(&mut self) -> f64 {
        READS.with(|r| r.set(r.get() + 1));
        self.last_read = Instant::now();
        match &self.sum {
            Some(sum) => sum.clone().into_scalar::<f32>() as f64 / self.items.max(1) as f64,
            None => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn scalar(v: f32, device: &Device) -> Tensor<1> {
        Tensor::from_data(TensorData::new(vec![v], [1]), device)
    }

    #[test]
    fn the_mean_is_weighted_by_batch_size_and_read_only_when_asked() {
        let device = Device::flex();
        let mut meter = LossMeter::new(None);
        let before = loss_reads_on_this_thread();
        meter.add(scalar(1.0, &device), 3);
        meter.add(scalar(3.0, &device), 1);
        assert!(!meter.due(), "no bar, no refresh");
        assert_eq!(loss_reads_on_this_thread(), before);
        assert!((meter.mean() - 1.5).abs() < 1e-6);
        assert_eq!(loss_reads_on_this_thread(), before + 1);
        meter.add(scalar(f32::NAN, &device), 2);
        assert!(meter.mean().is_nan(), "a non-finite batch poisons the epoch's mean");
        assert!(LossMeter::new(Some(Duration::ZERO)).due());
    }
}
