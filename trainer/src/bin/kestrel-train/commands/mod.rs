//! One file per command; each turns its parsed arguments into work and an exit status.

pub mod devices;
pub mod eval;
pub mod export_imagenet;
pub mod fit;
pub mod import_idx;
pub mod lr_find;
pub mod quantize;
pub mod sample_data;
pub mod sweep;

use kestrel_runtime::exit::Status;

use crate::cli::Command;

pub fn run(command: &Command) -> anyhow::Result<Status> {
    match command {
        Command::Fit(args) => fit::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::LrFind(args) => lr_find::run(args),
        Command::SampleData(args) => sample_data::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::ImportIdx(args) => import_idx::run(args),
        Command::Eval(args) => eval::run(args),
        Command::ExportImagenet(args) => export_imagenet::run(args),
        Command::Devices => devices::run(),
    }
}
