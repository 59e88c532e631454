//! The hand-over between the source thread and the frame loop: a live source keeps only its
//! latest frame (stale ones are dropped and counted), a recording waits for room.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::source::{self, Frame, FrameSource, Next, OpenOptions, SourceError, SourceSpec};

pub(super) enum Msg {
    Started(String),
    Frame(Frame, f64),
    Corrupt(u64, String),
    Warning(String),
    End,
    Failed(SourceError),
}

/// The hand-over between the source thread and the loop.
pub(super) struct Mailbox {
    queue: Mutex<(VecDeque<Msg>, u64, bool)>,
    ready: Condvar,
    space: Condvar,
}

impl Mailbox {
    pub(super) fn new() -> Self {
        Mailbox {
            queue: Mutex::new((VecDeque::new(), 0, false)),
            ready: Condvar::new(),
            space: Condvar::new(),
        }
    }

    /// Live: a new frame replaces an unconsumed one (counted as dropped). Recording: wait for
    /// room. Other messages always queue.
    pub(super) fn put(&self, msg: Msg, live: bool, stop: &AtomicBool) {
        let Ok(mut q) = self.queue.lock() else { return };
        if let Msg::Frame(..) = msg {
            if live {
                if let Some(pos) = q.0.iter().position(|m| matches!(m, Msg::Frame(..))) {
                    q.0.remove(pos);
                    q.1 += 1;
                }
            } else {
                while q.0.len() >= 2 && !stop.load(Ordering::Relaxed) {
                    q = match self.space.wait_timeout(q, Duration::from_millis(100)) {
                        Ok((q, _)) => q,
                        Err(_) => return,
                    };
                }
            }
        }
        q.0.push_back(msg);
        self.ready.notify_one();
    }

    /// The next message and the number of frames dropped so far; `None` on timeout.
    pub(super) fn take(&self, timeout: Duration) -> Option<(Msg, u64)> {
        let mut q = self.queue.lock().ok()?;
        if q.0.is_empty() {
            q = self.ready.wait_timeout(q, timeout).ok()?.0;
        }
        let msg = q.0.pop_front()?;
        self.space.notify_one();
        Some((msg, q.1))
    }
}

/// The source thread: open (and with `reconnect`, reopen with back-off), read, hand over.
pub(super) fn read_source(
    spec: SourceSpec,
    options: OpenOptions,
    reconnect: bool,
    mailbox: Arc<Mailbox>,
    stop: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(500);
    let mut announced = false;
    'open: while !stop.load(Ordering::Relaxed) {
        let mut src: Box<dyn FrameSource> = match source::open(&spec, &options) {
            Ok(s) => s,
            Err(e) if reconnect && announced => {
                mailbox.put(Msg::Warning(format!("{e}; retrying in {backoff:?}")), false, &stop);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
            Err(e) => return mailbox.put(Msg::Failed(e), false, &stop),
        };
        let live = src.is_live();
        if !announced {
            mailbox.put(Msg::Started(src.describe()), false, &stop);
            announced = true;
        } else {
            mailbox.put(Msg::Warning(format!("reconnected: {}", src.describe())), false, &stop);
            backoff = Duration::from_millis(500);
        }
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            match src.next() {
                Ok(Next::Frame(f)) => mailbox.put(Msg::Frame(f, t.elapsed().as_secs_f64() * 1e3), live, &stop),
                Ok(Next::Corrupt { index, reason }) => mailbox.put(Msg::Corrupt(index, reason), false, &stop),
                Ok(Next::End) => return mailbox.put(Msg::End, false, &stop),
                Err(e) if reconnect => {
                    mailbox.put(Msg::Warning(format!("{e}; reconnecting")), false, &stop);
                    continue 'open;
                }
                Err(e) => return mailbox.put(Msg::Failed(e), false, &stop),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Payload;

    #[test]
    fn live_mailbox_keeps_only_the_latest_frame() {
        let mb = Mailbox::new();
        let stop = AtomicBool::new(false);
        let frame = |i| Frame {
            index: i,
            captured: Instant::now(),
            name: None,
            payload: Payload::Encoded(Vec::new()),
        };
        for i in 0..5 {
            mb.put(Msg::Frame(frame(i), 0.0), true, &stop);
        }
        mb.put(Msg::End, true, &stop);
        match mb.take(Duration::from_millis(10)) {
            Some((Msg::Frame(f, _), dropped)) => assert_eq!((f.index, dropped), (4, 4)),
            _ => panic!("expected the latest frame"),
        }
        assert!(matches!(mb.take(Duration::from_millis(10)), Some((Msg::End, 4))));
    }
}
