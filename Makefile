# Everything a fresh Debian 12 machine needs, as root, then the job itself.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The Debian packages the tests, the lab and the demo use: one list, tests/debian-packages.txt.
DEB_LIST := tests/debian-packages.txt
DEB_PACKAGES := $(shell sed -e 's/\#.*//' $(DEB_LIST) | awk 'NF {print $$1}')
DEB_STAMP := .deps/debian.stamp

.PHONY: print-deb-packages test-loaded test demo bench bench-deps chaos lint typecheck pytest deps clean docs asterisk wheelhouse install-host mutate

test: deps asterisk lint typecheck pytest

deps: $(STAMP) $(DEB_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Install the Debian packages the tests use, only those that are missing.
$(DEB_STAMP): Makefile $(DEB_LIST)
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
	$(VENV)/bin/ruff check bot ami rseries harness tests bench
	$(VENV)/bin/ruff format --check bot ami rseries harness tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Parallel workers (tests mostly wait on clusters and timers); each worker takes lab ports
# from its own band (tests/conftest.py). Every run writes .reports/junit.xml and every
# test's duration (.reports/durations.txt); under CI=true a run of fewer tests than
# tests/collected-floor.txt fails, so a -k or -m left in PYTEST_ARGS cannot pass as green.
PYTEST_WORKERS ?= 3
REPORTS := .reports
# Tests marked `quiet` (the fast profile's timings) run alone after the parallel part;
# QUIET=no leaves them out (make test-loaded: they cannot hold beside the burners).
QUIET ?= yes
pytest: deps
	@rm -rf $(REPORTS) && mkdir -p $(REPORTS)
	rc=0; $(VENV)/bin/pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadgroup \
		-rsx -m "not quiet" --junitxml=$(REPORTS)/junit.xml $(PYTEST_ARGS) || rc=$$?; \
	if [ "$(QUIET)" = yes ]; then \
		q=0; $(VENV)/bin/pytest -q -p no:cacheprovider -rsx -m quiet \
			--junitxml=$(REPORTS)/junit-quiet.xml $(PYTEST_ARGS) || q=$$?; \
		[ $$q -eq 0 ] || [ $$q -eq 5 ] || rc=$$q; \
	fi; \
	$(PY) -m tests.report $(REPORTS) $(TEST_FLOOR) || { [ $$rc -ne 0 ] || rc=1; }; exit $$rc

# The end-to-end and chaos tests with both cores kept busy by spinners the run starts and
# ends itself (harness/burner.py): timing must hold on a loaded machine too.
LOAD ?= 2
test-loaded: deps asterisk
	FAILOVER_TEST_LOAD=$(LOAD) $(MAKE) pytest QUIET=no TEST_FLOOR=95 PYTEST_ARGS="tests/e2e tests/chaos $(PYTEST_ARGS)"

print-deb-packages:
	@echo $(DEB_PACKAGES)

# The Asterisk the tests, the lab and the demo use: $(ASTERISK) if set, an
# installed one, or a build of $(ASTERISK_TARBALL) cached outside the checkout
# (scripts/asterisk.sh). Its path goes to .deps/asterisk.path.
asterisk:
	scripts/asterisk.sh .deps/asterisk.path || { rm -f .deps/asterisk.path; [ "$$CI" != true ]; }

# A two-node cluster on this machine (real Asterisks when one was found); kills
# the primary and shows the failover. Ctrl-C ends it and cleans up.
demo: deps asterisk
	$(VENV)/bin/failover-bot demo $(DEMO_ARGS)

# Benchmarks: AMI and R-Series throughput; failover time (BENCH_RUNS runs per scenario)
# at the default and the fast profile, side by side with keepalived (VRRPv2 1 s and
# VRRPv3 0.1 s adverts) as a client on the LAN sees it; idle CPU; a loaded soak.
BENCH_RUNS ?= 10
BENCH_FAILOVER_ARGS ?= --profiles default,fast --compare keepalived --idle 20 --soak 60s
# A throughput bench that fails or hangs (bounded at 5 minutes) is reported by make as
# an ignored error and does not keep the failover table from being printed.
bench: deps bench-deps
	-timeout 300 $(PY) bench/ami.py
	-timeout 300 $(PY) bench/rseries.py
	$(PY) bench/failover.py --runs $(BENCH_RUNS) $(BENCH_FAILOVER_ARGS) $(BENCH_ARGS)

# keepalived for the side-by-side benchmark is in the tests' list (its harness is tested).
bench-deps: deps

# Chaos run: a seeded random schedule of faults over the lab cluster while a client
# writes through the active node's DRBD; fails on a dual primary or a lost write.
# CHAOS_SECONDS (default 600) and CHAOS_SEED (default: random, printed).
chaos: deps
	$(PY) -m tests.chaos.run

# Mutation testing of the safety-critical rules ([tool.mutmut] in pyproject.toml); slow,
# so not part of test. Ends with the surviving mutants per module.
mutate: deps
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children 2
	$(PY) -m tests.mutation.report

docs: $(STAMP)
	$(PY) -m bot.configdoc --write README.md
	$(PY) -m bot.ha > docs/roles.md
	$(PY) -m bot.statuscontract > docs/status.schema.json

# The bot and every dependency as wheels, for servers without a package index.
# Built by the servers' own Python (Debian 12: /usr/bin/python3, 3.11.2, which
# needs async-timeout where 3.11.3+ does not), in a throwaway virtualenv.
WHEELHOUSE ?= dist/wheelhouse
TARGET_PYTHON ?= /usr/bin/python3
wheelhouse:
	rm -rf $(WHEELHOUSE)
	venv=$$(mktemp -d) && trap 'rm -rf "$$venv"' EXIT && $(TARGET_PYTHON) -m venv "$$venv" && \
		"$$venv/bin/pip" wheel --quiet --wheel-dir $(WHEELHOUSE) .

# On a PBX server, as root: a virtualenv in /opt/failover-bot from the wheelhouse,
# /usr/local/bin/failover-bot, the units, the guide (deploy/README.md, step 1).
PREFIX ?= /opt/failover-bot
install-host:
	PREFIX=$(PREFIX) WHEELHOUSE=$(abspath $(WHEELHOUSE)) sh deploy/install-host.sh

clean:
	rm -rf $(VENV) .deps .mypy_cache .ruff_cache mutants
