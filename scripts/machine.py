"""What a benchmark ran on, described one way for every bench script's header and JSON."""

import platform
import subprocess

# The SIMD extensions tract's and onnxruntime's kernels pick between on x86-64.
SIMD_FLAGS = ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni"]


def _cpuinfo(key):
    try:
        with open("/proc/cpuinfo") as f:
            return next((l.split(":", 1)[1].strip() for l in f if l.startswith(key)), None)
    except OSError:
        return None


def cpu_model():
    return _cpuinfo("model name") or platform.processor() or "?"


def cpu_flags():
    """The SIMD extensions of SIMD_FLAGS this CPU has, space-separated."""
    have = set((_cpuinfo("flags") or "").split())
    return " ".join(f for f in SIMD_FLAGS if f in have)


def rustc_version():
    try:
        return subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "rustc not found"
