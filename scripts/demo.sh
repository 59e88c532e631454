#!/usr/bin/env bash
# The main job on the embedded default: the shipped int8 ImageNet bundle on live frames from the
# first device that really captures (on a Pi, not the codec and ISP nodes at /dev/video10+), else
# on the sample photos played as a stream of frames.
# Fetches the photos by PyPI package name, builds only the runtime (no Burn), and runs it.
#   scripts/demo.sh                 # camera or sample frames
#   scripts/demo.sh --format jsonl  # any `kestrel run` flags pass through
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kestrel/target}"
assets=$(scripts/fetch-assets.sh)
# bindgen (the camera feature's V4L2 bindings) needs libclang.
if ! dpkg -s libclang-dev >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libclang-dev >/dev/null
fi
# The dev profile optimises every dependency (tract, image) and shares its cache with
# scripts/test.sh; scripts/build-pi.sh makes the deployable binary.
cargo build --locked -p kestrel-runtime
kestrel="$CARGO_TARGET_DIR/debug/kestrel"
# `kestrel cameras` applies the same test as `--source camera` and names the device it picks.
cameras=$("$kestrel" cameras 2>/dev/null || true)
if picked=$(grep -m1 '^--source camera uses ' <<<"$cameras"); then
    echo "${picked#--source camera uses }: the first V4L2 device that captures" >&2
    exec "$kestrel" run --source camera "$@"      # Ctrl-C prints the summary
fi
exec "$kestrel" run --source "$assets/samples" "$@"
