#!/usr/bin/env bash
# Accuracy against a reference (issue 15): `kestrel-train fit` and scripts/torch_reference.py (the
# same weights, split, recipe and preprocessing in PyTorch) side by side on real data with
# distinct images per class. Writes docs/benchmarks-accuracy.json and the "Accuracy" section of
# docs/benchmarks.md.
#
#   scripts/bench-accuracy.sh          # full: Fashion-MNIST (2000 + 500 images, 64 px) and ELPV
#                                      # (2624 solar-cell photos, 224 px), fit's default recipe;
#                                      # about an hour on 2 cores
#   scripts/bench-accuracy.sh --quick  # the same steps on a few images per class with one epoch
#                                      # per phase; prints the section, docs/ untouched (CI). The
#                                      # PyTorch lines need the venv a full run makes (5.5 GB).
. "$(dirname "$0")/bench-lib.sh" "$@"

scripts/fetch-assets.sh >/dev/null
weights="${KESTREL_ASSETS:-$HOME/.cache/kestrel/assets}/weights/efficientnet-lite0-57934424.pth"
cargo build --locked --profile "$profile" -p kestrel-trainer
train="$dir/kestrel-train"

torch_venv_ready bench-accuracy

# Data sets: each as DATA/{train,val}/<class>/, which both tools read as it is.
scripts/fashion-mnist.sh "$work/idx"
if [ $quick = 1 ]; then fm_train=6; fm_val=3; elpv_per_class=12; else fm_train=200; fm_val=50; elpv_per_class=0; fi
"$train" import-idx --images "$work/idx/train-images-idx3-ubyte" --labels "$work/idx/train-labels-idx1-ubyte" \
    --out "$work/fashion-mnist/train" --per-class $fm_train >/dev/null
"$train" import-idx --images "$work/idx/t10k-images-idx3-ubyte" --labels "$work/idx/t10k-labels-idx1-ubyte" \
    --out "$work/fashion-mnist/val" --per-class $fm_val >/dev/null
scripts/elpv.sh "$work/elpv" $elpv_per_class

# fit's defaults except what is named here, given to both tools. Fashion-MNIST's 28 px images
# are trained at 64 px, as in the training benchmark; ELPV's 300 px photos at Lite0's own 224.
if [ $quick = 1 ]; then
    short=(--head-epochs 1 --feature-views 1)
    sets=("fashion-mnist 64 ${short[*]}" "elpv 64 ${short[*]}")
    ft_epochs=1
else
    sets=("fashion-mnist 64" "elpv 224")
    ft_epochs=5  # fit's default
fi
: > "$work/results.jsonl"
for set in "${sets[@]}"; do
    read -r name size extra <<< "$set"
    # shellcheck disable=SC2206
    recipe=(--image-size "$size" $extra)
    # The head phase once; each fine-tuning recipe resumes a copy of it (`fit --resume`, which
    # continues exactly as one uninterrupted run would), so rows differ in fine-tuning only.
    echo "bench-accuracy: $name, kestrel-train fit ${recipe[*]} ($(date +%H:%M:%S))" >&2
    RUST_LOG=warn "$train" fit --data "$work/$name" --out "$work/head-$name" --backend flex "${recipe[@]}" \
        --finetune-epochs 0 --int8-scheme weight-only --int8-max-drop 100 > "$work/$name.head.log" 2>&1 \
        || { cat "$work/$name.head.log" >&2; exit 1; }
    for variant in default before; do
        extra_ft=(); [ $variant = before ] && extra_ft=(--finetune-augment same)
        cp -r "$work/head-$name" "$work/run-$name-$variant"
        RUST_LOG=warn "$train" fit --resume --out "$work/run-$name-$variant" --finetune-epochs "$ft_epochs" \
            "${extra_ft[@]}" --int8-scheme int8 --int8-max-drop 100 > "$work/$name.$variant.log" 2>&1 \
            || { cat "$work/$name.$variant.log" >&2; exit 1; }
    done
    ref="$work/$name.torch.json"
    if [ $have_torch = 1 ]; then
        echo "bench-accuracy: $name, torch_reference.py ${recipe[*]} ($(date +%H:%M:%S))" >&2
        "$torch_venv/bin/python" scripts/torch_reference.py --data "$work/$name" --weights "$weights" \
            "${recipe[@]}" --finetune-epochs "$ft_epochs" > "$ref"
    else
        echo null > "$ref"
    fi
    python3 - "$name" "$work/run-$name-default/report.json" "$ref" "${recipe[*]}" \
        "$work/run-$name-before/report.json" >> "$work/results.jsonl" <<'PY'
import json, sys
name, report, ref, recipe, before = sys.argv[1:6]
best = lambda rows: min(rows, key=lambda h: h["val_loss"]) if rows else None
# Over the whole phase: images ÷ seconds, so a first epoch that fills a cache counts in full.
rate = lambda rows: len(rows) / sum(1 / h["images_per_second"] for h in rows) if rows else None

def kestrel_row(path):
    r = json.load(open(path))
    hist = r["history"]
    head = [h for h in hist if h["phase"] == "head"]
    ft = [h for h in hist if h["phase"] == "finetune"]
    final = best(hist)
    e = r["evaluation"]
    return r, {
        "head_top1": best(head)["val_top1"] if head else None,
        "final_top1": e["top1"],
        "final_phase": f"{final['phase']} {final['epoch']}",
        "recall": {c["class"]: c["recall"] for c in e["per_class"]},
        "finetune_images_per_second": rate(ft),
        "head_epochs_run": len(head), "finetune_epochs_run": len(ft),
    }

