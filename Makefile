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
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# The whole system: a local Kafka (unless KAFKA_URL / KAFKA_BOOTSTRAP_SERVERS points elsewhere),
# `kafka-tasks release`, then the Procfile's web, auth and payments processes under honcho.
run: setup
	scripts/run-local

kafka: setup
	$(BIN)/kafka-tasks kafka

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Faults, load and bad input on real processes and real Kafka; writes docs/reliability.md.
# These tests are part of `make test` too.
reliability: setup
	$(BIN)/python -m pytest -m reliability $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var/kafka
