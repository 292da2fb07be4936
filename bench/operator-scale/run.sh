#!/usr/bin/env bash
# Operator at scale: N TrainingJobs and N InferenceServices (default 500 each)
# applied at once on the tier 1 cluster (started if none is up), after a
# calibration phase in which the bench creates N plain Deployments itself and
# times kube-controller-manager's Deployment -> ReplicaSet. Prints p50/p99 from
# apply to children, the ratio to kcm, reconciles per object, the operator's
# LIST calls (burst, settle, steady), its peak RSS and CPU seconds, and each of
# issue 19's aims as met or missed. Exits 0 when every object got its children.
#
#   bench/operator-scale/run.sh [N]
#
# Environment:
#   HONE_OPERATOR_BIN       operator binary to measure (default: this tree's
#                           release build, built here)
#   HONE_SCALE_CONCURRENCY  creates in flight (default 32)
#   HONE_SCALE_DEADLINE_S   per phase (default max(600, 300 + 0.6 N))
#   HONE_SCALE_SETTLE_S     window after the last child appeared (default 30)
#   HONE_SCALE_STEADY_S     steady-state window after that (default 30)
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-500}
eval "$(hack/env.sh)"
target=${CARGO_TARGET_DIR:-target}
if [[ -z "${HONE_OPERATOR_BIN:-}" ]]; then
  cargo build -q --release -p hone-operator --bin hone-operator
  HONE_OPERATOR_BIN="$target/release/hone-operator"
fi
cargo build -q --release -p hone-cluster-tests --bin operator-scale
if [[ -z "${KUBECONFIG:-}" ]]; then
  make -s cluster-up >/dev/null
  export KUBECONFIG=${HONE_CLUSTER_DIR:-/tmp/hone-cluster}/kubeconfig
fi
HONE_OPERATOR_BIN=$(realpath "$HONE_OPERATOR_BIN")
export HONE_OPERATOR_BIN
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); bench at $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- tests/src/bin/operator-scale.rs || echo '+local changes')"
echo "operator binary: $HONE_OPERATOR_BIN (sha256 $(sha256sum "$HONE_OPERATOR_BIN" | cut -c1-16), built $(date -u -r "$HONE_OPERATOR_BIN" +%Y-%m-%dT%H:%M:%SZ))"
echo "machine: $(nproc) CPUs; load before: $(uptime)"
status=0
"$target/release/operator-scale" "$n" || status=$?
echo "load after: $(uptime)"
exit "$status"
