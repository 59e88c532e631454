"""onnxruntime on Kestrel bundles: the reference line of scripts/bench-int8.sh.

Loads each bundle (1 input, NCHW f32), then times batch-1 inferences interleaved across the
models, exactly like `kestrel bench`: the same deterministic input, warm-up first, p50/p95 of
wall time per call. Prints one JSON object per model.

    python scripts/ort_bench.py --threads 1 --iterations 30 a.onnx b.onnx
"""

import argparse
import json
import os
import resource
import time

import numpy as np
import onnxruntime as ort


def quantile(sorted_values, q):
    rank = max(1, min(len(sorted_values), int(np.ceil(q * len(sorted_values)))))
    return sorted_values[rank - 1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("models", nargs="+")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()

    loaded = []
    for path in args.models:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        try:
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # a model ORT cannot load is reported, not fatal
            print(json.dumps({"model": path, "error": str(e).splitlines()[0]}))
            continue
        load_ms = (time.perf_counter() - t) * 1e3
        inp = sess.get_inputs()[0]
        shape = [1 if not isinstance(d, int) else d for d in inp.shape]
        n = int(np.prod(shape))
        # The same input as `kestrel bench`: ((i * 7919) % 255) / 128 - 1.
        x = ((np.arange(n, dtype=np.int64) * 7919) % 255).astype(np.float32) / 128.0 - 1.0
        feed = {inp.name: x.reshape(shape)}
        loaded.append((path, sess, feed, load_ms, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0))
    for _ in range(args.warmup):
        for _, sess, feed, _, _ in loaded:
            sess.run(None, feed)
    times = [[] for _ in loaded]
    for _ in range(args.iterations):
        for (_, sess, feed, _, _), ts in zip(loaded, times):
            t = time.perf_counter()
            sess.run(None, feed)
            ts.append((time.perf_counter() - t) * 1e3)
    for (path, sess, feed, load_ms, rss_kb), ts in zip(loaded, times):
        ts.sort()
        logits = sess.run(None, feed)[0].reshape(-1).tolist()
        print(
            json.dumps(
                {
                    "model": path,
                    "engine": f"onnxruntime {ort.__version__}",
                    "threads": args.threads,
                    "load_ms": load_ms,
                    "p50_ms": quantile(ts, 0.5),
                    "p95_ms": quantile(ts, 0.95),
                    "images_per_second": 1e3 / (sum(ts) / len(ts)),
                    "file_bytes": os.path.getsize(path),
                    "load_peak_rss_gain_mib": rss_kb / 1024.0,
                    # The same input as `kestrel bench`, so the engines' outputs compare.
                    "logits": logits,
                }
            )
        )


if __name__ == "__main__":
    main()
