# strongmesh — `make demo` runs the lab, `make test` runs every test tier.
# Both set up what they need on a fresh machine: Debian packages (as root) and a virtualenv.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: help venv system-deps lint typecheck test test-unit test-api test-integration test-lab demo crds bench clean

help:
	@echo "make demo   - boot the kernel lab (3 nodes, examples/) and print the report"
	@echo "make test   - lint, type check, unit + API + integration + lab tests"
	@echo "              (tiers alone: test-unit, test-api, test-integration, test-lab)"
	@echo "make crds   - regenerate crds/ from controller/models"
	@echo "make bench  - run the benchmarks in hack/ and print their figures"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP)

system-deps:
	hack/install-system-deps

lint: venv
	$(VENV)/bin/ruff check controller tests hack hack/gen-crds hack/lab hack/make-certs
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile
	$(PY) hack/gen-crds --check

typecheck: venv
	$(VENV)/bin/mypy controller tests hack/gen-crds

crds: venv
	$(PY) hack/gen-crds

test-unit: venv
	$(VENV)/bin/pytest -q tests/unit

test-api: venv
	$(VENV)/bin/pytest -q tests/api

test-integration: venv system-deps
	$(VENV)/bin/pytest -q tests/integration

test-lab: venv system-deps
	$(VENV)/bin/pytest -q tests/lab

test: venv system-deps lint typecheck
	$(VENV)/bin/pytest -q tests

demo: venv system-deps
	$(PY) hack/lab demo

bench: venv system-deps
	$(PY) hack/bench-lab --mode standalone
	$(PY) hack/bench-lab --mode cluster
	$(PY) hack/bench-agent

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
