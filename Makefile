# genostage: `make demo` and `make test` install whatever is missing, then run.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# command:debian-package pairs the tests and the demo need
APT_TOOLS := /usr/include/zlib.h:zlib1g-dev samtools:samtools seqkit:seqkit sambamba:sambamba bwa:bwa bgzip:tabix bcftools:bcftools
CONTAINER_TOOLS := podman:podman buildah:buildah debootstrap:debootstrap

.PHONY: all demo test test-fast test-containers build system-deps container-deps bench lint clean

all: build

# Debian packages for the genomics tools (the tests check genostage's outputs with them).
system-deps:
	@bash .ci/apt-install $(APT_TOOLS)

container-deps:
	@bash .ci/apt-install $(CONTAINER_TOOLS)

$(VENV)/.installed: pyproject.toml setup.py | system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel 'Cython>=3.0'
	$(PY) -m pip install -q --no-build-isolation --config-settings editable_mode=compat -e '.[test,bench]'
	@touch $@

# Compile the kernels in place (incremental) after the package is installed, and the
# modules' bytecode, as pip does for a regular install: where PYTHONDONTWRITEBYTECODE is
# set, every genostage command would otherwise compile its modules again (~0.1 s a start).
build: system-deps $(VENV)/.installed
	@$(PY) setup.py -q build_ext --inplace
	@$(PY) -m compileall -q genostage

demo: system-deps build
	$(PY) -m genostage.testing.demo

test: system-deps container-deps build
	$(PY) -m mypy genostage
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: build
	$(PY) -m pytest -m "not slow and not containers" -x $(PYTEST_ARGS)

# Only the container image tests (builds the base and samtools images with podman; 4-7 min on 2 busy cores).
test-containers: system-deps container-deps build
	$(PY) -m pytest -m containers $(PYTEST_ARGS)

lint: build
	$(PY) -m mypy genostage

clean:
	rm -rf build $(VENV) *.egg-info genostage/*/*.so ext/_*.c
