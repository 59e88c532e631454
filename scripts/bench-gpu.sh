#!/usr/bin/env bash
# GPU training benchmark: kestrel-train on wgpu beside PyTorch eager fp32 (timm's
# efficientnet_lite0) on the same GPU, EfficientNet-Lite0 at 224 px, batch 64 — the frozen phase's
# backbone pass and full fine-tuning, in images/s. The GPU machine builds nothing and fetches
# nothing, so the work is split in three:
#
#   scripts/bench-gpu.sh stage DIR          # here: a release kestrel-train (stripped, xz), the
#                                           # pretrained weights, 640 Fashion-MNIST images and the
#                                           # Vulkan loader's .debs, into DIR (keep it out of git:
#                                           # echo /DIR/ >> .git/info/exclude)
#   scripts/bench-gpu.sh run DIR OUT [--quick]  # there, with DIR carried: writes OUT/bench-gpu.json
#   scripts/bench-gpu.sh record FILE        # here: the "Training on GPU" section of
#                                           # docs/benchmarks.md and docs/benchmarks-gpu.json
#
# `run` also works on a machine without a GPU (wgpu then finds Mesa's software Vulkan driver, and
# PyTorch, if present, its CPU): `--quick` (32 px, batch 8) checks the steps, and `record` refuses
# a result that did not come from a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { echo "usage: scripts/bench-gpu.sh stage DIR | run DIR OUT [--quick] | record FILE" >&2; exit 2; }
[ $# -ge 2 ] || usage
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kestrel/target}"

case "$1" in
stage)
    dir=$(realpath -m "$2")
    mkdir -p "$dir/assets/weights" "$dir/assets/imagenet" "$dir/gl"
    cargo build --locked --release -p kestrel-trainer
    strip -o "$dir/kestrel-train" "$CARGO_TARGET_DIR/release/kestrel-train"
    xz -T0 -f "$dir/kestrel-train"
    assets="${KESTREL_ASSETS:-$HOME/.cache/kestrel/assets}"
    scripts/fetch-assets.sh >/dev/null
    cp "$assets"/weights/*.pth "$dir/assets/weights/"
    cp "$assets"/imagenet/*.txt "$dir/assets/imagenet/"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    scripts/fashion-mnist.sh "$tmp"
    rm -rf "$dir/data"
    "$CARGO_TARGET_DIR/release/kestrel-train" import-idx --images "$tmp/train-images-idx3-ubyte" \
        --labels "$tmp/train-labels-idx1-ubyte" --out "$dir/data" --per-class 64
    # The GPU image has the NVIDIA driver's Vulkan ICD but no loader (libvulkan.so.1).
    o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$tmp/lists")
    mkdir -p "$tmp/lists/partial"
    apt-get "${o[@]}" update -qq
    (cd "$dir/gl" && apt-get "${o[@]}" download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    du -sh "$dir"
    ;;
run)
    [ $# -ge 3 ] || usage
    dir=$(realpath "$2") out=$(realpath -m "$3")
    quick=0; [ "${4:-}" = "--quick" ] && quick=1
    if [ $quick = 1 ]; then size=32 batch=8 steps=3; else size=224 batch=64 steps=30; fi
    mkdir -p "$out"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    if ! ldconfig -p | grep -q libvulkan.so.1; then
        for f in "$dir"/gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [ -f "$icd" ] && export VK_DRIVER_FILES="$icd"
    python3 -c 'import lzma, sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' \
        "$dir/kestrel-train.xz" > "$work/kestrel-train"
    chmod +x "$work/kestrel-train"
    gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no NVIDIA GPU")
    echo "== kestrel-train on wgpu, $size px, batch $batch ($gpu)" >&2
    KESTREL_ASSETS="$dir/assets" scripts/throughput.sh "$work/kestrel-train" "$dir/data" wgpu "$size" "$batch" \
        "$work" > "$work/kestrel.json"
    adapter=$(sed 's/\x1b\[[0-9;]*m//g' "$work"/tp-wgpu-*.log | grep -o -m1 "training on .*" | sed 's/training on //' || true)
    echo "== PyTorch eager fp32, $size px, batch $batch" >&2
    if python3 -c 'import timm, torch' 2>/dev/null; then
        python3 scripts/torch_train_bench.py --image-size "$size" --batch-size "$batch" --steps "$steps" > "$work/torch.json"
    else
        echo '{"error": "PyTorch and timm are not installed here"}' > "$work/torch.json"
    fi
    python3 - "$work/kestrel.json" "$work/torch.json" "$gpu" "$adapter" "$quick" "$out/bench-gpu.json" <<'PY'
import datetime, json, os, sys
kestrel, torch = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
sys.path.insert(0, "scripts")
from machine import cpu_model
cpu = cpu_model()
result = {"date": datetime.date.today().isoformat(), "gpu": sys.argv[3], "wgpu_adapter": sys.argv[4] or None,
          "cpu": cpu, "cores": os.cpu_count(), "quick": sys.argv[5] == "1", "kestrel": kestrel, "torch": torch}
json.dump(result, open(sys.argv[6], "w"), indent=1)
print(json.dumps(result, indent=1))
PY
    ;;
record)
    python3 - "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if r["quick"] or "no NVIDIA GPU" in r["gpu"] or "error" in r["torch"]:
    sys.exit(f"{sys.argv[1]}: not a full GPU run with PyTorch beside it (quick={r['quick']}, gpu={r['gpu']!r}, "
             f"torch={r['torch'].get('error', 'ok')}); nothing recorded")
k, t = r["kestrel"], r["torch"]
ratio = lambda a, b: f"{a / b:.2f}×" if a and b else "n/a"
md = [
    "## Training on GPU (`scripts/bench-gpu.sh`)",
    "",
    f"Run on {r['date']}: {r['gpu']}; wgpu adapter {r['wgpu_adapter'] or 'not printed'}; host {r['cpu']}, {r['cores']} cores.",
    f"EfficientNet-Lite0, {k['image_size']} px, batch {k['batch']}, fp32. kestrel-train runs its real loop on "
    "Fashion-MNIST images (decoding, augmentation, host-to-device copies included); PyTorch runs on random tensors "
    "already on the GPU, its best case.",
    "",
    "| engine | frozen phase: backbone forward | full fine-tuning | fine-tuning, ours / PyTorch |",
    "|---|---|---|---|",
    f"| kestrel-train, Burn wgpu | {k['cache_images_per_second']:.0f} img/s | {k['finetune_images_per_second']:.0f} img/s | "
    f"{ratio(k['finetune_images_per_second'], t['finetune_images_per_second'])} |",
    f"| {t['engine']} | {t['cache_images_per_second']:.0f} img/s | {t['finetune_images_per_second']:.0f} img/s | 1 |",
    "",
]
json.dump(r, open("docs/benchmarks-gpu.json", "w"), indent=1)
sys.path.insert(0, "scripts")
from md_section import replace_section
replace_section("docs/benchmarks.md", "## Training on GPU (", "\n".join(md))
print("\n".join(md))
PY
    ;;
*) usage ;;
esac
