#!/usr/bin/env bash
# Tests the Argo CD health checks (config/argocd/health/*.lua) in Lua 5.1, the
# language of Argo CD's gopher-lua, against the fixtures in cases.lua, and that
# config/argocd/argocd-cm.yaml embeds them exactly. Needs `lua5.1` (Debian
# package lua5.1). Last line: "N passed, N failed"; non-zero exit on failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lua=$(command -v lua5.1 || true)
if [ -z "$lua" ]; then
  echo "argocd test: lua5.1 is not installed (apt-get install lua5.1)" >&2
  exit 1
fi
exec "$lua" "$here/run.lua" "$(dirname "$here")"
