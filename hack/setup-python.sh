#!/usr/bin/env bash
# Creates (once) the Python virtualenv that provides libtorch for the tch crate
# and the Python tools the tests and data scripts use. The venv lives outside
# the work tree, keyed by the torch version, so a machine that comes back
# reuses it. Prints the venv path on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${HONE_CACHE:-$HOME/.cache/hone}
venv="$cache/venv-torch-$TORCH_VERSION"
stamp="$venv/.hone-complete"
reqs="$here/requirements.txt"
want=$(sha256sum "$reqs" | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$venv"; exit 0
fi
py=${PYTHON:-python3}
mkdir -p "$cache"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv" >&2
"$venv/bin/python" -m pip install -q --upgrade pip >&2
"$venv/bin/python" -m pip install -q "torch==$TORCH_VERSION" -r "$reqs" >&2
"$venv/bin/python" -c 'import torch; print("torch", torch.__version__, "ok")' >&2
echo "$want" > "$stamp"
echo "$venv"
