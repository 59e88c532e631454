//! `kestrel`: classify images with a Kestrel model bundle. The flags are `cli.rs`, the config
//! file `config.rs`, which model runs `model.rs`, and each command one file under `commands/`.

use std::process::ExitCode;

use clap::Parser;
use kestrel_runtime::exit::Status;

mod cli;
mod commands;
mod config;
mod model;

use cli::{Cli, Command};
use config::ConfigFile;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = ConfigFile::load(cli.config.as_deref()).and_then(|config| match cli.command {
        Command::Classify(args) => commands::classify::classify(&args, &config),
        Command::Info { model } => commands::info::info(model.path.as_ref(), &config),
        Command::Run(args) => commands::run::run(&args, &config),
        Command::Cameras => commands::cameras::cameras(),
        Command::Bench(args) => commands::bench::bench(&args, &config),
    });
    match result {
        Ok(status) => status.into(),
        Err(e) => {
            eprintln!("error: {}", kestrel_runtime::error_report(e.as_ref()));
            Status::Fatal.into()
        }
    }
}
