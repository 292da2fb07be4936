#!/usr/bin/env bash
# Prints the environment a build with tch needs, for `eval "$(hack/env.sh)"`.
# Creates the Python venv with the matching torch wheel on first use.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=$("$here/setup-python.sh" | tail -n 1)
torch_lib=$("$venv/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
cat <<ENV
export HONE_VENV='$venv'
export LIBTORCH_USE_PYTORCH=1
export PATH='$venv/bin':"\$PATH"
export LD_LIBRARY_PATH='$torch_lib'"\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
