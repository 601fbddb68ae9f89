# make run   set up .venv, run the default study (+sweep=cpu, a small overflow grid, the
#            repeated-softmax study), write its report
# make test  set up .venv, run the tests
#
# torch is installed first and pinned (TORCH=...) so that pip resolves `torch>=2.4` from the
# project against the build already there instead of pulling the newest CUDA wheels.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
STAMP_NOW := $(shell date +%Y-%m-%d_%H-%M-%S)
RUN_DIR ?= results/sweeps/cpu/$(STAMP_NOW)
# Studies write their own tables: outside the sweep folder, so that a glob over its rows
# (`DIR/**/*.parquet` in duckdb or pyarrow) meets point rows only.
STUDY_DIR ?= results/studies/flattening/$(STAMP_NOW)

.PHONY: setup run test bench smoke baseline variants-table lint gpu-check clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(PY) -m harness +sweep=cpu hydra.sweep.dir=$(RUN_DIR)
	# where the naive formulas break: 41 logit scales around their edges, accuracy only (~50 s: 13,776 rows, every one judged with its second backward and metamorphic call)
	$(PY) -m harness +sweep=overflow num_classes=1000,32768 targets=hard hydra.sweep.dir=$(RUN_DIR)/overflow
	$(PY) -m harness +study=flattening hydra.run.dir=$(STUDY_DIR)
	$(PY) scripts/report.py $(RUN_DIR) --studies $(STUDY_DIR)
	@echo "results: $(RUN_DIR)"

test: setup
	$(PY) -m pytest

smoke: setup
	$(PY) -m harness +sweep=smoke

bench: setup
	$(PY) -m pytest -m bench tests/benchmarks

# Refresh the CI baseline on purpose (a variant added, a formula fixed, a new torch), then commit
# results/baseline with the change that explains it. Old point folders go first: resume would
# otherwise keep them.
baseline: setup
	find results/baseline -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
	rm -f results/baseline/_multirun.yaml results/baseline/_theory.json results/baseline/multirun.yaml results/baseline/theory.json
	$(PY) -m harness +sweep=smoke hydra.sweep.dir=results/baseline

# ruff: the lint rules and the format of pyproject.toml ([tool.ruff]); .ci/run runs this.
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# On a CUDA machine: the CUDA tests, the headline point and triton_fused's settings scan (< 5 min).
gpu-check: setup
	$(PY) scripts/gpu_check.py

# The variant table of docs/settings.md, generated from the registry (never edited by hand).
variants-table: setup
	$(PY) scripts/variants_table.py --write

clean:
	rm -rf $(VENV) *.egg-info
