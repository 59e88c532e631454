#!/usr/bin/env bash
# One training-throughput measurement, for bench-train.sh (CPU backends) and bench-gpu.sh (wgpu):
# `kestrel-train fit` with all 16 blocks trainable on DATA, one head epoch and one fine-tuning
# epoch, then one JSON line on stdout — the backbone's forward rate while it fills the feature
# cache (the frozen phase), a head epoch on cached features, and an epoch of full fine-tuning, in
# images/s.
#
#   scripts/throughput.sh KESTREL_TRAIN DATA BACKEND IMAGE_SIZE BATCH WORKDIR
set -euo pipefail
[ $# -eq 6 ] || { echo "usage: scripts/throughput.sh KESTREL_TRAIN DATA BACKEND IMAGE_SIZE BATCH WORKDIR" >&2; exit 2; }
train=$1 data=$2 backend=$3 size=$4 batch=$5
out="$6/tp-$backend-$size-$batch"
# --int8-max-drop 100: the export's int8 gate is not what is measured here.
RUST_LOG=info "$train" fit --data "$data" --image-size "$size" --batch-size "$batch" --feature-views 0 \
    --head-epochs 1 --finetune-epochs 1 --unfreeze-blocks 0 --val-fraction 0.2 --backend "$backend" \
    --int8-max-drop 100 --out "$out" > "$out.log" 2>&1 || { cat "$out.log" >&2; exit 1; }
python3 - "$out/metrics.csv" "$backend" "$out.log" "$size" "$batch" <<'PY'
import csv, json, re, sys
rows = list(csv.DictReader(open(sys.argv[1])))
rate = lambda phase: next(float(r["images_per_second"]) for r in rows if r["phase"] == phase)
# "feature cache: N training views, M validation images in S s": the backbone's forward rate.
m = re.search(r"feature cache: (\d+) training views, (\d+) validation images in ([\d.]+)s", open(sys.argv[3]).read())
cache = (int(m.group(1)) + int(m.group(2))) / float(m.group(3)) if m else None
print(json.dumps({"run": f"throughput-{sys.argv[2]}-{sys.argv[4]}-{sys.argv[5]}", "backend": sys.argv[2], "image_size": int(sys.argv[4]),
                  "batch": int(sys.argv[5]), "cache_images_per_second": cache, "head_images_per_second": rate("head"),
                  "finetune_images_per_second": rate("finetune")}))
PY
