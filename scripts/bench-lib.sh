# The preamble the benchmark scripts share: sourced as `. "$(dirname "$0")/bench-lib.sh" "$@"`,
# never run. Afterwards the working directory is the repository root and:
#   quick    1 under --quick (CI's smoke run: the same steps, small), else 0
#   profile  release, as a user builds it, which is what timings must come from; dev under
#            --quick, which CI has already built; KESTREL_BENCH_PROFILE overrides both
#   dir      that profile's output folder in the shared CARGO_TARGET_DIR
#   work     a scratch folder, removed when the script exits
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kestrel/target}"
profile="${KESTREL_BENCH_PROFILE:-$([ $quick = 1 ] && echo dev || echo release)}"
dir="$CARGO_TARGET_DIR/$([ "$profile" = dev ] && echo debug || echo "$profile")"
# wgpu's adapter probing (`fit --backend auto`) wants a runtime folder; a headless machine may lack
# one, and then every fit prints errors about it (as scripts/test.sh, make one).
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/kestrel-xdg-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The shared Python environment of the benchmark scripts ($venv): `python_with "import onnx" onnx==1.23.2`
# makes it if missing and installs the pinned packages when the import check fails.
venv="${KESTREL_VENV:-$HOME/.cache/kestrel/venv}"
python_with() {
    local check="$1"
    shift
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -c "$check" 2>/dev/null || "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
}

# The PyTorch environment of the reference lines (bench-train.sh, bench-accuracy.sh), 5.5 GB:
# `torch_venv_ready NAME` sets $torch_venv and $have_torch. A full run installs the pinned torch and
# timm when missing; --quick uses what a full run left and says, as NAME, when there is none.
torch_venv_ready() {
    torch_venv="${KESTREL_TORCH_VENV:-$HOME/.cache/kestrel/torch-venv}"
    have_torch=0
    "$torch_venv/bin/python" -c "import timm, torch, torchvision" 2>/dev/null && have_torch=1
    if [ $quick = 0 ] && [ $have_torch = 0 ]; then
        python3 -m venv "$torch_venv"
        "$torch_venv/bin/pip" install --quiet --disable-pip-version-check torch==2.15.0 timm==1.0.31
        have_torch=1
    fi
    [ $have_torch = 1 ] || echo "$1: no PyTorch in $torch_venv (a full run installs it); the reference is left out" >&2
}
