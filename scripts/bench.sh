#!/usr/bin/env bash
# What `make bench` runs: every benchmark in bench/, results to bench/results/.
# Kafka benchmarks use the broker at EVENTSVM_BENCH_KAFKA (default 127.0.0.1:9092); when that is a
# local port with nothing listening, a broker is started with scripts/kafka.sh and stopped on exit
# (only one this script started). Extra arguments go to bench/run.py (--only, --repetitions, --scale).
set -uo pipefail
cd "$(dirname "$0")/.."

export EVENTSVM_BENCH_KAFKA="${EVENTSVM_BENCH_KAFKA:-127.0.0.1:9092}"
HOST="${EVENTSVM_BENCH_KAFKA%%,*}"
PORT="${HOST##*:}"
HOST="${HOST%:*}"

if [[ "$HOST" == "127.0.0.1" || "$HOST" == "localhost" ]] \
        && ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    if bash scripts/kafka.sh start "$PORT"; then
        trap 'bash scripts/kafka.sh stop "$PORT"' EXIT
    else
        echo "bench.sh: no Kafka broker; the Kafka benchmarks will be skipped" >&2
    fi
fi

.venv/bin/python -m bench.run "$@"
