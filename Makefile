# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test bench ui clean bigquery-emulator

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt pip setuptools wheel
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The BigQuery emulator (local-bigquery) for the tests: its own venv, as it needs Python >= 3.13.
BQ_VENV ?= .venv-bigquery
BQ_PYTHON ?= $(shell for p in $$(ls -d /root/.pyenv/versions/3.1[3-9]*/bin/python 2>/dev/null) $$(command -v python3.13); do "$$p" -c 'import sys; assert sys.version_info >= (3, 13)' 2>/dev/null && echo "$$p" && break; done)
BQ_STAMP := $(BQ_VENV)/.installed-stamp
BQ_REQS := snapshot_platform_tests/bigquery_emulator.requirements.txt

$(BQ_STAMP): $(BQ_REQS)
	@test -n "$(BQ_PYTHON)" || { echo "the BigQuery emulator needs Python >= 3.13 (set BQ_PYTHON)"; exit 1; }
	test -x $(BQ_VENV)/bin/python || $(BQ_PYTHON) -m venv $(BQ_VENV)
	$(BQ_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(BQ_REQS)
	$(BQ_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps local-bigquery==0.4.0
	touch $(BQ_STAMP)

bigquery-emulator: $(BQ_STAMP)

demo: install
	$(BIN)/snapshot-platform demo

test: install bigquery-emulator
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/snapshot_throughput.py

ui: install
	home="$${DAGSTER_HOME:-$${SNAPSHOT_PLATFORM_HOME:-$$HOME/.snapshot_platform}/dagster_home}"; mkdir -p "$$home"; \
	DAGSTER_HOME="$$home" VIRTUAL_ENV="$(CURDIR)/$(VENV)" PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dg dev

clean:
	rm -rf $(VENV) .demo build *.egg-info
