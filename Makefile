# Two entry points on a fresh Debian/Ubuntu machine:
#   make demo  — install what Kiln needs, start the sandbox, bootstrap it, bake the example app
#   make test  — install the same, then lint and run the whole test suite
# Both are idempotent: a second run reuses the packages, the venv and the running sandbox.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
# checkov (a judge in tests/test_judges.py) pins an older boto3 than moto's server needs, so it
# lives in a venv of its own; the tests run its binary.
CHECKOV_VENV := .venv-checkov
CHECKOV := checkov==3.3.30
INVOKE := $(VENV)/bin/invoke
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := rpm createrepo-c dnf rpmlint openssh-server openssh-client ruby gnupg zstd \
	git curl ca-certificates python3-venv python3-dev gcc sudo iproute2 util-linux uidmap
# Real chef-solo and fpm from their sources, where this checkout sits beside a vendor folder
# (see README, "Chef"): their Debian dependencies are installed and they go first on PATH.
VENDOR := $(abspath ../shared/vendor)
ifneq ($(wildcard $(VENDOR)/chef/bin/chef-solo),)
APT_PACKAGES += $(shell cat $(VENDOR)/*/debian-packages)
export PATH := $(VENDOR)/chef/bin:$(VENDOR)/fpm/bin:$(PATH)
endif

.PHONY: setup apt venv demo test lint clean

setup: apt venv

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed $(CHECKOV_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

$(CHECKOV_VENV)/.installed: Makefile
	@[ -x $(CHECKOV_VENV)/bin/python ] || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q '$(CHECKOV)'
	@touch $@

demo: setup
	$(INVOKE) demo

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -n 2 --dist loadgroup

lint: venv
	$(VENV)/bin/ruff check .

clean:
	-$(INVOKE) sandbox.down
	rm -rf dist .sandbox
