#!/usr/bin/env bash
# Runs the chart's Prometheus rules and dashboard queries through Prometheus's
# own rule engine (promtool, built by hack/build-promtool.sh):
#   - renders the PrometheusRule with helm (values.yaml's thresholds, as a
#     release gets them) and takes its spec: the rule file Prometheus loads;
#   - `promtool check rules` on it and on every dashboard query (prepare.py);
#   - `promtool test rules` on *.test.yaml here and on dashboard.test.yaml,
#     made from dashboard.test.yaml.in with the dashboard's own queries.
# Usage: run.sh [PROMTOOL]. Needs python3 (standard library only).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
chart="$root/charts/hone"
promtool=${1:-$("$root/hack/build-promtool.sh" | tail -n 1)}
helm=$("$root/hack/build-helm.sh" | tail -n 1)
command -v python3 >/dev/null || { echo "rules-test: python3 is not installed" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$helm" template hone "$chart" --set monitoring.enabled=true --api-versions monitoring.coreos.com/v1 \
  --show-only templates/prometheusrule.yaml >"$work/prometheusrule.yaml"
# spec is the PrometheusRule's last key; its `groups:` is a Prometheus rule file.
awk 'spec { sub(/^  /, ""); print } /^spec:$/ { spec = 1 }' "$work/prometheusrule.yaml" >"$work/hone.rules.yaml"
grep -q '^groups:' "$work/hone.rules.yaml" || { echo "rules-test: no spec.groups in the rendered PrometheusRule" >&2; exit 1; }

cp "$here"/*.test.yaml "$work/"
python3 "$here/prepare.py" --dashboard "$chart/files/dashboards/hone.json" \
  --template "$here/dashboard.test.yaml.in" --rules "$work/hone.rules.yaml" --out "$work"
"$promtool" check rules "$work/hone.rules.yaml" "$work/dashboard.rules.yaml"
(cd "$work" && "$promtool" test rules ./*.test.yaml)
cat "$work/summary"
