#!/usr/bin/env bash
# Build the kestrel .deb with cargo-deb: /usr/bin/kestrel, the default model in
# /usr/share/kestrel, kestrel.service (own user, `video` group, restart on failure; installed,
# not enabled) and /etc/kestrel/kestrel.toml (a conffile: an upgrade keeps your edits).
# Installs cargo-deb (a pinned version, from the crate registry) into the build cache if missing.
#
#   scripts/build-deb.sh                         # amd64 (this machine), release build
#   scripts/build-pi.sh --deb                    # arm64 for a Raspberry Pi (calls this script)
#   KESTREL_DEB_PROFILE=dev scripts/build-deb.sh # CI: package the test build instead of a release
#
# Prints the .deb's path. Install with `sudo apt install ./kestrel_*.deb`.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kestrel/target}"
tools="$HOME/.cache/kestrel/tools"
cargo_deb_version=3.8.0
# Captured, not piped to `grep -q`: under pipefail an early-closed pipe would read as "missing".
installed=$("$tools/bin/cargo-deb" --version 2>/dev/null || true)
if [ "$installed" != "cargo-deb $cargo_deb_version" ]; then
    cargo install --locked --quiet --root "$tools" --version "=$cargo_deb_version" cargo-deb >&2
fi

target=""           # empty: this machine
profile="${KESTREL_DEB_PROFILE:-release}"
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --target) target="$2"; shift 2 ;;
        --profile) profile="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        *) echo "build-deb: unknown argument $1" >&2; exit 2 ;;
    esac
done

args=(-p kestrel-runtime --profile "$profile" --output "$CARGO_TARGET_DIR/debian")
[ -n "$target" ] && args+=(--target "$target")
if [ $build = 1 ]; then
    cargo build --locked --profile "$profile" ${target:+--target "$target"} -p kestrel-runtime >&2
fi
# Built above (or by the caller): cargo-deb only packages it.
args+=(--no-build)
# cargo-deb prints the path of the package it wrote.
"$tools/bin/cargo-deb" "${args[@]}"
