# Quick start:  make run   (set up + run the whole pipeline on the embedded default)
#               make test  (set up + run the test suite)
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup run test bench clean

setup: $(STAMP)

# torch is pinned here (not in pyproject, which keeps a range) so pip takes the CPU wheel when one
# is on disk instead of a multi-GB CUDA build; override with `make TORCH_VERSION=...`.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "torch==$(TORCH_VERSION)"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/optinter run $(RUN_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/preprocess.py
	$(BIN)/python benchmarks/train.py

clean:
	rm -rf $(VENV) .pytest_cache
