# strongmesh — `make demo` runs the lab, `make test` runs every test tier.
# Both set up what they need on a fresh machine: Debian packages (as root) and a virtualenv.

PYTHON ?= python3
# Go's usual install location, for shells whose PATH lacks it (Go builds the control plane)
export PATH := $(PATH):/usr/local/go/bin
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
LOCK   := requirements/dev.txt
# `make lock` only: the tool that writes the locks (pip alone installs from them)
UV_VERSION := 0.13.8

.PHONY: help venv system-deps control-plane lint typecheck test test-unit test-api test-integration test-lab \
        test-latest lock lock-upgrade demo crds bench clean image test-image

help:
	@echo "make demo   - boot the kernel lab (3 nodes, examples/) and print the report"
	@echo "make test   - lint, type check, unit + API + integration + lab + image tests"
	@echo "              (tiers alone: test-unit, test-api, test-integration, test-lab)"
	@echo "make crds   - regenerate crds/ from controller/models"
	@echo "make bench  - run the benchmarks in hack/ and print their figures"
	@echo "make image  - build localhost/strongmesh:<version> with buildah (hack/build-image, no registry)"
	@echo "              make test-image builds it and runs its entry points (make test runs it too)"
	@echo "make test-latest - unit + API tiers on the newest versions pyproject.toml allows"
	@echo "make lock   - rewrite requirements/*.txt after a change to pyproject.toml"
	@echo "make lock-upgrade - move the lock to the newest versions (after test-latest passes)"

# The virtualenv holds exactly the lock: every package pinned and its hash checked, the project
# itself installed without build isolation (its build backend, setuptools, is in the lock).
$(STAMP): $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check --require-hashes --no-deps -r $(LOCK)
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(VENV)/bin/pip check
	touch $@

venv: $(STAMP)

# The locks: requirements/dev.txt (runtime + dev + build backend; what make installs),
# requirements/runtime.txt and requirements/build.txt (what the image installs and builds
# with), the last two constrained to dev.txt's versions.
LOCK_COMPILE = .tools/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-unknown-linux-gnu --custom-compile-command 'make lock'

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

lock: .tools/bin/uv
	$(LOCK_COMPILE) $(LOCK_ARGS) pyproject.toml requirements/build.in --extra dev -o $(LOCK)
	$(LOCK_COMPILE) $(LOCK_ARGS) pyproject.toml -c $(LOCK) -o requirements/runtime.txt
	$(LOCK_COMPILE) $(LOCK_ARGS) requirements/build.in -c $(LOCK) -o requirements/build.txt

lock-upgrade:
	$(MAKE) lock LOCK_ARGS=--upgrade

# Newest releases, met on purpose: a separate virtualenv resolved from pyproject.toml's ranges
# (not the lock), then the unit and API tiers. It prints what differs from the lock first.
VENV_LATEST := .venv-latest
test-latest: control-plane
	rm -rf $(VENV_LATEST)
	$(PYTHON) -m venv $(VENV_LATEST)
	$(VENV_LATEST)/bin/pip install -q --disable-pip-version-check --upgrade pip setuptools
	$(VENV_LATEST)/bin/pip install -q --disable-pip-version-check --upgrade \
		--upgrade-strategy eager -e '.[dev]'
	$(VENV_LATEST)/bin/python hack/lock-drift $(LOCK)
	$(VENV_LATEST)/bin/pytest -q -p no:cacheprovider tests/unit tests/api

system-deps:
	hack/install-system-deps

# kube-apiserver, kubectl and etcd from the Go modules pinned in hack/kube (cached after the
# first build, which takes minutes and prints its progress)
control-plane: venv
	$(PY) hack/control-plane build

lint: venv
	$(VENV)/bin/ruff check controller tests hack hack/gen-crds hack/lab hack/make-certs hack/lock-drift hack/bench-pass
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile
	$(PY) hack/gen-crds --check

typecheck: venv
	$(VENV)/bin/mypy controller tests hack/gen-crds hack/labkit
	$(VENV)/bin/mypy hack/bench-pass

crds: venv
	$(PY) hack/gen-crds

test-unit: venv
	$(VENV)/bin/pytest -q tests/unit

test-api: venv control-plane
	$(VENV)/bin/pytest -q tests/api

test-integration: venv system-deps
	$(VENV)/bin/pytest -q tests/integration

test-lab: venv system-deps control-plane
	$(VENV)/bin/pytest -q tests/lab

# The image tier: builds the image with hack/build-image if it is missing or out of date.
test-image: venv system-deps
	$(VENV)/bin/pytest -q tests/image

test: venv system-deps control-plane lint typecheck
	$(VENV)/bin/pytest -q tests

demo: venv system-deps control-plane
	$(PY) hack/lab demo

image:
	hack/build-image

bench: venv system-deps control-plane
	$(PY) hack/bench-lab
	$(PY) hack/bench-agent
	$(PY) hack/bench-pass

clean:
	rm -rf $(VENV) $(VENV_LATEST) .tools .mypy_cache .ruff_cache .pytest_cache
