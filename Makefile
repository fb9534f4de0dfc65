# Everything a fresh Debian 12 machine needs, as root, then the job itself.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEB_PACKAGES := redis-server redis-sentinel socat iproute2 iputils-arping iptables \
	drbd-utils chromium prometheus systemd procps
DEB_STAMP := .deps/debian.stamp

.PHONY: test demo bench lint typecheck pytest deps clean docs

test: deps lint typecheck pytest

deps: $(STAMP) $(DEB_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Install the Debian packages the tests use, only those that are missing.
$(DEB_STAMP): Makefile
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@mkdir -p .deps && touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check bot ami rseries tests bench
	$(VENV)/bin/ruff format --check bot ami rseries tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: deps
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

# A two-node cluster on this machine with the simulators; kills the primary and
# shows the failover. Ctrl-C ends it and cleans up.
demo: deps
	$(VENV)/bin/failover-bot demo $(DEMO_ARGS)

# Benchmarks: failover time (BENCH_RUNS runs per scenario), AMI and R-Series throughput.
BENCH_RUNS ?= 10
bench: deps
	$(PY) bench/ami.py
	$(PY) bench/rseries.py
	$(PY) bench/failover.py --runs $(BENCH_RUNS) $(BENCH_ARGS)

docs: $(STAMP)
	$(PY) -m bot.configdoc --write README.md
	$(PY) -m bot.ha > docs/roles.md

clean:
	rm -rf $(VENV) .deps .mypy_cache .ruff_cache
