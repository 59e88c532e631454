//! The frame loop: capture → decode → preprocess → infer, with per-stage timings.
//!
//! The source runs on its own thread. A live source (camera, pipe, TCP) keeps only its latest
//! frame: when inference is slower than the camera, stale frames are dropped and counted rather
//! than queued, so answers stay current. A recording (folder, file, synthetic) is read with
//! back-pressure and nothing is dropped.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::classifier::{Classifier, ClassifierError, Prediction};
use crate::preprocess;
use crate::source::{Frame, OpenOptions, Payload, SourceError, SourceSpec};
use crate::stats::{Percentiles, Window};
use mailbox::{Mailbox, Msg, read_source};

mod mailbox;

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Classifier(#[from] ClassifierError),
    #[error("--roi {0}: expected x,y,w,h in pixels with w and h above 0")]
    Roi(String),
    #[error("cannot create {path} for --save-uncertain: {source}")]
    SaveDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A crop of every frame, in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Roi {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl std::str::FromStr for Roi {
    type Err = LiveError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v: Vec<u32> = s
            .split(',')
            .map(|p| p.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|_| LiveError::Roi(s.into()))?;
        match v.as_slice() {
            &[x, y, w, h] if w > 0 && h > 0 => Ok(Roi { x, y, w, h }),
            _ => Err(LiveError::Roi(s.into())),
        }
    }
}

/// Where and when hard frames are kept for labelling.
#[derive(Debug, Clone)]
pub struct SaveUncertain {
    pub dir: PathBuf,
    /// Save frames whose top-1 probability is below this.
    pub below: f32,
    /// At most one saved frame per this interval.
    pub min_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Infer on every Nth frame (1 = all).
    pub every: u64,
    pub roi: Option<Roi>,
    pub top_k: usize,
    /// Report a label only when its (smoothed) probability reaches this.
    pub threshold: f32,
    /// Average probabilities over this many inferred frames before reporting.
    pub smooth: usize,
    pub save_uncertain: Option<SaveUncertain>,
    /// Stop after this many frames from the source.
    pub max_frames: Option<u64>,
    pub max_pixels: u64,
    /// Reopen a source that fails (a camera unplugged), with back-off, instead of stopping.
    pub reconnect: bool,
    /// How often a progress event is emitted.
    pub progress_every: Duration,
    pub open: OpenOptions,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            every: 1,
            roi: None,
            top_k: 3,
            threshold: 0.0,
            smooth: 1,
            save_uncertain: None,
            max_frames: None,
            max_pixels: crate::decode::DEFAULT_MAX_PIXELS,
            reconnect: false,
            progress_every: Duration::from_secs(5),
            open: OpenOptions::default(),
        }
    }
}

/// Milliseconds spent in each stage for one frame.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTimes {
    pub capture: f64,
    pub decode: f64,
    pub preprocess: f64,
    pub inference: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Label {
    pub label: String,
    pub index: usize,
    pub probability: f32,
}

/// One inferred frame.
#[derive(Debug, Clone, Serialize)]
pub struct FrameReport {
    pub frame: u64,
    /// Since the loop started.
    pub timestamp_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Top-k of the (smoothed) probabilities.
    pub top: Vec<Label>,
    /// The reported label: top-1 if it clears `threshold`, else none.
    pub label: Option<String>,
    pub changed: bool,
    pub timings_ms: StageTimes,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub source: String,
    /// Frames the source produced (inferred, skipped by --every, dropped as stale, corrupt).
    pub frames: u64,
    pub inferred: u64,
    pub skipped: u64,
    pub dropped: u64,
    pub corrupt: u64,
    pub saved: u64,
    pub save_errors: u64,
    pub reconnects: u64,
    pub elapsed_s: f64,
    /// Inferred frames per second of wall time.
    pub fps: f64,
    pub capture_ms: Percentiles,
    pub decode_ms: Percentiles,
    pub preprocess_ms: Percentiles,
    pub inference_ms: Percentiles,
    /// Share of per-frame work (decode + preprocess + inference) spent outside inference.
    pub outside_inference_share: f64,
    /// Why the loop ended: `end of stream`, `frame limit`, `interrupted`.
    pub ended: String,
}

