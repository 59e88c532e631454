//! `kestrel bench`: models side by side, where their time goes, or the whole frame pipeline.

use std::path::PathBuf;

use anyhow::Context;
use kestrel_runtime::exit::Status;
use kestrel_runtime::{Classifier, LoadOptions};

use crate::cli::{BenchArgs, Format};
use crate::config::ConfigFile;
use crate::model::resolve_model;

pub fn bench(args: &BenchArgs, config: &ConfigFile) -> anyhow::Result<Status> {
    let models = if args.models.is_empty() {
        vec![resolve_model(None, config.run.model.as_ref())?.0]
    } else {
        args.models.clone()
    };
    let threads: usize = args.output.threads.into();
    if let Some(source) = &args.source {
        return pipeline(&models, source, args.iterations, threads, args.output.format);
    }
    let options = LoadOptions {
        threads,
        int8_kernels: !args.tract_only,
    };
    if args.profile {
        return profile(&models, args.iterations, &options);
    }
    let report =
        kestrel_runtime::bench::run(&models, &options, args.warmup, args.iterations.max(1)).context("benchmarking")?;
    match args.output.format {
        Format::Text => print!("{}", kestrel_runtime::bench::table(&report)),
        Format::Jsonl => println!("{}", serde_json::to_string(&report)?),
    }
    Ok(Status::Success)
}

/// Time per op type, per model: where an inference's milliseconds go.
fn profile(models: &[PathBuf], iterations: usize, options: &LoadOptions) -> anyhow::Result<Status> {
    for model in models {
        let classifier = Classifier::load(model, options).context("loading the model")?;
        let input = kestrel_runtime::bench::fixed_input(classifier.metadata().preprocess.tensor_len());
        classifier.logits(&input)?;
        let rows = classifier.profile(&input, iterations.max(1))?;
        let total: f64 = rows.iter().map(|r| r.2).sum();
        println!(
            "{} · {} · {total:.2} ms per inference",
            model.display(),
            classifier.kernels()
        );
        for (name, nodes, ms) in rows {
            println!(
                "  {name:<36} {nodes:>4} nodes {ms:>9.3} ms {:>6.1}%",
                100.0 * ms / total
            );
        }
    }
    Ok(Status::Success)
}

/// The frame pipeline of each model on `source`, one after another.
fn pipeline(models: &[PathBuf], source: &str, frames: usize, threads: usize, format: Format) -> anyhow::Result<Status> {
    use kestrel_runtime::live::{self, LiveOptions};
    let spec: kestrel_runtime::source::SourceSpec = source.parse()?;
    for model in models {
        let classifier = Classifier::load(
            model,
            &LoadOptions {
                threads,
                ..LoadOptions::default()
            },
        )
        .context("loading the model")?;
        let options = LiveOptions {
            max_frames: Some(frames.max(1) as u64),
            progress_every: std::time::Duration::from_secs(3600),
            ..LiveOptions::default()
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let summary = live::run(&classifier, &spec, &options, stop, |_| {})?;
        let peak_rss_mib = kestrel_runtime::bench::proc_status_mib("VmHWM:");
        match format {
            Format::Jsonl => println!(
                "{}",
                serde_json::json!({"model": model, "threads": threads, "summary": summary, "peak_rss_mib": peak_rss_mib})
            ),
            Format::Text => println!(
                "{} on {} · {threads} thread(s) · {} frames · {:.1} FPS · p50 ms: capture {:.2}, decode {:.2}, \
                 preprocess {:.2}, inference {:.1} · {:.1}% of frame time outside inference · peak RSS {:.0} MiB",
                model.display(),
                summary.source,
                summary.inferred,
                summary.fps,
                summary.capture_ms.p50,
                summary.decode_ms.p50,
                summary.preprocess_ms.p50,
                summary.inference_ms.p50,
                100.0 * summary.outside_inference_share,
                peak_rss_mib
            ),
        }
    }
    Ok(Status::Success)
}
