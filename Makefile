# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-unit bench ui clean bigquery-emulator chromium

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt pip setuptools wheel
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The project's own bytecode, as pip writes it for the packages it installs (an editable install gets
# none, and with PYTHONDONTWRITEBYTECODE set every process compiled every module again: ~0.1 s of
# each snapshot command). Stale files are harmless: Python checks each against its source.
install: $(STAMP)
	@$(BIN)/python -m compileall -q snapshot_platform

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

# Headless Chromium for the browser tests (integration/test_dagster_ui.py, test_html_report.py):
# Debian's package, installed when absent and root; otherwise a message (those tests skip locally
# without it and fail under CI=true).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	  else echo "chromium is not installed: run 'sudo apt-get install -y chromium' (the browser tests need it)"; fi; }

test: install bigquery-emulator chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The unit tests only (snapshot_platform_tests/unit/): no server, no emulator, under a minute.
test-unit: install
	$(BIN)/python -m pytest snapshot_platform_tests/unit $(PYTEST_ARGS)

# The benchmarks side by side (benchmarks/README.md): the bench extra adds the peers (DuckDB's postgres
# extension, ConnectorX). BENCH_ARGS for more, e.g. BENCH_ARGS="--rows 6000000 --scaling".
BENCH_STAMP := $(VENV)/.bench-stamp
BENCH_ARGS ?=

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Then the K=1 vs K=2 parallel read, the backfill and the ADBC build benchmarks, each with the load average.
bench: $(BENCH_STAMP)
	@$(BIN)/python -m compileall -q snapshot_platform
	$(BIN)/python benchmarks/snapshot_throughput.py $(BENCH_ARGS)
	@for b in parallel_read backfill adbc_build; do \
	  if test -f benchmarks/$$b.py; then \
	    echo; echo "== benchmarks/$$b.py (load average $$(cut -d' ' -f1-3 /proc/loadavg))"; \
	    $(BIN)/python benchmarks/$$b.py || exit 1; \
	  fi; done

ui: install
	home="$${DAGSTER_HOME:-$${SNAPSHOT_PLATFORM_HOME:-$$HOME/.snapshot_platform}/dagster_home}"; mkdir -p "$$home"; \
	DAGSTER_HOME="$$home" VIRTUAL_ENV="$(CURDIR)/$(VENV)" PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dg dev

# The distributed topology on one machine (deploy/cluster.py, docs/deployment.md): moto (S3), MLflow
# server, dagster-daemon, dagster-webserver, two Celery workers; PostgreSQL and RabbitMQ where they run
# (started if absent). Serves $$SNAPSHOT_PLATFORM_CATALOG, else the demo catalog. State in .cluster/.
CLUSTER_STATE ?= .cluster

cluster: install
	$(BIN)/python deploy/cluster.py up --state $(CLUSTER_STATE)

# Stops exactly what `make cluster` started (recorded in $(CLUSTER_STATE)/state.json), nothing else.
cluster-down:
	@if test -x $(BIN)/python; then $(BIN)/python deploy/cluster.py down --state $(CLUSTER_STATE); \
	else echo "no $(VENV): nothing was started"; fi

clean:
	rm -rf $(VENV) .demo build *.egg-info
