//! `kestrel-train import-idx`: an IDX data set (MNIST layout) as class folders of PNGs.

use kestrel_runtime::exit::Status;

use crate::cli::ImportIdxArgs;

pub fn run(args: &ImportIdxArgs) -> anyhow::Result<Status> {
    let ImportIdxArgs {
        images,
        labels,
        out,
        names,
        per_class,
    } = args;
    let names = names.clone().unwrap_or_else(|| {
        kestrel_trainer::data::idx::FASHION_MNIST
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    let counts = kestrel_trainer::data::idx::import(images, labels, &names, *per_class, out)?;
    println!(
        "wrote {} images in {} classes under {}",
        counts.iter().sum::<usize>(),
        names.len(),
        out.display()
    );
    Ok(Status::Success)
}
