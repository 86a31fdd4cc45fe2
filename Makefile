# Climatik developer commands. `make test` and `make demo` set up everything they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help setup testenv-binaries prometheus test unit integration lint bench demo testenv clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev,plot]'
	touch $@

setup: $(BIN)/.installed testenv-binaries prometheus ## Virtualenv, kube-apiserver/etcd/kubectl builds, Prometheus

testenv-binaries: ## Build (once per version, cached) kube-apiserver, etcd and kubectl from their Go modules
	hack/build-testenv.sh

prometheus: ## Install the Prometheus server and promtool (Debian package) if missing
	hack/ensure-prometheus.sh

test: setup ## Unit, component, integration and end-to-end tests (starts its own servers)
	$(BIN)/pytest tests $(PYTEST_ARGS)

unit: $(BIN)/.installed ## Only the fast layers (no servers)
	$(BIN)/pytest tests/unit tests/component $(PYTEST_ARGS)

integration: setup ## Only the layers with real servers
	$(BIN)/pytest tests/integration tests/e2e $(PYTEST_ARGS)

lint: $(BIN)/.installed ## ruff, mypy and the import contract (layers)
	$(BIN)/ruff check climatik tests hack
	$(BIN)/mypy climatik
	$(BIN)/lint-imports --no-cache

bench: setup ## Benchmarks under hack/bench (prints tables)
	@for b in hack/bench/*/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

demo: setup ## The whole loop locally on simulated GPU nodes: live line, summary, out/demo/climatik-demo.png
	$(BIN)/python hack/demo.py $(DEMO_ARGS)

testenv: setup ## Run a kube-apiserver + etcd with the CRDs by hand; prints its kubeconfig
	$(BIN)/python hack/testenv.py

clean: ## Remove the virtualenv and local outputs (the binary cache stays)
	rm -rf $(VENV) out build dist *.egg-info
