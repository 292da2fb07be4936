#!/usr/bin/env bash
# Fetches (once) the Gateway API's standard-channel CRDs from its Go module
# (sigs.k8s.io/gateway-api), so the cluster tests can apply the operator's
# HTTPRoutes against the real schema. Cached outside the work tree, keyed by
# version: $HONE_CACHE/gateway-api-$GATEWAY_API_VERSION/standard/*.yaml
# Prints the folder on its last line; a second run returns at once.
set -euo pipefail
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-1.6.3}
cache=${HONE_CACHE:-$HOME/.cache/hone}
out="$cache/gateway-api-$GATEWAY_API_VERSION/standard"
if [ ! -s "$out/gateway.networking.k8s.io_httproutes.yaml" ]; then
  command -v go >/dev/null || { echo "gateway-api-crds: go is not installed" >&2; exit 1; }
  export GOTOOLCHAIN=local
  mod="sigs.k8s.io/gateway-api@v$GATEWAY_API_VERSION"
  # The module proxy and checksum database verify what is extracted here.
  dir=$(cd "${TMPDIR:-/tmp}" && go mod download -json "$mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  src="$dir/config/crd/standard"
  [ -f "$src/gateway.networking.k8s.io_httproutes.yaml" ] || { echo "gateway-api-crds: no $src in $mod" >&2; exit 1; }
  mkdir -p "$out.tmp.$$"
  cp "$src"/gateway.networking.k8s.io_*.yaml "$out.tmp.$$/"
  rm -rf "$out"
  mv -f "$out.tmp.$$" "$out"
fi
echo "$out"
