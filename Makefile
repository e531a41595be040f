# regsync developer and CI entry points. `make test` is what .ci/run calls.
SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Debian packages the tests and demo need; the binary list says which to probe for.
# Later work adds to both lists.
SYSTEM_PACKAGES ?= docker-registry skopeo prometheus docker-compose systemd
SYSTEM_BINARIES ?= docker-registry skopeo promtool docker-compose systemd-analyze
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# xdist workers: 2 cores; registries are subprocesses so a worker per core is enough.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=

.PHONY: venv system-deps test lint typecheck pytest demo bench soak clean deploy-sync mutate \
	image image-deps image-test lock

venv: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install only when pyproject.toml changed since the last install.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

system-deps:
	@missing=""; \
	for b in $(SYSTEM_BINARIES); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
		echo "missing:$$missing; installing $(SYSTEM_PACKAGES)"; \
		$(SUDO) apt-get update && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $(SYSTEM_PACKAGES); \
	fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# pyproject's mypy config covers the package; the test support code and scripts are checked
# with the same (strict) settings on top.
TYPECHECK_EXTRA ?= tests/support tests/conftest.py tests/test_support.py scripts/demo.py \
	scripts/sync_deploy.py bench

typecheck: venv
	$(BIN)/mypy
	$(BIN)/mypy --explicit-package-bases $(TYPECHECK_EXTRA)

pytest: venv system-deps
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test: lint typecheck pytest

demo: venv system-deps
	$(BIN)/python scripts/demo.py

bench: venv system-deps
	@if [ -f bench/run.py ]; then $(BIN)/python bench/run.py; else echo "bench/run.py not present yet"; fi

# The Kubernetes PrometheusRule is generated from deploy/prometheus/regsync-alerts.yml.
deploy-sync: venv
	$(BIN)/python scripts/sync_deploy.py

# The container image (scripts/image.sh says how and why). `make image` builds it with Docker
# where a daemon answers, else with buildah; `make image-test` (.ci/run, after `make test`)
# builds it on a stand-in base made from Debian packages and smoke-tests it (~2-3 minutes).
IMAGE_PACKAGES ?= buildah podman mmdebstrap runc
IMAGE_BINARIES ?= buildah podman mmdebstrap runc

image-deps:
	@$(MAKE) --no-print-directory system-deps \
		SYSTEM_PACKAGES="$(IMAGE_PACKAGES)" SYSTEM_BINARIES="$(IMAGE_BINARIES)"

image:
	@if command -v docker >/dev/null && docker info >/dev/null 2>&1; then :; \
	else $(MAKE) --no-print-directory image-deps; fi
	scripts/image.sh build

image-test: venv system-deps image-deps
	scripts/image.sh test

# requirements.lock: every dependency of pyproject.toml (and the build backend) pinned with
# hashes, for the image's `pip install --require-hashes`. Resolved against PyPI alone (no local
# pip.conf, find-links or extra index), with the Python the image uses.
PIP_TOOLS ?= pip-tools==7.7.0
lock: venv
	$(BIN)/python -m pip install --quiet '$(PIP_TOOLS)'
	env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL PIP_CONFIG_FILE=/dev/null \
		$(BIN)/pip-compile --quiet --upgrade --generate-hashes --allow-unsafe --strip-extras \
		--all-build-deps --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
		--output-file requirements.lock pyproject.toml

# Not part of `make test`: 500 tags through fault-injecting proxies (a few minutes).
soak: venv system-deps
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

# Not part of `make test`: mutation testing of the safety rails (mutation.toml), module by
# module under `nice`; `make mutate MODULE=tagdelete` runs one. Exits 1 under the target.
MODULE ?=
mutate: venv
	$(BIN)/python -m pip install --quiet -e '.[test,mutate]'
	$(BIN)/python scripts/mutate.py $(MODULE)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info .demo .mutate
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
