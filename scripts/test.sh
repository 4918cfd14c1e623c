#!/usr/bin/env bash
# What `make test` runs: lint, types, then the whole pytest suite against a real Kafka broker.
# Uses the broker already listening on 127.0.0.1:${KAFKA_PORT:-9092}, or starts one and stops it
# on exit (only one this script started). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."

PORT="${KAFKA_PORT:-9092}"
if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    bash scripts/kafka.sh start "$PORT" || exit 1
    trap 'bash scripts/kafka.sh stop "$PORT"' EXIT
fi
export EVENTSVM_TEST_KAFKA="127.0.0.1:$PORT"

lint=0
.venv/bin/ruff check eventsvm consumers tests bench || lint=1
.venv/bin/mypy || lint=1
# the layers and the no-cycles rule (pyproject.toml [tool.importlinter])
.venv/bin/lint-imports --no-cache >/dev/null || { .venv/bin/lint-imports --no-cache | tail -40; lint=1; }
# The C codec is optional for users without a compiler; where gcc is here (CI), a build that
# failed would only show as a slower pure-Python codec, so it is a failure.
if command -v gcc >/dev/null && ! .venv/bin/python -c 'import eventsvm.events._avro' 2>/dev/null; then
    echo "test.sh: gcc is installed but the _avro C extension did not build (see pip's output)" >&2
    lint=1
fi

# -m "not cluster": the three-broker cluster test is `make chaos`'s (too heavy for two cores).
# `make test` leaves out what has a target of its own (tests/conftest.py marks them): the chaos
# suites and the process-kill tests on Kafka (`make chaos-bounded`, which CI runs too; the list is
# KILLS_ON_KAFKA in tests/conftest.py), QEMU guests and the client tests on Kafka
# (`make test-slow`), and the three-broker cluster (`make chaos`); keeping it near 20 minutes here.
MARKERS="${TEST_MARKERS:-not cluster and not chaos and not slow}"
PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider -m "$MARKERS")
if [[ $# -eq 0 && -z "${TEST_MARKERS:-}" ]]; then
    # The whole suite on two cores: the unit tests (in-process, no broker, ~1,500 of them) run in a
    # second pytest beside the rest (clouds, real clients, the browser, Kafka), which spends much of
    # its time waiting on them; one after the other the suite took 17.5-20 minutes in CI, at the
    # limit. The unit tests' output follows the rest's.
    unit_log="$(mktemp)"
    "${PYTEST[@]}" --durations=10 tests/unit >"$unit_log" 2>&1 &
    unit_pid=$!
    "${PYTEST[@]}" --durations=15 --ignore=tests/unit tests
    status=$?
    wait "$unit_pid"
    unit_status=$?
    echo "--- tests/unit (run beside the rest) ---"
    cat "$unit_log"
    rm -f "$unit_log"
    # either one's failure (or its "no tests collected", 5, checked below) is the run's
    [[ $status -eq 0 ]] && status=$unit_status
else
    "${PYTEST[@]}" --durations=15 tests "$@"
    status=$?
fi
if [[ $status -eq 5 ]]; then
    echo "test.sh: pytest collected no tests" >&2
    exit 1
fi
if [[ $status -eq 0 && $lint -ne 0 ]]; then
    echo "test.sh: the tests passed but ruff, mypy or the C extension check did not" >&2
    exit 1
fi
exit $status
