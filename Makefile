# The targets developers and CI both call. `make test` is the one command that
# installs everything and passes the tests; `make demo` runs the main job.
SHELL := /bin/bash
PY ?= python3
# ruff does not follow the fleetpulse/<component> symlinks, so the component folders are named here.
LINT_PATHS := fleetpulse agents streams models alerts dashboards tests benchmarks
export FLEETPULSE_TEST_STACK_DIR ?= $(CURDIR)/.local/test-stack

.PHONY: install lint typecheck check test test-unit test-integration demo stack-up stack-down clean train evaluate

install:
	deploy/local/install-deps.sh

lint:
	ruff check $(LINT_PATHS)
	ruff format --check $(LINT_PATHS)

typecheck:
	mypy

check: lint typecheck

# Everything: install, static checks, unit + integration tests against real services.
test: install check
	set -o pipefail; trap '$(MAKE) --no-print-directory test-stack-down' EXIT; \
	$(PY) -m pytest -p no:cacheprovider

test-unit:
	$(PY) -m pytest -m "not integration"

test-integration:
	$(PY) -m pytest -m integration

# Services are found by the pid files / data folders under the test stack's state folder.
test-stack-down:
	FLEETPULSE_LOCAL_DIR=$(FLEETPULSE_TEST_STACK_DIR) deploy/local/stack.sh stop all

demo: install
	fleetpulse demo

stack-up:
	deploy/local/stack.sh start all

stack-down:
	deploy/local/stack.sh stop all

# Disk model on the real Backblaze data -> models/shipped, the registry packaged with fleetpulse that the
# worker and `make demo` serve by default (same data and seed give the same version digest).
train:
	fleetpulse train --data-dir ../shared/data --ship

# The evaluation report on real data (model vs baselines, battery end of life) -> .local/reports/latest.
evaluate:
	fleetpulse evaluate --data-dir ../shared/data --out .local/reports/latest

clean: stack-down
	rm -rf .local
