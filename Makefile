# Two commands do everything:  make reproduce  (regenerate every figure, table and verdict)
#                              make test       (lint, clean notebooks, the test suite)
PYTHON  ?= python3
PROFILE ?= quick
VENV    := .venv
BIN     := $(CURDIR)/$(VENV)/bin
# dvc stage commands and the notebook kernel must find the venv's tools first
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PYTHONHASHSEED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help setup system reproduce test lab report pipeline docs bench gpu-check clean
help:
	@echo "make reproduce  set up, bring the $(PROFILE) profile's results up to date, compare with the committed record"
	@echo "                (PROFILE=quick|full|paper; FORCE=1 re-runs every stage from scratch)"
	@echo "make test       set up, ruff, notebooks-without-outputs check, pytest (+ the browser test)"
	@echo "make lab        JupyterLab on the same environment"
	@echo "make bench      speed benchmarks (ratios against baselines, printed side by side)"
	@echo "make gpu-check  on a CUDA machine, <= 10 min: CUDA tests, GPU benchmark, paper dry runs, paper stages that fit"
	@echo "make report     rebuild reports/claims.md and reports/index.html from the metrics"
	@echo "make pipeline   regenerate dvc.yaml from params.yaml, claims.yaml and the notebooks"
	@echo "make docs       regenerate docs/variants.md (variant registry) and docs/comparison.md (notebook 14)"

# System packages (apt.txt, the Binder convention): installed when we are root, else one instruction.
system:
	@scripts/ensure-apt-packages $$(grep -v '^#' apt.txt)

setup: system $(VENV)/.stamp
# torch is pinned and installed first: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.stamp: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

reproduce: setup
	test -d .git || git init -q   # DVC needs git (a zip/tarball download has none)
	dropoutlab reproduce --profile $(PROFILE) $(if $(FORCE),--force)

# The browser test of reports/index.html needs Debian's chromium (skipped, with the reason, without it).
test: setup
	@scripts/ensure-apt-packages chromium
	ruff check .
	python -m dropoutlab.notebooks notebooks/*.ipynb
	MPLBACKEND=Agg python -m pytest

lab: setup
	jupyter lab --no-browser --ip 127.0.0.1 $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

report: setup
	dropoutlab report

pipeline: setup
	dropoutlab pipeline

docs: setup
	dropoutlab docs

bench: setup
	dropoutlab bench

# On a machine with a CUDA GPU (and the CUDA build of the pinned torch): reports/paper/gpu_check.json.
gpu-check: setup
	python benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache dvc_plots
