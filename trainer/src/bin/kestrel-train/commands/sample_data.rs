//! `kestrel-train sample-data`: a small labelled folder to try `fit` on.

use kestrel_runtime::exit::Status;

use crate::cli::SampleDataArgs;

pub fn run(args: &SampleDataArgs) -> anyhow::Result<Status> {
    let (out, per_class, size) = (&args.out, args.per_class, args.size);
    let dirs = kestrel_trainer::data::sample_data::make_photo_folder(out, per_class, size, 7)?;
    println!(
        "wrote {} classes × {per_class} images under {}",
        dirs.len(),
        out.display()
    );
    Ok(Status::Success)
}
