//! `kestrel-train eval`: a bundle on a labelled folder, through the runtime.

use anyhow::Context;
use kestrel_runtime::exit::Status;
use kestrel_trainer::evaluate;

use crate::cli::EvalArgs;

pub fn run(args: &EvalArgs) -> anyhow::Result<Status> {
    let (model, data, json) = (&args.model, &args.data, args.json);
    let (eval, skipped) = evaluate::evaluate_folder(model, data)
        .with_context(|| format!("evaluating {} on {}", model.display(), data.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&eval)?);
    } else {
        println!(
            "{} images · top-1 {:.1}% · top-{} {:.1}% · loss {:.4} · {} skipped",
            eval.images,
            100.0 * eval.top1,
            eval.k,
            100.0 * eval.topk,
            eval.mean_loss,
            skipped.len()
        );
        for c in &eval.per_class {
            println!(
                "  {:<24} n={:<5} precision {:.3} recall {:.3} F1 {:.3}",
                c.class, c.support, c.precision, c.recall, c.f1
            );
        }
        for c in eval.most_confused.iter().take(5) {
            println!("  confused: {} → {} ×{}", c.truth, c.predicted, c.count);
        }
    }
    Ok(Status::Success)
}
