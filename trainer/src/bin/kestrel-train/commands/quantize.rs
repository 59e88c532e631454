//! `kestrel-train quantize`: an int8 bundle, calibrated on your images and gated on accuracy.

use anyhow::Context;
use kestrel_runtime::atomic::write_atomic;
use kestrel_runtime::bundle::Bundle;
use kestrel_runtime::exit::Status;
use kestrel_trainer::quantize::{RangeMethod, gate, inputs};

use crate::cli::{QuantizeArgs, RangeArg};

pub fn run(args: &QuantizeArgs) -> anyhow::Result<Status> {
    let QuantizeArgs {
        model,
        out,
        calibrate,
        scheme,
        ranges,
        per_tensor,
        max_drop,
        no_fallback,
        no_bias_correction,
        images,
        views,
        seed,
        val_fraction,
        bench_iterations,
    } = args;
    let (scheme, max_drop, bench_iterations) = (*scheme, *max_drop, *bench_iterations);
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0.0, |m| m.len() as f64 / 1048576.0);
    let Some(dir) = calibrate else {
        if scheme.needs_calibration() {
            anyhow::bail!(
                "scheme {scheme} needs calibration images: add --calibrate DIR (your training folder, or a few \
                 hundred photos like the ones the model will see), or pass --scheme weight-only for int8 \
                 weights without calibration (float speed)"
            );
        }
        let n = kestrel_trainer::quantize::quantize_bundle(model, out)
            .with_context(|| format!("quantising {}", model.display()))?;
        println!(
            "{} · {n} weight tensors int8 · {:.1} MiB → {:.1} MiB · unchecked (add --calibrate DIR to check accuracy)",
            out.display(),
            size(model),
            size(out)
        );
        return Ok(Status::Success);
    };
    let float = Bundle::read(model)?;
    let options = inputs::InputOptions {
        images: *images,
        views: *views,
        seed: *seed,
        val_fraction: *val_fraction,
    };
    let data = inputs::from_folder(dir, &float.metadata.labels, &float.metadata.preprocess, &options)
        .with_context(|| format!("reading calibration images from {}", dir.display()))?;
    if !data.skipped.is_empty() {
        println!("skipped {} unreadable files", data.skipped.len());
    }
    let request = gate::Request {
        scheme,
        per_channel: !per_tensor,
        method: match ranges {
            RangeArg::Auto => None,
            RangeArg::Minmax => Some(RangeMethod::MinMax),
            RangeArg::Percentile => Some(RangeMethod::Percentile(gate::PERCENTILE)),
        },
        max_drop,
        fallbacks: !no_fallback,
        bias_correction: !no_bias_correction,
    };
    let outcome = kestrel_trainer::quantize::calibrate_and_write(&float, model, &data, &request, out, |a| {
        eprintln!(
            "  tried {:<55} top-1 {:5.1}% ({:+.1} pt) on the choosing half {}",
            a.label,
            100.0 * a.selection.evaluation.top1,
            -a.selection.drop_pts,
            if a.passed { "ok" } else { "over --max-drop" }
        )
    })
    .with_context(|| format!("quantising {}", model.display()))?;
    println!(
        "calibration: {} views · held out: {} images chose, {} report · {}",
        data.calibration.len(),
        outcome.halves.selection.len(),
        outcome.halves.report.len(),
        gate::summary(&outcome)
    );
    let changes = outcome.confusion_changes();
    if !changes.is_empty() {
        let shown: Vec<String> = changes
            .iter()
            .take(5)
            .map(|(t, p, d)| format!("{t}→{p} {d:+}"))
            .collect();
        println!("confusion changes (int8 − float): {}", shown.join(" · "));
    }
    let report = out.with_extension("quantize.json");
    write_atomic(&report, serde_json::to_string_pretty(&outcome)?.as_bytes())
        .with_context(|| format!("writing {}", report.display()))?;
    let Some(chosen) = outcome.chosen() else {
        eprintln!(
            "error: no int8 candidate of {} stays within --max-drop {max_drop} pt (tried {}; details in {}). \
             Calibrate on more of your images (--images, --views), allow a larger --max-drop, or use \
             --scheme weight-only.",
            model.display(),
            outcome.attempts.len(),
            report.display()
        );
        return Ok(Status::CheckFailed);
    };
    println!(
        "{} · {} · {:.1} MiB → {:.1} MiB",
        out.display(),
        chosen.label,
        size(model),
        size(out)
    );
    if bench_iterations > 0 {
        let bench = kestrel_runtime::bench::run(
            &[model.clone(), out.clone()],
            &kestrel_runtime::LoadOptions::default(),
            2,
            bench_iterations,
        )?;
        let (f, q) = (bench.results[0].p50_ms, bench.results[1].p50_ms);
        println!(
            "latency (tract, 1 thread, this machine): float {f:.1} ms · int8 {q:.1} ms ({:.2}×)",
            f / q
        );
    }
    Ok(Status::Success)
}
