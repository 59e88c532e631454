//! The live web view behind `kestrel run --http`: a [`Hub`] the frame loop hands each result
//! to, and a small HTTP server ([`server`]) that reads from it.
//!
//! The frame loop must never wait for a browser. Handing over a result is a short lock and a
//! copy of the JSON line; a frame's pixels are copied only while someone watches the video, and
//! only the latest one is kept. JPEG encoding, socket writes and waiting all happen on the
//! server's threads. Memory is bounded: one frame, one encoded JPEG, the last
//! [`EVENT_BACKLOG`] results for the event streams, the last [`CHANGES_KEPT`] label changes.
//!
//! Why our own HTTP server on `std::net` rather than a crate: the view needs four GET routes and
//! long-lived streaming responses whose sockets get a write timeout (the way a stalled client is
//! dropped instead of holding a thread). The async servers (hyper, axum) bring tokio; the small
//! synchronous one (tiny_http 0.12) does not expose its sockets' timeouts. Request heads are
//! parsed by `httparse` (the parser hyper uses); the rest is std. docs/benchmarks.md has the
//! binary size this costs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::live::{FrameReport, Totals};
use crate::source::{Frame, Payload};

mod metrics;
mod server;

pub use server::{Server, WebError};

/// Results kept for `/api/events` clients that are behind; a client further behind is dropped.
pub const EVENT_BACKLOG: usize = 256;
/// Label changes listed on the page.
pub const CHANGES_KEPT: usize = 20;

/// A label change, as the page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub frame: u64,
    pub timestamp_ms: f64,
    pub label: Option<String>,
}

/// What `/api/status` returns: the run as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub source: String,
    pub totals: Totals,
    /// Inferred frames per second over the last few seconds.
    pub fps: f64,
    pub changes: Vec<Change>,
    pub clients: usize,
}

pub(crate) struct State {
    pub source: String,
    /// Results so far; the sequence number of the latest.
    pub seq: u64,
    pub events: VecDeque<(u64, Arc<str>)>,
    /// The latest frame's pixels (only while the video is watched), with its sequence number.
    pub frame: Option<(u64, Arc<Payload>)>,
    /// The JPEG of `frame`, made once for every client.
    pub jpeg: Option<(u64, Arc<Vec<u8>>)>,
    pub changes: VecDeque<Change>,
    pub totals: Totals,
    pub metrics: metrics::Metrics,
    /// When recent results arrived, for the FPS figure.
    recent: VecDeque<Instant>,
    pub closed: bool,
}

/// What the frame loop and the server share.
pub struct Hub {
    state: Mutex<State>,
    changed: Condvar,
    /// Clients of the video stream: while none, frames are not copied.
    watchers: AtomicUsize,
    /// Open connections of every kind.
    pub(crate) clients: AtomicUsize,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub {
            state: Mutex::new(State {
                source: String::new(),
                seq: 0,
                events: VecDeque::new(),
                frame: None,
                jpeg: None,
                changes: VecDeque::new(),
                totals: Totals::default(),
                metrics: metrics::Metrics::default(),
                recent: VecDeque::new(),
                closed: false,
            }),
            changed: Condvar::new(),
            watchers: AtomicUsize::new(0),
            clients: AtomicUsize::new(0),
        })
    }

    /// A poisoned lock only means a server thread panicked mid-update; the data is still usable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn started(&self, source: &str) {
        self.lock().source = source.to_string();
    }

    /// One inferred frame, with its jsonl line (`json`, made once by the caller for every
    /// consumer). Called on the frame loop's thread: no I/O, no encoding.
    pub fn frame(&self, report: &FrameReport, json: Arc<str>, frame: &Frame, totals: Totals) {
        let pixels = (self.watchers.load(Ordering::Relaxed) > 0).then(|| Arc::new(frame.payload.clone()));
        let mut s = self.lock();
        s.seq += 1;
        let seq = s.seq;
        if s.events.len() == EVENT_BACKLOG {
            s.events.pop_front();
        }
        s.events.push_back((seq, json));
        if let Some(p) = pixels {
            s.frame = Some((seq, p));
        }
        if report.changed {
            if s.changes.len() == CHANGES_KEPT {
                s.changes.pop_front();
            }
            s.changes.push_back(Change {
                frame: report.frame,
                timestamp_ms: report.timestamp_ms,
                label: report.label.clone(),
            });
        }
        s.totals = totals;
        s.metrics.record(report);
        let now = Instant::now();
        s.recent.push_back(now);
        while s
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(5))
        {
            s.recent.pop_front();
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Ends every stream (the run is over).
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    pub fn status(&self) -> Status {
        let s = self.lock();
        Status {
            source: s.source.clone(),
            totals: s.totals,
            fps: fps(&s.recent),
            changes: s.changes.iter().cloned().collect(),
            clients: self.clients.load(Ordering::Relaxed),
        }
    }

    /// The latest result's JSON line, if any.
    pub fn latest(&self) -> Option<Arc<str>> {
        self.lock().events.back().map(|(_, j)| Arc::clone(j))
    }

    /// Waits until a result newer than `after` exists (or `timeout`, or close).
    pub(crate) fn wait_after(&self, after: u64, timeout: Duration) -> MutexGuard<'_, State> {
        let s = self.lock();
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| s.seq <= after && !s.closed)
            .unwrap_or_else(|e| e.into_inner());
        s
    }

    /// Counts a video client for as long as the guard lives.
    pub(crate) fn watch(self: &Arc<Self>) -> WatchGuard {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        WatchGuard(Arc::clone(self))
    }

    /// The JPEG of the latest watched frame, encoded at most once per frame.
    pub(crate) fn jpeg(&self) -> Option<(u64, Arc<Vec<u8>>)> {
        let (seq, payload) = {
            let s = self.lock();
            let (seq, payload) = s.frame.as_ref()?;
            if let Some((jseq, jpeg)) = &s.jpeg
                && jseq == seq
            {
                return Some((*jseq, Arc::clone(jpeg)));
            }
            (*seq, Arc::clone(payload))
        };
        // Encoded outside the lock: the frame loop must not wait for it.
        let jpeg = Arc::new(to_jpeg(&payload)?);
        let mut s = self.lock();
        if s.jpeg.as_ref().is_none_or(|(j, _)| *j < seq) {
            s.jpeg = Some((seq, Arc::clone(&jpeg)));
        }
        Some((seq, jpeg))
    }
}

pub(crate) struct WatchGuard(Arc<Hub>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if self.0.watchers.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.lock().frame = None;
        }
    }
}

fn fps(recent: &VecDeque<Instant>) -> f64 {
    match (recent.front(), recent.back()) {
        (Some(a), Some(b)) if recent.len() > 1 => {
            (recent.len() - 1) as f64 / b.duration_since(*a).as_secs_f64().max(1e-9)
        }
        _ => 0.0,
    }
}

/// A camera's JPEG goes out as it came; anything else is encoded (quality 80: a preview).
fn to_jpeg(payload: &Payload) -> Option<Vec<u8>> {
    let rgb = match payload {
        Payload::Encoded(b) if b.starts_with(&[0xFF, 0xD8]) => return Some(b.clone()),
        Payload::Encoded(b) => image::load_from_memory(b).ok()?.to_rgb8(),
        Payload::Rgb(img) => img.clone(),
    };
    let mut out = Vec::new();
    rgb.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80))
        .ok()?;
    Some(out)
}
