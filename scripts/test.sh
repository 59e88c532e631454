#!/usr/bin/env bash
# The whole test suite, cheapest check first. README's test command and .ci/run both call this.
# Installs what it needs (assets by PyPI package name); the build cache lives outside the clone so
# repeated runs on one machine are incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kestrel/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "system packages"
# Mesa's software Vulkan driver (lavapipe) gives wgpu an adapter on machines without a GPU, so
# the GPU training path is exercised everywhere.
# DejaVu Sans labels the PNG plots of training reports.
need=()
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
# bindgen (the camera feature's V4L2 bindings) needs libclang.
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
# The deployment tests (issue 17): a real browser for the web view, a real MQTT broker and
# client, curl as the HTTP client, systemd-analyze for the packaged unit. Fashion-MNIST: the
# accuracy test trains on its photos (distinct images per class, issue 15).
for pkg in chromium mosquitto mosquitto-clients curl systemd dataset-fashion-mnist; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/kestrel-xdg-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

step "fetch assets (weights, sample photos, ImageNet names)"
scripts/fetch-assets.sh

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "runtime builds alone, without Burn"
cargo build -p kestrel-runtime --locked
if cargo tree -p kestrel-runtime -e normal --prefix none | grep -q '^burn'; then
    echo "kestrel-runtime depends on Burn; it must not" >&2
    exit 1
fi

step "cargo test"
# --show-output: passing tests' numbers (export parity, timings of record) land in the CI log.
cargo test --workspace --locked -- --show-output

step "Raspberry Pi: aarch64 cross-build and qemu smoke run"
KESTREL_PI_PROFILE=pi-ci scripts/build-pi.sh

step "packages: the amd64 .deb installed and verified, the arm64 .deb listed and run under qemu"
# Packages the builds above (the test build, the Pi CI build) rather than building releases.
KESTREL_DEB_PROFILE=dev KESTREL_PI_PROFILE=pi-ci scripts/test-deb.sh

step "benchmark scripts still run (quick mode; numbers not kept)"
scripts/bench.sh --quick

step "soak: kestrel run on a live MJPEG pipe for 60 s, RSS sampled"
KESTREL_BIN="$CARGO_TARGET_DIR/debug/kestrel" scripts/soak.sh 60

step "fuzz smoke: each cargo-fuzz target for 30 s"
scripts/fuzz.sh --smoke 30
