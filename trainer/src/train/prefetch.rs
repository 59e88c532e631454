//! Batches prepared one step ahead. Decoding and augmenting a batch is CPU work; on a GPU the
//! step that consumes it is not, so preparing batch k+1 while batch k computes keeps the device
//! busy. Batches come out in order, and each is what it would be without the thread (the
//! augmentation's random stream is keyed by image and epoch, not by who draws it).

use std::sync::mpsc::sync_channel;

/// How many prepared batches may wait: one being consumed, one ready, one in preparation.
pub(crate) const DEPTH: usize = 2;

/// Runs `prepare` over `items` on a helper thread, at most `depth` ahead, and hands `consume`
/// the results in order, on this thread. When `consume` returns (early, on an error, or at the
/// end) the helper stops at its next batch, and this returns what `consume` did. A failed
/// preparation is the helper's last.
pub(crate) fn in_order<I, T, E, R>(
    items: &[I],
    depth: usize,
    prepare: impl Fn(&I) -> Result<T, E> + Sync,
    consume: impl FnOnce(Batches<T, E>) -> R,
) -> R
where
    I: Sync,
    T: Send,
    E: Send,
{
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Result<T, E>>(depth.max(1));
        let prepare = &prepare;
        scope.spawn(move || {
            for item in items {
                let prepared = prepare(item);
                let failed = prepared.is_err();
                if tx.send(prepared).is_err() || failed {
                    break;
                }
            }
        });
        consume(rx.into_iter())
    })
}

/// The prepared batches, in order.
pub(crate) type Batches<T, E> = std::sync::mpsc::IntoIter<Result<T, E>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc::channel;
    use std::time::Duration;

    #[test]
    fn batches_arrive_in_order_and_errors_stop_both_sides() {
        let items: Vec<usize> = (0..50).collect();
        let mut seen = Vec::new();
        in_order(
            &items,
            DEPTH,
            |&i| Ok::<_, String>(i * 10),
            |batches| {
                for (k, v) in batches.enumerate() {
                    seen.push((k, v?));
                }
                Ok::<_, String>(())
            },
        )
        .expect("no error");
        assert_eq!(seen, (0..50).map(|i| (i, i * 10)).collect::<Vec<_>>());

        let prepared = AtomicUsize::new(0);
        let err = in_order(
            &items,
            DEPTH,
            |&i| {
                prepared.fetch_add(1, Ordering::SeqCst);
                if i == 7 { Err(format!("item {i}")) } else { Ok(i) }
            },
            |batches| batches.map(|b| b.map(drop)).collect::<Result<Vec<()>, String>>(),
        );
        assert_eq!(err, Err("item 7".to_string()));
        assert_eq!(prepared.load(Ordering::SeqCst), 8, "nothing prepared after the failure");

        let consumed = in_order(
            &items,
            DEPTH,
            |&i| Ok::<_, String>(i),
            |batches| batches.take(3).count(),
        );
        assert_eq!(consumed, 3, "a consumer that stops early ends the helper too");
    }

    /// The point of the thread: batch 1 is prepared while batch 0 is still being consumed. Run
    /// serially, the consumer would wait for a preparation that cannot start until it returns;
    /// the timeout only turns that deadlock into a failure.
    #[test]
    fn the_next_batch_is_prepared_while_this_one_is_consumed() {
        let (started_tx, started_rx) = channel();
        let started_tx = std::sync::Mutex::new(started_tx);
        let items = [0usize, 1, 2];
        in_order(
            &items,
            DEPTH,
            |&i| {
                let _ = started_tx.lock().map(|tx| tx.send(i));
                Ok::<_, String>(i)
            },
            |mut batches| {
                // Batch 0 taken and not yet finished: batch 1 must start without us.
                let first = batches.next();
                assert_eq!(first, Some(Ok(0)));
                loop {
                    match started_rx.recv_timeout(Duration::from_secs(20)) {
                        Ok(1) => break,
                        Ok(_) => continue,
                        Err(_) => panic!("batch 1 was not prepared while batch 0 was consumed"),
                    }
                }
                assert_eq!(
                    batches.map(|b| b.map_err(drop)).collect::<Result<Vec<_>, _>>(),
                    Ok(vec![1, 2])
                );
            },
        );
    }
}
