# kafka_saga — common tasks. `make run` and `make test` install first when .venv is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
ROLES  ?= all

.PHONY: install run test test-unit chaos bench topics replay dlq broker lint clean

$(BIN)/kafka-saga: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/kafka-saga  ## create .venv and install the package with dev extras

run: install  ## start the platform (embedded broker unless KAFKA_BOOTSTRAP_SERVERS is set)
	$(BIN)/kafka-saga run --roles $(ROLES)

test: install  ## the whole test suite, on the real embedded broker
	$(PY) -m pytest -q

test-unit: install  ## pure unit tests only (no broker)
	$(PY) -m pytest -q tests/unit

chaos: install  ## faults, bad input, load and shutdown scenarios, with their figures (-s)
	$(PY) -m pytest -q -s -m chaos tests/chaos

bench: install  ## benchmarks against the embedded broker; writes bench-report.json
	$(PY) scripts/bench.py

topics: install  ## create the topics on $$KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092)
	$(BIN)/kafka-saga topics create

replay: install  ## rebuild the projections from orders.events into replay-projections.json
	$(BIN)/kafka-saga replay --output replay-projections.json

dlq: install  ## list the dead-letter queue
	$(BIN)/kafka-saga dlq list

broker: install  ## run the embedded broker in the foreground on 127.0.0.1:9092
	$(BIN)/kafka-saga broker

lint: install
	$(BIN)/ruff check kafka_saga tests scripts
	$(BIN)/mypy kafka_saga

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache logs pids replay-projections.json
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# --- containers (needs a Docker engine with the compose plugin; see compose.yaml) ---------
.PHONY: compose-up compose-down

compose-up:  ## Kafka (KRaft) + topics + the platform in containers; API on localhost:8080
	docker compose up -d --build

compose-down:  ## stop the containers and remove them with their volumes
	docker compose down -v
