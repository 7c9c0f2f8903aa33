PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit integration bench bench-report clean

# One stamp per set of extras: `make demo` installs only what rrm itself needs.
$(VENV)/.installed-%: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.$(if $(filter base,$*),,[$*])'
	@touch $@

demo: $(VENV)/.installed-base
	$(BIN)/rrm demo

# Integration tests mostly wait on real processes, so more workers than cores pay: on 2 cores (AMD EPYC,
# same tree, 2026-12-07) six workers took 7 min 22 s of pytest against 9 min 44 s with four, both cores then
# about 90 % busy. One module's tests on one backend stay on one worker (they share a server:
# tests/conftest.py).
test: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/mypy --strict src/rrm/wire src/rrm/core src/rrm/agent
	$(BIN)/pytest -n 6 --dist loadscope

unit: $(VENV)/.installed-dev
	$(BIN)/pytest tests/unit

integration: $(VENV)/.installed-dev
	$(BIN)/pytest tests/integration

# Benchmarks (BENCHMARKS.md): `make bench ARGS="--sizes 100,1000 --only propagation,footprint"`
bench: $(VENV)/.installed-dev,bench
	@command -v etcd >/dev/null || echo "etcd is not installed: the baseline is reported unavailable (apt-get install etcd-server)"
	$(BIN)/python -m benchmarks.run $(ARGS)

# BENCHMARKS.md's figures and the README's sizing, regenerated from the committed results files
# (benchmarks/results/<date>-<commit>.json): commit a run's results file first, then run this and commit.
bench-report: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks.publish

clean:
	rm -rf $(VENV) build *.egg-info
