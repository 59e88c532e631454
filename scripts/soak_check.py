"""Check a `scripts/soak.sh` run: RSS growth after warm-up, frame accounting, exit status.

    soak_check.py OUT_DIR SECONDS STATUS [BINARY] [--record]

--record writes the "Soak run" table of docs/reliability.md from this run.
"""
import datetime, json, os, sys
args = [a for a in sys.argv[1:] if a != "--record"]
record = "--record" in sys.argv[1:]
out, duration, status = args[0], float(args[1]), int(args[2])
binary = args[3] if len(args) > 3 else "kestrel"
produced = int(open(f"{out}/produced").read())
lines = [json.loads(l) for l in open(f"{out}/frames.jsonl") if l.strip()]
summary = next(l["summary"] for l in reversed(lines) if "summary" in l)
printed = sum(1 for l in lines if "frame" in l)
rss = [tuple(map(int, l.split(","))) for l in open(f"{out}/rss.csv") if l.strip()]
warm = max(10.0, 0.2 * duration)
after = [kb for t, kb in rss if t >= warm]
# RSS saw-tooths as large frame buffers are mapped and unmapped (5 MiB here), so a single early
# sample says nothing. Growth is the rise of the peak: the last third's maximum against the
# first third's (after warm-up). A leak lifts the peak; a saw-tooth does not.
third = len(after) // 3
growth_kb = (max(after[-third:]) - max(after[:third])) if third >= 3 else None
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
    "rss_kb_after_warmup": {"first_third_max": max(after[:third]) if third else None,
                            "last_third_max": max(after[-third:]) if third else None},
    "rss_growth_kb": growth_kb,
    "rss_samples": len(rss),
    "passed": not failures,
    "failures": failures,
}
json.dump(result, open(f"{out}/soak.json", "w"), indent=2)
print(
    f"soak {duration:.0f}s: {produced} frames written, {summary['inferred']} inferred, {summary['dropped']} dropped "
    f"as stale, {summary['corrupt']} corrupt; RSS peak after warm-up {max(after[:third]) if third else '?'} kB, "
    f"growth {growth_kb} kB: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}"
)
if record:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from md_section import replace_section
    s = summary
    md = [
        "## Soak run (`scripts/soak.sh`)",
        "",
        f"{datetime.date.today()}: `kestrel run`, {'release' if '/release/' in binary else 'dev'} build, "
        f"{duration / 60:.0f} minutes on a live MJPEG pipe at about 30 frames/s, {os.cpu_count()} CPU(s).",
        "",
        "| frames written | inferred | dropped as stale | corrupt | summary frames | RSS peak, first third | RSS peak, last third | growth | result |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {produced} | {s['inferred']} | {s['dropped']} | {s['corrupt']} | {s['frames']} | "
        f"{max(after[:third]) / 1024:.1f} MiB | {max(after[-third:]) / 1024:.1f} MiB | {growth_kb} kB | "
        f"{'pass' if not failures else 'FAIL: ' + '; '.join(failures)} |",
        "",
        f"Inference p50 {s['inference_ms']['p50']:.1f} ms, decode p50 {s['decode_ms']['p50']:.1f} ms, "
        f"preprocess p50 {s['preprocess_ms']['p50']:.1f} ms, {s['fps']:.1f} FPS inferred; "
        f"{len(rss)} RSS samples, one a second.",
        "",
    ]
    replace_section("docs/reliability.md", "## Soak run (", "\n".join(md), title="# Reliability")
sys.exit(0 if not failures else 1)
