#!/usr/bin/env bash
# `make minikube-demo`: the demo of hack/demo/run.sh on minikube, for a
# machine with minikube and internet access (it cannot run on the machine
# Hone is built on, which has neither; there `make demo` runs everything
# below except the minikube commands, on the local real-node cluster).
#
#   1. minikube start (containerd runtime, 4 CPUs, 8 GiB)
#   2. make images (OCI archives, no Docker needed) and minikube image load
#   3-9. hack/demo/run.sh with DEMO_CLUSTER=current: helm install, MinIO,
#      the samples, predictions through the router, canary, automatic rollback
#   then (DEMO_GRAFANA=1) kube-prometheus-stack with the chart's
#   ServiceMonitor, PodMonitors, rules and dashboard, and a port-forward to
#   Grafana.
#
# Environment: MINIKUBE_PROFILE (default hone), DEMO_GRAFANA=1, and the
# DEMO_* variables of hack/demo/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
. hack/versions.env
PROFILE=${MINIKUBE_PROFILE:-hone}
HONE_CACHE=${HONE_CACHE:-$HOME/.cache/hone}
command -v minikube >/dev/null || { echo "minikube is not installed (https://minikube.sigs.k8s.io)" >&2; exit 2; }
command -v kubectl >/dev/null || { echo "kubectl is not on PATH" >&2; exit 2; }

echo "== 1/8 minikube start (profile $PROFILE)"
minikube start -p "$PROFILE" --container-runtime=containerd --cpus=4 --memory=8g \
  --kubernetes-version="v$KUBE_VERSION"
minikube -p "$PROFILE" addons enable metrics-server
export KUBECONFIG=${KUBECONFIG:-$HOME/.kube/config}
kubectl config use-context "$PROFILE"

echo "== 2/8 images: build (no Docker) and load into minikube"
make release
hack/images/build.sh
hack/images/minio.sh
for archive in operator_dev predictor_dev router_dev trainer_dev "minio_$MINIO_VERSION"; do
  minikube -p "$PROFILE" image load "$HONE_CACHE/images/archives/$archive.tar"
done

DEMO_CLUSTER=current DEMO_VALUES=hack/demo/values-minikube.yaml hack/demo/run.sh

if [ "${DEMO_GRAFANA:-0}" = 1 ]; then
  echo "== Prometheus and Grafana (kube-prometheus-stack), Hone's monitors, rules and dashboard"
  helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null
  helm upgrade --install monitoring prometheus-community/kube-prometheus-stack -n monitoring --create-namespace \
    --set grafana.sidecar.dashboards.enabled=true --set grafana.sidecar.dashboards.searchNamespace=ALL \
    --set prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues=false \
    --set prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValues=false \
    --set prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues=false --wait
  helm upgrade hone charts/hone -n hone-system --reuse-values --set monitoring.enabled=true
  echo "Grafana: kubectl -n monitoring port-forward svc/monitoring-grafana 3000:80, then http://localhost:3000"
  echo "(user admin; password: kubectl -n monitoring get secret monitoring-grafana -o jsonpath='{.data.admin-password}' | base64 -d)"
  echo "Dashboard: Hone. Keep traffic flowing with:"
  echo "  kubectl -n hone-demo port-forward svc/digits-router 18080:8080 &"
  echo "  python3 hack/demo/client.py load http://127.0.0.1:18080 \$HOME/.cache/hone/demo-data/digits-holdout /tmp/load.jsonl"
fi
