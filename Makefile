# iqaguard — the project's entry points. `make serve` is the main command, `make test` is what CI runs.
SHELL := /bin/bash
VENV := .venv
USERS ?= 8
DURATION ?= 30s
OMP_WAIT_POLICY ?= PASSIVE
PY := $(VENV)/bin/python

.PHONY: setup serve build test lint bench-iqa loadtest bench bench-expensive redteam

setup:  ## create/refresh .venv and system packages (idempotent)
	@bash scripts/setup.sh

serve: setup  ## build the default model set if it is not built, then serve every built set on 127.0.0.1:8000/8001/8002
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m iqaguard.launcher.serve --build-if-missing

# `make build` builds fashion; PROFILE=natural IMAGES=DIR, or PROFILE=custom TEACHER=model.pt IMAGES=DIR SIZE=224
# [LABELS=file] for any TorchScript classifier of [N,3,H,W] RGB in [0,1] (normalisation inside).
PROFILE ?= fashion
build: setup  ## build a model set (PROFILE=fashion|natural|imagenet|custom; IMAGES, TEACHER, SIZE, LABELS): a new version in model_repository/, report in reports/<profile>/
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) build/build_models.py --profile $(PROFILE) \
		$(if $(IMAGES),--images "$(IMAGES)") $(if $(TEACHER),--teacher "$(TEACHER)") \
		$(if $(SIZE),--size "$(SIZE)") $(if $(LABELS),--labels "$(LABELS)") $(BUILD_ARGS)

test: setup  ## the full test suite (what CI runs)
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m ruff check .
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -q

lint: setup
	@$(PY) -m ruff check .

bench-iqa: setup  ## BRISQUE speed: iqaguard vs the `brisque` reference package, one core
	@$(PY) -m iqaguard.iqa.benchmark

loadtest: setup  ## headless Locust load test on 127.0.0.1 (USERS=8 DURATION=30s); starts the embedded server if none runs; CSV+HTML in reports/locust/
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m iqaguard.bench.loadtest --users $(USERS) --duration $(DURATION) $(LOADTEST_ARGS)

bench: setup  ## served ensemble vs served teacher vs in-process pipeline (imagenet profile, 224x224, RANDOM weights); JSON in reports/bench/
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH OMP_WAIT_POLICY=$(OMP_WAIT_POLICY) $(PY) -m iqaguard.bench.benchmark $(BENCH_ARGS)

bench-expensive: setup  ## ordinary clients' p50/p99 alone and while one client sends the costliest legal request (EXPENSIVE_ARGS); JSON in reports/bench/
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m iqaguard.bench.expensive_load $(EXPENSIVE_ARGS)

redteam: setup  ## adaptive black-box and white-box attacks on a served set (PROFILE=fashion|natural, IMAGES for folder profiles; REDTEAM_ARGS); section in reports/<set>/report.md
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m iqaguard.redteam --profile $(PROFILE) \
		$(if $(IMAGES),--images "$(IMAGES)") $(REDTEAM_ARGS)
