#!/usr/bin/env bash
# Every benchmark, one command: writes docs/benchmarks.md (and the JSON beside it) from this run.
#
#   scripts/bench.sh            # full: inference + frame pipeline (bench-int8.sh), int8
#                               # agreement on held-out crops (agreement-int8.sh), training
#                               # (bench-train.sh), the model table (bench-models.sh: every
#                               # backbone and size), deployment (bench-deploy.sh: FPS with the
#                               # web view and MQTT, binary size), accuracy against PyTorch
#                               # (bench-accuracy.sh), footprint (below); three hours on 2 cores
#   scripts/bench.sh --quick    # every step with a few iterations, nothing in docs/ changes (CI)
#   scripts/bench.sh footprint  # one part only: inference, agreement, training, models, deploy,
#                               # accuracy or footprint
#
# Footprint: stripped release sizes of `kestrel` (x86-64 and the aarch64 Pi build) and of
# `kestrel-train` (x86-64: it trains on a workstation, not on the Pi), and the cold build time of
# the runtime alone (`cargo build --release -p kestrel-runtime` into an empty
# target folder: what a user pays to build kestrel on a fresh machine, with the registry cached).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
parts=()
for a in "$@"; do
    case "$a" in
        --quick) quick=1 ;;
        inference | agreement | training | models | deploy | accuracy | footprint) parts+=("$a") ;;
        *) echo "usage: scripts/bench.sh [--quick] [inference|agreement|training|models|deploy|accuracy|footprint]..." >&2; exit 2 ;;
    esac
done
[ ${#parts[@]} -gt 0 ] || parts=(inference agreement training models deploy accuracy footprint)
q=()
[ $quick = 1 ] && q=(--quick)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kestrel/target}"

for part in "${parts[@]}"; do
    echo "== bench: $part ($(date +%H:%M:%S))" >&2
    case "$part" in
        inference) scripts/bench-int8.sh "${q[@]}" ;;
        agreement) scripts/agreement-int8.sh "${q[@]}" ;;
        training) scripts/bench-train.sh "${q[@]}" ;;
        models) scripts/bench-models.sh "${q[@]}" ;;
        deploy) scripts/bench-deploy.sh "${q[@]}" ;;
        accuracy) scripts/bench-accuracy.sh "${q[@]}" ;;
        footprint)
            work=$(mktemp -d)
            if [ $quick = 1 ]; then
                # The steps, not the numbers: sizes of the dev build, no cold build.
                cargo build --locked -p kestrel-runtime -p kestrel-trainer
                bin="$CARGO_TARGET_DIR/debug/kestrel"
                train_bin="$CARGO_TARGET_DIR/debug/kestrel-train"
                pi_bin=""
                cold="null"
            else
                cargo build --locked --release -p kestrel-runtime -p kestrel-trainer
                bin="$CARGO_TARGET_DIR/release/kestrel"
                train_bin="$CARGO_TARGET_DIR/release/kestrel-train"
                pi_bin=$(scripts/build-pi.sh --no-run)
                t0=$(date +%s.%N)
                CARGO_TARGET_DIR="$work/target" cargo build --locked --release -p kestrel-runtime >&2
                cold=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")
            fi
            cp "$bin" "$work/kestrel" && strip "$work/kestrel"
            cp "$train_bin" "$work/kestrel-train" && strip "$work/kestrel-train"
            python3 - "$quick" "$bin" "$work/kestrel" "$cold" "$pi_bin" "$train_bin" "$work/kestrel-train" <<'PY'
import datetime, json, os, sys
quick, binary, stripped, cold, pi_bin = sys.argv[1] == "1", sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
train_bin, train_stripped = sys.argv[6], sys.argv[7]
size = lambda p: os.path.getsize(p) if p and os.path.exists(p) else None
sys.path.insert(0, "scripts")
from machine import cpu_model, rustc_version
cpu, rustc = cpu_model(), rustc_version()
result = {"date": datetime.date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(), "rustc": rustc,
          "load_average": os.getloadavg()[0], "kestrel_bytes": size(binary), "kestrel_stripped_bytes": size(stripped),
          "kestrel_aarch64_pi_stripped_bytes": size(pi_bin), "kestrel_train_bytes": size(train_bin),
          "kestrel_train_stripped_bytes": size(train_stripped),
          "runtime_cold_build_s": None if cold == "null" else float(cold)}
print(json.dumps(result))
if quick:
    sys.exit(0)
json.dump(result, open("docs/benchmarks-footprint.json", "w"), indent=1)
mib = lambda b: "n/a" if b is None else f"{b:,} bytes ({b / 1048576:.1f} MiB)"
md = [
    "## Footprint (`scripts/bench.sh footprint`)",
    "",
    f"Written on {result['date']}: {cpu}, {os.cpu_count()} cores, {rustc}, load average {result['load_average']:.2f}.",
    "",
    "| what | value |",
    "|---|---|",
    f"| `kestrel`, x86-64, release, stripped | {mib(result['kestrel_stripped_bytes'])} |",
    f"| `kestrel`, x86-64, release, as built (with debug info) | {mib(result['kestrel_bytes'])} |",
    f"| `kestrel`, aarch64, profile `pi` (fat LTO, stripped) | {mib(result['kestrel_aarch64_pi_stripped_bytes'])} |",
    f"| `kestrel-train`, x86-64, release, stripped | {mib(result['kestrel_train_stripped_bytes'])} |",
    f"| `kestrel-train`, x86-64, release, as built (with debug info) | {mib(result['kestrel_train_bytes'])} |",
    f"| cold build of the runtime alone, `cargo build --release -p kestrel-runtime`, empty target folder | "
    f"{result['runtime_cold_build_s']:.0f} s |",
    "",
    "`kestrel-train` is not built for aarch64: it trains on a workstation or GPU machine, and the Pi runs `kestrel`.",
    "",
]
from md_section import replace_section
replace_section("docs/benchmarks.md", "## Footprint (", "\n".join(md))
print("\n".join(md))
PY
            rm -rf "$work"
            ;;
    esac
done
