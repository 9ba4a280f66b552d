# Two set-up commands for a fresh machine: `make quickstart` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: quickstart test lint venv clean baseline

# The environment is (re)built when missing or when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/metabn-bench run --preset smoke

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

clean:
	rm -rf build *.egg-info .pytest_cache .ruff_cache

# Regenerate the committed CI baseline (results/smoke/) from scratch: explicit, never run by tests.
baseline: $(STAMP)
	$(VENV)/bin/metabn-bench check --update-baseline results/smoke --preset smoke
