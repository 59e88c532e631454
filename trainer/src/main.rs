//! `kestrel-train`: build Kestrel model bundles.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kestrel_trainer::backend::Backend;
use kestrel_trainer::pretrained;

#[derive(Parser)]
#[command(
    name = "kestrel-train",
    version,
    about = "Train and export Kestrel image classifiers."
)]
#[command(
    after_help = "Exit codes: 0 success · 1 the result failed a check (e.g. export parity) · 2 usage or input error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Export the pretrained ImageNet EfficientNet-Lite0 as a Kestrel bundle, checked in tract.
    ///
    /// Needs the assets from scripts/fetch-assets.sh. Prints the Burn↔tract max |Δlogit| on the
    /// sample photos and fails above 1e-3.
    ExportImagenet {
        /// Where to write the bundle.
        #[arg(long, default_value = "models/efficientnet-lite0-imagenet.onnx")]
        out: PathBuf,
        /// Square input size in pixels.
        #[arg(long, default_value_t = pretrained::IMAGENET_SIZE)]
        size: u32,
        /// Burn backend for the reference forward pass.
        #[arg(long, value_enum, default_value_t = Backend::Flex)]
        backend: Backend,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            let check_failed = e.chain().any(|c| {
                matches!(
                    c.downcast_ref(),
                    Some(kestrel_trainer::export::ExportError::Parity { .. })
                )
            });
            ExitCode::from(if check_failed { 1 } else { 2 })
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::ExportImagenet { out, size, backend } => {
            let diff = pretrained::export_imagenet(&out, &backend.device(), size)
                .with_context(|| format!("exporting the ImageNet bundle to {}", out.display()))?;
            println!("wrote {} · Burn↔tract max |Δlogit| = {diff:.2e}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
