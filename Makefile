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

DEMO_SSL := --data-dir demo/data --output-dir demo/runs --experiment-name simclr_demo

demo: $(VENV)/.installed
	$(PY) -m cxr.synthetic --out demo/vinbigdata --images 400 --size 256 --seed 0 --replace
	$(PY) -m cxr.prepare --csv demo/vinbigdata/train.csv --images demo/vinbigdata/train \
		--out demo/data --keep-normal --replace
	$(PY) train_ssl.py $(DEMO_SSL) --arch resnet18 --image-size 64 --batch-size 32 --epochs 3 \
		--warmup-epochs 1 --lr 0.3 --include-normal --workers 1 --replace
	$(PY) evaluate.py --mode probe $(DEMO_SSL) --replace
	$(PY) evaluate.py --mode probe $(DEMO_SSL) --backbone random --replace

test: $(VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.bench-installed
	$(PY) tests/bench/bench_prepare.py
	$(PY) tests/bench/bench_ssl.py
	$(PY) tests/bench/bench_probe.py
	$(PY) tests/bench/bench_det.py