/// Frames so far, by fate: what a live dashboard or a metrics scrape shows between summaries.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Totals {
    /// Frames the source produced.
    pub frames: u64,
    pub inferred: u64,
    pub skipped: u64,
    pub dropped: u64,
    pub corrupt: u64,
}

/// What the loop tells its caller as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    Started {
        source: &'a str,
    },
    /// Every inferred frame, changed label or not (`report.changed` says): each consumer decides
    /// whether it wants only changes. The frame is lent so a consumer that shows pictures can
    /// copy the one it needs, and nothing is copied for those that do not.
    Frame {
        report: &'a FrameReport,
        frame: &'a Frame,
        totals: Totals,
    },
    Corrupt {
        frame: u64,
        reason: &'a str,
    },
    Warning(String),
    Progress(&'a Summary),
}

/// Saves uncertain frames: the original JPEG bytes when the frame was JPEG, else a re-encode,
/// plus a JSON sidecar with the top-k. Named `frame-<run>-<index>`, `run` being the run's start
/// in Unix milliseconds: a second run into the same folder overwrites nothing, and the trainer
/// keeps one run's frames (near-duplicates) on one side of its split.
fn save_frame(dir: &Path, run: u128, frame: &Frame, report: &FrameReport, source: &str) -> Result<PathBuf, String> {
    let stem = format!("frame-{run}-{:08}", frame.index);
    let jpeg = dir.join(format!("{stem}.jpg"));
    let bytes = match &frame.payload {
        Payload::Encoded(b) if b.starts_with(&[0xFF, 0xD8]) => b.clone(),
        other => {
            let img = match other {
                Payload::Rgb(rgb) => image::DynamicImage::ImageRgb8(rgb.clone()),
                Payload::Encoded(_) => frame.decode(u64::MAX).map_err(|e| e.to_string())?,
            };
            let mut out = Vec::new();
            img.to_rgb8()
                .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90))
                .map_err(|e| e.to_string())?;
            out
        }
    };
    crate::atomic::write_atomic(&jpeg, &bytes).map_err(|e| format!("cannot write {}: {e}", jpeg.display()))?;
    let sidecar = serde_json::json!({
        "frame": frame.index,
        "source": source,
        "name": frame.name,
        "top": report.top,
        "timestamp_ms": report.timestamp_ms,
    });
    let json = dir.join(format!("{stem}.json"));
    if let Err(e) = crate::atomic::write_atomic(&json, sidecar.to_string().as_bytes()) {
        // A frame without its top-k is no use to the person labelling: keep both or neither.
        let _ = std::fs::remove_file(&jpeg);
        return Err(format!("cannot write {}: {e}", json.display()));
    }
    Ok(jpeg)
}

/// Decode (with the ROI crop) and preprocess one frame: the model input and the two stages'
/// milliseconds, or why the frame is unusable.
fn prepare(
    frame: &Frame,
    options: &LiveOptions,
    spec: &preprocess::PreprocessSpec,
    on_event: &mut impl FnMut(Event),
) -> Result<(Vec<f32>, f64, f64), String> {
    let t = Instant::now();
    let image = frame.decode(options.max_pixels).map_err(|e| e.to_string())?;
    let image = match options.roi {
        Some(r) if r.x < image.width() && r.y < image.height() => {
            image.crop_imm(r.x, r.y, r.w.min(image.width() - r.x), r.h.min(image.height() - r.y))
        }
        Some(r) => {
            on_event(Event::Warning(format!(
                "--roi {},{},{},{} lies outside the {}x{} frame; using the whole frame",
                r.x,
                r.y,
                r.w,
                r.h,
                image.width(),
                image.height()
            )));
            image
        }
        None => image,
    };
    let decode_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let input = preprocess::preprocess(&image, spec).map_err(|e| e.to_string())?;
    Ok((input, decode_ms, t.elapsed().as_secs_f64() * 1e3))
}

