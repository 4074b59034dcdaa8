# One entry point for people and CI. Every target builds the virtual environment it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two installs into one environment, both pinned by constraints.txt: what users run (the runtime and
# the `report` extra: `make run`), and the development tools on top (pytest, mypy, ruff, moto,
# hypothesis, stubs: `make test`, `make lint`, `make bench`).
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
# pytest-xdist workers for the suite: each has its own emulator (the session fixture, port 0). Three on
# the two-core machine: many integration tests wait on subprocesses and sleeps, so a third worker
# fills the cores (measured: -n 2 about 110-140 s, -n 3 80-95 s, -n 4 95-105 s).
TEST_WORKERS ?= 3

.PHONY: run test test-fast test-all lint bench fmt lock clean schemas

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[report]'
	touch $@

$(DEV_STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[report,dev]'
	touch $@

## make run: make the demo data if missing, start the emulator, run jobs/demo.toml, show status and stats.
run: $(RUN_STAMP)
	$(BIN)/python -m runner.demo

## make test: the default suite (slow soak tests excluded), in parallel.
test: $(DEV_STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS)

## make test-fast: the unit tests only (tests/unit: no emulator, no subprocess), in one process.
test-fast: $(DEV_STAMP)
	$(BIN)/pytest tests/unit

## make test-all: everything, soak tests included.
test-all: $(DEV_STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) -m ''

lint: $(DEV_STAMP)
	$(BIN)/ruff check runner tests bench
	$(BIN)/ruff format --check runner tests bench
	$(BIN)/mypy

fmt: $(DEV_STAMP)
	$(BIN)/ruff format runner tests bench
	$(BIN)/ruff check --fix runner tests bench

## make bench: run bench/ against the emulator and rewrite BENCHMARKS.md.
bench: $(DEV_STAMP)
	$(BIN)/python -m bench

## make schemas: regenerate schemas/ from the code (tests fail when they drift).
schemas: $(DEV_STAMP)
	$(BIN)/python -c "from runner.contracts import main; main()"

## make lock: refresh constraints.txt from the current resolution of pyproject's ranges.
lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/pip install --quiet --upgrade pip
	.lockvenv/bin/pip install --quiet -e '.[report,dev]'
	.lockvenv/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
