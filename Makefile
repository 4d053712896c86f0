# Two commands for a fresh machine:  `make demo`  and  `make test`.
# CPython 3.12 where the machine has one, else python3 (.ci/python says why).
PYTHON ?= $(shell bash .ci/python)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# The demo needs only tradelog and its runtime extras; tests and linters need the dev extra.
DEMO_STAMP := $(VENV)/.runtime-$(shell cksum pyproject.toml | cut -d' ' -f1)
# Tests may write bytecode even where the environment says not to: without it every worker
# re-rewrites each test module's asserts and every subprocess compiles tradelog from source.
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest
# Coverage through sys.monitoring where Python has it (3.12+), else the C trace function.
COVERAGE_CORE := $$($(BIN)/python -c 'import sys; print("sysmon" if sys.version_info >= (3, 12) else "ctrace")')

.PHONY: demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* $(VENV)/.runtime-*
	touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	rm -f $(VENV)/.runtime-*
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/python examples/trading_day.py

test: $(STAMP)
	bash .ci/ensure-postgres
	bash .ci/ensure-chromium
	# Byte-compile tradelog and rewrite the tests' asserts once, in one process, rather than in
	# each of the six workers and the first processes each test starts.
	$(BIN)/python -m compileall -q tradelog examples
	$(PYTEST) --collect-only -q -p no:cacheprovider > /dev/null
	COVERAGE_CORE=$(COVERAGE_CORE) $(PYTEST) -n 6 --dist worksteal --cov=tradelog --cov-report=term --cov-fail-under=85
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The quick loop while working: no coverage, no tests marked slow (processes, browsers, wheels).
# More workers than cores: most of a test's time is spent waiting on a database or a socket;
# worksteal lets idle workers take tests queued behind a long one.
test-fast: $(STAMP)
	bash .ci/ensure-postgres
	$(PYTEST) -n 6 --dist worksteal -q -m "not slow" -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	bash .ci/ensure-postgres
	$(BIN)/python bench/logging_bench.py

clean:
	rm -rf $(VENV) .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache
