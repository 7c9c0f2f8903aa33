PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit integration bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rrm demo

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

# Benchmarks (BENCHMARKS.md): `make bench ARGS="--sizes 100,1000 --only propagation,footprint"`
bench: $(STAMP)
	@command -v etcd >/dev/null || echo "etcd is not installed: the baseline is reported unavailable (apt-get install etcd-server)"
	$(BIN)/python -m benchmarks.run $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
