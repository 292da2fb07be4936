#!/usr/bin/env bash
# Fetches (once) Argo CD's Application CRD from its Go module, so the cluster
# tests can dry-run config/argocd's Applications against a real schema.
# Cached outside the work tree, keyed by version:
#   $HONE_CACHE/argocd-$ARGOCD_VERSION/application-crd.yaml
# Prints the file's path on its last line; a second run returns at once.
set -euo pipefail
# 3.5.x: the newest line whose go.mod a Go 1.26 toolchain accepts.
ARGOCD_VERSION=${ARGOCD_VERSION:-3.5.7}
cache=${HONE_CACHE:-$HOME/.cache/hone}
out="$cache/argocd-$ARGOCD_VERSION/application-crd.yaml"
if [ ! -s "$out" ]; then
  command -v go >/dev/null || { echo "application-crd: go is not installed" >&2; exit 1; }
  export GOTOOLCHAIN=local
  mod="github.com/argoproj/argo-cd/v3@v$ARGOCD_VERSION"
  # The module proxy and checksum database verify what is extracted here.
  dir=$(cd "${TMPDIR:-/tmp}" && go mod download -json "$mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  src="$dir/manifests/crds/application-crd.yaml"
  [ -f "$src" ] || { echo "application-crd: no manifests/crds/application-crd.yaml in $mod" >&2; exit 1; }
  mkdir -p "$(dirname "$out")"
  cp "$src" "$out.tmp.$$"
  mv -f "$out.tmp.$$" "$out"
fi
echo "$out"
