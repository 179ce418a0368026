# kafka-tasks: `make run` runs the whole system, `make test` runs the tests.
# Both set up what they need first (virtualenv, Python packages, Kafka jars) and are idempotent.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test kafka reliability clean

setup: $(STAMP)
	$(BIN)/kafka-tasks kafka --fetch-only >/dev/null

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[reference,dev]'
	touch $@

# The whole system: a local Kafka (unless KAFKA_URL / KAFKA_BOOTSTRAP_SERVERS points elsewhere),
# `kafka-tasks release`, then the Procfile's web, auth and payments processes under honcho, every
# part with the same environment (.env over the shell's).  See tasks/localrun.py.
run: setup
	$(BIN)/kafka-tasks run

kafka: setup
	$(BIN)/kafka-tasks kafka

# The HTTP load test holds its load 30 s here (60 s in `make reliability`), to keep the suite short.
test: setup lint test-prerequisites
	RELIABILITY_LOAD_SECONDS=$${RELIABILITY_LOAD_SECONDS:-30} $(BIN)/python -m pytest $(PYTEST_ARGS)

# What the tests run besides Python and Kafka: a throwaway PostgreSQL (Debian's server binaries) and
# headless Chromium with its driver.  Installed from Debian's packages when missing (as root).
.PHONY: test-prerequisites
test-prerequisites:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		echo "Installing postgresql, chromium and chromium-driver from Debian's packages ..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql chromium chromium-driver >/dev/null; \
	fi

# ruff, configured in pyproject.toml: lint, and the format every file keeps.
.PHONY: lint
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Faults, load and bad input on real processes and real Kafka; writes docs/reliability.md.
# These tests are part of `make test` too, which writes no report.
reliability: setup
	$(BIN)/python -m pytest tests -m reliability --reliability-report docs/reliability.md $(PYTEST_ARGS)

# Resets the demo: the local Kafka's data and the local database (the virtualenv stays).
# The dashboard's screenshots in docs/ (tests/test_ops_browser.py, in headless Chromium).
.PHONY: screenshots
screenshots: setup test-prerequisites
	$(BIN)/python -m pytest tests/test_ops_browser.py --screenshots docs $(PYTEST_ARGS)

clean:
	rm -rf var/kafka var/kafka-tasks.db var/kafka-tasks.db-wal var/kafka-tasks.db-shm

# The benchmark suite (docs/benchmarks.md and its plots): the Python extras, then redis-server,
# rabbitmq-server and wrk from Debian's packages when missing (as root), then every scenario.
# BENCH_ARGS passes options, e.g. BENCH_ARGS='--only latency --runs 5'.
.PHONY: bench
bench: setup
	$(BIN)/python -m pip install -q -e '.[reference,bench]'
	@if ! command -v redis-server >/dev/null || ! test -x /usr/lib/rabbitmq/bin/rabbitmq-server || ! command -v wrk >/dev/null; then \
		echo "Installing redis-server, rabbitmq-server and wrk from Debian's packages ..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server rabbitmq-server wrk >/dev/null; \
	fi
	$(BIN)/python -m benchmarks $(BENCH_ARGS)