/// Run `classifier` on frames from `spec` until the source ends, `max_frames`, or `stop`.
pub fn run(
    classifier: &Classifier,
    spec: &SourceSpec,
    options: &LiveOptions,
    stop: Arc<AtomicBool>,
    mut on_event: impl FnMut(Event),
) -> Result<Summary, LiveError> {
    if let Some(s) = &options.save_uncertain {
        std::fs::create_dir_all(&s.dir).map_err(|source| LiveError::SaveDir {
            path: s.dir.clone(),
            source,
        })?;
    }
    let mailbox = Arc::new(Mailbox::new());
    {
        let (spec, open, reconnect, mailbox, stop) = (
            spec.clone(),
            options.open.clone(),
            options.reconnect,
            Arc::clone(&mailbox),
            Arc::clone(&stop),
        );
        // Not joined: a thread blocked reading stdin must not keep the process alive at Ctrl-C.
        std::thread::spawn(move || read_source(spec, open, reconnect, mailbox, stop));
    }
    let start = Instant::now();
    let mut summary = Summary::default();
    let (mut capture, mut decode, mut prep, mut infer) = (
        Window::default(),
        Window::default(),
        Window::default(),
        Window::default(),
    );
    let mut history: VecDeque<Vec<f32>> = VecDeque::new();
    let mut last_label: Option<Option<String>> = None;
    let mut last_save: Option<Instant> = None;
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut last_progress = Instant::now();
    // Frames taken from the source thread; `summary.frames` adds those dropped as stale.
    let mut consumed = 0u64;
    let spec_input = classifier.metadata().preprocess.clone();
    let labels = classifier.labels().to_vec();
    let finish = |mut s: Summary, consumed: u64, ended: &str, windows: [&Window; 4]| {
        s.frames = consumed + s.dropped;
        s.elapsed_s = start.elapsed().as_secs_f64();
        s.fps = s.inferred as f64 / s.elapsed_s.max(1e-9);
        s.capture_ms = windows[0].percentiles();
        s.decode_ms = windows[1].percentiles();
        s.preprocess_ms = windows[2].percentiles();
        s.inference_ms = windows[3].percentiles();
        let outside = s.decode_ms.mean + s.preprocess_ms.mean;
        s.outside_inference_share = outside / (outside + s.inference_ms.mean).max(1e-9);
        s.ended = ended.into();
        s
    };
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(finish(
                summary,
                consumed,
                "interrupted",
                [&capture, &decode, &prep, &infer],
            ));
        }
        if last_progress.elapsed() >= options.progress_every {
            last_progress = Instant::now();
            let s = finish(summary.clone(), consumed, "running", [&capture, &decode, &prep, &infer]);
            on_event(Event::Progress(&s));
        }
        let Some((msg, dropped)) = mailbox.take(Duration::from_millis(200)) else {
            continue;
        };
        summary.dropped = dropped;
        let (frame, capture_ms) = match msg {
            Msg::Started(what) => {
                on_event(Event::Started { source: &what });
                summary.source = what;
                continue;
            }
            Msg::Warning(w) => {
                if w.starts_with("reconnected") {
                    summary.reconnects += 1;
                }
                on_event(Event::Warning(w));
                continue;
            }
            Msg::Failed(e) => {
                if summary.source.is_empty() {
                    return Err(e.into());
                }
                on_event(Event::Warning(format!("source stopped: {e}")));
                return Ok(finish(
                    summary,
                    consumed,
                    "source failed",
                    [&capture, &decode, &prep, &infer],
                ));
            }
            Msg::End => {
                return Ok(finish(
                    summary,
                    consumed,
                    "end of stream",
                    [&capture, &decode, &prep, &infer],
                ));
            }
            Msg::Corrupt(index, reason) => {
                consumed += 1;
                summary.corrupt += 1;
                on_event(Event::Corrupt {
                    frame: index,
                    reason: &reason,
                });
                continue;
            }
            Msg::Frame(f, c) => (f, c),
        };
        if options.max_frames.is_some_and(|m| consumed >= m) {
            stop.store(true, Ordering::Relaxed);
            return Ok(finish(
                summary,
                consumed,
                "frame limit",
                [&capture, &decode, &prep, &infer],
            ));
        }
        consumed += 1;
        if !(consumed - 1).is_multiple_of(options.every.max(1)) {
            summary.skipped += 1;
            continue;
        }
        let (input, decode_ms, prep_ms) = match prepare(&frame, options, &spec_input, &mut on_event) {
            Ok(prepared) => prepared,
            Err(reason) => {
                summary.corrupt += 1;
                on_event(Event::Corrupt {
                    frame: frame.index,
                    reason: &reason,
                });
                continue;
            }
        };
        let t = Instant::now();
        let logits = classifier.logits(&input)?;
        let infer_ms = t.elapsed().as_secs_f64() * 1e3;
        summary.inferred += 1;
        capture.push(capture_ms);
        decode.push(decode_ms);
        prep.push(prep_ms);
        infer.push(infer_ms);

        let raw = Prediction::from_logits(&logits);
        let raw_top = raw.probabilities.iter().copied().fold(0.0f32, f32::max);
        if history.len() == options.smooth.max(1) {
            history.pop_front();
        }
        history.push_back(raw.probabilities.clone());
        let mut avg = vec![0.0f32; raw.probabilities.len()];
        for p in &history {
            for (a, v) in avg.iter_mut().zip(p) {
                *a += v / history.len() as f32;
            }
        }
        let smoothed = Prediction { probabilities: avg };
        let top: Vec<Label> = smoothed
            .top_k(&labels, options.top_k.max(1))
            .into_iter()
            .map(|s| Label {
                label: s.label.to_string(),
                index: s.index,
                probability: s.probability,
            })
            .collect();
        let label = top
            .first()
            .filter(|t| t.probability >= options.threshold)
            .map(|t| t.label.clone());
        let changed = last_label.as_ref() != Some(&label);
        last_label = Some(label.clone());
        let mut report = FrameReport {
            frame: frame.index,
            timestamp_ms: frame.captured.duration_since(start).as_secs_f64() * 1e3,
            name: frame.name.clone(),
            top,
            label,
            changed,
            timings_ms: StageTimes {
                capture: capture_ms,
                decode: decode_ms,
                preprocess: prep_ms,
                inference: infer_ms,
            },
            saved: None,
        };
        if let Some(s) = &options.save_uncertain
            && raw_top < s.below
            && last_save.is_none_or(|t| t.elapsed() >= s.min_interval)
        {
            last_save = Some(Instant::now());
            match save_frame(&s.dir, run_id, &frame, &report, &summary.source) {
                Ok(path) => {
                    summary.saved += 1;
                    report.saved = Some(path);
                }
                Err(e) => {
                    summary.save_errors += 1;
                    on_event(Event::Warning(format!(
                        "cannot save frame {} to {}: {e}",
                        frame.index,
                        s.dir.display()
                    )));
                }
            }
        }
        let totals = Totals {
            frames: consumed + summary.dropped,
            inferred: summary.inferred,
            skipped: summary.skipped,
            dropped: summary.dropped,
            corrupt: summary.corrupt,
        };
        on_event(Event::Frame {
            report: &report,
            frame: &frame,
            totals,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roi_parses_and_refuses_nonsense() {
        assert_eq!(
            "10, 20,30,40".parse::<Roi>().ok(),
            Some(Roi {
                x: 10,
                y: 20,
                w: 30,
                h: 40
            })
        );
        assert!("1,2,0,4".parse::<Roi>().is_err());
        assert!("1,2,3".parse::<Roi>().is_err());
        assert!("a,b,c,d".parse::<Roi>().is_err());
    }
}
