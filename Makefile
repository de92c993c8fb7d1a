# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install rankwise into it. torch is pinned to the
# CPU build here (not in pyproject) so that no CUDA packages are pulled.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rankwise-installed
TORCH  ?= torch==2.13.0

.PHONY: install demo test lint bench clean system-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

system-deps:
	bash scripts/system-deps.sh

demo: install
	HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/rankwise demo

test: install system-deps
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks

bench: install
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/relevance.py

clean:
	rm -rf $(VENV) demo-index .pytest_cache
