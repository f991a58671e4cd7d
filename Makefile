# Every target sets up its own virtual environment first, so a fresh clone needs nothing
# but Python 3.11+ and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: up test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("imgstream needs Python 3.11+") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

up: $(STAMP)  ## run API + web page + workers (+ a private Redis unless REDIS_URL is set)
	$(BIN)/imgstream up

test: lint  ## lint, type-check and run every test against private Redis servers
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/mypy bench

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

BENCH_ARGS ?=
bench: $(STAMP)  ## side-by-side benchmarks; never part of `make test` (BENCH_ARGS=--quick)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
