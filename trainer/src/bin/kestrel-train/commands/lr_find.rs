//! `kestrel-train lr-find`: the learning-rate range test, its plot and CSV.

use anyhow::Context;
use kestrel_runtime::atomic::write_atomic;
use kestrel_runtime::exit::Status;
use kestrel_trainer::progress::Progress;
use kestrel_trainer::train::lr_find;

use crate::cli::LrFindArgs;

pub fn run(args: &LrFindArgs) -> anyhow::Result<Status> {
    let (fit, start, end, steps) = (&args.fit, args.start, args.end, args.steps);
    let config = fit.resolve()?;
    config.validate()?;
    let finding = lr_find::lr_find(&config, start, end, steps, &Progress::auto())?;
    std::fs::create_dir_all(&config.out).with_context(|| format!("creating {}", config.out.display()))?;
    let plot = config.out.join("lr_find.svg");
    write_atomic(&plot, lr_find::plot_svg(&finding).as_bytes())
        .with_context(|| format!("writing {}", plot.display()))?;
    let csv: String = std::iter::once("lr,loss\n".to_string())
        .chain(finding.points.iter().map(|p| format!("{:.6e},{:.6}\n", p.lr, p.loss)))
        .collect();
    let csv_path = config.out.join("lr_find.csv");
    write_atomic(&csv_path, csv.as_bytes()).with_context(|| format!("writing {}", csv_path.display()))?;
    println!(
        "suggested --head-lr {:.1e} (steepest descent; lowest loss at {:.1e}) · plot: {}",
        finding.suggested,
        finding.min_loss_lr,
        plot.display()
    );
    Ok(Status::Success)
}
