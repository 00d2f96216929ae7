# Two entry points on a fresh Debian/Ubuntu machine:
#   make demo  — install what Kiln needs, start the sandbox, bootstrap it, bake the example app
#   make test  — install the same, then lint and run the whole test suite
# Both are idempotent: a second run reuses the packages, the venv and the running sandbox.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
# Every Python package comes from uv.lock (exact versions and hashes); uv itself is pinned by
# hash in requirements/uv.txt. `make lock` refreshes the lock on purpose (docs/development.md).
UV_VENV := .venv-uv
UV := $(UV_VENV)/bin/uv
export UV_PYTHON_DOWNLOADS := never
# checkov (a judge in tests/test_judges.py) pins an older boto3 than moto's server needs, so it
# lives in a venv of its own, from the same lock's `checkov` group; the tests run its binary.
CHECKOV_VENV := .venv-checkov
INVOKE := $(VENV)/bin/invoke
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := rpm createrepo-c dnf rpmlint openssh-server openssh-client ruby gnupg zstd \
	git curl ca-certificates python3-venv python3-dev gcc sudo iproute2 util-linux uidmap awscli
# Real chef-solo and fpm from their sources, where this checkout sits beside a vendor folder
# (README, "Chef-solo and fpm elsewhere"): their Debian dependencies are installed and they go
# first on PATH.
VENDOR := $(abspath ../shared/vendor)
ifneq ($(wildcard $(VENDOR)/chef/bin/chef-solo),)
APT_PACKAGES += $(shell cat $(VENDOR)/*/debian-packages)
export PATH := $(VENDOR)/chef/bin:$(VENDOR)/fpm/bin:$(PATH)
endif

KILN_PACKAGES := accounts cloud orchestrator packager provisioner sandbox tasks.py

.PHONY: setup apt lock-apt venv lock demo test lint clean

setup: apt venv

# Debian's packages come at the versions requirements/debian.lock names, as Python's come from
# uv.lock: a package installed at another version is installed again at the locked one.
DEBIAN_LOCK := requirements/debian.lock

apt:
	@wanted=$$(for p in $(sort $(APT_PACKAGES)); do \
		v=$$(sed -n "s/^$$p=//p" $(DEBIAN_LOCK)); \
		if [ -z "$$v" ]; then echo "kiln: $(DEBIAN_LOCK): no version for package $$p: run make lock-apt" >&2; exit 1; fi; \
		[ "$$(dpkg-query -W -f='$${Status} $${Version}' $$p 2>/dev/null)" = "install ok installed $$v" ] || echo "$$p=$$v"; \
	done) || exit 1; \
	if [ -n "$$wanted" ]; then \
		echo "installing Debian packages:" $$wanted; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			--allow-downgrades $$wanted; \
	fi

# Write requirements/debian.lock again from the versions installed here (after `apt-get
# upgrade`, say); then run the suite and commit the lock alone.
lock-apt:
	@{ sed -n '/^#/p' $(DEBIAN_LOCK); for p in $(sort $(APT_PACKAGES)); do \
		dpkg-query -W -f='$${Package}=$${Version}\n' $$p; done; } > $(DEBIAN_LOCK).new && \
	mv $(DEBIAN_LOCK).new $(DEBIAN_LOCK)

venv: $(VENV)/.installed $(CHECKOV_VENV)/.installed

$(UV): requirements/uv.txt
	@[ -x $(UV_VENV)/bin/python ] || $(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/pip install -q --require-hashes -r requirements/uv.txt
	@touch $@

# Two steps: the locked setuptools goes in first, then builds Kiln's editable install. The second
# byte-compiles every package: where PYTHONDONTWRITEBYTECODE is set nothing else caches compiled
# modules, and every invoke, sandbox server and instance SSH session would compile boto3, moto
# and the rest again as it starts.
$(VENV)/.installed: pyproject.toml uv.lock $(UV)
	$(UV) sync -q --locked --python $(PYTHON) --no-install-project
	$(UV) sync -q --locked --compile-bytecode --python $(PYTHON)
	@touch $@

$(CHECKOV_VENV)/.installed: pyproject.toml uv.lock $(UV)
	UV_PROJECT_ENVIRONMENT=$(CHECKOV_VENV) $(UV) sync -q --locked --python $(PYTHON) \
		--only-group checkov --no-install-project
	@touch $@

# Refresh uv.lock from pyproject.toml's ranges (newest that fit); then run the suite and commit
# both. `make lock ARGS="--upgrade-package moto"` moves one package.
lock: $(UV)
	$(UV) lock $(ARGS)

demo: setup
	$(INVOKE) demo

# Kiln's own modules are byte-compiled too (only those changed since the last run), for the same
# reason: the suite starts a Python process for each task, server and SSH session.
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m compileall -q $(KILN_PACKAGES)
	$(VENV)/bin/pytest -n 2 --dist loadgroup --durations=25

lint: venv
	$(VENV)/bin/ruff check .

clean:
	-$(INVOKE) sandbox.down
	rm -rf dist .sandbox
