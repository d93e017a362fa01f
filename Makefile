# Everything a fresh machine needs is installed by these targets; each is safe to run again.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install sandbox-runtime broker-jars system-deps k8s-tools asyncapi-tools mlflow-server demo test test-unit check lint typecheck bench clean

help:
	@echo "make demo   - start a broker, simulated LM and workers, run an evaluation through Kafka"
	@echo "make test   - install everything and run the whole test suite against a real broker"
	@echo "make check  - ruff and mypy"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP) sandbox-runtime

# Deno's npm:pyodide cached once in ~/.cache/dspex/deno for the offline code sandbox; a no-op when present.
sandbox-runtime: $(STAMP)
	$(BIN)/python -m dspex.sandbox.install

# Apache Kafka's jars from Maven Central, copied once into the cache folder.
broker-jars: install
	$(BIN)/dspex dev broker fetch

# Debian's Prometheus (+ promtool) and Chromium for the observability tests; skipped when present.
system-deps:
	bash infra/ci/install-system-deps.sh

# Helm (built once from the Go module proxy) and the KEDA and prometheus-operator models with their
# schemas (npm), in the cache folder, for tests/infra; each skipped when present at its version.
HELM_VERSION := v4.3.2
K8S_TOOLS    := $(HOME)/.cache/dspex
K8S_MODELS   := @kubernetes-models/keda@2.0.0 @kubernetes-models/prometheus-operator@6.0.0
K8S_STAMP    := $(K8S_TOOLS)/npm/k8s-models/.installed-keda-2.0.0-prometheus-operator-6.0.0
k8s-tools:
	go version -m $(K8S_TOOLS)/bin/helm 2>/dev/null | grep -q 'helm.sh/helm/v4[[:space:]]*$(HELM_VERSION)' \
		|| GOBIN=$(K8S_TOOLS)/bin go install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)
	test -f $(K8S_STAMP) || { \
		npm install --prefix $(K8S_TOOLS)/npm/k8s-models --save-exact --no-audit --no-fund --loglevel=error $(K8S_MODELS) \
		&& touch $(K8S_STAMP); }

# @asyncapi/parser (npm) in the cache folder, for the check of docs/asyncapi.yaml; skipped when present.
ASYNCAPI_PARSER := @asyncapi/parser@3.6.6
ASYNCAPI_DIR    := $(HOME)/.cache/dspex/npm/asyncapi
ASYNCAPI_STAMP  := $(ASYNCAPI_DIR)/.installed-parser-3.6.6
asyncapi-tools:
	test -f $(ASYNCAPI_STAMP) || { \
		npm install --prefix $(ASYNCAPI_DIR) --save-exact --no-audit --no-fund --loglevel=error $(ASYNCAPI_PARSER) \
		&& touch $(ASYNCAPI_STAMP); }

# The MLflow tracking server of the tests, in its own virtual environment in the cache folder
# (dspex's client side is the mlflow extra, mlflow-skinny of the same version); skipped when present.
MLFLOW_VERSION := 3.17.2
MLFLOW_VENV    := $(HOME)/.cache/dspex/mlflow
MLFLOW_STAMP   := $(MLFLOW_VENV)/.installed-mlflow-$(MLFLOW_VERSION)
mlflow-server:
	test -f $(MLFLOW_STAMP) || { \
		rm -rf $(MLFLOW_VENV) && $(PYTHON) -m venv $(MLFLOW_VENV) \
		&& $(MLFLOW_VENV)/bin/python -m pip install -q 'mlflow==$(MLFLOW_VERSION)' \
		&& touch $(MLFLOW_STAMP); }

demo: broker-jars
	$(BIN)/dspex demo

test: broker-jars system-deps k8s-tools asyncapi-tools mlflow-server
	CI=$${CI:-} $(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

check: install
	$(BIN)/ruff check dspex tests bench examples scripts
	$(BIN)/ruff format --check dspex tests bench examples scripts
	$(BIN)/mypy

bench: broker-jars
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
