#!/usr/bin/env bash
# Fetches (once) the Prometheus Operator CRDs (ServiceMonitor, PodMonitor,
# PrometheusRule, ...) from its Go module, for the cluster test that applies
# the chart's monitoring objects. The YAML lives in the module zip under
# example/prometheus-operator-crd/. Cached outside the work tree, keyed by
# version:
#   $HONE_CACHE/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION/*.yaml
# Prints that directory on its last line; a second run returns at once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
# Pinned here until hack/versions.env carries it.
version=${PROMETHEUS_OPERATOR_VERSION:-0.85.0}
cache=${HONE_CACHE:-$HOME/.cache/hone}
dir="$cache/prometheus-operator-crds-$version"
if [ ! -f "$dir/.complete" ]; then
  command -v go >/dev/null || { echo "prometheus-operator-crds: go is not installed" >&2; exit 1; }
  export GOTOOLCHAIN=local
  mkdir -p "$cache"
  exec 9>"$cache/.prometheus-operator-crds.lock"
  flock 9
fi
if [ ! -f "$dir/.complete" ]; then
  mod="github.com/prometheus-operator/prometheus-operator@v$version"
  echo "fetching the Prometheus Operator $version CRDs from the Go module proxy (first time only)..." >&2
  zip=$(cd "$cache" && go mod download -json "$mod" | sed -n 's/^[[:space:]]*"Zip": "\(.*\)",$/\1/p')
  [ -f "$zip" ] || { echo "prometheus-operator-crds: could not download $mod from the Go module proxy" >&2; exit 1; }
  tmp="$dir.tmp.$$"
  rm -rf "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp"
  prefix="$mod/example/prometheus-operator-crd/"
  # The zip, not the extracted module directory: the latter is read-only and
  # may have been cleaned by `go clean -modcache`.
  python3 - "$zip" "$prefix" "$tmp" <<'PY'
import sys, zipfile, os
zip_path, prefix, out = sys.argv[1:]
n = 0
with zipfile.ZipFile(zip_path) as z:
    for name in z.namelist():
        if name.startswith(prefix) and name.endswith(".yaml") and "/" not in name[len(prefix):]:
            with open(os.path.join(out, name[len(prefix):]), "wb") as f:
                f.write(z.read(name))
            n += 1
if n == 0:
    sys.exit(f"prometheus-operator-crds: no CRD YAML under {prefix} in {zip_path}")
PY
  for crd in servicemonitors podmonitors prometheusrules; do
    [ -f "$tmp/monitoring.coreos.com_$crd.yaml" ] || {
      echo "prometheus-operator-crds: monitoring.coreos.com_$crd.yaml missing from $mod" >&2; exit 1; }
  done
  touch "$tmp/.complete"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  trap - EXIT
fi
echo "$dir"
