# Hone: the front door. `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

include hack/versions.env

CARGO ?= cargo
# Every target that compiles tch runs under this environment: a venv with the
# torch wheel matching tch (created once, cached outside the work tree).
WITH_TORCH := eval "$$(hack/env.sh)" &&

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: setup
setup: ## Install what the build needs (Python venv with torch $(TORCH_VERSION))
	hack/setup-python.sh

.PHONY: setup-system
setup-system: ## Install the Debian packages the build and tests need (prometheus, chromium, libgloo-dev); a no-op when present
	hack/setup-system.sh

.PHONY: build
build: ## Build every crate (debug)
	$(WITH_TORCH) $(CARGO) build --workspace --all-targets

.PHONY: release
release: ## Build the binaries in release mode
	$(WITH_TORCH) $(CARGO) build --workspace --release --bins

.PHONY: unit-test
unit-test: ## Unit and integration tests of every crate (real training, MinIO and MLflow on loopback), no cluster needed
	$(WITH_TORCH) export HONE_MINIO_BIN="$$(hack/build-minio.sh | tail -n 1)" && \
	  $(CARGO) test --workspace --exclude hone-cluster-tests

FUZZ_SECONDS ?= 60
# The cargo-fuzz crates; FUZZ_TARGETS (every target of them by default) picks
# targets by name, each run in the crate that has it.
FUZZ_CRATES := predictor/fuzz router/fuzz
FUZZ_TARGETS ?= $(sort $(basename $(notdir $(wildcard $(FUZZ_CRATES:%=%/fuzz_targets/*.rs)))))
FUZZ_SOURCES = $(foreach t,$(FUZZ_TARGETS),$(or $(wildcard $(FUZZ_CRATES:%=%/fuzz_targets/$(t).rs)),$(error no fuzz target $(t) in $(FUZZ_CRATES))))

# The committed corpus only seeds a run: what libFuzzer finds goes to the
# first (scratch) folder, so the corpus in git never grows by itself. Only
# the predictor links libtorch.
.PHONY: fuzz
fuzz: ## Fuzz the predictor's decoders and the router's header and body handling on nightly, FUZZ_SECONDS (60) per target; crash reproducers land in <crate>/fuzz/artifacts/
	@cargo_fuzz=$$(hack/build-cargo-fuzz.sh | tail -n 1) && export PATH="$$(dirname "$$cargo_fuzz"):$$PATH" && \
	  $(if $(filter predictor/%,$(FUZZ_SOURCES)),$(WITH_TORCH)) \
	  for crate in $(sort $(patsubst %/fuzz_targets/,%,$(dir $(FUZZ_SOURCES)))); do \
	    (cd "$$crate" && $(CARGO) +nightly fuzz build); done && \
	  crashed= && for source in $(FUZZ_SOURCES); do \
	    crate=$${source%/fuzz_targets/*} && target=$$(basename "$$source" .rs) && \
	    echo "fuzz: $$crate $$target for $(FUZZ_SECONDS)s" && mkdir -p "$$crate/target/corpus/$$target" && \
	    (cd "$$crate" && $(CARGO) +nightly fuzz run "$$target" "target/corpus/$$target" "corpus/$$target" -- \
	      -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1) || crashed="$$crashed $$crate/artifacts/$$target/"; \
	  done && \
	  if [ -n "$$crashed" ]; then echo "fuzz: failed; reproducers in:$$crashed" >&2; exit 1; fi

.PHONY: cluster-test
cluster-test: ## Cluster tests in tests/ against whatever KUBECONFIG points at (runs the real hone-operator binary)
	$(WITH_TORCH) $(CARGO) build -p hone-operator -p kubectl-hone -p hone-router
	$(WITH_TORCH) export HONE_MINIO_BIN="$$(hack/build-minio.sh | tail -n 1)" && \
	  $(CARGO) test -p hone-cluster-tests -- --test-threads=4

.PHONY: test
test: setup-system lint chart-lint generate-check argocd-test rules-test unit-test ## Everything CI runs: lint, generated files, unit tests, then cluster tests on a local cluster
	hack/with-cluster.sh $(MAKE) --no-print-directory cluster-test

.PHONY: data
data: ## Export the datasets scikit-learn ships (digits ImageFolder, iris/wine/breast-cancer/diabetes CSV) to ./data
	$(WITH_TORCH) "$$HONE_VENV/bin/python" hack/export-datasets.py data

.PHONY: bench-trainer
bench-trainer: ## hone-trainer against the equivalent PyTorch loop, side by side (prints samples/s and the ratio)
	bench/trainer/run.sh

.PHONY: bench-predictor
bench-predictor: ## hone-predictor vs KServe vs FastAPI at concurrency 1/8/32/64, router overhead and split accuracy
	bench/predictor/run.sh

.PHONY: lint
lint: ## cargo fmt --check and clippy with warnings denied
	$(CARGO) fmt --all -- --check
	$(WITH_TORCH) $(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: chart-lint
chart-lint: ## helm lint --strict the chart (helm built once from its Go module) and check that a typo in values fails
	@helm=$$(hack/build-helm.sh | tail -n 1) && \
	  $$helm lint --strict charts/hone && \
	  $$helm template hone charts/hone --namespace hone-system >/dev/null && \
	  $$helm template hone charts/hone --namespace hone-system --set 'watchNamespaces={a,b}' >/dev/null && \
	  $$helm template hone charts/hone --set monitoring.enabled=true --set networkPolicy.enabled=true --api-versions monitoring.coreos.com/v1 >/dev/null && \
	  $$helm template hone charts/hone --set monitoring.enabled=true --set monitoring.force=true >/dev/null && \
	  $$helm template hone charts/hone --set mlflow.uri=http://mlflow.mlflow:5000 --set mlflow.credentialsSecret=mlflow-auth \
	    | grep -A4 'name: HONE_MLFLOW_TOKEN' | grep -q 'name: "mlflow-auth"' || \
	    { echo "chart-lint: mlflow.credentialsSecret did not reach HONE_MLFLOW_TOKEN" >&2; exit 1; } && \
	  if $$helm template hone charts/hone --set replicaCont=1 >/dev/null 2>&1; then \
	    echo "chart-lint: a misspelt value was accepted; values.schema.json must reject it" >&2; exit 1; fi && \
	  if $$helm template hone charts/hone --set mlflow.uri=file:///etc >/dev/null 2>&1; then \
	    echo "chart-lint: mlflow.uri accepted a non-http URL; values.schema.json must reject it" >&2; exit 1; fi

.PHONY: argocd-test
argocd-test: ## Argo CD health checks (config/argocd/health/*.lua) against their fixtures in gopher-lua, with the libraries Argo CD opens
	config/argocd/test/run.sh

.PHONY: rules-test
rules-test: ## promtool (built once from its Go module) checks the chart's Prometheus rules and runs their unit tests, and every dashboard query (charts/hone/tests/rules)
	@promtool=$$(hack/build-promtool.sh | tail -n 1) && charts/hone/tests/rules/run.sh "$$promtool"

.PHONY: install-plugin
install-plugin: ## Build kubectl-hone and install it on PATH (then: kubectl hone --help)
	$(CARGO) build --release -p kubectl-hone
	install -D -m 0755 $${CARGO_TARGET_DIR:-target}/release/kubectl-hone $${PREFIX:-$$HOME/.local}/bin/kubectl-hone

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: generate
generate: ## Write the CRD YAML into charts/hone/crds/ and config/crd/, the kustomize base and argocd-cm from the chart
	$(CARGO) run -q -p hone-crds --bin crdgen -- --out-dir charts/hone/crds
	$(CARGO) run -q -p hone-crds --bin crdgen -- --out-dir config/crd/bases
	hack/gen-kustomize.sh

.PHONY: generate-check
generate-check: ## Fail when the committed CRD YAML differs from what crdgen prints
	hack/check-generated.sh

.PHONY: cluster-build
cluster-build: ## Build (once, cached in ~/.cache/hone) etcd, the Kubernetes control plane, kubectl and KWOK from Go modules
	hack/cluster/build.sh

.PHONY: cluster-up
cluster-up: ## Start the local Kubernetes (etcd, apiserver, controllers, KWOK nodes); NODE=real adds a real node (containerd, kubelet, kube-proxy, CoreDNS)
	hack/cluster/up.sh

.PHONY: cluster-down
cluster-down: ## Stop exactly what cluster-up started and remove its state
	hack/cluster/down.sh

.PHONY: cluster-purge
cluster-purge: ## cluster-down, and also remove the real node's containerd image store
	hack/cluster/down.sh --purge

.PHONY: realnode-test
realnode-test: ## Tier 2 tests: a locally built image runs, a Service routes by DNS name, a Job completes (needs cluster-up NODE=real)
	$(WITH_TORCH) $(CARGO) test -p hone-cluster-tests --test realnode

.PHONY: demo
demo: ## The whole lifecycle on a local cluster with a real node: train, verify, serve, canary, automatic rollback (hack/demo/run.sh)
	hack/demo/run.sh

.PHONY: minikube-demo
minikube-demo: ## make demo on minikube (needs minikube and internet; cannot run on the build machine): start, load images, install, demo, Grafana with DEMO_GRAFANA=1
	hack/demo/minikube.sh

.PHONY: chaos
chaos: ## Faults on purpose on the cluster make demo left up: operator killed 10 times, training pod and predictor pod deleted
	hack/demo/chaos.sh

.PHONY: demo-byo
demo-byo: ## Bring-your-own PyTorch on the cluster make demo left up: examples/byo-pytorch's image, trained on 1 worker and on 2 under torchrun, registered and verified
	hack/demo/byo.sh

.PHONY: images
images: release ## Build the operator, trainer, predictor and router OCI images without Docker and import them into the real node's containerd
	hack/images/build.sh

.PHONY: clean
clean: ## Remove build outputs (keeps the caches under ~/.cache/hone)
	$(CARGO) clean
