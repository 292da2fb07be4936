#!/usr/bin/env bash
# Prints the environment a build with tch needs, for `eval "$(hack/env.sh)"`.
# Creates the Python venv with the matching torch wheel on first use.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=$("$here/setup-python.sh" | tail -n 1)
torch_lib=$("$venv/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
# ONNX Runtime's shared library from the onnxruntime wheel, which the predictor
# loads at run time for ONNX models (ort's load-dynamic reads ORT_DYLIB_PATH).
ort_lib=$("$venv/bin/python" -c 'import glob, os, onnxruntime; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so.*")))[-1])')
cat <<ENV
export HONE_VENV='$venv'
export LIBTORCH_USE_PYTORCH=1
export PATH='$venv/bin':"\$PATH"
export ORT_DYLIB_PATH='$ort_lib'
export LD_LIBRARY_PATH='$torch_lib'"\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
