//! `kestrel-train export-imagenet`: a pretrained backbone as an ImageNet bundle, and its int8 form.

use anyhow::Context;
use kestrel_runtime::exit::Status;
use kestrel_trainer::model::{self, pretrained};

use crate::cli::ExportImagenetArgs;

pub fn run(args: &ExportImagenetArgs) -> anyhow::Result<Status> {
    let backbone = model::backbone(&args.backbone)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| pretrained::default_bundle_path(backbone));
    let int8_out = args.int8_out.clone().unwrap_or_else(|| out.with_extension("int8.onnx"));
    let size = args.size.unwrap_or(backbone.native_size());
    let diff = pretrained::export_imagenet(backbone, &out, args.backend, size)
        .with_context(|| format!("exporting the ImageNet bundle to {}", out.display()))?;
    println!("wrote {} · Burn↔tract max |Δlogit| = {diff:.2e}", out.display());
    if args.no_int8 {
        return Ok(Status::Success);
    }
    let outcome = pretrained::quantize_imagenet(&out, &int8_out)
        .with_context(|| format!("quantising {} to {}", out.display(), int8_out.display()))?;
    println!(
        "wrote {} · {}",
        int8_out.display(),
        kestrel_trainer::quantize::gate::summary(&outcome)
    );
    Ok(Status::Success)
}
