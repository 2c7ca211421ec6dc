# hpcmarl: `make demo` and `make test` each set up everything they need (tools/bootstrap.sh is
# idempotent: a second run installs nothing).
SHELL := /bin/bash
VENV  ?= .venv
BIN   := $(VENV)/bin
NP    ?= 3
# Open MPI refuses root without these; --oversubscribe lets 3-4 ranks share 2 cores; --bind-to none
# keeps the OS free to move oversubscribed ranks between cores.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export OMPI_MCA_rmaps_base_oversubscribe := 1
# ranks waiting in MPI yield the core (oversubscribed ranks otherwise spin against each other)
export OMPI_MCA_mpi_yield_when_idle := 1
# mkdocs-material prints a banner about MkDocs 2 on every build
export NO_MKDOCS_2_WARNING := 1
MPIRUN ?= mpirun --bind-to none
PYTEST_ARGS ?=
# setup.py extras to install too (a comma list): `make setup EXTRAS=jax,vmas` adds the batched simulators
EXTRAS ?=
# the tests run with the batched simulators, the live loggers and the statistics installed (their tests fail rather than skip when these are listed)
TEST_EXTRAS ?= jax,vmas,tracking,stats

.PHONY: setup demo test test-slow test-all test-unit test-mpi bench clean-runs lint docs docs-deps docs-serve results-docs

setup:
	@EXTRAS="$(EXTRAS)" bash tools/bootstrap.sh

demo: setup
	$(MPIRUN) -n $(NP) $(BIN)/hpcmarl train configs/demo.yaml --fresh
	$(BIN)/hpcmarl inspect runs/demo

# the test targets set up with TEST_EXTRAS too (a target-specific EXTRAS reaches the setup prerequisite)
test test-slow test-all test-unit test-mpi: EXTRAS = $(TEST_EXTRAS)

# make test: the fast tier (every promise once, about 10 minutes on 2 cores; tests/conftest.py says which tests);
# make test-slow: every other test (marked slow); make test-all: both in one run
test: setup
	HPCMARL_EXTRAS=$(EXTRAS) $(BIN)/python -m pytest tests -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	HPCMARL_EXTRAS=$(EXTRAS) $(BIN)/python -m pytest tests -m slow $(PYTEST_ARGS)

test-all: setup
	HPCMARL_EXTRAS=$(EXTRAS) $(BIN)/python -m pytest tests $(PYTEST_ARGS)

test-unit: setup
	HPCMARL_EXTRAS=$(EXTRAS) $(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-mpi: setup
	HPCMARL_EXTRAS=$(EXTRAS) $(BIN)/python -m pytest tests/mpi tests/e2e $(PYTEST_ARGS)

clean-runs:
	rm -rf runs

# lint and docs install their extras (setup.py) into the venv on first use
lint: setup
	@[ -x $(BIN)/ruff ] || $(BIN)/python -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[lint]"
	$(BIN)/ruff check hpcmarl tests tools examples

docs-deps: setup
	@[ -x $(BIN)/mkdocs ] || $(BIN)/python -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[docs]"

# the generated reference pages (tools/docs_gen.py) and results pages (tools/render_results.py), then the site in
# site/; --strict fails on any warning (a broken link or anchor, a page missing from the navigation)
docs: docs-deps
	$(BIN)/python tools/docs_gen.py
	$(BIN)/python tools/render_results.py
	$(BIN)/mkdocs build --strict

docs-serve: docs-deps
	$(BIN)/mkdocs serve

# docs/results/*.md from results/*.json
results-docs: setup
	$(BIN)/python tools/render_results.py
