#!/usr/bin/env bash
# Training benchmark on real data: Fashion-MNIST (Debian dataset-fashion-mnist, MIT), a fixed
# subset that fits a 2-core machine. Writes docs/benchmarks-training.json and the training
# section of docs/benchmarks.md. Numbers come from this run only.
#
#   scripts/bench-train.sh            # full: 200 train + 50 val images per class, 64 px
#   scripts/bench-train.sh --quick    # a smoke run of the same steps (CI-sized)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kestrel/target}"
# The full run times a release trainer, as a user runs it; --quick uses the dev build CI has.
profile="${KESTREL_BENCH_PROFILE:-$([ $quick = 1 ] && echo dev || echo release)}"

scripts/fetch-assets.sh >/dev/null
cargo build --locked --profile "$profile" -p kestrel-trainer
dir="$CARGO_TARGET_DIR/$([ "$profile" = dev ] && echo debug || echo "$profile")"
train="$dir/kestrel-train"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
scripts/fashion-mnist.sh "$work"
# The throughput set is small: ndarray fine-tunes Lite0 at well under 1 image/s here.
if [ $quick = 1 ]; then per_train=6; per_val=3; head=2; ft=1; tp=30; else per_train=200; per_val=50; head=15; ft=2; tp=100; fi
"$train" import-idx --images "$work/train-images-idx3-ubyte" --labels "$work/train-labels-idx1-ubyte" \
    --out "$work/fmnist/train" --per-class $per_train
"$train" import-idx --images "$work/t10k-images-idx3-ubyte" --labels "$work/t10k-labels-idx1-ubyte" \
    --out "$work/fmnist/val" --per-class $per_val
"$train" import-idx --images "$work/train-images-idx3-ubyte" --labels "$work/train-labels-idx1-ubyte" \
    --out "$work/tp" --per-class $((tp / 10))

common=(--data "$work/fmnist" --image-size 64 --batch-size 32 --feature-views 1 --head-epochs $head --patience 0)
run() { # name, extra args…
    local name=$1; shift
    local t0=$(date +%s.%N)
    RUST_LOG=warn "$train" fit "${common[@]}" --out "$work/$name" "$@" > "$work/$name.out" 2>&1 \
        || { cat "$work/$name.out" >&2; exit 1; }
    local t1=$(date +%s.%N)
    python3 - "$work/$name/report.json" "$name" "$t0" "$t1" >> "$work/results.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
e = r["evaluation"]
ft = [h["images_per_second"] for h in r["history"] if h["phase"] == "finetune"]
best = min(r["history"], key=lambda h: h["val_loss"])
print(json.dumps({"run": sys.argv[2], "seconds": float(sys.argv[4]) - float(sys.argv[3]), "val_top1": e["top1"],
                  "val_images": e["images"], "train_images": r["train_images"],
                  "best_epoch": f"{best['phase']} {best['epoch']}",
                  "finetune_images_per_second": (sum(ft) / len(ft)) if ft else None}))
PY
}
run frozen-only --finetune-epochs 0
run frozen+unfreeze --finetune-epochs $ft --unfreeze-blocks 4

# Throughput per CPU backend: the frozen phase (backbone forward into the feature cache, then a
# head epoch on cached features) and one epoch of full fine-tuning (all 16 blocks unfrozen), on the
# same images. flex at the reference shape (224 px, batch 64); both backends at 64 px, batch 16,
# for the ratio: ndarray fine-tunes at a fraction of an image per second here, so an epoch at
# 224 px would take hours.
if [ $quick = 1 ]; then shapes=("flex 32 8" "ndarray 32 8"); else shapes=("flex 224 64" "flex 64 16" "ndarray 64 16"); fi
for shape in "${shapes[@]}"; do
    read -r backend tp_size tp_batch <<< "$shape"
    scripts/throughput.sh "$train" "$work/tp" "$backend" "$tp_size" "$tp_batch" "$work" >> "$work/results.jsonl"
done

python3 - "$work/results.jsonl" "$quick" "$profile" <<'PY'
import json, os, platform, subprocess, sys, datetime
rows = [json.loads(l) for l in open(sys.argv[1])]
quick, profile = sys.argv[2] == "1", sys.argv[3]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
meta = {"date": datetime.date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(),
        "load_average": os.getloadavg(), "profile": profile, "quick": quick,
        "rustc": subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()}
out = "docs/benchmarks-training" + ("-quick" if quick else "") + ".json"
json.dump({"meta": meta, "results": rows}, open(out, "w"), indent=2)
if quick:
    print(f"quick run ok: {out}")
    sys.exit(0)
by = {r["run"]: r for r in rows}
tp = [v for k, v in by.items() if k.startswith("throughput-")]
md = [
    "## Training (EfficientNet-Lite0, Fashion-MNIST subset)", "",
    f"Written by `scripts/bench-train.sh` on {meta['date']}: {cpu}, {meta['cores']} cores, "
    f"load average {meta['load_average'][0]:.2f}, cargo profile `{profile}`, {meta['rustc']}.",
    "", f"Data: Debian `dataset-fashion-mnist`, {by['frozen-only']['train_images']} training images "
    f"(first 200 per class of the training set) and {by['frozen-only']['val_images']} validation images "
    "(first 50 per class of the test set), 28 px upscaled to 64 px, batch 32, backend flex.", "",
    "The run keeps the epoch with the lowest validation loss (best epoch); fine-tuning replaces the",
    "head phase's weights only when it beats them.", "",
    "| run | val top-1 | best epoch | wall time | fine-tune images/s |", "|---|---|---|---|---|",
]
for name in ["frozen-only", "frozen+unfreeze"]:
    r = by[name]
    ips = r["finetune_images_per_second"]
    md.append(f"| {name} | {100 * r['val_top1']:.1f}% | {r.get('best_epoch', '')} | {r['seconds']:.0f} s | "
              f"{'' if ips is None else f'{ips:.1f}'} |")
md += ["", "Published reference for the full data set (60k images, MobileNet): ~95% top-1; this subset is 3% of it.", "",
       "Throughput by CPU backend on the same Fashion-MNIST images (10 per class, a fifth held out): the frozen "
       "phase's backbone pass into the feature cache, a head epoch on cached features, and an epoch of full "
       "fine-tuning (all 16 blocks unfrozen). Images per second; the last column compares full fine-tuning with "
       "ndarray at the same size and batch. ndarray at 224 px is not run: at its 64 px rate an epoch would take hours.", "",
       "| backend | size, batch | frozen: feature cache | frozen: head epoch | full fine-tune | fine-tune vs ndarray |",
       "|---|---|---|---|---|---|"]
fmt = lambda v: "n/a" if v is None else f"{v:.1f}"
for t in tp:
    ref = next((r for r in tp if r["backend"] == "ndarray" and r["image_size"] == t["image_size"]), None)
    vs = f"{t['finetune_images_per_second'] / ref['finetune_images_per_second']:.2f}×" if ref else "n/a"
    md.append(f"| {t['backend']} | {t['image_size']} px, {t['batch']} | {fmt(t['cache_images_per_second'])} | "
              f"{fmt(t['head_images_per_second'])} | {fmt(t['finetune_images_per_second'])} | {vs} |")
md += ["", "On a GPU, beside PyTorch: `scripts/bench-gpu.sh` (stage here, run on the GPU machine, record), "
       "its own section below once a run with a GPU has recorded it.", ""]
section = "\n".join(md)
sys.path.insert(0, "scripts")
from md_section import replace_section
replace_section("docs/benchmarks.md", "## Training (", section)
print(section)
PY
