# The targets developers and CI both call. `make test` is the one command that
# installs everything and passes the tests; `make demo` runs the main job.
SHELL := /bin/bash
PY ?= python3
LINT_PATHS := fleetpulse agents streams models alerts dashboards tests benchmarks docs
export FLEETPULSE_TEST_STACK_DIR ?= $(CURDIR)/.local/test-stack

.PHONY: install native lint typecheck check docs results test test-pythons test-unit test-integration demo stack-up stack-down clean train evaluate

install:
	deploy/local/install-deps.sh

# Rebuilds fleetpulse.streams._native (streams/native) in place after an edit, for this interpreter (release,
# as installs build it). The extension is optional for pip, which goes on without it when cargo fails: the
# old build is removed first, so a failed build fails here.
NATIVE_SO = streams/_native$(shell $(PY) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
native:
	rm -f $(NATIVE_SO)
	$(PY) -c 'import setuptools; setuptools.setup()' build_rust --inplace
	test -f $(NATIVE_SO)

lint:
	ruff check $(LINT_PATHS)
	ruff format --check $(LINT_PATHS)
	if command -v cargo >/dev/null; then cd streams/native && cargo fmt --check && cargo clippy --release -q -- -D warnings; fi

# mypy does not read setuptools' package-dir mapping, so it gets a tree of links under .local
# that lays the component folders out as fleetpulse.<component>; paths in its output are mapped back.
TYPECHECK_TREE := .local/typecheck/fleetpulse
COMPONENTS := agents streams models alerts dashboards
typecheck:
	rm -rf $(TYPECHECK_TREE) && mkdir -p $(TYPECHECK_TREE)
	for c in $(COMPONENTS); do ln -s ../../../$$c $(TYPECHECK_TREE)/$$c; done
	set -o pipefail; mypy | sed -E 's#^\.local/typecheck/fleetpulse/##'

check: lint typecheck

# The docs site, strictly: a broken link or a reference page that fails to generate fails the build.
docs:
	$(PY) docs/gen_results.py --check
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true mkdocs build --strict --quiet

# The measured tables in README.md and the Performance page, from models/reports/example/metrics.json
# (make evaluate) and benchmarks/results/*.json (the benchmark scripts).
results:
	$(PY) docs/gen_results.py --write

# Everything: install, static checks, unit + integration tests against real services.
test: install check docs
	set -o pipefail; trap '$(MAKE) --no-print-directory test-stack-down' EXIT; \
	$(PY) -m pytest -p no:cacheprovider
	$(MAKE) --no-print-directory test-pythons

# The agent's and the server's unit tests on CPython 3.10, 3.12 and 3.13 (pyenv interpreters).
test-pythons:
	tests/other_pythons.sh

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
