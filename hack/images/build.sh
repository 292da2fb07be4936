#!/usr/bin/env bash
# Builds OCI images of hone's binaries without a container daemon and, when
# the real node's containerd runs (NODE=real hack/cluster/up.sh), imports them:
#   hone.local/operator:dev   hone-operator
#   hone.local/trainer:dev    hone-trainer    (+ libtorch, CPU)
#   hone.local/predictor:dev  hone-predictor  (+ libtorch, CPU; + ONNX Runtime)
#   hone.local/router:dev     hone-router     (no libtorch: readelf finds none)
# Layers, bottom first: base (user 65532, /tmp), the C/C++ runtime from this
# machine (what ldd finds outside torch), libtorch (trainer, predictor), the
# binary. Layers are content-addressed and written deterministically, so the
# large libtorch layer has the same digest on every build and is neither
# rewritten nor re-imported while torch is unchanged.
#
# libtorch: the binaries link libtorch_cpu.so and libc10.so only (the linker
# drops libtorch_cuda.so, nothing references it), so the layer holds those,
# libgomp, and the two CUDA libraries libtorch_cpu.so itself needs at load
# time (libcudart, libcupti) - not the ~3 GB of CUDA libraries.
#
# ONNX Runtime (predictor only): hone-predictor loads it at run time for
# ONNX models (dlopen, so ldd cannot see it), from ORT_DYLIB_PATH; the image
# carries the onnxruntime wheel's library at /opt/onnxruntime/ (its own
# layer) with ORT_DYLIB_PATH set, and the system libraries it needs.
#
# Usage: hack/images/build.sh [operator|trainer|predictor|router ...]
#   PROFILE=release (default) or debug: which target/<profile>/ binaries
#   BUILD=1: run `cargo build --release --bins` first (with hack/env.sh)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROFILE=${PROFILE:-release}
TAG=${TAG:-dev}
TARGET=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
images=("$@")
[ ${#images[@]} -gt 0 ] || images=(operator trainer predictor router)

if [ "${BUILD:-0}" = 1 ]; then
  ilog "cargo build --$PROFILE --bins"
  (cd "$REPO_ROOT" && eval "$(hack/env.sh)" && cargo build --workspace --bins ${PROFILE:+--profile "$PROFILE"})
fi
started=$(date +%s)
mkdir -p "$IMG_CACHE"
base=$(base_layer_spec)
# What hack/env.sh exports, read once: torch's lib dir (for ldd: the
# binaries have no rpath) and the onnxruntime wheel's library.
env_exports=$("$REPO_ROOT/hack/env.sh") || idie "hack/env.sh failed"
exported() { printf '%s\n' "$env_exports" | sed -n "s/^export $1='\([^']*\)'.*/\1/p"; }
torch_lib=$(exported LD_LIBRARY_PATH)
[ -d "$torch_lib" ] || idie "torch's lib dir not found (hack/env.sh printed no LD_LIBRARY_PATH)"
ort_lib=$(exported ORT_DYLIB_PATH)
[ -f "$ort_lib" ] || idie "ONNX Runtime's library not found (hack/env.sh printed no ORT_DYLIB_PATH)"
torch_lib_dir() { echo "$torch_lib"; }
onnxruntime_lib() { echo "$ort_lib"; }

# onnxruntime_spec NAME: writes $IMG_CACHE/onnxruntime.spec (the library at
# /opt/onnxruntime/) and adds the system libraries it needs to NAME.sys.spec.
onnxruntime_spec() {
  local name=$1 lib path ort
  local sys="$IMG_CACHE/$name.sys.spec"
  ort=$(onnxruntime_lib)
  printf '/opt/onnxruntime/%s %s 0644\n' "$(basename "$ort")" "$ort" > "$IMG_CACHE/onnxruntime.spec"
  grep -q 'not found' < <(ldd "$ort") && idie "ldd $ort: some libraries were not found"
  while read -r lib path; do
    [ -n "$path" ] && echo "$path $path" >> "$sys"
  done < <(ldd "$ort" | awk '/=>/ && $3 ~ /^\// {print $1, $3} !/=>/ && $1 ~ /^\// {print "ld", $1}')
  sort -u -o "$sys" "$sys"
}

# layer_specs NAME BIN: writes NAME.sys.spec, NAME.torch.spec, NAME.app.spec.
layer_specs() {
  local name=$1 bin=$2 lib path
  local sys="$IMG_CACHE/$name.sys.spec" torch="$IMG_CACHE/$name.torch.spec"
  : > "$sys"; : > "$torch"
  local libpath=""
  if readelf -d "$bin" | grep -q 'libtorch_cpu\|libc10'; then libpath=$(torch_lib_dir); fi
  while read -r lib path; do
    [ -n "$path" ] || continue
    case "$path" in
      */torch/lib/*|*/nvidia/*) echo "/opt/libtorch/lib/$lib $path" >> "$torch" ;;
      *) echo "$path $path" >> "$sys" ;;
    esac
  done < <(LD_LIBRARY_PATH=$libpath ldd "$bin" | awk '/=>/ && $3 ~ /^\// {print $1, $3} !/=>/ && $1 ~ /^\// {print "ld", $1}')
  grep -q 'not found' < <(LD_LIBRARY_PATH=$libpath ldd "$bin") && idie "ldd $bin: some libraries were not found"
  sort -u -o "$sys" "$sys"; sort -u -o "$torch" "$torch"
  # The image gets the binary without its debug sections (symbols stay, so
  # a panic's backtrace still names functions): the release profile's line
  # tables are most of its size (the router: 101 MB with them, 12 MB without).
  local shipped="$IMG_CACHE/bin/$(basename "$bin")"
  mkdir -p "$IMG_CACHE/bin"
  objcopy --strip-debug "$bin" "$shipped.tmp" && mv -f "$shipped.tmp" "$shipped"
  printf '/usr/local/bin/%s %s 0755\n' "$(basename "$bin")" "$shipped" > "$IMG_CACHE/$name.app.spec"
}

for name in "${images[@]}"; do
  case "$name" in operator|trainer|predictor|router) ;; *) idie "unknown image $name (operator, trainer, predictor, router)" ;; esac
  bin="$TARGET/$PROFILE/hone-$name"
  [ -x "$bin" ] || idie "$bin not found: build it (cargo build --$PROFILE, or BUILD=1 $0)"
  layer_specs "$name" "$bin"
  # The router's image is small by design: a libtorch dependency is a bug.
  if [ "$name" = router ] && [ -s "$IMG_CACHE/$name.torch.spec" ]; then
    idie "$bin links libtorch; hone-router must not (it depends on no tch crate)"
  fi
  [ "$name" = predictor ] && onnxruntime_spec "$name"
  layers=("$base" "$IMG_CACHE/$name.sys.spec")
  env='"PATH=/usr/local/bin:/usr/bin:/bin"'
  if [ -s "$IMG_CACHE/$name.torch.spec" ]; then
    # The same file list (and so the same layer) for trainer and predictor.
    cat "$IMG_CACHE"/*.torch.spec 2>/dev/null | sort -u > "$IMG_CACHE/libtorch.spec.new"
    if cmp -s "$IMG_CACHE/libtorch.spec.new" "$IMG_CACHE/libtorch.spec"; then rm -f "$IMG_CACHE/libtorch.spec.new"
    else mv -f "$IMG_CACHE/libtorch.spec.new" "$IMG_CACHE/libtorch.spec"; fi
    layers+=("$IMG_CACHE/libtorch.spec")
    env+=',"LD_LIBRARY_PATH=/opt/libtorch/lib"'
  fi
  if [ "$name" = predictor ]; then
    layers+=("$IMG_CACHE/onnxruntime.spec")
    env+=",\"ORT_DYLIB_PATH=/opt/onnxruntime/$(basename "$(onnxruntime_lib)")\""
  fi
  layers+=("$IMG_CACHE/$name.app.spec")
  oci_image "$IMAGE_REGISTRY/$name:$TAG" \
    "{\"Entrypoint\":[\"/usr/local/bin/hone-$name\"],\"User\":\"$NONROOT_UID:$NONROOT_UID\",\"WorkingDir\":\"/tmp\",\"Env\":[$env]}" \
    "${layers[@]}"
done
ilog "done in $(( $(date +%s) - started ))s"
