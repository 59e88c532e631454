//! `kestrel classify`: image files in, one line of top classes each.

use std::io::Write;

use anyhow::Context;
use kestrel_runtime::decode::load_image_with_limit;
use kestrel_runtime::exit::Status;
use kestrel_runtime::{Classifier, LoadOptions};

use crate::cli::{ClassifyArgs, Format};
use crate::config::ConfigFile;
use crate::model::resolve_model;

pub fn classify(args: &ClassifyArgs, config: &ConfigFile) -> anyhow::Result<Status> {
    let options = LoadOptions {
        threads: args.output.threads.into(),
        ..LoadOptions::default()
    };
    let (model, _) = resolve_model(args.model.path.as_ref(), config.run.model.as_ref())?;
    let classifier = Classifier::load(&model, &options).context("loading the model")?;
    let labels = classifier.labels();
    let mut stdout = std::io::stdout().lock();
    let mut failed = 0usize;
    for path in &args.images {
        let prediction = load_image_with_limit(path, args.max_pixels)
            .map_err(anyhow::Error::from)
            .and_then(|img| Ok(classifier.classify(&img)?));
        let prediction = match prediction {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {}", kestrel_runtime::error_report(e.as_ref()));
                failed += 1;
                continue;
            }
        };
        let top = prediction.top_k(labels, args.top_k);
        match args.output.format {
            Format::Text => {
                let classes: Vec<String> = top
                    .iter()
                    .map(|s| format!("{} {:.1}%", s.label, 100.0 * s.probability))
                    .collect();
                writeln!(stdout, "{}: {}", path.display(), classes.join(" · "))?;
            }
            Format::Jsonl => {
                let line = serde_json::json!({ "image": path, "top": top });
                writeln!(stdout, "{line}")?;
            }
        }
    }
    Ok(if failed == 0 {
        Status::Success
    } else {
        Status::CheckFailed
    })
}
