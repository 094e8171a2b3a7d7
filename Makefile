# meterlink: every target uses the virtual environment in .venv.
# `make run` shows the gateway working with simulators; `make test` runs the suite.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all venv run test chaos tap status bench lint format stop ctl clean

## `make` alone: .venv with the pinned dependencies and the `meterlink` command.
all: venv

venv: $(STAMP)
	@$(PY) -c 'from common.daemon import compile_bytecode; compile_bytecode(".")'

## The checkout goes on sys.path as a plain .pth line (editable_mode=compat):
## setuptools' default editable finder imports pathlib, urllib and ipaddress
## at every interpreter's start, half a megabyte in each service process.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "meterlink needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
		--config-settings editable_mode=compat -e .
	touch $(STAMP)

## Start the whole stack with the meter and HES simulators, in the foreground (Ctrl-C stops).
run: venv
	METERLINK_SIM=$${METERLINK_SIM:-true} $(VENV)/bin/meterlink run $(ARGS)

## Run the whole test suite.
test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

## Fault injection, repeated: each kill/outage/flood of tests/test_chaos.py
## METERLINK_CHAOS_ROUNDS times (default 5), plus the long variants
## (a 60 s HES outage, a 10 s / 1 GB flood). Not part of `make test`.
chaos: venv
	METERLINK_CHAOS_ROUNDS=$${METERLINK_CHAOS_ROUNDS:-5} $(PY) -m pytest tests/test_chaos.py -m chaos $(PYTEST_ARGS)

## Watch the bus live (add ARGS="--protocol 0x2200" etc.).
tap: venv
	@$(VENV)/bin/meterlink tap $(ARGS)

## One screen of services, links and counters.
status: venv
	@$(VENV)/bin/meterlink status $(ARGS)

## Benchmarks: codec, pipeline, footprint.
bench: venv
	$(PY) -m bench $(ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: venv
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
