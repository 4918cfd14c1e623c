# The two commands a new user needs are `make run` and `make test`; both install what they need.
VENV        := .venv
PY          := $(VENV)/bin/python
KAFKA_PORT  ?= 9092
# BROKERS=3: a three-node KRaft cluster on KAFKA_PORT..+2 (controllers on the next three ports)
BROKERS     ?= 1
DATA_DIR    ?= ./data
PYTEST_ARGS ?=

.PHONY: install run test test-slow chaos-bounded unit lint kafka kafka-stop chaos bench interop guest-image clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install-debs.sh eventsvm/events/_avro.c
	bash scripts/install-debs.sh
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

run: install
	$(VENV)/bin/eventsvm up --data-dir $(DATA_DIR)

test: install
	bash scripts/test.sh $(PYTEST_ARGS)

# what `make test` leaves out for time: real QEMU guests and the client tests on Kafka
test-slow: install
	TEST_MARKERS="slow and not cluster" bash scripts/test.sh $(PYTEST_ARGS)

# every chaos suite at its bounded size (broker loss, SQLite outages, killed processes): CI runs it
chaos-bounded: install
	TEST_MARKERS="chaos and not cluster" bash scripts/test.sh $(PYTEST_ARGS)

unit: install
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check eventsvm consumers tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

kafka: install
	bash scripts/kafka.sh start $(KAFKA_PORT) $(BROKERS)

kafka-stop:
	bash scripts/kafka.sh stop $(KAFKA_PORT) $(BROKERS)

# The chaos tests at the issue's sizes, not part of `make test` (which runs the bounded ones):
# 300 servers under random kills and a broker restart (CHAOS_SERVERS), and a three-broker cluster
# that loses its busiest broker under 200 creates. Each starts its own brokers and libvirtds.
CHAOS_SERVERS ?= 300
chaos: install
	EVENTSVM_CHAOS_SERVERS=$(CHAOS_SERVERS) $(PY) -m pytest -q -p no:cacheprovider -m "chaos or cluster" \
		tests/chaos/test_chaos_pipeline.py tests/chaos/test_cluster_loss.py $(PYTEST_ARGS)

bench: install
	bash scripts/bench.sh

# OpenStack's conformance tests (tempest, in its own venv) against a fresh cloud; fails when a
# test in interop/passing.txt stops passing. INTEROP_UPDATE=1 make interop rewrites that list.
interop: install
	bash scripts/interop.sh

guest-image: install
	bash scripts/guest-image.sh

clean:
	rm -rf $(VENV) .venv-tempest .pytest_cache .mypy_cache .ruff_cache
