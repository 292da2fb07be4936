#!/usr/bin/env bash
# Builds hone.local/minio:<version>, the S3 endpoint of the demo
# (hack/demo/run.sh), from MinIO's Go module (static, CGO off), and imports it
# into the real node's containerd.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# A static build of its own (the test binary of hack/build-minio.sh may link
# libc; the image has no C runtime).
minio="$IMG_CACHE/bin/minio-$MINIO_VERSION-static"
if [ ! -x "$minio" ]; then
  ilog "building minio $MINIO_VERSION (static Go, first time only)"
  tmp=$(mktemp -d)
  GOBIN="$tmp" GOFLAGS=-trimpath CGO_ENABLED=0 GOTOOLCHAIN=local \
    go install -ldflags '-s -w' "github.com/minio/minio@$MINIO_VERSION" >&2 || idie "could not build minio"
  mv -f "$tmp/minio" "$minio"
  rmdir "$tmp"
fi
! readelf -l "$minio" | grep -q INTERP || idie "$minio is dynamically linked; the image has no C runtime"
base=$(base_layer_spec)
printf '/minio %s 0755\n' "$minio" > "$IMG_CACHE/minio.spec"
oci_image "$IMAGE_REGISTRY/minio:$MINIO_VERSION" \
  "{\"Entrypoint\":[\"/minio\"],\"User\":\"$NONROOT_UID:$NONROOT_UID\",\"WorkingDir\":\"/tmp\"}" \
  "$base" "$IMG_CACHE/minio.spec"
