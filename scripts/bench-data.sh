#!/usr/bin/env bash
# Data at scale (issue 16): peak memory and decoding time of `kestrel-train fit` as the data set
# grows. Makes a folder of camera-sized JPEGs (`kestrel-train sample-data`, 640x640), runs `fit`
# with the same settings on a quarter of it and on all of it, and records each run's peak RSS
# (getrusage of the child) and the decoding rates `fit` logs. Memory that does not grow with the
# data set shows as two equal peaks. Writes docs/benchmarks-data.json and the "Data at scale"
# section of docs/benchmarks.md.
#
#   scripts/bench-data.sh            # 20 000 images (about 25 minutes on 2 cores)
#   scripts/bench-data.sh --quick    # 600 images, the same steps; prints the section, docs/ untouched
#   KESTREL_COMPARE_TRAIN=/path/to/other/kestrel-train KESTREL_COMPARE_LABEL="what it is" \
#       scripts/bench-data.sh        # adds that build's run on the full set (e.g. an older version)
. "$(dirname "$0")/bench-lib.sh" "$@"
scripts/fetch-assets.sh >/dev/null
cargo build --locked --profile "$profile" -p kestrel-trainer
train="$dir/kestrel-train"

if [ $quick = 1 ]; then total=600; else total=20000; fi
per_class=$((total / 3))
"$train" sample-data --out "$work/all" --per-class $per_class --size 640 >&2
# The quarter: hard links to the first images of each class (same files, same disk).
for class in "$work"/all/*/; do
    name=$(basename "$class")
    mkdir -p "$work/quarter/$name"
    # awk, not head: head would stop reading early and, under pipefail, fail the pipe.
    find "$class" -name '*.jpg' | sort | awk -v n=$((per_class / 4)) 'NR <= n' | xargs -I{} ln {} "$work/quarter/$name/"
done

# The memory of a run is decided by its data, not by how long it trains: one head epoch on
# the plain view, no fine-tuning, no int8 search, 224 px (the default, so the cache holds what a
# default run holds). 2% validation: forwarding images through the backbone (about 18 per second
# here) is what takes the time, not what takes the memory.
fit_args=(--image-size 224 --head-epochs 1 --feature-views 0 --finetune-epochs 0 --val-fraction 0.02
    --int8-scheme weight-only --int8-max-drop 100)
runs=()
for build in ours ${KESTREL_COMPARE_TRAIN:+other}; do
    bin=$train
    [ "$build" = other ] && bin=$KESTREL_COMPARE_TRAIN
    # The compared build runs the full set only: its peak there is the number to compare.
    sets="quarter all"
    [ "$build" = other ] && sets=all
    for set in $sets; do
        log="$work/$build-$set.log"
        python3 - "$log" "$bin" fit --data "$work/$set" --out "$work/run-$build-$set" "${fit_args[@]}" <<'PY'
import json, resource, subprocess, sys, time
log, cmd = sys.argv[1], sys.argv[2:]
t0 = time.monotonic()
with open(log, "w") as f:
    rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
wall = time.monotonic() - t0
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open(log, "a") as f:
    f.write(f"\nBENCH {json.dumps({'rc': rc, 'wall_s': wall, 'peak_rss_kib': peak_kib})}\n")
sys.exit(rc)
PY
        runs+=("$build:$set:$log")
    done
done

python3 - "$quick" "$total" "${runs[@]}" <<'PY'
import json, re, sys
sys.path.insert(0, "scripts")
import datetime, os
from machine import cpu_model
from md_section import replace_section

quick, total, runs = sys.argv[1] == "1", int(sys.argv[2]), sys.argv[3:]
rows = []
for spec in runs:
    build, subset, log = spec.split(":", 2)
    text = open(log).read()
    bench = json.loads(re.findall(r"^BENCH (.*)$", text, re.M)[-1])
    # (images, seconds, images per second as fit measured it: the seconds are rounded in the log)
    decode = {m[0]: (int(m[1]), float(m[2]), float(m[3]))
              for m in re.findall(r"decoding (train|eval): (\d+) images in ([\d.]+)s \((\d+)/s\)", text)}
    old = re.search(r"decoded (\d+) images in ([\d.]+)s", text)
    cached = re.search(r"\(([\d.]+) MB cached on disk\)", text)
    rows.append({
        "build": build, "set": subset,
        "images": sum(d[0] for d in decode.values()) if decode else (int(old[1]) if old else None),
        "decode_s": sum(d[1] for d in decode.values()) if decode else (float(old[2]) if old else None),
        "decode_train": decode.get("train"), "decode_eval": decode.get("eval"),
        "cache_mb": float(cached[1]) if cached else None,
        "peak_rss_mib": bench["peak_rss_kib"] / 1024, "wall_s": bench["wall_s"], "rc": bench["rc"],
    })

def rate(d):
    return f"{d[2]:.0f}/s ({d[1]:.1f} s)" if d else "n/a"

md = ["## Data at scale (`scripts/bench-data.sh`, issue 16)", "",
      f"Written by `scripts/bench-data.sh` on {datetime.date.today()}, {cpu_model()}, {os.cpu_count()} cores. `kestrel-train fit` on {total} camera-sized JPEGs "
      "(`kestrel-train sample-data --size 640`, three classes) and on a quarter of them, same settings: 224 px, "
      "one head epoch on the plain view, no fine-tuning, 2% validation. Peak RSS is the whole process's "
      "(getrusage). Training images are decoded in parallel in full, as the runtime decodes them, and kept twice: "
      "shrunk to the 292 px cache side for augmentation, and as the runtime's 224 px crop (the plain view); like the "
      "validation crops, both are kept in a nameless file in the run folder rather than in RAM; the kernel's page "
      "cache holds what fits. Wall times are in "
      "docs/benchmarks-data.json only: they are mostly the backbone's forward pass, which is not what this measures.", "",
      "| build | images | decode train | decode eval | cache on disk | peak RSS |", "|---|---|---|---|---|---|"]
for r in rows:
    cache = "in RAM" if r["cache_mb"] is None else f"{r['cache_mb']:.0f} MB"
    if r["decode_train"] is None:
        # An older build logs one line for both splits.
        decode = f"{r['images'] / max(r['decode_s'], 1e-9):.0f}/s ({r['decode_s']:.1f} s), both splits"
        cells = [decode, ""]
    else:
        cells = [rate(r["decode_train"]), rate(r["decode_eval"])]
    md.append(f"| {'this' if r['build'] == 'ours' else 'compared'} | {r['images']} | {cells[0]} | {cells[1]} | "
              f"{cache} | {r['peak_rss_mib']:.0f} MiB |")
ours = {r["set"]: r for r in rows if r["build"] == "ours"}
if "quarter" in ours and "all" in ours:
    q, a = ours["quarter"], ours["all"]
    md += ["", f"4× the images: peak RSS {a['peak_rss_mib'] / q['peak_rss_mib']:.2f}× "
           f"({q['peak_rss_mib']:.0f} → {a['peak_rss_mib']:.0f} MiB)."]
other = {r["set"]: r for r in rows if r["build"] == "other"}
if "all" in other and "all" in ours:
    label = os.environ.get("KESTREL_COMPARE_LABEL", "`KESTREL_COMPARE_TRAIN`")
    md += [f"The compared build ({label}) on the same {total} images: "
           f"{other['all']['peak_rss_mib']:.0f} MiB peak, "
           f"{other['all']['peak_rss_mib'] / ours['all']['peak_rss_mib']:.1f}× this build's."]
section = "\n".join(md) + "\n"
print(section)
if any(r["rc"] != 0 for r in rows):
    sys.exit(f"a fit run failed: {[(r['build'], r['set'], r['rc']) for r in rows]}")
if not quick:
    json.dump(rows, open("docs/benchmarks-data.json", "w"), indent=1)
    replace_section("docs/benchmarks.md", "## Data at scale", section)
PY
