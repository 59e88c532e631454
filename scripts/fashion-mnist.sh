#!/usr/bin/env bash
# Fashion-MNIST for the training benchmarks: installs Debian's dataset-fashion-mnist (MIT) when
# missing and writes its four IDX files, uncompressed, into DIR.
#
#   scripts/fashion-mnist.sh DIR
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: scripts/fashion-mnist.sh DIR" >&2; exit 2; }
src=/usr/share/datasets/fashion-mnist
if [ ! -f "$src/train-images-idx3-ubyte.gz" ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
mkdir -p "$1"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    gzip -dc "$src/$f.gz" > "$1/$f"
done
