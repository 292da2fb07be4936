#!/usr/bin/env bash
# Tests the Argo CD health checks (config/argocd/health/*.lua) in gopher-lua,
# the Lua VM Argo CD runs them in, with the libraries Argo CD opens for a
# health check (runner/main.go says which), against the fixtures in
# cases.lua; and that config/argocd/argocd-cm.yaml embeds them exactly.
# The runner is built once from its Go module (gopher-lua as Argo CD 3.5.7
# pins it) and cached under ~/.cache/hone, keyed by its sources.
# Last line: "N passed, N failed"; non-zero exit on failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command -v go >/dev/null || { echo "argocd test: go is not installed" >&2; exit 1; }
key=$(cat "$here/runner/go.mod" "$here/runner/go.sum" "$here/runner/main.go" | sha256sum | cut -c1-16)
bin=${HONE_CACHE:-$HOME/.cache/hone}/argocd-health-runner-$key/health-runner
if [ ! -x "$bin" ]; then
  mkdir -p "$(dirname "$bin")"
  (cd "$here/runner" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go build -trimpath -o "$bin.tmp.$$" .)
  mv -f "$bin.tmp.$$" "$bin"
fi
exec "$bin" "$(dirname "$here")"
