#!/usr/bin/env bash
# Deployment costs (issue 17): frame-pipeline FPS of `kestrel run` plain, with the web view and
# one client watching its video (--http), publishing every result to a local mosquitto (--mqtt),
# and both; and the size of the stripped binary before and after issue 17 (KESTREL_DEPLOY_BASE,
# default 740a057, built from a git worktree into the same build caches): x86-64 release, and
# aarch64 in the Pi CI profile (scripts/build-pi.sh without fat LTO; `pi` adds fat LTO to both).
# Writes the "Deployment" section of docs/benchmarks.md.
#
# Each mode is a separate `kestrel run` on `synthetic:640x480` (a camera's MJPEG, decoded like
# one), 1 inference thread; the modes interleave (plain, http, mqtt, both, plain, …) for
# --rounds rounds so machine noise hits them alike, and the table gives medians and ratios to
# plain from that one run.
#
#   scripts/bench-deploy.sh            # 5 rounds of 300 frames, and the size before/after
#   scripts/bench-deploy.sh --quick    # 1 round of 20 frames, no size build, nothing in docs/
. "$(dirname "$0")/bench-lib.sh" "$@"
base="${KESTREL_DEPLOY_BASE:-740a057}"
if [ $quick = 1 ]; then rounds=1; frames=20; else rounds=5; frames=300; fi
for tool in mosquitto curl; do
    command -v $tool >/dev/null || { echo "bench-deploy: needs $tool (apt-get install mosquitto curl)" >&2; exit 1; }
done

sizes=""
if [ $quick = 0 ]; then
    git worktree add --detach "$work/base" "$base" >&2
    # (set -e holds inside traps too: each cleanup step may fail without failing the script.)
    trap 'git worktree remove --force "$work/base" 2>/dev/null || true; rm -rf "$work"' EXIT
    # The worktree's crates have their own paths, so their artifacts sit beside ours in the cache.
    cargo build --locked --profile "$profile" --manifest-path "$work/base/Cargo.toml" -p kestrel-runtime >&2
    strip -o "$work/kestrel-before" "$dir/kestrel"
    pi_before=$(KESTREL_PI_PROFILE=pi-ci "$work/base/scripts/build-pi.sh" --no-run | tail -1)
    cp "$pi_before" "$work/pi-before"
    # Ours again: relink so each binary is this checkout's, not the worktree's.
    touch runtime/src/bin/kestrel/main.rs
    pi_after=$(KESTREL_PI_PROFILE=pi-ci scripts/build-pi.sh --no-run | tail -1)
    cp "$pi_after" "$work/pi-after"
fi
cargo build --locked --profile "$profile" -p kestrel-runtime >&2
bin="$dir/kestrel"
if [ $quick = 0 ]; then
    strip -o "$work/kestrel-after" "$bin"
    sizes="$(stat -c %s "$work/kestrel-before") $(stat -c %s "$work/kestrel-after") $(stat -c %s "$work/pi-before") $(stat -c %s "$work/pi-after")"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mqtt_port=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n' "$mqtt_port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true; [ $quick = 1 ] || git worktree remove --force "$work/base" 2>/dev/null || true; rm -rf "$work"' EXIT

