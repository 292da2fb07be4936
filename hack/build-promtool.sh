#!/usr/bin/env bash
# Builds (once) promtool from the Prometheus Go module, for checking and
# unit-testing the chart's alerting and recording rules against the real rule
# engine (`promtool test rules`). Only cmd/promtool is built. Cached outside
# the work tree, keyed by module version (PROMETHEUS_VERSION in
# hack/versions.env):
#   $HONE_CACHE/promtool-$PROMETHEUS_VERSION/bin/promtool
# Prints the binary's path on its last line; a second run returns at once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${HONE_CACHE:-$HOME/.cache/hone}
bin="$cache/promtool-$PROMETHEUS_VERSION/bin/promtool"
if [ ! -x "$bin" ]; then
  command -v go >/dev/null || { echo "build-promtool: go is not installed" >&2; exit 1; }
  # The build must never fetch a toolchain or anything but modules.
  export GOTOOLCHAIN=local CGO_ENABLED=0
  mkdir -p "$cache"
  # One build at a time per cache.
  exec 9>"$cache/.promtool-build.lock"
  flock 9
fi
if [ ! -x "$bin" ]; then
  start=$(date +%s)
  mod="github.com/prometheus/prometheus@$PROMETHEUS_VERSION"
  echo "building promtool $PROMETHEUS_VERSION (first time only)..." >&2
  # The module is versioned v0.3MM.P for Prometheus 3.MM.P; its VERSION file
  # says which, for the same version stamp as the release build (.promu.yml).
  dir=$(cd "$cache" && go mod download -json "$mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -f "$dir/VERSION" ] || { echo "build-promtool: could not download $mod from the Go module proxy" >&2; exit 1; }
  ld="-s -w -X github.com/prometheus/common/version.Version=$(cat "$dir/VERSION")"
  ld+=" -X github.com/prometheus/common/version.Branch=HEAD"
  # Into a temp dir first, so a half-finished build never looks cached.
  tmp="$(dirname "$bin").tmp.$$"
  rm -rf "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  GOBIN="$tmp" GOFLAGS=-trimpath go install -tags netgo -ldflags "$ld" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" >&2
  mkdir -p "$(dirname "$bin")"
  mv -f "$tmp/promtool" "$bin"
  echo "built promtool $PROMETHEUS_VERSION in $(( $(date +%s) - start ))s" >&2
fi
echo "$bin"
