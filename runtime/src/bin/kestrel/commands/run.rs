//! `kestrel run`: the frame loop, and where its results go: stdout (text or JSON lines), the web
//! view (--http) and an MQTT broker (--mqtt). Each of those gets every inferred frame and decides
//! what to keep; none of them can hold the loop up (the web view and the publisher only take a
//! copy under a short lock and do their I/O on their own threads).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use kestrel_runtime::exit::Status;
use kestrel_runtime::live::{self, Event, FrameReport, LiveOptions, SaveUncertain, Summary};
use kestrel_runtime::mqtt::{MqttUrl, Publisher};
use kestrel_runtime::source::{OpenOptions, SourceSpec};
use kestrel_runtime::web::{Hub, Server};
use kestrel_runtime::{Classifier, LoadOptions};

use crate::cli::{Format, RunArgs};
use crate::config::{ConfigFile, merge};
use crate::model::resolve_model;

/// `run`'s settings with the defaults filled in.
struct Settings {
    model: PathBuf,
    spec: SourceSpec,
    threads: usize,
    format: Format,
    on_change: bool,
    live: LiveOptions,
    http: Option<String>,
    http_token: Option<String>,
    mqtt: Option<(MqttUrl, usize)>,
}

fn parse_resolution(s: &str) -> anyhow::Result<(u32, u32)> {
    s.split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--resolution {s}: expected WIDTHxHEIGHT, e.g. 1280x720"))
}

impl Settings {
    fn resolve(flags: &RunArgs, config: &ConfigFile) -> anyhow::Result<Settings> {
        let a = merge(flags, &config.run);
        let (model, _) = resolve_model(flags.model.as_ref(), config.run.model.as_ref())?;
        let spec: SourceSpec = a.source.as_deref().unwrap_or("camera").parse()?;
        // The frame loop's own defaults, where neither flag nor file says otherwise.
        let d = LiveOptions::default();
        let live = LiveOptions {
            every: a.every.unwrap_or(d.every).max(1),
            roi: a.roi.as_deref().map(str::parse).transpose()?,
            top_k: a.top_k.unwrap_or(d.top_k),
            threshold: a.threshold.unwrap_or(d.threshold),
            smooth: a.smooth.unwrap_or(d.smooth).max(1),
            save_uncertain: a.save_uncertain.clone().map(|dir| SaveUncertain {
                dir,
                below: a.below.unwrap_or(0.6),
                min_interval: Duration::from_secs_f64(a.save_interval.unwrap_or(1.0).max(0.0)),
            }),
            max_frames: a.frames,
            max_pixels: a.max_pixels.unwrap_or(d.max_pixels),
            reconnect: a.reconnect.unwrap_or(d.reconnect),
            progress_every: a
                .progress
                .map_or(d.progress_every, |s| Duration::from_secs_f64(s.max(0.1))),
            open: OpenOptions {
                resolution: a.resolution.as_deref().map(parse_resolution).transpose()?,
                fps: a.fps,
                live: None,
            },
        };
        anyhow::ensure!(
            a.http_token.is_none() || a.http.is_some(),
            "--http-token protects the web view, which is off: add --http"
        );
        let mqtt = a
            .mqtt
            .as_deref()
            .map(|url| anyhow::Ok((url.parse::<MqttUrl>()?, a.mqtt_queue.unwrap_or(1000).max(1))))
            .transpose()?;
        Ok(Settings {
            model,
            spec,
            threads: a.threads.unwrap_or(1).into(),
            format: a.format.unwrap_or(Format::Text),
            on_change: a.on_change.unwrap_or(false),
            live,
            http: a.http,
            http_token: a.http_token.filter(|t| !t.is_empty()),
            mqtt,
        })
    }
}

/// Ctrl-C, SIGTERM (a service manager's stop) and SIGHUP (ctrlc's `termination` feature) all
/// end the run with its summary. A second one while the summary is written exits.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C/SIGTERM handler")?;
    Ok(stop)
}

fn text_line(r: &FrameReport) -> String {
    let classes: Vec<String> = r
        .top
        .iter()
        .map(|t| format!("{} {:.1}%", t.label, 100.0 * t.probability))
        .collect();
    let what = r.name.clone().unwrap_or_else(|| format!("frame {}", r.frame));
    let verdict = r.label.as_deref().unwrap_or("(uncertain)");
    format!(
        "{what}: {verdict} · {} · {:.1} ms{}",
        classes.join(" · "),
        r.timings_ms.decode + r.timings_ms.preprocess + r.timings_ms.inference,
        r.saved
            .as_ref()
            .map(|p| format!(" · saved {}", p.display()))
            .unwrap_or_default()
    )
}

