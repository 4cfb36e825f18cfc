# Two commands do everything:  make reproduce  (regenerate every figure, table and verdict)
#                              make test       (lint, clean notebooks, the test suite)
PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
# dvc stage commands and the notebook kernel must find the venv's tools first
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help setup reproduce test lab report docs bench clean
help:
	@echo "make reproduce  set up .venv, run the DVC pipeline (profile from params.yaml), print the verdicts"
	@echo "make test       set up .venv, ruff, notebooks-without-outputs check, pytest"
	@echo "make lab        JupyterLab on the same environment"
	@echo "make bench      speed benchmarks (ratios against baselines, printed side by side)"
	@echo "make report     rebuild reports/claims.md from reports/metrics/*.json"
	@echo "make docs       regenerate docs/variants.md from the variant registry"

setup: $(VENV)/.stamp
# torch is pinned and installed first: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.stamp: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

reproduce: setup
	test -d .git || git init -q   # DVC needs git (a zip/tarball download has none)
	dvc repro
	dropoutlab claims   # the verdicts; `dvc metrics show` has them too, one column per field
	@echo "Claims report: reports/claims.md (index: reports/index.html)"

test: setup
	ruff check .
	python -m dropoutlab.notebooks notebooks/*.ipynb
	python -m pytest

lab: setup
	jupyter lab --no-browser --ip 127.0.0.1 $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

report: setup
	dropoutlab report

docs: setup
	dropoutlab docs

bench: setup
	dropoutlab bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache dvc_plots
