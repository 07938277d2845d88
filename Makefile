# kafka_saga — common tasks. `make run` and `make test` install first when .venv is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
ROLES  ?= all

.PHONY: install run test test-tansu test-kafka test-cluster test-unit chaos bench topics replay dlq \
        broker kafka-jars lint docs docs-check clean

$(BIN)/kafka-saga: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/kafka-saga  ## create .venv and install the package with dev extras

run: install  ## start the platform: on KAFKA_BOOTSTRAP_SERVERS, else a local broker (KAFKA_SAGA_ENGINE=tansu|kafka)
	$(BIN)/kafka-saga run --roles $(ROLES)

test: test-tansu test-kafka test-cluster  ## the whole suite on Tansu, broker tests again on Kafka, the cluster suite

test-tansu: install  ## every test, on the embedded Tansu broker (tests/cluster apart)
	$(PY) -m pytest -q --ignore=tests/cluster

test-kafka: install  ## every test that talks to the broker, once more on a single Apache Kafka node
	KAFKA_SAGA_TEST_ENGINE=kafka $(PY) -m pytest -q -m broker tests/integration tests/chaos

test-cluster: install  ## faults on a three-node Apache Kafka cluster (tests/cluster)
	$(PY) -m pytest -q -s tests/cluster

test-unit: install  ## pure unit tests only (no broker)
	$(PY) -m pytest -q tests/unit

chaos: install  ## faults, bad input, load and shutdown scenarios, with their figures (-s)
	$(PY) -m pytest -q -s -m chaos tests/chaos

bench: install  ## benchmarks (ENGINE=tansu|kafka, default tansu); writes bench-report.json
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@command -v wrk >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1; } \
	    || echo "wrk is not installed: the query load uses an aiohttp client"
	$(if $(filter kafka,$(ENGINE)),$(MAKE) kafka-jars)
	$(PY) scripts/bench.py --engine $(or $(ENGINE),tansu)

topics: install  ## create the topics on $$KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092)
	$(BIN)/kafka-saga topics create

replay: install  ## rebuild the projections from orders.events into replay-projections.json
	$(BIN)/kafka-saga replay --output replay-projections.json

dlq: install  ## list the dead-letter queue
	$(BIN)/kafka-saga dlq list

broker: install  ## run a local broker in the foreground on 127.0.0.1:9092 (KAFKA_SAGA_ENGINE=tansu|kafka)
	$(BIN)/kafka-saga broker

kafka-jars:  ## resolve Apache Kafka's broker jars with Maven into .cache/kafka (git-ignored)
	mvn -q -B -f scripts/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
	    -DoutputDirectory=$(CURDIR)/.cache/kafka/3.9.1/libs
	@echo 3.9.1 > .cache/kafka/3.9.1/libs/.complete

lint: install docs-check  ## ruff, mypy (0 errors), the import layers (lint-imports: contracts in pyproject.toml), generated docs up to date
	$(BIN)/ruff check kafka_saga tests scripts
	$(BIN)/mypy kafka_saga
	$(BIN)/lint-imports

docs: install  ## regenerate the generated blocks of docs/ (kafka_saga/docgen.py)
	$(PY) -m kafka_saga.docgen

docs-check: install  ## fail when a generated block of docs/ differs from its generator
	$(PY) -m kafka_saga.docgen --check

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .import_linter_cache \
	       .grimp_cache logs pids replay-projections.json
	@echo "kept: .data (local Kafka data) and .cache (Kafka jars); remove them by hand"
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# --- containers (needs a Docker engine with the compose plugin; see compose.yaml) ---------
.PHONY: compose-up compose-down

compose-up:  ## Kafka (KRaft) + topics + the platform in containers; API on localhost:8080
	docker compose up -d --build

compose-down:  ## stop the containers and remove them with their volumes
	docker compose down -v