fn summary_line(s: &Summary) -> String {
    format!(
        "summary: {} frames ({} inferred, {} skipped by --every, {} dropped as stale, {} corrupt) in {:.1} s · \
         {:.1} FPS · p50/p95 ms: decode {:.1}/{:.1}, preprocess {:.1}/{:.1}, inference {:.1}/{:.1} · {:.0}% of \
         frame time outside inference · saved {} · {}",
        s.frames,
        s.inferred,
        s.skipped,
        s.dropped,
        s.corrupt,
        s.elapsed_s,
        s.fps,
        s.decode_ms.p50,
        s.decode_ms.p95,
        s.preprocess_ms.p50,
        s.preprocess_ms.p95,
        s.inference_ms.p50,
        s.inference_ms.p95,
        100.0 * s.outside_inference_share,
        s.saved,
        s.ended
    )
}

pub fn run(flags: &RunArgs, config: &ConfigFile) -> anyhow::Result<Status> {
    let settings = Settings::resolve(flags, config)?;
    let classifier = Classifier::load(
        &settings.model,
        &LoadOptions {
            threads: settings.threads,
            ..LoadOptions::default()
        },
    )
    .context("loading the model")?;
    let stop = stop_on_signals()?;
    let hub = settings.http.as_ref().map(|_| Hub::new());
    let _server = match (&settings.http, &hub) {
        (Some(addr), Some(hub)) => {
            let server = Server::start(addr, settings.http_token.clone(), Arc::clone(hub))?;
            eprintln!(
                "web view: http://{}/{}",
                server.local_addr(),
                if settings.http_token.is_some() {
                    "?token=…"
                } else {
                    ""
                }
            );
            Some(server)
        }
        _ => None,
    };
    let publisher = settings.mqtt.as_ref().map(|(url, queue)| {
        eprintln!("mqtt: publishing to {url} (QoS 1, up to {queue} results queued while the broker is away)");
        Publisher::start(url.clone(), *queue)
    });

    let jsonl = settings.format == Format::Jsonl;
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    let summary = live::run(
        &classifier,
        &settings.spec,
        &settings.live,
        Arc::clone(&stop),
        |event| {
            if let Some(p) = &publisher {
                for notice in p.take_notices() {
                    eprintln!("mqtt: {notice}");
                }
            }
            let line = match event {
                Event::Started { source } => {
                    eprintln!("source: {source} · model: {}", settings.model.display());
                    if let Some(hub) = &hub {
                        hub.started(source);
                    }
                    return;
                }
                Event::Warning(w) => {
                    eprintln!("warning: {w}");
                    return;
                }
                Event::Corrupt { frame, reason } => {
                    eprintln!("frame {frame} skipped: {reason}");
                    return;
                }
                Event::Progress(s) => {
                    if !jsonl {
                        eprintln!(
                            "{} frames · {:.1} FPS · inference p50 {:.1} ms · dropped {} · corrupt {}",
                            s.frames, s.fps, s.inference_ms.p50, s.dropped, s.corrupt
                        );
                    }
                    return;
                }
                Event::Frame { report, frame, totals } => {
                    // The jsonl line, made once for whoever wants it (none in plain text mode).
                    let json: Option<Arc<str>> = (jsonl || hub.is_some() || publisher.is_some())
                        .then(|| serde_json::to_string(report).unwrap_or_default().into());
                    if let (Some(hub), Some(json)) = (&hub, &json) {
                        hub.frame(report, Arc::clone(json), frame, totals);
                    }
                    if settings.on_change && !report.changed {
                        return;
                    }
                    if let (Some(p), Some(json)) = (&publisher, &json) {
                        p.publish(json.as_bytes());
                    }
                    match &json {
                        Some(json) if jsonl => json.to_string(),
                        _ => text_line(report),
                    }
                }
            };
            if write_error.is_none()
                && let Err(e) = writeln!(stdout, "{line}")
            {
                // A closed pipe (| head) ends the run cleanly.
                write_error = Some(e);
                stop.store(true, Ordering::Relaxed);
            }
        },
    )?;
    let mqtt_summary = publisher.map(|p| p.close(Duration::from_secs(3)));
    if jsonl {
        let mut line = serde_json::json!({ "summary": summary });
        if let Some(m) = mqtt_summary {
            line["mqtt"] = serde_json::json!(m);
        }
        let _ = writeln!(stdout, "{line}");
    } else {
        eprintln!("{}", summary_line(&summary));
        if let Some(m) = mqtt_summary {
            eprintln!(
                "mqtt: {} published and acknowledged, {} dropped by the full queue, {} unsent at exit, {} reconnects",
                m.acknowledged, m.dropped, m.unsent, m.reconnects
            );
        }
    }
    Ok(Status::Success)
}
