#!/usr/bin/env bash
# Training benchmark on real data: Fashion-MNIST (Debian dataset-fashion-mnist, MIT), a fixed
# subset that fits a 2-core machine. Writes docs/benchmarks-training.json and the training
# section of docs/benchmarks.md. Numbers come from this run only.
#
#   scripts/bench-train.sh            # full: 200 train + 50 val images per class, 64 px
#   scripts/bench-train.sh --quick    # the same steps, CI-sized; prints the section, docs/ untouched
# The full run times a release trainer, as a user runs it; --quick uses the dev build CI has.
. "$(dirname "$0")/bench-lib.sh" "$@"

scripts/fetch-assets.sh >/dev/null
cargo build --locked --profile "$profile" -p kestrel-trainer
train="$dir/kestrel-train"

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
# same images, at the reference shape (224 px, batch 64) and at 64 px, batch 16. ndarray fine-tunes
# at 224 px at about 0.1 image/s here: its epoch there is some 13 minutes of the full run.
#
# PyTorch's reference line (scripts/torch_train_bench.py: timm's efficientnet_lite0, eager fp32,
# random tensors, so its best case) runs right after flex at each of flex's shapes. It needs a
# venv of ours with pinned PyTorch and timm (5.5 GB): a full run installs it; --quick uses it when
# a full run left it there and says so when not.
torch_venv_ready bench-train
if [ $quick = 1 ]; then shapes=("flex 32 8" "ndarray 32 8"); else shapes=("flex 224 64" "ndarray 224 64" "flex 64 16" "ndarray 64 16"); fi
for shape in "${shapes[@]}"; do
    read -r backend tp_size tp_batch <<< "$shape"
    scripts/throughput.sh "$train" "$work/tp" "$backend" "$tp_size" "$tp_batch" "$work" >> "$work/results.jsonl"
    [ "$backend" = flex ] && [ $have_torch = 1 ] || continue
    "$torch_venv/bin/python" scripts/torch_train_bench.py --image-size "$tp_size" --batch-size "$tp_batch" \
        --steps $([ $quick = 1 ] && echo 2 || echo 10) --warmup $([ $quick = 1 ] && echo 1 || echo 2) \
        >> "$work/torch.jsonl"
done
touch "$work/torch.jsonl"

# A quick run checks the steps, not the numbers: it writes into the temporary folder, not docs/.
out=docs; [ $quick = 1 ] && out="$work"
python3 - "$work/results.jsonl" "$quick" "$profile" "$work/torch.jsonl" "$out" "$per_train" "$per_val" "$((tp / 10))" <<'PY'
import datetime, json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
quick, profile = sys.argv[2] == "1", sys.argv[3]
torch_rows = [json.loads(l) for l in open(sys.argv[4])]
out, per_train, per_val, per_tp = sys.argv[5], sys.argv[6], sys.argv[7], sys.argv[8]
sys.path.insert(0, "scripts")
from machine import cpu_model, rustc_version
cpu = cpu_model()
meta = {"date": datetime.date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(),
        "load_average": os.getloadavg(), "profile": profile, "quick": quick, "rustc": rustc_version()}
json.dump({"meta": meta, "results": rows, "torch": torch_rows}, open(f"{out}/benchmarks-training.json", "w"), indent=2)
by = {r["run"]: r for r in rows}
tp = [v for k, v in by.items() if k.startswith("throughput-")]
md = [
    "## Training (EfficientNet-Lite0, Fashion-MNIST subset)", "",
    f"Written by `scripts/bench-train.sh{' --quick' if quick else ''}` on {meta['date']}: {cpu}, {meta['cores']} cores, "
    f"load average {meta['load_average'][0]:.2f}, cargo profile `{profile}`, {meta['rustc']}.",
    "", f"Data: Debian `dataset-fashion-mnist`, {by['frozen-only']['train_images']} training images "
    f"(first {per_train} per class of the training set) and {by['frozen-only']['val_images']} validation images "
    f"(first {per_val} per class of the test set), 28 px upscaled to 64 px, batch 32, backend flex.", "",
    "The run keeps the epoch with the lowest validation loss (best epoch); fine-tuning replaces the",
    "head phase's weights only when it beats them.", "",
    "| run | val top-1 | best epoch | wall time | fine-tune images/s |", "|---|---|---|---|---|",
]
for name in ["frozen-only", "frozen+unfreeze"]:
    r = by[name]
    ips = r["finetune_images_per_second"]
    md.append(f"| {name} | {100 * r['val_top1']:.1f}% | {r.get('best_epoch', '')} | {r['seconds']:.0f} s | "
              f"{'' if ips is None else f'{ips:.1f}'} |")
md += ["", "Published reference for the full data set (60k images, MobileNet): ~95% top-1; this subset is "
       f"{by['frozen-only']['train_images'] / 60000:.1%} of it.", "",
       f"Throughput by CPU backend on the same Fashion-MNIST images ({per_tp} per class, a fifth held out), with PyTorch "
       "on the same CPU beside flex: the frozen phase's backbone pass into the feature cache, a head epoch on cached "
       "features, and an epoch of full fine-tuning (all 16 blocks unfrozen). Images per second; the last two columns "
       "compare full fine-tuning with ndarray and with PyTorch at the same size and batch (above 1: ours is faster).",
       "",
       "| engine | size, batch | frozen: feature cache | frozen: head epoch | full fine-tune | fine-tune vs ndarray "
       "| fine-tune, ours / PyTorch |",
       "|---|---|---|---|---|---|---|"]
# Three significant figures: ndarray fine-tunes at 224 px at about 0.1 image/s, the head epoch runs
# at tens of thousands.
fmt = lambda v: "n/a" if v is None else f"{v:.0f}" if v >= 100 else f"{v:.3g}"
ratio = lambda a, b: f"{a / b:.3g}×" if a and b else "n/a"
torch_at = lambda t: next((p for p in torch_rows if (p["image_size"], p["batch"]) == (t["image_size"], t["batch"])), None)
for t in tp:
    ref = next((r for r in tp if r["backend"] == "ndarray" and (r["image_size"], r["batch"]) == (t["image_size"], t["batch"])), None)
    pt = torch_at(t)
    md.append(f"| kestrel-train, {t['backend']} | {t['image_size']} px, {t['batch']} | {fmt(t['cache_images_per_second'])} | "
              f"{fmt(t['head_images_per_second'])} | {fmt(t['finetune_images_per_second'])} | "
              f"{'' if t is ref else ratio(t['finetune_images_per_second'], ref and ref['finetune_images_per_second'])} | "
              f"{ratio(t['finetune_images_per_second'], pt and pt['finetune_images_per_second'])} |")
    if pt and t["backend"] == "flex":
        md.append(f"| {pt['engine']}, {pt['threads']} threads | {pt['image_size']} px, {pt['batch']} | "
                  f"{fmt(pt['cache_images_per_second'])} | | {fmt(pt['finetune_images_per_second'])} | | |")
md += ["", "PyTorch (`scripts/torch_train_bench.py`) times its frozen phase as the backbone's forward pass without "
       "gradients and full fine-tuning as forward, backward and an AdamW step, on random tensors: no decoding, "
       "resizing or augmentation, which kestrel-train's numbers include."
       + ("" if torch_rows else " PyTorch was not installed for this run, so its lines are missing."), ""]
md += ["On a GPU, beside PyTorch: `scripts/bench-gpu.sh` (stage here, run on the GPU machine, record), "
       "its own section below once a run with a GPU has recorded it.", ""]
section = "\n".join(md)
from md_section import replace_section
replace_section(f"{out}/benchmarks.md", "## Training (", section)
print(section)
PY
