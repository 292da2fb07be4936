#!/usr/bin/env bash
# Creates (once) a venv for the Python servers of the benchmark. It sees the
# build venv's torch through a .pth file, so torch is not installed twice and
# the build venv is left untouched. Prints the venv path on its last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
eval "$("$root/hack/env.sh")"
venv=${HONE_BENCH_VENV:-${HONE_CACHE:-$HOME/.cache/hone}/venv-bench-predictor}
reqs="$root/bench/predictor/requirements.txt"
want=$(sha256sum "$reqs" | cut -c1-16)
stamp="$venv/.hone-complete"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then echo "$venv"; exit 0; fi
py=$("$HONE_VENV/bin/python" -c 'import sys; print(f"python{sys.version_info.major}.{sys.version_info.minor}")')
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
echo "$HONE_VENV/lib/$py/site-packages" > "$venv/lib/$py/site-packages/hone-torch-venv.pth"
"$venv/bin/pip" install -q -r "$reqs" >&2
"$venv/bin/python" -c 'import kserve, fastapi, uvicorn, torch; print("bench venv ok, torch", torch.__version__)' >&2
echo "$want" > "$stamp"
echo "$venv"
