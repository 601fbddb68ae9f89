# make run   set up .venv, run the default study (+sweep=cpu), write its report
# make test  set up .venv, run the tests
#
# torch is installed first and pinned (TORCH=...) so that pip resolves `torch>=2.4` from the
# project against the build already there instead of pulling the newest CUDA wheels.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN_DIR ?= results/sweeps/cpu/$(shell date +%Y-%m-%d_%H-%M-%S)

.PHONY: setup run test bench smoke clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(PY) -m harness +sweep=cpu hydra.sweep.dir=$(RUN_DIR)
	@echo "results: $(RUN_DIR)"

test: setup
	$(PY) -m pytest

smoke: setup
	$(PY) -m harness +sweep=smoke

bench: setup
	$(PY) -m pytest -m bench tests/benchmarks

clean:
	rm -rf $(VENV) *.egg-info
