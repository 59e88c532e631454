//! `kestrel-train sweep`: a grid of full runs and their leaderboard.

use kestrel_runtime::exit::Status;
use kestrel_trainer::progress::Progress;
use kestrel_trainer::train::experiments;

use crate::cli::SweepArgs;

pub fn run(args: &SweepArgs) -> anyhow::Result<Status> {
    let (fit, grid) = (&args.fit, &args.grid);
    let config = fit.resolve()?;
    config.validate()?;
    let trials = experiments::sweep(&config, grid, &Progress::auto())?;
    print!("{}", experiments::leaderboard(&trials));
    experiments::write_json(&config.out.join("leaderboard.json"), &trials)?;
    Ok(Status::Success)
}
