#!/usr/bin/env bash
# Installs the Debian packages the build and tests need (once; a no-op when present):
#   prometheus  a real Prometheus scraping a predictor and a router
#               (predictor/tests/prometheus.rs)
#   chromium, chromium-driver  the predictor's web page in headless Chromium
#               (predictor/tests/webui.rs)
#   libgloo-dev Gloo's headers, which the torch wheel lacks: hone-dist's c10d
#               shim includes ProcessGroupGloo.hpp (dist/build.rs)
# The real-node cluster's own packages (containerd, runc, CNI plugins,
# iptables) are installed by hack/cluster/build.sh when NODE=real.
set -euo pipefail
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
[ -e /usr/include/gloo/config.h ] || need+=(libgloo-dev)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "setup-system: missing ${need[*]}; run as root or: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "setup-system: installing ${need[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian package starts a Prometheus service on :9090 where an init
# system runs; the tests start their own, so stop it when it is running.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi
