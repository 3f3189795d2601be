# Developer entry points. `make test` is what CI runs (through .ci/run) on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

# CI runs as root; pip's warnings about that and about its own version are noise there.
export PIP_ROOT_USER_ACTION := ignore
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: test lint typecheck demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Stamps: reinstall only when the dependencies may have changed.
$(VENV)/.installed-test: pyproject.toml setup.py src/postgres_async/_speedups.c | $(PY)
	$(PIP) install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml setup.py src/postgres_async/_speedups.c | $(PY)
	$(PIP) install --quiet -e '.[test,bench]'
	touch $@

# One recipe, so the steps run in this order even under make -j.
test: $(VENV)/.installed-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy --strict
	$(PY) tools/gen_errcodes.py --check
	@# The whole suite runs under the compiled accelerator and under the pure-Python
	@# reference; coverage is of both runs together.
	@if $(PY) -c 'import postgres_async._speedups' 2>/dev/null; then \
		echo "== pytest with POSTGRES_ASYNC_IMPL=c"; \
		POSTGRES_ASYNC_IMPL=c $(PY) -m pytest --cov=postgres_async --cov-report= ; \
	else \
		echo "== the C accelerator was not built (no compiler?): testing pure Python only"; \
		$(PY) -m coverage erase; \
	fi
	@echo "== pytest with POSTGRES_ASYNC_IMPL=python"
	POSTGRES_ASYNC_IMPL=python $(PY) -m pytest --cov=postgres_async --cov-append \
		--cov-report=term --cov-fail-under=90

lint: $(VENV)/.installed-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(VENV)/.installed-test
	$(PY) -m mypy --strict

demo: $(VENV)/.installed-test
	$(PY) -m postgres_async.demo

bench: $(VENV)/.installed-bench
	$(PY) bench/run.py

# Build output and caches; the venv stays (rm -rf .venv to start over).
clean:
	rm -rf build dist src/*.egg-info .coverage .coverage.* htmlcov \
		.mypy_cache .ruff_cache .pytest_cache .hypothesis
	find src tests tools bench -name __pycache__ -type d -prune -exec rm -rf {} +
