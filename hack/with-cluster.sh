#!/usr/bin/env bash
# Runs a command against a cluster. With KUBECONFIG already set (minikube,
# kind, a running local cluster), uses it as is. Otherwise brings the local
# cluster up, runs the command with its KUBECONFIG, and brings it down again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${KUBECONFIG:-}" ]; then
  echo "with-cluster: using KUBECONFIG=$KUBECONFIG" >&2
  exec "$@"
fi
"$here/cluster/up.sh"
export KUBECONFIG="${HONE_CLUSTER_DIR:-/tmp/hone-cluster}/kubeconfig"
status=0
"$@" || status=$?
"$here/cluster/down.sh" || echo "with-cluster: cluster-down failed" >&2
exit $status
