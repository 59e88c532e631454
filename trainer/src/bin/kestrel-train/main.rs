//! `kestrel-train`: build Kestrel model bundles. The command line is in `cli.rs`, each
//! command in `commands/`.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use kestrel_runtime::exit::Status;
use kestrel_trainer::model::pretrained::PretrainedError;
use kestrel_trainer::onnx::export::ExportError;
use kestrel_trainer::train::FitError;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // wgpu asks every graphics API for adapters; on a machine without OpenGL/EGL
                // (any headless server) its GL backend logs each failed probe as an error. An
                // API that is absent is not an error: `kestrel-train devices` says what exists.
                // RUST_LOG=wgpu_hal=debug brings them back.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,wgpu_hal::gles=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = cli::Cli::parse();
    match commands::run(&cli.command) {
        Ok(status) => status.into(),
        Err(e) => {
            eprintln!("error: {}", kestrel_runtime::error_report(e.as_ref()));
            // A result that failed its check is not a usage error: scripts tell them apart.
            let check_failed = e.chain().any(|c| {
                matches!(c.downcast_ref(), Some(ExportError::Parity { .. }))
                    || matches!(
                        c.downcast_ref(),
                        Some(PretrainedError::Export(ExportError::Parity { .. }))
                    )
                    || c.downcast_ref::<FitError>().is_some_and(FitError::is_check_failure)
            });
            if check_failed {
                Status::CheckFailed
            } else {
                Status::Fatal
            }
            .into()
        }
    }
}
