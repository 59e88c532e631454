#!/usr/bin/env bash
# ELPV (electroluminescence images of solar cells; PyPI `elpv-dataset` 1.0.0.post1, the data set
# ships inside the wheel; CC BY-NC-SA 4.0): 2624 real 300×300 photos, far from ImageNet, as a
# two-class folder for the accuracy benchmark (issue 15). A cell is `defective` when its expert
# defect probability is at least 0.5 (821 cells), else `functional` (1803). The split is
# stratified and seeded, so both tools train and validate on the same images:
#   DIR/train/{defective,functional}/cellNNNN.png   (90%)
#   DIR/val/{defective,functional}/cellNNNN.png     (10%)
#
#   scripts/elpv.sh DIR [PER_CLASS]    # PER_CLASS: the first N of each class only (a quick run)
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: scripts/elpv.sh DIR [PER_CLASS]" >&2; exit 2; }
out=$1 per_class=${2:-0}
wheels="${KESTREL_ASSETS:-$HOME/.cache/kestrel/assets}/wheels"
mkdir -p "$wheels"
sha=85e31c1126ee9b48e62d3a0232c58f58b2d189b0814a45c13642fa0415af4a4c
wheel=$(ls "$wheels"/elpv_dataset-1.0.0.post1-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$wheels" elpv-dataset==1.0.0.post1 >&2
    wheel=$(ls "$wheels"/elpv_dataset-1.0.0.post1-*.whl | head -n1)
fi
echo "$sha  $wheel" | sha256sum --check --status \
    || { echo "elpv.sh: sha256 mismatch for $wheel; delete it and re-run" >&2; exit 1; }
python3 - "$wheel" "$out" "$per_class" <<'PY'
import os, random, sys, zipfile
wheel, out, per_class = sys.argv[1], sys.argv[2], int(sys.argv[3])
z = zipfile.ZipFile(wheel)
rows = [l.split() for l in z.read("elpv_dataset/data/labels.csv").decode().splitlines() if l.strip()]
by_class = {"defective": [], "functional": []}
for path, prob, *_ in rows:
    by_class["defective" if float(prob) >= 0.5 else "functional"].append(path)
rng = random.Random(15)
for name, paths in by_class.items():
    if per_class:
        paths = paths[:per_class]
    paths = sorted(paths)
    rng.shuffle(paths)
    n_val = max(1, round(0.1 * len(paths)))
    for split, chosen in (("val", paths[:n_val]), ("train", paths[n_val:])):
        folder = os.path.join(out, split, name)
        os.makedirs(folder, exist_ok=True)
        for p in chosen:
            with open(os.path.join(folder, os.path.basename(p)), "wb") as f:
                f.write(z.read("elpv_dataset/data/" + p))
    print(f"elpv: {name}: {len(paths) - n_val} train, {n_val} val", file=sys.stderr)
PY
