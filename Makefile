# The two commands the README gives:
#   make run   set everything up, then run the training pipeline locally on penguins
#   make test  set everything up, then run the test suite (all but the `long` tests)
#   make test-long  the longest end-to-end checks (CI runs them after make test)
# Set-up is a virtual environment from the committed lock file (uv.lock), nothing else.

PYTHON ?= python3.11
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
DEST ?= serving/penguins
# Debian's chromium: the tests check in a real browser that reports draw.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
RUNS ?= local_outputs

.PHONY: setup run test test-long compile bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# --frozen: install exactly the lock, never re-resolve. --compile-bytecode: imports of
# TensorFlow & co. take about half as long in every task process (shared/DESIGN.md).
setup: $(UV)
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)

run: setup
	$(VENV)/bin/kfp-ct run-local --destination $(DEST) --workdir $(RUNS)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

test: setup $(CHROMIUM)
	$(PY) -m pytest -q -m "not long"

# Drift's cluster path on the local KFP endpoint: two trainings and two monitoring runs.
test-long: setup
	$(PY) -m pytest -q -m long

compile: setup
	$(PY) compile.py --out build

# Measurements, not tests: minutes each (see README, "Performance").
bench: setup
	$(PY) -m tests.benchmarks.bench_pipeline --runs 2
	$(PY) -m tests.benchmarks.bench_data 344 100000 1000000
	$(PY) -m tests.benchmarks.bench_train
	$(PY) -m tests.benchmarks.bench_drift_quality
	$(PY) -m tests.benchmarks.bench_drift_speed 100000 1000000
	$(PY) -m tests.benchmarks.bench_endpoint --runs 3

clean:
	rm -rf build $(RUNS) serving .pytest_cache
