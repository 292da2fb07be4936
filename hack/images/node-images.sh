#!/usr/bin/env bash
# Builds the images the real node needs, without a container daemon, and
# imports them into its containerd (when it runs):
#   hone.local/pause:1         the pod sandbox (hack/images/pause/pause.c, static C)
#   hone.local/coredns:<ver>   cluster DNS (the binary hack/cluster/build.sh built)
#   hone.local/testbox:1       a small static Go program the real-node tests run
# Binaries are cached in $HONE_CACHE keyed by the hash of their sources.
# hack/cluster/up.sh (NODE=real) runs this; it is also safe to run by hand.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$IMG_CACHE/bin"
base=$(base_layer_spec)

# ------------------------------------------------------------------ pause
src="$IMAGES_HACK/pause/pause.c"
key=$(sha256sum "$src" | cut -c1-16)
pause="$IMG_CACHE/bin/pause-$key"
if [ ! -x "$pause" ]; then
  command -v gcc >/dev/null || idie "gcc is needed to build the pause binary"
  ilog "building pause (static C)"
  gcc -static -Os -s -Wall -Werror -o "$pause.tmp" "$src" || idie "could not build $src"
  mv -f "$pause.tmp" "$pause"
fi
printf '/pause %s 0755\n' "$pause" > "$IMG_CACHE/pause.spec"
oci_image "$IMAGE_REGISTRY/pause:1" '{"Entrypoint":["/pause"],"User":"65535:65535"}' "$IMG_CACHE/pause.spec"

# ---------------------------------------------------------------- testbox
key=$(cat "$IMAGES_HACK/testbox/go.mod" "$IMAGES_HACK/testbox/main.go" | sha256sum | cut -c1-16)
testbox="$IMG_CACHE/bin/testbox-$key"
if [ ! -x "$testbox" ]; then
  ilog "building testbox (static Go)"
  (cd "$IMAGES_HACK/testbox" && go build -trimpath -ldflags '-s -w' -o "$testbox.tmp" .) ||
    idie "could not build hack/images/testbox"
  mv -f "$testbox.tmp" "$testbox"
fi
printf '/testbox %s 0755\n' "$testbox" > "$IMG_CACHE/testbox.spec"
oci_image "$IMAGE_REGISTRY/testbox:1" \
  "{\"Entrypoint\":[\"/testbox\"],\"User\":\"$NONROOT_UID:$NONROOT_UID\",\"WorkingDir\":\"/tmp\"}" \
  "$base" "$IMG_CACHE/testbox.spec"

# ---------------------------------------------------------------- coredns
coredns="$HONE_CACHE/coredns-$COREDNS_VERSION/bin/coredns"
[ -x "$coredns" ] || idie "$coredns is missing: run NODE=real hack/cluster/build.sh"
printf '/coredns %s 0755\n' "$coredns" > "$IMG_CACHE/coredns.spec"
oci_image "$IMAGE_REGISTRY/coredns:$COREDNS_VERSION" \
  "{\"Entrypoint\":[\"/coredns\"],\"User\":\"$NONROOT_UID:$NONROOT_UID\"}" \
  "$base" "$IMG_CACHE/coredns.spec"