r, kestrel = kestrel_row(report)
e = r["evaluation"]
_, kestrel_before = kestrel_row(before)
t = json.load(open(ref))
torch = None if t is None else {
    "head_top1": t["head"]["top1"], "final_top1": t["final"]["top1"],
    "final_phase": f"{t['final']['phase']} {t['final']['epoch']}", "recall": t["final"]["recall"],
    "finetune_images_per_second": rate([h for h in t["history"] if h["phase"] == "finetune"]),
    "engine": t["engine"],
    "head_epochs_run": sum(h["phase"] == "head" for h in t["history"]),
    "finetune_epochs_run": sum(h["phase"] == "finetune" for h in t["history"]),
}
print(json.dumps({"data": name, "recipe": recipe, "train_images": r["train_images"], "val_images": e["images"],
                  "kestrel": kestrel, "kestrel_before": kestrel_before, "torch": torch}))
PY
done

out=docs; [ $quick = 1 ] && out="$work"
python3 - "$work/results.jsonl" "$quick" "$profile" "$out" <<'PY'
import datetime, json, os, sys
sys.path.insert(0, "scripts")
from machine import cpu_model, rustc_version
rows = [json.loads(l) for l in open(sys.argv[1])]
quick, profile, out = sys.argv[2] == "1", sys.argv[3], sys.argv[4]
meta = {"date": datetime.date.today().isoformat(), "cpu": cpu_model(), "cores": os.cpu_count(),
        "load_average": os.getloadavg(), "profile": profile, "quick": quick, "rustc": rustc_version()}
json.dump({"meta": meta, "results": rows}, open(f"{out}/benchmarks-accuracy.json", "w"), indent=2)
pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"
ips = lambda v: "n/a" if v is None else f"{v:.1f}"
engine = next((r["torch"]["engine"] for r in rows if r["torch"]), "PyTorch (not installed for this run)")
md = ["## Accuracy against a PyTorch reference (`scripts/bench-accuracy.sh`, issue 15)", "",
      f"Written by `scripts/bench-accuracy.sh{' --quick' if quick else ''}` on {meta['date']}: {meta['cpu']}, "
      f"{meta['cores']} cores, load average {meta['load_average'][0]:.2f}, cargo profile `{profile}`. "
      f"Reference: `scripts/torch_reference.py` ({engine}): the same EfficientNet-Lite0 weights (timm's "
      "`tf_efficientnet_lite0`), the same split (both read DATA/{train,val}/), fit's default recipe and "
      "preprocessing; its augmentation is drawn by torchvision. Both on the CPU, flex for Kestrel. "
      "Head: the frozen-backbone phase's best epoch; final: the run's result (the epoch with the lowest "
      "validation loss of either phase; fine-tuning replaces the head only by beating it). Recall per class "
      "is the final model's. Fine-tuning images/s: the phase's training images ÷ its seconds, every epoch's "
      "validation included, and for Kestrel the first epoch's filling of its frozen-block cache (fit's default "
      "`--finetune-augment none` trains on plain views, so the frozen blocks' output is kept; the reference runs "
      "the whole network every step, as a plain PyTorch loop does). The third row of each data set is fit's "
      "fine-tuning as it was before (`--finetune-augment same`: images augmented afresh every epoch, as the "
      "head phase's views), resumed from the same head phase as the first row.", "",
      "| data | train / val images | recipe | tool | head top-1 | final top-1 | final from | recall per class | fine-tune images/s |",
      "|---|---|---|---|---|---|---|---|---|"]
before_tool = "kestrel-train, fine-tuning as before (`--finetune-augment same`)"
for r in rows:
    for tool, k in (("kestrel-train", r["kestrel"]), ("PyTorch", r["torch"]), (before_tool, r.get("kestrel_before"))):
        if k is None:
            md.append(f"| {r['data']} | | | {tool} | not run | | | | |")
            continue
        recall = ", ".join(f"{c} {pct(v)}" for c, v in k["recall"].items())
        md.append(f"| {r['data']} | {r['train_images']} / {r['val_images']} | `{r['recipe'] or 'defaults'}` | {tool} | "
                  f"{pct(k['head_top1'])} | {pct(k['final_top1'])} | {k['final_phase']} | {recall} | "
                  f"{ips(k['finetune_images_per_second'])} |")
md += ["", "Targets (issue 15): Kestrel's final top-1 ≥ the reference's − 0.5 pt on each data set; fine-tuning "
       "above the frozen head; fine-tuning at ≥ 0.5× PyTorch's images/s.", ""]
for r in rows:
    k, t = r["kestrel"], r["torch"]
    if not t:
        continue
    gap = 100 * (k["final_top1"] - t["final_top1"])
    lift = 100 * (k["final_top1"] - (k["head_top1"] or 0))
    speed = (k["finetune_images_per_second"] or 0) / (t["finetune_images_per_second"] or 1)
    md.append(f"- {r['data']}: Kestrel − reference {gap:+.1f} pt ({'met' if gap >= -0.5 else 'missed'}); "
              f"Kestrel's fine-tuning over its head {lift:+.1f} pt ({'met' if lift > 0 else 'missed'}); "
              f"fine-tuning speed {speed:.2f}× PyTorch's ({'met' if speed >= 0.5 else 'missed'}).")
md.append("")
section = "\n".join(md)
print(section)
if not quick:
    from md_section import replace_section
    replace_section("docs/benchmarks.md", "## Accuracy against a PyTorch reference", section)
PY
