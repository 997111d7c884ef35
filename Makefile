# peftbench — the two commands: `make demo` and `make test`. Both set everything up themselves.
#   make demo          venv + packages + embedded models, the demo sweep, its board (every board is written)
#   make test          the same set-up, then the whole test suite (what CI runs)
# GPU users: make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PY         ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` (0: one process, no xdist); shared resources: tests/conftest.py
PYTEST_WORKERS ?= 2
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.peftbench-installed
TEST_STAMP := $(VENV)/.peftbench-test-installed

.PHONY: setup models browser slurm demo test lint leaderboard clean-results help

help:
	@sed -n '1,5p' Makefile

# torch through pip, so that TORCH_SPEC's --index-url and the machine's pip configuration pick the build
# (CPU or CUDA); everything else through uv, which resolves and downloads in parallel: on a fresh 2-core
# machine the dependencies took pip minutes and take uv about one (make demo's 12-minute budget).
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "uv>=0.8"
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/uv pip install -q --python $(BIN)/python -e .
	touch $(STAMP)

# Test-only extras (pref_voting as the ranking oracle, ...) stay out of `make demo`'s install.
$(TEST_STAMP): $(STAMP) pyproject.toml
	$(BIN)/uv pip install -q --python $(BIN)/python -e ".[test]"
	touch $(TEST_STAMP)

setup: $(STAMP)

models: setup
	$(BIN)/peftbench fetch-models

demo: setup
	$(BIN)/peftbench fetch-models minilm-l6
	$(BIN)/peftbench sweep demo
	$(BIN)/peftbench leaderboard --show sweep:demo

# Headless Chromium renders the HTML leaderboard in a test (Debian's package; root installs it).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	    else echo "chromium not installed (not root): the browser test will be skipped"; fi; }

# A live single-node SLURM for the tests marked `slurm` (scripts/slurm-local.sh: root + apt installs and
# starts it; idempotent). Where it cannot, those tests skip and print why.
slurm:
	@if [ "$$(id -u)" = 0 ]; then scripts/slurm-local.sh up || echo "SLURM not started: the slurm tests will be skipped"; \
	  else echo "not root: no local SLURM; the slurm tests will be skipped unless one is running"; fi

# ruff is pinned to a minor release (test extras) so a new ruff rule cannot fail an unchanged tree.
lint: $(TEST_STAMP)
	$(BIN)/python -m ruff check harness methods tasks hydra_plugins tests benchmarks scripts

test: models browser slurm $(TEST_STAMP) lint
	$(BIN)/python -m pytest -p xdist -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

leaderboard: setup
	$(BIN)/peftbench leaderboard

clean-results:
	rm -rf results/records/*.json results/leaderboards runs
