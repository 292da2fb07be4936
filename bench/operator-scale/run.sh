#!/usr/bin/env bash
# Operator at scale: N TrainingJobs and N InferenceServices (default 500 each)
# applied at once on the tier 1 cluster (started if none is up); prints p50/p99
# from apply to children created, and the operator's peak RSS and CPU seconds.
#
#   bench/operator-scale/run.sh [N]
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-500}
eval "$(hack/env.sh)"
cargo build -q --release -p hone-operator -p hone-cluster-tests --bin hone-operator --bin operator-scale
if [[ -z "${KUBECONFIG:-}" ]]; then
  make -s cluster-up >/dev/null
  export KUBECONFIG=${HONE_CLUSTER_DIR:-/tmp/hone-cluster}/kubeconfig
fi
target=${CARGO_TARGET_DIR:-target}
HONE_OPERATOR_BIN="$target/release/hone-operator" "$target/release/operator-scale" "$n"
