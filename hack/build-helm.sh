#!/usr/bin/env bash
# Builds (once) helm v3 from its Go module, for linting, rendering and
# installing charts/hone. Cached outside the work tree, keyed by version
# (HELM_VERSION in hack/versions.env):
#   $HONE_CACHE/helm-$HELM_VERSION/bin/helm
# Prints the binary's path on its last line; a second run returns at once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${HONE_CACHE:-$HOME/.cache/hone}
bin="$cache/helm-$HELM_VERSION/bin/helm"
if [ ! -x "$bin" ]; then
  command -v go >/dev/null || { echo "build-helm: go is not installed" >&2; exit 1; }
  # The build must never fetch a toolchain or anything but modules.
  export GOTOOLCHAIN=local CGO_ENABLED=0
  mkdir -p "$cache"
  # One build at a time per cache.
  exec 9>"$cache/.helm-build.lock"
  flock 9
fi
if [ ! -x "$bin" ]; then
  start=$(date +%s)
  mod="helm.sh/helm/v3@v$HELM_VERSION"
  echo "building helm $HELM_VERSION (first time only)..." >&2
  # Helm's release build stamps its version and the Kubernetes version that
  # `helm template` and `helm lint` assume (Capabilities.KubeVersion) from the
  # client-go it links; without the latter helm assumes v1.20 and refuses any
  # chart with a newer kubeVersion constraint. Same ldflags as helm's Makefile.
  gomod=$(cd "$cache" && go mod download -json "$mod" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [ -f "$gomod" ] || { echo "build-helm: could not download $mod from the Go module proxy" >&2; exit 1; }
  client_go=$(sed -n 's/^[[:space:]]*k8s\.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod")
  [ -n "$client_go" ] || { echo "build-helm: no k8s.io/client-go in $gomod" >&2; exit 1; }
  ld="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
  ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ld+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$client_go"
  done
  # Into a temp dir first, so a half-finished build never looks cached.
  tmp="$(dirname "$bin").tmp.$$"
  rm -rf "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  GOBIN="$tmp" GOFLAGS=-trimpath go install -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION" >&2
  mkdir -p "$(dirname "$bin")"
  mv -f "$tmp/helm" "$bin"
  echo "built helm $HELM_VERSION in $(( $(date +%s) - start ))s" >&2
fi
echo "$bin"
