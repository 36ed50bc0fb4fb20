# The two commands of the README (experiment, test), the slow tests, a one-minute demo, and the
# benchmarks.
# Each target creates the virtual environment it needs on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: experiment demo test test-slow bench

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.bench-installed: $(VENV)/.installed requirements-bench.txt
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $@

# The README's main command: the whole experiment, CPU preset (8-9 min on 2 cores: docs/benchmarks.md).
experiment: $(VENV)/.installed
	$(PY) -m cxr.experiment --out experiment

# Every stage with toy settings, in about a minute (numbers are meaningless at this size).
demo: $(VENV)/.installed
	$(PY) -m cxr.experiment --out demo --replace --synthetic-images 80 --synthetic-size 64 \
		--ssl-image-size 64 --det-image-size 64 --ssl-epochs 1 --det-epochs 1 --ssl-batch-size 16 \
		--det-roi-batch-size 32 --det-warmup-iters 2 --pictures 2 --workers 0

# Lint (ruff: pyproject.toml), then every test but the slow end-to-end ones.
test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -m "not slow"

# The slow end-to-end tests (training, resume, torchrun, a whole tiny experiment); CI runs both.
test-slow: $(VENV)/.installed
	$(PY) -m pytest -m slow

bench: $(VENV)/.bench-installed
	$(PY) bench/bench_prepare.py
	$(PY) bench/bench_ssl.py
	$(PY) bench/bench_probe.py
	$(PY) bench/bench_det.py
	$(PY) bench/bench_loaders.py
	$(PY) bench/bench_keys.py
	$(PY) bench/bench_experiment.py
