# Everything a fresh machine needs is installed by these targets; each is safe to run again.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install sandbox-runtime broker-jars system-deps demo test test-unit check lint typecheck bench clean

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

demo: broker-jars
	$(BIN)/dspex demo

test: broker-jars system-deps
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
