# The two commands the README gives:
#   make run   set everything up, then run the training pipeline locally on penguins
#   make test  set everything up, then run the test suite (all but the `long` tests)
#   make test-long  the longest end-to-end checks (CI runs them after make test)
#   make image      build the CPU image (podman) from images/ and the lock
#   make test-containers  build it, then run the whole pipeline inside it (DockerRunner)
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

# Containers (podman, rootful, no Docker engine): the image tags come from
# components/common/images.py (one version; registry prefix from $$KFP_CT_REGISTRY).
PODMAN := /usr/bin/podman
CONTAINERS_CONF := /etc/containers/containers.conf
BASE_IMAGE ?= localhost/kfp-ct-base:bookworm
BASE_ROOT := /var/tmp/kfp-ct-base-rootfs
IMAGE_CONTEXT := build/image-context
DEBIAN_MIRROR ?= http://deb.debian.org/debian
DEBOOTSTRAP_CACHE := /var/cache/kfp-ct-debootstrap
# The CA bundle the build's downloads (PyPI) trust: the host's, so a TLS-inspecting proxy
# that the host trusts works in the build too. Empty: the image's own bundle.
BUILD_CA ?= /etc/ssl/certs/ca-certificates.crt
# Every test marker except the ones with their own command.
NOT_OWN := not long and not container

.PHONY: setup run test test-long compile bench clean podman base-image image image-gpu image-tpu \
	test-containers

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
	$(PY) -m pytest -q -m "$(NOT_OWN)"

# Drift's cluster path on the local KFP endpoint: two trainings and two monitoring runs.
test-long: setup
	$(PY) -m pytest -q -m "long and not container"

# ------------------------------------------------------------------ containers

$(PODMAN):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq podman runc debootstrap

# What runs podman here (shared/DESIGN.md): runc, cgroupfs, no default ulimits.
$(CONTAINERS_CONF): | $(PODMAN)
	$(SUDO) mkdir -p $(dir $@)
	printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n' \
	  | $(SUDO) tee $@ >/dev/null

podman: $(PODMAN) $(CONTAINERS_CONF)

# The local base (no registry is reachable here): Debian 12 minbase with its python3.11.
# The Dockerfiles build FROM the public python:3.11-slim-bookworm when BASE is not given.
base-image: podman
	@if $(SUDO) $(PODMAN) image exists $(BASE_IMAGE); then echo "base image $(BASE_IMAGE) exists"; else \
	  $(SUDO) rm -rf $(BASE_ROOT) && $(SUDO) mkdir -p $(DEBOOTSTRAP_CACHE) && \
	  $(SUDO) debootstrap --cache-dir=$(DEBOOTSTRAP_CACHE) --variant=minbase --include=python3.11,python3.11-venv,python3-distutils,python3-lib2to3,ca-certificates,passwd \
	    bookworm $(BASE_ROOT) $(DEBIAN_MIRROR) && \
	  $(SUDO) rm -rf $(BASE_ROOT)/var/cache/apt/archives/*.deb $(BASE_ROOT)/var/lib/apt/lists/* && \
	  $(SUDO) tar -C $(BASE_ROOT) -c . | $(SUDO) $(PODMAN) import \
	    --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	    - $(BASE_IMAGE) && $(SUDO) rm -rf $(BASE_ROOT); fi

# The build context: only what the image needs (tracked or new, never ignored files).
$(IMAGE_CONTEXT): FORCE
	rm -rf $@ && mkdir -p $@
	git ls-files -z --cached --others --exclude-standard -- pyproject.toml uv.lock README.md \
	  compile.py components pipelines | xargs -0 cp --parents -t $@

image: setup base-image $(IMAGE_CONTEXT)
	$(PY) images/build.py cpu --base $(BASE_IMAGE) --context $(IMAGE_CONTEXT) --ca "$(BUILD_CA)"

image-tpu: setup base-image $(IMAGE_CONTEXT)
	$(PY) images/build.py tpu --base $(BASE_IMAGE) --context $(IMAGE_CONTEXT) --ca "$(BUILD_CA)"

image-gpu: setup base-image $(IMAGE_CONTEXT)
	$(PY) images/build.py gpu --base $(BASE_IMAGE) --context $(IMAGE_CONTEXT) --ca "$(BUILD_CA)"

# The whole training pipeline with every task in the CPU image, through kfp.local's
# DockerRunner against `podman system service` (tests marked `container`).
test-containers: image
	$(PY) -m pytest -q -m container

FORCE:

compile: setup
	$(PY) compile.py --out build

# Measurements, not tests: minutes each (see README, "Performance").
bench: setup
	$(PY) -m tests.benchmarks.bench_pipeline --runs 2
	$(PY) -m tests.benchmarks.bench_pipeline --runs 2 --cold
	$(PY) -m tests.benchmarks.bench_pipeline --runs 2 --wide 15000 --train-steps 1000
	$(PY) -m tests.benchmarks.bench_data 344 100000 1000000
	$(PY) -m tests.benchmarks.bench_data 1000000 --table wide
	$(PY) -m tests.benchmarks.bench_data 1000000 --table wide --beam
	$(PY) -m tests.benchmarks.bench_multiworker
	$(PY) -m tests.benchmarks.bench_train
	$(PY) -m tests.benchmarks.refusals
	$(PY) -m tests.benchmarks.bench_drift_quality
	$(PY) -m tests.benchmarks.bench_drift_speed 100000 1000000
	$(PY) -m tests.benchmarks.bench_performance
	$(PY) -m tests.benchmarks.bench_performance --train-steps 15 --runs 0
	$(PY) -m tests.benchmarks.bench_ui_metadata --runs 2
	$(PY) -m tests.benchmarks.bench_endpoint --runs 3

clean:
	rm -rf build $(RUNS) serving .pytest_cache
