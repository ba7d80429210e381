# iqaguard — the project's entry points. `make serve` is the main command, `make test` is what CI runs.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup serve test lint bench-iqa clean-build

setup:  ## create/refresh .venv and system packages (idempotent)
	@bash scripts/setup.sh

serve: setup  ## build the default model set if none is built, then serve on 127.0.0.1:8000/8001/8002
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m iqaguard.server.launcher --build-if-missing

test: setup  ## the full test suite (what CI runs)
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m ruff check .
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -q

lint: setup
	@$(PY) -m ruff check .

bench-iqa: setup  ## BRISQUE speed: iqaguard vs the `brisque` reference package, one core
	@$(PY) -m iqaguard.iqa.benchmark
