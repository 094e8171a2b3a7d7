# meterlink: every target uses the virtual environment in .venv.
# `make run` shows the gateway working with simulators; `make test` runs the suite.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# What running the gateway needs, and on top of it what the tests and tools need.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
# The build backend that installs the `meterlink` command: pyproject.toml's pin.
SETUPTOOLS := $(shell grep -o 'setuptools==[0-9.]*' pyproject.toml)
ifeq ($(SETUPTOOLS),)
$(error pyproject.toml's build-system must pin setuptools as setuptools==X.Y.Z)
endif

.PHONY: all venv dev run test chaos tap status bench lint format stop ctl clean

## `make` alone: .venv with the pinned runtime dependencies and the `meterlink` command.
all: venv

venv: $(RUN_STAMP)
	@$(PY) -c 'from common.daemon import compile_bytecode; compile_bytecode(".")'

## `make dev`: also the test and lint tools (every target that needs them does this).
dev: venv $(DEV_STAMP)

## The checkout goes on sys.path as a plain .pth line (editable_mode=compat):
## setuptools' default editable finder imports pathlib, urllib and ipaddress
## at every interpreter's start, half a megabyte in each service process.
$(RUN_STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "meterlink needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt $(SETUPTOOLS)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
		--config-settings editable_mode=compat -e .
	touch $(RUN_STAMP)

$(DEV_STAMP): $(RUN_STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(DEV_STAMP)

## Start the whole stack with the meter and HES simulators, in the foreground (Ctrl-C stops).
run: venv
	METERLINK_SIM=$${METERLINK_SIM:-true} $(VENV)/bin/meterlink run $(ARGS)

## Run the whole test suite.
test: dev
	$(PY) -m pytest $(PYTEST_ARGS)

## Fault injection, repeated: each kill/outage/flood of tests/test_chaos.py
## METERLINK_CHAOS_ROUNDS times (default 5), plus the long variants
## (a 60 s HES outage, a 10 s / 1 GB flood). Not part of `make test`.
chaos: dev
	METERLINK_CHAOS_ROUNDS=$${METERLINK_CHAOS_ROUNDS:-5} $(PY) -m pytest tests/test_chaos.py -m chaos $(PYTEST_ARGS)

## Watch the bus live (add ARGS="--protocol 0x2200" etc.).
tap: venv
	@$(VENV)/bin/meterlink tap $(ARGS)

## One screen of services, links and counters.
status: venv
	@$(VENV)/bin/meterlink status $(ARGS)

## Benchmarks: codec, pipeline, footprint.
bench: dev
	$(PY) -m bench $(ARGS)

lint: dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## Stop a stack started with `make run` in another terminal.
stop: venv
	$(VENV)/bin/meterlink ctl shutdown

## supervisorctl against the running stack, e.g. make ctl ARGS="restart meterlink:uart".
ctl: venv
	$(VENV)/bin/meterlink ctl $(ARGS)

clean:
	rm -rf run .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
