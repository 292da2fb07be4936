#!/usr/bin/env bash
# Builds (once) the MinIO server from its Go module, for the tests that need
# a real S3 endpoint on loopback. Cached outside the work tree, keyed by
# version. Prints the binary's path on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${HONE_CACHE:-$HOME/.cache/hone}
bin="$cache/minio-$MINIO_VERSION/bin/minio"
if [ ! -x "$bin" ]; then
  start=$(date +%s)
  echo "building minio $MINIO_VERSION (first time only)..." >&2
  GOBIN="$(dirname "$bin")" GOFLAGS=-trimpath CGO_ENABLED=0 go install "github.com/minio/minio@$MINIO_VERSION" >&2
  echo "built minio in $(( $(date +%s) - start ))s" >&2
fi
echo "$bin"
