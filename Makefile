# Two set-up commands for a fresh machine: `make quickstart` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: quickstart test gate lint venv clean baseline gate-noise gate-regressions

# The environment is (re)built when missing or when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# Results go to runs/ (git-ignored): the committed baseline results/smoke/ is never touched.
quickstart: $(STAMP)
	$(VENV)/bin/metabn-bench run --preset smoke --out runs/quickstart/results --work runs/quickstart/work \
	    --launcher gpus --launch workers=2
	@echo "quickstart results: runs/quickstart/results/ (report.md, summary.json, plots/)"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

# The regression gate's statistical tier: the smoke suite trained from scratch (every method, two
# CPU workers, about 7 minutes on 2 cores) against the committed baseline. CI runs it after
# `make test`; the exact tier is part of `make test`.
gate: $(STAMP)
	$(PY) -m pytest -q -m statistical tests/test_gate.py

clean:
	rm -rf build *.egg-info .pytest_cache .ruff_cache

# Regenerate the committed CI baseline (results/smoke/) from scratch: explicit, never run by tests.
# Both tiers are rewritten; the exact tier's noise is re-measured (minutes). The statistical
# tier's noise (hours: the suite under every CPU variant and seed) is `make gate-noise`.
baseline: $(STAMP)
	$(VENV)/bin/metabn-bench baseline results/smoke --preset smoke
	$(VENV)/bin/metabn-bench gate noise --tiers exact --scratch runs/gate-noise-exact

gate-noise: $(STAMP)
	$(VENV)/bin/metabn-bench gate noise --tiers exact,statistical

# Every deliberate regression of metabn_bench/gate/regressions.py must make the gate fail.
gate-regressions: $(STAMP)
	$(VENV)/bin/metabn-bench gate regressions
