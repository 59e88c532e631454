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
profile="${KESTREL_BENCH_PROFILE:-dev}"

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
scripts/fetch-assets.sh >/dev/null
cargo build --locked --profile "$profile" -p kestrel-trainer
dir="$CARGO_TARGET_DIR/$([ "$profile" = dev ] && echo debug || echo "$profile")"
train="$dir/kestrel-train"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=/usr/share/datasets/fashion-mnist
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    gzip -dc "$src/$f.gz" > "$work/$f"
done
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

# Fine-tuning throughput per CPU backend: same images, size and batch; one epoch each.
for backend in flex ndarray; do
    RUST_LOG=warn "$train" fit --data "$work/tp" --image-size 64 --batch-size 16 --feature-views 0 \
        --head-epochs 0 --finetune-epochs 1 --unfreeze-blocks 0 --val-fraction 0.2 --backend $backend \
        --out "$work/tp-$backend" > "$work/tp-$backend.out" 2>&1 || { cat "$work/tp-$backend.out" >&2; exit 1; }
    python3 - "$work/tp-$backend/metrics.csv" "$backend" >> "$work/results.jsonl" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(json.dumps({"run": "throughput-" + sys.argv[2], "finetune_images_per_second": float(rows[-1]["images_per_second"])}))
PY
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
tp = {k.split("-", 1)[1]: v["finetune_images_per_second"] for k, v in by.items() if k.startswith("throughput-")}
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
       "Fine-tuning throughput by CPU backend (all 16 blocks unfrozen, 64 px, batch 16, one epoch over the same images):", "",
       "| backend | images/s | vs ndarray |", "|---|---|---|"]
for b in ["flex", "ndarray"]:
    md.append(f"| {b} | {tp[b]:.1f} | {tp[b] / tp['ndarray']:.2f}× |")
md += ["", "GPU (wgpu) and PyTorch comparisons need the GPU machine; not measured in this run.", ""]
section = "\n".join(md)
path = "docs/benchmarks.md"
text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\nEvery number here comes from a script run; none is typed in.\n\n"
start = text.find("## Training (")
if start >= 0:
    end = text.find("\n## ", start + 1)
    text = text[:start] + section + ("" if end < 0 else text[end + 1:])
else:
    text = text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
print(section)
PY
