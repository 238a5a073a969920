# tsalign — build, test, demo and benchmark entry points.
# `make test` works on a fresh Debian 12 machine: apt packages when root, a venv with pip.

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
CACHE       ?= /var/cache/tsalign
# Debian packages the tests use: pahole (BTF reference offsets), bpftool, trace-cmd, linux-perf,
# libtraceevent1 (prints .dat events for tsalign align/analyze);
# unpacking kernels; debootstrap + qemu + grub tools for the Ansible targets; libvirt (daemon, and
# headers for libvirt-python); chromium renders the HTML reports in the tests; a Java runtime runs the
# local Spark of the fleet tests (tsalign fleet --engine spark).
APT_PACKAGES := pahole bpftool trace-cmd libtraceevent1 linux-perf zstd xz-utils lz4 binutils \
	debootstrap qemu-system-x86 qemu-utils grub-pc-bin grub2-common e2fsprogs fdisk iproute2 openssh-client \
	libvirt-daemon-system libvirt-clients libvirt-dev pkg-config dnsmasq-base chromium openjdk-17-jre-headless
OUT         ?= out

.PHONY: help deps venv fixtures test test-unit lab fuzz demo bench lint clean

help:
	@echo "make demo   - run the main job end to end (see README)"
	@echo "make test   - install what the tests need and run the whole suite"
	@echo "make lab    - the nested KVM lab: the seed workflow on a real Linux guest (out/lab/)"
	@echo "make bench  - throughput benchmarks"
	@echo "make fuzz   - mutation fuzzing of every reader for FUZZ_SECONDS (default 1200; findings in out/fuzz/)"
	@echo "make lint   - ruff + mypy"

# Debian packages: installed only when running as root and something is missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "apt-get install$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "warning: not root; missing Debian packages:$$missing (tests needing them will say so)"; \
	  fi; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# runtime only (what `make demo` needs), then the test extras (libvirt-python builds against
# libvirt-dev, which `deps` installs)
$(VENV)/.runtime: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed: $(VENV)/.runtime
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Heavy test artefacts, built when missing and cached in $(CACHE) keyed by their recipe:
# real split BTF of a Debian kernel and the DWARF of its kvm module, the Debian rootfs of the netns SSH target, the GRUB VM image,
# and this machine's QEMU as a bundle for the nested lab's KVM host.
fixtures: deps
	@if [ "$$(id -u)" = 0 ] || [ -w "$(CACHE)" ]; then mkdir -p $(CACHE) && \
	  scripts/fetch-split-btf.sh $(CACHE) >/dev/null && \
	  scripts/fetch-kvm-debuginfo.sh $(CACHE) >/dev/null && \
	  scripts/build-rootfs.sh $(CACHE) > $(CACHE)/.rootfs-path && \
	  scripts/build-vm-image.sh $(CACHE) > $(CACHE)/.vm-image-path && \
	  scripts/build-qemu-bundle.sh $(CACHE) > $(CACHE)/.qemu-bundle-path; \
	else echo "warning: cannot write $(CACHE); tests needing its artefacts will say so"; fi

ARTEFACTS = TSALIGN_CACHE=$(CACHE) TSALIGN_ROOTFS=$$(cat $(CACHE)/.rootfs-path 2>/dev/null) \
	  TSALIGN_VM_IMAGE=$$(cat $(CACHE)/.vm-image-path 2>/dev/null) \
	  TSALIGN_QEMU_BUNDLE=$$(cat $(CACHE)/.qemu-bundle-path 2>/dev/null) PATH=$(CURDIR)/$(BIN):$$PATH

test: deps venv fixtures
	$(ARTEFACTS) scripts/run-suite.sh $(BIN)/python --durations=30

# the nested lab: a real Linux guest on a real KVM host (both under this machine's QEMU), the seed's
# workflow once per guest clock setup; results under $(OUT)/lab/<setup>/ (aligned/verdict.json, analyses)
lab: deps venv fixtures
	$(ARTEFACTS) $(BIN)/python -m tests.infra.lab run --out $(OUT)/lab

# seeded mutation fuzzing of every reader (the suite runs 2 minutes of it); findings under $(OUT)/fuzz/corpus
FUZZ_SECONDS ?= 1200
fuzz: deps venv fixtures
	$(ARTEFACTS) $(BIN)/python -m tests.fuzz.harness --seconds $(FUZZ_SECONDS) --out $(OUT)/fuzz

test-unit: deps venv
	$(BIN)/python -m pytest tests/unit

demo: $(VENV)/.runtime
	$(BIN)/python -m tsalign demo --out $(OUT)/demo

bench: $(VENV)/.runtime
	$(BIN)/python benchmarks/bench_clock.py
	$(BIN)/python benchmarks/bench_precheck.py
	$(BIN)/python benchmarks/bench_selftest.py
	$(BIN)/python benchmarks/bench_readers.py
	$(BIN)/python benchmarks/bench_align.py
	$(BIN)/python benchmarks/bench_fleet.py

lint: deps venv
	$(BIN)/ruff check tsalign tests benchmarks roles
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .hypothesis
