#!/usr/bin/env bash
# Soak: `kestrel run` on a live MJPEG stream for a given time, RSS sampled every second.
#
#   scripts/soak.sh [SECONDS] [OUT_DIR] [--record]   # default 3600 s; CI runs 60
#
# --record writes the result into the "Soak run" table of docs/reliability.md.
#
# A producer writes JPEG frames (sample photos plus one corrupt frame in every 50) into
# `kestrel run --source mjpeg:-` at about 30 frames/s, as `rpicam-vid` does on a Pi, then closes
# the pipe. Passes when:
#   - after warm-up (the first 20%, at least 10 s) the last third's peak RSS is at most 2 MiB above
#     the first third's (RSS saw-tooths as frame buffers are mapped and unmapped; a leak lifts the peak);
#   - the summary accounts for every frame written: frames = inferred + dropped + corrupt = produced;
#   - kestrel exits 0 at end of stream.
# Writes OUT_DIR/rss.csv (seconds, kB) and OUT_DIR/soak.json; prints a one-line verdict
# (scripts/soak_check.py).
# KESTREL_BIN picks the binary (default: a release build of this checkout).
set -euo pipefail
cd "$(dirname "$0")/.."

record=""
args=()
for a in "$@"; do
    if [ "$a" = --record ]; then record=1; else args+=("$a"); fi
done
duration="${args[0]:-3600}"
out="${args[1]:-$(mktemp -d)}"
mkdir -p "$out"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kestrel/target}"
bin="${KESTREL_BIN:-}"
if [ -z "$bin" ]; then
    # Build what is soaked: a stale binary from an older checkout would pass for this one.
    cargo build --locked --release -p kestrel-runtime
    bin="$CARGO_TARGET_DIR/release/kestrel"
fi
assets=$(scripts/fetch-assets.sh)
frames=("$assets/samples/rocket.jpg" "$assets/photos/retina.jpg" "$assets/photos/hubble_deep_field.jpg")
head -c 3000 "${frames[0]}" > "$out/corrupt.jpg"

produce() {
    local n=0 end=$((SECONDS + duration))
    while [ $SECONDS -lt "$end" ]; do
        if [ $((n % 50)) -eq 49 ]; then
            cat "$out/corrupt.jpg"
        else
            cat "${frames[$((n % ${#frames[@]}))]}"
        fi
        n=$((n + 1))
        sleep 0.033
    done
    echo "$n" > "$out/produced"
}

echo "soak: $bin for ${duration}s, output in $out" >&2
produce | "$bin" run --source mjpeg:- --format jsonl --progress 3600 > "$out/frames.jsonl" 2> "$out/stderr.log" &
pid=$!
: > "$out/rss.csv"
start=$SECONDS
while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$rss" ] && echo "$((SECONDS - start)),$rss" >> "$out/rss.csv"
    sleep 1
done
status=0
wait "$pid" || status=$?

python3 scripts/soak_check.py "$out" "$duration" "$status" "$bin" ${record:+--record}