# One run of a mode; appends its summary JSON line to $work/<mode>.jsonl.
run_mode() {
    local mode=$1 args=(run --source "synthetic:640x480:$frames" --format jsonl --threads 1 --progress 3600)
    local port watcher=""
    case $mode in
        http | both) port=$(free_port); args+=(--http "127.0.0.1:$port") ;;
    esac
    case $mode in
        mqtt | both) args+=(--mqtt "mqtt://127.0.0.1:$mqtt_port/kestrel/bench") ;;
    esac
    KESTREL_CONFIG= "$bin" "${args[@]}" > "$work/out.jsonl" 2>"$work/err.txt" &
    local pid=$!
    if [ -n "${port:-}" ]; then
        # One browser-like client on the video for the whole run, from when the server listens
        # (the stream ends when the run does).
        until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; do
            kill -0 $pid 2>/dev/null || break
            sleep 0.05
        done
        curl -s --max-time 600 -o "$work/stream.bin" "http://127.0.0.1:$port/stream.mjpg" &
        watcher=$!
    fi
    wait $pid || { cat "$work/err.txt" >&2; exit 1; }
    local streamed=0
    if [ -n "$watcher" ]; then
        wait $watcher 2>/dev/null || true
        streamed=$(stat -c %s "$work/stream.bin")
        rm -f "$work/stream.bin"
    fi
    # The summary line, with how many bytes of video the watching client received.
    tail -1 "$work/out.jsonl" | python3 -c "import json,sys; d=json.load(sys.stdin); d['streamed']=$streamed; print(json.dumps(d))" \
        >> "$work/$mode.jsonl"
}
for round in $(seq "$rounds"); do
    for mode in plain http mqtt both; do
        run_mode $mode
    done
    echo "bench-deploy: round $round of $rounds done" >&2
done

python3 - "$quick" "$work" "$rounds" "$frames" "$base" "$sizes" "$profile" <<'PY'
import json, os, statistics, sys
sys.path.insert(0, "scripts")
from md_section import replace_section
quick, work, rounds, frames, base, sizes, profile = sys.argv[1] == "1", *sys.argv[2:8]
from machine import cpu_model
machine = f"{cpu_model()}, {os.cpu_count()} cores."
rows = []
plain = None
for mode, what in [("plain", "`kestrel run`"), ("http", "`--http`, one client watching /stream.mjpg"),
                   ("mqtt", "`--mqtt` to mosquitto on loopback, every result"), ("both", "`--http` (watched) and `--mqtt`")]:
    runs = [json.loads(l) for l in open(f"{work}/{mode}.jsonl")]
    fps = statistics.median(r["summary"]["fps"] for r in runs)
    infer = statistics.median(r["summary"]["inference_ms"]["p50"] for r in runs)
    acked = [r.get("mqtt", {}).get("acknowledged") for r in runs]
    plain = plain or fps
    delivered = f"{min(acked)}/{frames}" if acked[0] is not None else "–"
    streamed = statistics.median(r["streamed"] for r in runs)
    video = f"{streamed / 2**20:.1f} MiB" if streamed else "–"
    rows.append(f"| {what} | {fps:.1f} | {fps / plain:.2f}× | {infer:.1f} | {video} | {delivered} |")
mib = lambda b: f"{int(b) / 2**20:.1f} MiB"
lines = [
    "## Deployment (`scripts/bench-deploy.sh`, issue 17)", "",
    f"`kestrel run --source synthetic:640x480:{frames} --threads 1` ({profile} build), each mode a separate "
    f"run, modes interleaved over {rounds} rounds; medians. Video: what the watching client (curl on "
    f"/stream.mjpg) received. {machine}", "",
    "| mode | FPS | vs plain | inference p50 ms | video received | MQTT results acknowledged |",
    "|---|---|---|---|---|---|", *rows, "",
]
if sizes:
    before, after, pi_before, pi_after = sizes.split()
    kib = lambda a, b: f"{(int(b) - int(a)) / 1024:+.0f} KiB"
    lines += [
        "Binary size, stripped, both built in this run (the web view and the MQTT client are std-only code",
        "plus `httparse`; the config file adds `toml`; both include the 4.6 MiB built-in model):", "",
        f"| build | before issue 17 ({base}) | after | difference |", "|---|---|---|---|",
        f"| x86-64, release | {mib(before)} | {mib(after)} | {kib(before, after)} |",
        f"| aarch64 (Pi), profile pi-ci | {mib(pi_before)} | {mib(pi_after)} | {kib(pi_before, pi_after)} |", "",
    ]
text = "\n".join(lines)
print(text)
if not quick:
    replace_section("docs/benchmarks.md", "## Deployment", text)
PY
