#!/usr/bin/env bash
# Soak: `kestrel run` on a live MJPEG stream for a given time, RSS sampled every second.
#
#   scripts/soak.sh [SECONDS] [OUT_DIR]       # default 3600 s; CI runs 60
#
# A producer writes JPEG frames (sample photos plus one corrupt frame in every 50) into
# `kestrel run --source mjpeg:-` at about 30 frames/s, as `rpicam-vid` does on a Pi, then closes
# the pipe. Passes when:
#   - RSS after warm-up (the first 20% of the run, at least 10 s) grows by at most 2 MiB;
#   - the summary accounts for every frame written: frames = inferred + dropped + corrupt = produced;
#   - kestrel exits 0 at end of stream.
# Writes OUT_DIR/rss.csv (seconds, kB) and OUT_DIR/soak.json; prints a one-line verdict.
# KESTREL_BIN picks the binary (default: the release build, else the dev build).
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-3600}"
out="${2:-$(mktemp -d)}"
mkdir -p "$out"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kestrel/target}"
bin="${KESTREL_BIN:-}"
if [ -z "$bin" ]; then
    for candidate in "$CARGO_TARGET_DIR/release/kestrel" "$CARGO_TARGET_DIR/debug/kestrel"; do
        [ -x "$candidate" ] && bin="$candidate" && break
    done
fi
if [ -z "$bin" ]; then
    cargo build --locked -p kestrel-runtime
    bin="$CARGO_TARGET_DIR/debug/kestrel"
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

python3 - "$out" "$duration" "$status" <<'PY'
import json, sys
out, duration, status = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
produced = int(open(f"{out}/produced").read())
lines = [json.loads(l) for l in open(f"{out}/frames.jsonl") if l.strip()]
summary = next(l["summary"] for l in reversed(lines) if "summary" in l)
printed = sum(1 for l in lines if "frame" in l)
rss = [tuple(map(int, l.split(","))) for l in open(f"{out}/rss.csv") if l.strip()]
warm = max(10.0, 0.2 * duration)
after = [kb for t, kb in rss if t >= warm]
growth_kb = (max(after) - after[0]) if len(after) >= 2 else None
failures = []
if status != 0:
    failures.append(f"kestrel exited {status}")
accounted = summary["inferred"] + summary["skipped"] + summary["dropped"] + summary["corrupt"]
if not (summary["frames"] == accounted == produced):
    failures.append(f"frames: produced {produced}, summary {summary['frames']}, accounted {accounted}")
if printed != summary["inferred"]:
    failures.append(f"{printed} frame lines but {summary['inferred']} inferred")
if summary["corrupt"] != produced // 50:
    failures.append(f"{summary['corrupt']} corrupt, {produced // 50} written")
if growth_kb is None:
    failures.append("too few RSS samples after warm-up")
elif growth_kb > 2048:
    failures.append(f"RSS grew {growth_kb} kB after warm-up (limit 2048)")
result = {
    "duration_s": duration,
    "produced": produced,
    "summary": summary,
    "rss_kb_after_warmup": {"first": after[0] if after else None, "max": max(after) if after else None},
    "rss_growth_kb": growth_kb,
    "rss_samples": len(rss),
    "passed": not failures,
    "failures": failures,
}
json.dump(result, open(f"{out}/soak.json", "w"), indent=2)
print(
    f"soak {duration:.0f}s: {produced} frames written, {summary['inferred']} inferred, {summary['dropped']} dropped "
    f"as stale, {summary['corrupt']} corrupt; RSS after warm-up {after[0] if after else '?'} kB, "
    f"growth {growth_kb} kB: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}"
)
sys.exit(0 if not failures else 1)
PY
