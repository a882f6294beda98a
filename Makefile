# trainpipe developer entry points. `make run` and `make test` work on a fresh
# machine: they create the virtual environment and install what the tests start.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/digits
PYTEST_ARGS ?=

.PHONY: venv run test unit integration lint typecheck bench system-deps envtest dev-up dev-down clean

# The venv is rebuilt when pyproject.toml changes. torch==2.14.1 and
# torchvision==0.29.1 lie on these machines' disk; elsewhere pip resolves the
# ranges in pyproject.toml as usual.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[trainer,dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Debian's prometheus (the real server the integration tests scrape with).
system-deps:
	@command -v prometheus >/dev/null || { \
	  echo "installing Debian's prometheus package"; \
	  apt-get install -y -q prometheus >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q prometheus >/dev/null; }; }

# kube-apiserver + etcd for the integration tests and the dev cluster
# (KUBEBUILDER_ASSETS, else a cached build from Debian's sources; once).
envtest:
	@hack/envtest.sh

# The dev cluster (etcd + kube-apiserver, Ray head, Prometheus) in .dev/.
dev-up:
	@hack/dev-cluster.sh up

dev-down:
	@hack/dev-cluster.sh down

run: venv
	$(BIN)/trainpipe run examples/digits.yaml --run-dir $(RUN_DIR)

test: venv system-deps envtest lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: venv system-deps envtest
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check operator trainer tests bench

typecheck: venv
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/engine_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
