#!/usr/bin/env bash
# Fuzz the parsers that meet untrusted bytes, with cargo fuzz (libFuzzer, nightly):
#   bundle  — ONNX bundle decoding, kestrel.* metadata, contract checks, tract model building;
#   mjpeg   — the MJPEG stream splitter (every byte accounted; chunking must not change the result);
#   frame   — image decoding under a pixel limit, raw camera buffers, preprocessing.
#
#   scripts/fuzz.sh [SECONDS]          # each target for SECONDS (default 300); new inputs join
#                                      # fuzz/corpus/<target>, and the "Fuzzing" table of
#                                      # docs/reliability.md is rewritten
#   scripts/fuzz.sh --smoke [SECONDS]  # CI: each target for SECONDS (default 30) on a copy of the
#                                      # corpus, with a fixed seed (-seed=1) so a local smoke run
#                                      # explores what CI's does; nothing in the repository changes
#
# A crash stops the script with exit 1, prints the panic and (when small) the input in base64, and
# leaves the input in fuzz/artifacts/<target>/; `(cd fuzz && cargo +nightly fuzz run --dev <target>
# <that file>)` replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
if [ "${1:-}" = "--smoke" ]; then
    smoke=1
    shift
fi
seconds="${1:-$([ $smoke = 1 ] && echo 30 || echo 300)}"
targets=(bundle mjpeg frame)
fuzz_target_dir="${KESTREL_FUZZ_TARGET_DIR:-$HOME/.cache/kestrel/target-fuzz}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kestrel/target}"

# libFuzzer's instrumentation needs a nightly compiler; cargo-fuzz drives it.
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo fuzz --version >/dev/null 2>&1 || cargo install --locked cargo-fuzz@0.13.2

for t in "${targets[@]}"; do
    if [ -z "$(ls -A "fuzz/corpus/$t" 2>/dev/null)" ]; then
        cargo run --locked -q -p kestrel-e2e --bin fuzz-seeds -- fuzz/corpus
        break
    fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd fuzz && cargo +nightly fuzz build --target-dir "$fuzz_target_dir" --dev)

for t in "${targets[@]}"; do
    corpus="$PWD/fuzz/corpus/$t"
    if [ $smoke = 1 ]; then
        mkdir -p "$work/corpus-$t"
        cp -r "$corpus/." "$work/corpus-$t/"
        corpus="$work/corpus-$t"
    fi
    echo "== fuzz $t for ${seconds}s" >&2
    status=0
    seed=()
    [ $smoke = 1 ] && seed=(-seed=1)
    # 64 KiB inputs: room for a real frame or a small bundle, small enough for many runs a second.
    (cd fuzz && cargo +nightly fuzz run --target-dir "$fuzz_target_dir" --dev "$t" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -timeout=10 -print_final_stats=1 "${seed[@]}") > "$work/$t.log" 2>&1 || status=$?
    if [ $status -ne 0 ]; then
        # What CI's log must carry to reproduce a find elsewhere: the panic or sanitizer report
        # (without its stack) and the input itself.
        grep -m1 -A3 -E "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$work/$t.log" >&2 || tail -n 40 "$work/$t.log" >&2
        artifact=$(grep -o -m1 "Test unit written to .*" "$work/$t.log" | sed 's/Test unit written to //' || true)
        if [ -n "$artifact" ] && [ -f "$artifact" ] && [ "$(stat -c %s "$artifact")" -le 8192 ]; then
            echo "the input, base64 (decode with base64 -d > crash.bin):" >&2
            base64 -w 100 "$artifact" >&2
        fi
        echo "fuzz target $t failed (exit $status); the input is ${artifact:-in fuzz/artifacts/$t/}" >&2
        exit 1
    fi
    tail -n 12 "$work/$t.log" >&2
    # Keep the committed corpus to the inputs that add coverage.
    [ $smoke = 1 ] || (cd fuzz && cargo +nightly fuzz cmin --target-dir "$fuzz_target_dir" --dev "$t" "$corpus") \
        > "$work/$t.cmin.log" 2>&1
done

python3 - "$work" "$seconds" "$smoke" "${targets[@]}" <<'PY'
import datetime, os, re, subprocess, sys
work, seconds, smoke, targets = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4:]
rows = []
for t in targets:
    log = open(os.path.join(work, f"{t}.log")).read()
    runs = re.findall(r"stat::number_of_executed_units:\s+(\d+)", log)
    cov = re.findall(r"\bcov: (\d+)", log)
    corpus = re.findall(r"\bcorp: (\d+)/", log)
    peak = re.findall(r"stat::peak_rss_mb:\s+(\d+)", log)
    rows.append((t, int(runs[-1]) if runs else 0, cov[-1] if cov else "?", corpus[-1] if corpus else "?", peak[-1] if peak else "?"))
for t, runs, cov, corpus, peak in rows:
    print(f"fuzz {t}: {runs} executions in {seconds}s ({runs / max(seconds, 1):.0f}/s), coverage {cov}, corpus {corpus}, peak RSS {peak} MB, no crash")
if smoke:
    sys.exit(0)
rustc = subprocess.run(["rustc", "+nightly", "--version"], capture_output=True, text=True).stdout.strip()
md = [
    "## Fuzzing (`scripts/fuzz.sh`)",
    "",
    f"{datetime.date.today()}, {seconds} s per target, {os.cpu_count()} CPU(s), {rustc}, libFuzzer via cargo-fuzz. "
    "Counts are this run's; the corpus in `fuzz/corpus/` carries over between runs.",
    "",
    "| target | what it feeds | executions | exec/s | coverage (edges) | corpus | peak RSS MB | crashes |",
    "|---|---|---|---|---|---|---|---|",
]
what = {
    "bundle": "ONNX bytes → `Bundle::from_bytes` → `Classifier::from_bundle` → one inference",
    "mjpeg": "a byte stream in chunks → `Splitter` (byte accounting, chunking-invariance)",
    "frame": "bytes → `decode_bytes` / raw YUYV, NV12, RGB, grey → `preprocess`",
}
for t, runs, cov, corpus, peak in rows:
    md.append(f"| {t} | {what.get(t, '')} | {runs} | {runs / max(seconds, 1):.0f} | {cov} | {corpus} | {peak} | 0 |")
md.append("")
sys.path.insert(0, "scripts")
from md_section import replace_section
replace_section("docs/reliability.md", "## Fuzzing (", "\n".join(md), title="# Reliability")
PY
