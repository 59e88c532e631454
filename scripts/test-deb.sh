#!/usr/bin/env bash
# The packages, as a user gets them (issue 17): the amd64 .deb is built, installed with dpkg -i,
# its unit checked by systemd-analyze, the installed kestrel run from outside the repository with
# the config the package ships, then purged; the arm64 .deb's contents are listed and its binary
# runs under qemu. Run by scripts/test.sh after the cargo tests and the Pi cross-build (whose
# builds it packages: KESTREL_DEB_PROFILE, KESTREL_PI_PROFILE say which).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kestrel/target}"
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
fail() { echo "test-deb: $*" >&2; exit 1; }
assets=$(scripts/fetch-assets.sh)
photo="$assets/samples/chelsea.png"

# -- amd64: build, install, verify, use, purge -------------------------------------------------
deb=$(scripts/build-deb.sh --profile "${KESTREL_DEB_PROFILE:-release}" --no-build | tail -1)
[ -f "$deb" ] || fail "no .deb at $deb"
echo "amd64 package: $deb ($(stat -c %s "$deb") bytes)"
# Captured first: `grep -q` closing the pipe early would fail the pipeline under pipefail.
control=$(dpkg-deb -I "$deb")
grep -q "Architecture: amd64" <<<"$control" || fail "not an amd64 package"
$sudo dpkg -i "$deb" >/dev/null
trap '$sudo dpkg --purge kestrel >/dev/null 2>&1 || true' EXIT
unit=/usr/lib/systemd/system/kestrel.service
# verify exits 0 on directives it ignores (a mistyped value is only a warning): any output fails.
verify=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify $unit failed: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify $unit warns: $verify"
for line in "ExecStart=/usr/bin/kestrel run --config /etc/kestrel/kestrel.toml" "DynamicUser=yes" \
    "SupplementaryGroups=video" "Restart=on-failure"; do
    grep -qx "$line" "$unit" || fail "$unit lacks: $line"
done
conffiles=$(dpkg-query -W -f='${Conffiles}\n' kestrel)
grep -q /etc/kestrel/kestrel.toml <<<"$conffiles" ||
    fail "/etc/kestrel/kestrel.toml is not a conffile (an upgrade would overwrite edits)"
work=$(mktemp -d)
cp "$photo" "$work/cat.png"
(
    cd "$work"
    # Not the repository's environment: the installed binary, the installed config.
    env -u KESTREL_MODEL -u KESTREL_CONFIG HOME="$work" /usr/bin/kestrel info > info.txt
    grep -q "model:       /usr/share/kestrel/efficientnet-lite0-imagenet.int8.onnx (config /etc/kestrel/kestrel.toml)" info.txt ||
        fail "installed kestrel info does not use the packaged model and config: $(cat info.txt)"
    env -u KESTREL_MODEL -u KESTREL_CONFIG HOME="$work" /usr/bin/kestrel classify cat.png > classify.txt
    grep -Eq "tabby|tiger cat|Egyptian cat" classify.txt || fail "installed kestrel: $(cat classify.txt)"
    # The service's own command line on the shipped config, for a few synthetic frames.
    env -u KESTREL_MODEL -u KESTREL_CONFIG HOME="$work" /usr/bin/kestrel run --config /etc/kestrel/kestrel.toml \
        --source synthetic:64x64:5 --http 127.0.0.1:0 --format jsonl > run.jsonl 2> run.err ||
        fail "the service's command failed: $(cat run.err)"
    grep -q '"inferred":5' run.jsonl || fail "the service's command ran no frames: $(cat run.jsonl run.err)"
)
echo "amd64 .deb: installed, unit verified, info/classify/run work from $work"
$sudo dpkg --purge kestrel >/dev/null
[ ! -e /usr/bin/kestrel ] && [ ! -e /etc/kestrel/kestrel.toml ] || fail "purge left files behind"
trap - EXIT

# -- arm64: contents and a run under qemu ------------------------------------------------------
deb=$(KESTREL_PI_PROFILE="${KESTREL_PI_PROFILE:-pi}" scripts/build-pi.sh --no-run --deb | tail -1)
[ -f "$deb" ] || fail "no arm64 .deb at $deb"
echo "arm64 package: $deb ($(stat -c %s "$deb") bytes)"
control=$(dpkg-deb -I "$deb")
grep -q "Architecture: arm64" <<<"$control" || fail "not an arm64 package"
listing=$(dpkg-deb -c "$deb")
echo "$listing"
for path in ./usr/bin/kestrel ./usr/share/kestrel/efficientnet-lite0-imagenet.int8.onnx \
    ./etc/kestrel/kestrel.toml ./usr/lib/systemd/system/kestrel.service; do
    grep -q " $path\$" <<<"$listing" || fail "arm64 .deb lacks $path"
done
root="$work/arm64"
dpkg-deb -x "$deb" "$root"
file_out=$(od -An -tx1 -j18 -N2 "$root/usr/bin/kestrel" | tr -d ' ')
[ "$file_out" = "b700" ] || fail "usr/bin/kestrel is not an aarch64 ELF (e_machine $file_out)"
out=$(env -u KESTREL_CONFIG KESTREL_CONFIG= qemu-aarch64 -L /usr/aarch64-linux-gnu "$root/usr/bin/kestrel" \
    classify --model "$root/usr/share/kestrel/efficientnet-lite0-imagenet.int8.onnx" "$photo")
echo "qemu-aarch64: $out"
grep -Eq "tabby|tiger cat|Egyptian cat" <<<"$out" || fail "the arm64 binary did not name the cat"
rm -rf "$work"
echo "test-deb: both packages good"
