#!/usr/bin/env bash
# Builds hone.local/minio:<version>, the S3 endpoint of the demo
# (hack/demo/run.sh), from the MinIO binary hack/build-minio.sh builds from its
# Go module (static, CGO off), and imports it into the real node's containerd.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

minio=$("$REPO_ROOT/hack/build-minio.sh" | tail -n 1)
[ -x "$minio" ] || idie "hack/build-minio.sh did not produce a binary"
base=$(base_layer_spec)
printf '/minio %s 0755\n' "$minio" > "$IMG_CACHE/minio.spec"
oci_image "$IMAGE_REGISTRY/minio:$MINIO_VERSION" \
  "{\"Entrypoint\":[\"/minio\"],\"User\":\"$NONROOT_UID:$NONROOT_UID\",\"WorkingDir\":\"/tmp\"}" \
  "$base" "$IMG_CACHE/minio.spec"
