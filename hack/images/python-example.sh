#!/usr/bin/env bash
# Builds hone.local/EXAMPLE:TAG, the image of examples/EXAMPLE (a Python
# training script), without a container daemon, and imports it into the
# real node's containerd when it runs. Plain Python, nothing of Hone's:
#   base          user 65532, /tmp, CA certificates (shared with every image)
#   python        the venv's interpreter, its standard library, libpython and
#                 the system libraries ldd finds for everything below
#   packages      the example's distributions and what pip installed for them:
#                 $EXAMPLE: torch (the same wheel tch links), boto3, Pillow,
#                   numpy, onnx (torch.onnx.export, for BYO_EXPORT_ONNX=1), less
#                   triton (torch.compile's GPU compiler, 720 MB): PyPI's torch
#                   is the CUDA build, so most of its 4 GB is CUDA;
#                 sklearn-tabular: scikit-learn, skl2onnx, onnx, numpy, boto3
#   app           /app/train.py and /app/hone_contract.py (examples/common)
# hack/images/pyimage.py picks the files from the packages' metadata and from
# what importing the script's modules in the venv loads. Layers are cached by
# content, so only the first build (and import) pays for the big layer.
#
# Usage: hack/images/python-example.sh $EXAMPLE|sklearn-tabular   (TAG=dev by default)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

EXAMPLE=${1:-}
case "$EXAMPLE" in
  byo-pytorch)
    distributions=torch,boto3,pillow,numpy,onnx exclude=triton
    modules=torch,torch.distributed,torch.nn.parallel,torch.utils.data,boto3,PIL.Image
    warm='import torch; torch.jit.script(torch.nn.Linear(2, 2))' ;;
  sklearn-tabular)
    distributions=scikit-learn,skl2onnx,onnx,numpy,boto3 exclude=
    modules=sklearn.pipeline,sklearn.preprocessing,sklearn.linear_model,skl2onnx,onnx,numpy,boto3
    warm='import numpy; from sklearn.linear_model import LogisticRegression; LogisticRegression().fit(numpy.eye(2), [0, 1])' ;;
  *) idie "usage: $0 byo-pytorch|sklearn-tabular" ;;
esac
TAG=${TAG:-dev}
started=$(date +%s)
envs=$("$REPO_ROOT/hack/env.sh") || idie "hack/env.sh failed (run hack/setup-python.sh)"
eval "$envs"
[ -x "$HONE_VENV/bin/python" ] || idie "no venv python at $HONE_VENV/bin/python"
mkdir -p "$IMG_CACHE/$EXAMPLE"
base=$(base_layer_spec)
# The specs depend only on the venv (its requirements stamp) and pyimage.py:
# reused while neither changed (pyimage.py runs ldd on every library: ~80 s).
spec_dir="$IMG_CACHE/$EXAMPLE"
key=$(cat "$HONE_VENV/.hone-complete" "$IMAGES_HACK/pyimage.py" "${BASH_SOURCE[0]}" 2>/dev/null | sha256sum | cut -c1-16)
if [ "$(cat "$spec_dir/key" 2>/dev/null)" = "$key" ] && [ -s "$spec_dir/env.json" ]; then
  ilog "layer specs unchanged (key $key)"
else
  "$HONE_VENV/bin/python" "$IMAGES_HACK/pyimage.py" --spec-dir "$spec_dir" \
    --distributions "$distributions" ${exclude:+--exclude-distributions "$exclude"} \
    --modules "$modules" --warm "$warm" > "$spec_dir/env.json" || idie "pyimage.py failed"
  echo "$key" > "$spec_dir/key"
fi
image_env=$(cat "$spec_dir/env.json")
printf '/app/train.py %s 0644\n/app/hone_contract.py %s 0644\n' "$REPO_ROOT/examples/$EXAMPLE/train.py" \
  "$REPO_ROOT/examples/common/hone_contract.py" > "$IMG_CACHE/$EXAMPLE/app.spec"
config=$(python3 -c '
import json, sys
env = json.loads(sys.argv[1])
print(json.dumps({"Entrypoint": ["/opt/python/bin/python3", "/app/train.py"], "User": sys.argv[2] + ":" + sys.argv[2],
                  "WorkingDir": "/tmp", "Env": [f"{k}={v}" for k, v in env.items()]}))' "$image_env" "$NONROOT_UID")
oci_image "$IMAGE_REGISTRY/$EXAMPLE:$TAG" "$config" "$base" \
  "$IMG_CACHE/$EXAMPLE/python.spec" "$IMG_CACHE/$EXAMPLE/packages.spec" "$IMG_CACHE/$EXAMPLE/app.spec"
# The archive of a first import holds a copy of the packages layer;
# containerd and the blob cache have it now.
if have_containerd; then rm -f "$IMG_CACHE/archives/${EXAMPLE}_$TAG.tar"; fi
ilog "done in $(( $(date +%s) - started ))s"
