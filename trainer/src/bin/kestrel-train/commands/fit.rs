//! `kestrel-train fit`: one run (or K folds), then export, report and int8.

use kestrel_runtime::exit::Status;
use kestrel_trainer::progress::Progress;
use kestrel_trainer::train::{self, RunDir, experiments, finish};

use crate::cli::FitArgs;

pub fn run(args: &FitArgs) -> anyhow::Result<Status> {
    let config = args.resolve()?;
    if config.folds > 1 {
        let summary = experiments::cross_validate(&config, config.folds, &Progress::auto())?;
        for t in &summary.folds {
            println!(
                "{}: val top-1 {:.1}% ({} images) · {}",
                t.name,
                100.0 * t.val_top1,
                t.val_images,
                t.run.display()
            );
        }
        println!(
            "{}-fold cross-validation: top-1 {:.1}% ± {:.1}",
            config.folds,
            100.0 * summary.mean_top1,
            100.0 * summary.std_top1
        );
        experiments::write_json(&config.out.join("folds.json"), &summary)?;
        return Ok(Status::Success);
    }
    let run = RunDir(config.out.clone());
    let fitted = train::fit(&config, args.resume, &Progress::auto())?;
    let finished = finish::finish(&run, &fitted)?;
    let eval = &finished.validation;
    println!(
        "{} · val top-1 {:.1}% · top-{} {:.1}% ({} images, runtime) · Burn↔tract max |Δlogit| {:.1e}",
        run.model().display(),
        100.0 * eval.top1,
        eval.k,
        100.0 * eval.topk,
        eval.images,
        finished.parity
    );
    if let Some(t) = &finished.test {
        println!(
            "test split (held out, evaluated once): top-1 {:.1}% · top-{} {:.1}% ({} images)",
            100.0 * t.top1,
            t.k,
            100.0 * t.topk,
            t.images
        );
    }
    let (int8, outcome) = finish::quantize(&run, &fitted, &config)?;
    match outcome.chosen() {
        Some(a) => println!(
            "{} · int8 {} · {}",
            int8.display(),
            a.label,
            kestrel_trainer::quantize::gate::summary(&outcome)
        ),
        None => println!(
            "no int8 bundle: every candidate lost more than {} pt of top-1 ({}; see quantize.json)",
            config.int8_max_drop,
            kestrel_trainer::quantize::gate::summary(&outcome)
        ),
    }
    if !fitted.data.skipped.is_empty() {
        println!(
            "skipped {} unreadable files (listed in report.html)",
            fitted.data.skipped.len()
        );
    }
    println!("report: {}", run.file("report.html").display());
    Ok(Status::Success)
}
