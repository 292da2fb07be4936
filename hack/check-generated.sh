#!/usr/bin/env bash
# Fails when the committed CRD YAML differs from what crdgen prints now, or
# config/default and config/argocd/argocd-cm.yaml from what
# hack/gen-kustomize.sh writes (from the chart and config/argocd/health/*.lua).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
generated=$(mktemp -d)
trap 'rm -rf "$tmp" "$generated"' EXIT
cargo run -q -p hone-crds --bin crdgen -- --out-dir "$tmp"
status=0
for dir in charts/hone/crds config/crd/bases; do
  if ! diff -ru "$tmp" "$dir"; then
    echo "error: $dir is stale: run 'make generate' and commit the result" >&2
    status=1
  fi
done
hack/gen-kustomize.sh "$generated"
for path in config/default config/argocd/argocd-cm.yaml; do
  if ! diff -ru "$generated/$path" "$path"; then
    echo "error: $path is stale: run 'make generate' (hack/gen-kustomize.sh) and commit the result" >&2
    status=1
  fi
done
exit $status
