# Every target sets up its own virtual environment first, so a fresh clone needs nothing
# but Python 3.11+ and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: up test lint format bench bench-check soak clean browser haproxy

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("imgstream needs Python 3.11+") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

up: $(STAMP)  ## run API + web page + workers (+ a private Redis unless REDIS_URL is set)
	$(BIN)/imgstream up

test: lint browser haproxy  ## lint, type-check and run every test against private Redis servers
	$(BIN)/python -m pytest

# HAProxy for tests/test_compose.py and tests/test_load_balancer.py (`haproxy -c`, and the
# real load balancer in front of two APIs). Installed like Chromium; elsewhere they skip.
haproxy:
	@command -v haproxy >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends haproxy >/dev/null; \
	  else \
	    echo "haproxy is missing and cannot be installed here: load balancer tests will skip"; \
	  fi; }

# Debian's Chromium for tests/test_browser.py. Installed when missing and we may (root with
# apt, as on CI); anywhere else this says so and the browser tests skip with that reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends chromium fonts-dejavu-core >/dev/null; \
	  else \
	    echo "chromium is missing and cannot be installed here: browser tests will skip"; \
	  fi; }

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
	@$(BIN)/python -c 'import granian' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Every scenario end to end at small counts, one round, every peer required: a few minutes,
# so that the bench cannot silently stop running. Its figures mean nothing; `make bench`'s do.
bench-check: $(STAMP)
	@$(BIN)/python -c 'import granian' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py --quick --rounds 1 --strict

SOAK_ARGS ?=
soak: $(STAMP)  ## 10 minutes of mixed load, worker kills and slow clients; never in `make test`
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
