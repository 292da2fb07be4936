#!/usr/bin/env bash
# Builds (once) cargo-fuzz from crates.io, for `make fuzz`. Cached outside the
# work tree, keyed by version:
#   $HONE_CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION/bin/cargo-fuzz
# Prints the binary's path on its last line; a second run returns at once.
# The fuzz targets themselves build with the nightly toolchain (sanitizers).
set -euo pipefail
CARGO_FUZZ_VERSION=${CARGO_FUZZ_VERSION:-0.13.2}
cache=${HONE_CACHE:-$HOME/.cache/hone}
root="$cache/cargo-fuzz-$CARGO_FUZZ_VERSION"
bin="$root/bin/cargo-fuzz"
if [ ! -x "$bin" ]; then
  mkdir -p "$cache"
  # One build at a time per cache.
  exec 9>"$cache/.cargo-fuzz-build.lock"
  flock 9
fi
if [ ! -x "$bin" ]; then
  start=$(date +%s)
  echo "building cargo-fuzz $CARGO_FUZZ_VERSION (first time only)..." >&2
  # Into a temp root first, so a half-finished build never looks cached.
  tmp="$root.tmp.$$"
  rm -rf "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  cargo install cargo-fuzz --version "=$CARGO_FUZZ_VERSION" --locked --root "$tmp" >&2
  mkdir -p "$root/bin"
  mv -f "$tmp/bin/cargo-fuzz" "$bin"
  echo "built cargo-fuzz $CARGO_FUZZ_VERSION in $(( $(date +%s) - start ))s" >&2
fi
echo "$bin"
