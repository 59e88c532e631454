//! `kestrel info`: what a bundle is, and where the model a command would run comes from.

use std::io::Write;
use std::path::PathBuf;

use kestrel_runtime::exit::Status;
use kestrel_runtime::{Classifier, LoadOptions};

use crate::config::ConfigFile;
use crate::model::{BUILTIN_NAME, Origin, resolve_model};

pub fn info(flag: Option<&PathBuf>, config: &ConfigFile) -> anyhow::Result<Status> {
    let (path, origin) = resolve_model(flag, config.run.model.as_ref())?;
    let model = path.as_path();
    let bundle = kestrel_runtime::Bundle::read(model)?;
    let m = &bundle.metadata;
    let mut lines = Vec::new();
    lines.push(match origin {
        Origin::Flag => format!("model:       {} (--model)", model.display()),
        Origin::Env => format!("model:       {} ($KESTREL_MODEL)", model.display()),
        Origin::Config => format!(
            "model:       {} (config {})",
            model.display(),
            config
                .path
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
        Origin::BuiltIn => format!(
            "model:       built into this binary: {BUILTIN_NAME} (unpacked to {})",
            model.display()
        ),
    });
    if let Some(path) = &config.path {
        lines.push(format!("config:      {}", path.display()));
    }
    lines.push(format!("backbone:    {}", m.model_card.backbone));
    lines.push(format!("precision:   {}", m.model_card.precision));
    let classifier = Classifier::from_bundle(bundle.clone(), model, &LoadOptions::default())?;
    lines.push(format!("kernels:     {}", classifier.kernels()));
    lines.push(format!("weights:     {}", m.model_card.weights_source));
    lines.push(format!("written by:  {}", m.model_card.tool));
    lines.push(format!(
        "input:       {}x{} {:?}",
        m.preprocess.width, m.preprocess.height, m.preprocess.resize
    ));
    lines.push(format!("classes:     {}", m.labels.len()));
    for (name, value) in &m.model_card.metrics {
        lines.push(format!("metric:      {name} = {value}"));
    }
    // Written, not println!'d: `kestrel info | head -1` closes the pipe early, which must end
    // the command quietly instead of panicking.
    let mut stdout = std::io::stdout().lock();
    for line in lines {
        if writeln!(stdout, "{line}").is_err() {
            break;
        }
    }
    Ok(Status::Success)
}
