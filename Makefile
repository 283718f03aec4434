# Croupier: the two commands (`make demo`, `make test`) and the stack controls.
# Everything is installed into .venv and .stack/ by these targets; nothing by hand.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CROUPIER := $(VENV)/bin/croupier
# The first interpreter that is Python >= 3.11.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)

.PHONY: help install demo test lint typecheck unit integration up down status topics clean promtool browser

help:
	@echo "make demo    start the embedded stack and run the main job"
	@echo "make test    lint, type-check, and run every test against a private stack"
	@echo "make up | down | status    the local stack (Kafka, PostgreSQL, ClickHouse engine, workers)"

$(VENV)/.installed: pyproject.toml constraints.txt
	@if [ -z "$(PYTHON)" ]; then echo "error: Croupier needs Python >= 3.11 (python3.11 or newer on PATH)." >&2; exit 1; fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

# promtool (Debian's prometheus package), for the alert rules' tests: the package is
# downloaded and unpacked under .stack/tools once (no daemon installed or started, no
# root needed when apt's lists are there). Skipped when it is there or on PATH.
PROMTOOL := .stack/tools/prometheus/usr/bin/promtool
promtool:
	@command -v promtool >/dev/null 2>&1 || [ -x $(PROMTOOL) ] || { \
		mkdir -p .stack/tools && cd .stack/tools && rm -f prometheus_*.deb && \
		{ apt-get download prometheus >/dev/null 2>&1 || \
		  { apt-get update -qq && apt-get download prometheus; }; } && \
		dpkg-deb -x prometheus_*.deb prometheus && rm -f prometheus_*.deb; }

# Debian's chromium and chromedriver, for the dashboard's browser test (Selenium drives
# them): apt-installed once when missing and we are root; skipped when both are there.
browser:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
		if [ "$$(id -u)" != 0 ]; then \
			echo "error: the dashboard test needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)" >&2; exit 1; fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver; }; }

up: install
	$(CROUPIER) stack up

down: install
	$(CROUPIER) stack down

status: install
	$(CROUPIER) stack status

topics: install
	$(CROUPIER) topics create

# The walk-through (every rule, step by step), then a whole match day with its spike,
# then the invariants over everything the stack holds. Each step exits non-zero on failure.
demo: install
	$(CROUPIER) stack up
	$(CROUPIER) demo
	$(CROUPIER) simulate
	$(CROUPIER) check

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

unit: install
	$(PY) -m pytest tests/unit -q

# The test session starts its own stack on free ports under .stack/test
# (never the one `make up` runs) and stops it at the end.
test: lint typecheck promtool browser
	$(PY) -m pytest -q --durations=8

clean:
	-$(CROUPIER) stack down
	rm -rf .stack $(VENV)
