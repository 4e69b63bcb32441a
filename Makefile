# Each target creates/refreshes the local virtual environment it needs, so it
# works on a fresh machine with only Python 3.11.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_VENV := .venv-bench

.PHONY: demo test test-all validate bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m kinetics.demo --out out/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

validate: $(STAMP)
	$(BIN)/python -m validation.run

bench: $(STAMP)
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e .
	bash benchmarks/install_peers.sh $(BENCH_VENV)/bin/python
	$(BENCH_VENV)/bin/python -m benchmarks.run --out benchmarks/RESULTS.md

clean:
	rm -rf $(VENV) $(BENCH_VENV) out build *.egg-info
