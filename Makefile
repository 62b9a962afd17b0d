# Developer entry points. `make run` serves a simulated fleet; `make test` runs every check CI runs.
# Works from a fresh Debian with only python3: the virtualenv and the system packages the tests
# need are set up on first use (with apt-get when run as root, otherwise with advice).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Inside the venv, so that deleting .venv also forgets the install.
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
ARGS ?=
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends
IS_ROOT_WITH_APT = [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1

.DEFAULT_GOAL := help
.PHONY: help venv run test deps lint fmt typecheck pytest screenshots

help:
	@echo "make run        serve a simulated fleet on 127.0.0.1:9945 (extra flags: ARGS='--listen :9100')"
	@echo "make test       lint, format check, type check and all tests, as CI runs them"
	@echo "make venv       create $(VENV) and install the project with its dev tools"
	@echo "make deps       install Debian's prometheus, alertmanager, victoria-metrics (as root)"
	@echo "make lint       ruff check and ruff format --check"
	@echo "make fmt        ruff format and ruff check --fix"
	@echo "make screenshots  the landing page in Chromium, in each tested state, into docs/"

venv: $(STAMP)

# Reinstall when pyproject.toml changes; (re)create the venv only when it is missing or has no
# pip, so a working developer venv is never thrown away.
$(STAMP): pyproject.toml
	@if ! $(BIN)/python -m pip --version >/dev/null 2>&1; then \
	  rm -rf $(VENV); \
	  if ! $(PYTHON) -m venv $(VENV); then \
	    rm -rf $(VENV); \
	    if $(IS_ROOT_WITH_APT); then \
	      echo "$(PYTHON) -m venv failed: installing python3-venv"; \
	      apt-get update -q && $(APT_INSTALL) python3-venv && $(PYTHON) -m venv $(VENV); \
	    else \
	      echo "$(PYTHON) -m venv failed: install python3-venv (sudo apt-get install python3-venv)"; \
	      exit 1; \
	    fi; \
	  fi; \
	fi
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

run: venv
	$(BIN)/migexporter --simulate --listen 127.0.0.1:9945 $(ARGS)

# Debian's prometheus, prometheus-alertmanager, kubernetes-client, victoria-metrics and chromium:
# the tests scrape the exporter with a real Prometheus, page through a real Alertmanager, render
# the kustomize base, run the rules and dashboards on VictoriaMetrics (vmagent, vmalert) and load
# the landing page in headless Chromium, and fail (never skip) without them.
deps:
	@missing=""; \
	command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ] || missing="prometheus"; \
	command -v amtool >/dev/null 2>&1 || missing="$$missing prometheus-alertmanager"; \
	command -v kubectl >/dev/null 2>&1 || missing="$$missing kubernetes-client"; \
	command -v victoria-metrics >/dev/null 2>&1 || missing="$$missing victoria-metrics"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then \
	  :; \
	elif $(IS_ROOT_WITH_APT); then \
	  echo "installing Debian's$$missing for the integration tests"; \
	  apt-get update -q && $(APT_INSTALL) $$missing; \
	else \
	  echo "the integration tests need:$$missing (sudo apt-get install --no-install-recommends$$missing)"; \
	fi

# -k: one failing check does not hide the others; make still exits non-zero if any failed.
test: venv deps
	@$(MAKE) --no-print-directory -k lint typecheck pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: venv
	$(BIN)/mypy src

# The browser tests copy their screenshots to docs/; the README shows the incident one.
screenshots: venv deps
	MIGEXPORTER_SCREENSHOTS=docs $(BIN)/pytest -q tests/integration/test_console_browser.py

# pytest exits 5 when it collected nothing; that is a failure too, and make treats it as one.
pytest: venv
	@$(BIN)/pytest $(PYTEST_ARGS); status=$$?; \
	  if [ $$status -eq 5 ]; then echo "pytest collected no tests"; fi; \
	  exit $$status
