#!/usr/bin/env bash
# Fails when the committed CRD YAML differs from what crdgen prints now.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo run -q -p hone-crds --bin crdgen -- --out-dir "$tmp"
status=0
for dir in charts/hone/crds config/crd/bases; do
  if ! diff -ru "$tmp" "$dir"; then
    echo "error: $dir is stale: run 'make generate' and commit the result" >&2
    status=1
  fi
done
exit $status
