# The two commands of the README, plus the benchmarks. Each target creates the
# virtual environment it needs on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

$(VENV)/.bench-installed: $(VENV)/.installed requirements-bench.txt
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $@

demo: $(VENV)/.installed
	$(PY) -m cxr.synthetic --out demo/vinbigdata --images 400 --size 256 --seed 0 --replace
	$(PY) -m cxr.prepare --csv demo/vinbigdata/train.csv --images demo/vinbigdata/train \
		--out demo/data --keep-normal --replace

test: $(VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.bench-installed
	$(PY) tests/bench/bench_prepare.py
