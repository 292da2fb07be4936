# Shared by hack/images/*.sh. Sourced, not run.
# shellcheck shell=bash
IMAGES_HACK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$IMAGES_HACK/../.." && pwd)
# shellcheck source=../versions.env
. "$REPO_ROOT/hack/versions.env"

HONE_CACHE=${HONE_CACHE:-$HOME/.cache/hone}
IMG_CACHE="$HONE_CACHE/images"          # blobs, layer fingerprints, archives
HONE_CLUSTER_DIR=${HONE_CLUSTER_DIR:-/tmp/hone-cluster}
# The real node's containerd (NODE=real hack/cluster/up.sh).
CONTAINERD_SOCK=${CONTAINERD_SOCK:-$HONE_CLUSTER_DIR/containerd/containerd.sock}
# Images are named hone.local/NAME:TAG; nothing is ever pulled for them.
IMAGE_REGISTRY=${IMAGE_REGISTRY:-hone.local}
NONROOT_UID=65532

ilog() { printf '[images] %s\n' "$*" >&2; }
idie() { printf '[images] ERROR: %s\n' "$*" >&2; exit 1; }

# A layer every image shares: a non-root user (65532, "nonroot"), /tmp, and
# the CA certificates of this machine (HTTPS to object storage; without them
# the trainer and predictor cannot build an HTTP client). Written to
# $IMG_CACHE/base.spec.
base_layer_spec() {
  local d="$IMG_CACHE/base"
  mkdir -p "$d"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n' \
    "$NONROOT_UID" "$NONROOT_UID" > "$d/passwd.new"
  printf 'root:x:0:\nnonroot:x:%s:\n' "$NONROOT_UID" > "$d/group.new"
  # Only replace when changed: the layer cache keys on mtimes.
  local f; for f in passwd group; do
    if cmp -s "$d/$f.new" "$d/$f"; then rm -f "$d/$f.new"; else mv -f "$d/$f.new" "$d/$f"; fi
  done
  cat > "$IMG_CACHE/base.spec" <<SPEC
/etc/passwd $d/passwd 0644
/etc/group $d/group 0644
/tmp/ - 1777
/home/nonroot/ - 0755
SPEC
  local ca=/etc/ssl/certs/ca-certificates.crt
  [ -f "$ca" ] || idie "$ca is missing: apt-get install ca-certificates"
  cp -f "$ca" "$d/ca-certificates.crt.new"
  if cmp -s "$d/ca-certificates.crt.new" "$d/ca-certificates.crt"; then rm -f "$d/ca-certificates.crt.new"
  else mv -f "$d/ca-certificates.crt.new" "$d/ca-certificates.crt"; fi
  printf '/etc/ssl/certs/ca-certificates.crt %s 0644\n' "$d/ca-certificates.crt" >> "$IMG_CACHE/base.spec"
  echo "$IMG_CACHE/base.spec"
}

ctr_() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }
have_containerd() { [ -S "$CONTAINERD_SOCK" ] && ctr_ version >/dev/null 2>&1; }

# oci_image NAME CONFIG_JSON SPEC...: writes $IMG_CACHE/archives/<name>.tar and,
# when the node's containerd runs, imports it. Blobs containerd already has
# are left out of the archive, so an unchanged libtorch layer costs nothing.
oci_image() {
  local name=$1 config=$2; shift 2
  local short=${name##*/}; short=${short//:/_}
  local archive="$IMG_CACHE/archives/$short.tar" omit="$IMG_CACHE/.present.$$"
  mkdir -p "$IMG_CACHE/archives"
  : > "$omit"
  if have_containerd; then ctr_ content ls -q > "$omit" 2>/dev/null || : > "$omit"; fi
  local layers=() s
  for s in "$@"; do layers+=(--layer "$s"); done
  local digest
  digest=$(python3 "$IMAGES_HACK/oci.py" --name "$name" --config "$config" --cache "$IMG_CACHE" \
    --omit "$omit" --out "$archive" "${layers[@]}") || { rm -f "$omit"; idie "could not write $name"; }
  rm -f "$omit"
  if have_containerd; then
    ctr_ images import "$archive" >/dev/null 2>"$IMG_CACHE/import.log" ||
      { cat "$IMG_CACHE/import.log" >&2; idie "ctr images import $archive failed"; }
    ilog "$name ($digest) imported into containerd"
  else
    ilog "$name ($digest) written to $archive (no containerd at $CONTAINERD_SOCK: not imported)"
  fi
}
