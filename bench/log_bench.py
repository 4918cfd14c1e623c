"""Append-then-consume throughput of each log engine, through the EventLog port only.

Each repetition opens a fresh log, appends pre-encoded boot-flow events in batches, then one group
member consumes them all, committing after every poll (commit_step with no outputs, as a consumer
that only folds state would). Both are timed in steady state: the first batch of each (starting
the producers; joining the group) is not counted.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from bench.logs import kafka_opener, on_both_engines
from bench.suite import Context, benchmark
from eventsvm.events.codec import default_codec
from eventsvm.log.port import EventLog, LogError, OutRecord
from tests.factories import pipeline_events

TOPIC = "eventsvm.bench.events"
# A service's step commits up to 500 outputs at once (ServiceRunner.max_batch): append that much.
BATCH = 500
PARTITIONS = 4
# The grouped variant: this many threads append BATCH-sized batches at once, as request handlers
# or services sharing one process do; group commit puts up to 5000 records in one transaction.
APPENDERS = 8
CONSUME_DEADLINE_S = 120.0


def _records(count: int) -> list[OutRecord]:
    codec = default_codec()
    events = pipeline_events(count // 5 + 1, random.Random(2))[:count]
    return [OutRecord(TOPIC, e.aggregate_id.encode(), codec.encode(e)) for e in events]


def _append(log: EventLog, records: list[OutRecord]) -> float:
    """Events/s in steady state: the first batch, which starts the log's producers (a
    long-running appender pays that once), is neither timed nor counted."""
    log.append(records[:BATCH])
    start = time.perf_counter()
    for i in range(BATCH, len(records), BATCH):
        log.append(records[i : i + BATCH])
    return (len(records) - BATCH) / (time.perf_counter() - start)


def _append_grouped(log: EventLog, records: list[OutRecord]) -> float:
    """Events/s with APPENDERS threads appending BATCH-sized batches concurrently (steady state,
    as in _append)."""
    log.append(records[:BATCH])
    batches = [records[i : i + BATCH] for i in range(BATCH, len(records), BATCH)]
    failures: list[BaseException] = []

    def appender(mine: list[list[OutRecord]]) -> None:
        try:
            for batch in mine:
                log.append(batch)
        except BaseException as exc:  # re-raised below: a failed append must fail the benchmark
            failures.append(exc)

    threads = [threading.Thread(target=appender, args=(batches[k::APPENDERS],)) for k in range(APPENDERS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise failures[0]
    return (len(records) - BATCH) / elapsed


def _consume(log: EventLog, expected: int) -> float:
    """Events/s in steady state: the clock starts when the first batch has arrived (so joining the
    group, which a long-running service pays once, is not counted) and that batch is not counted."""
    member = log.member("bench", [TOPIC], member_name="bench-0")
    try:
        seen, counted, started = 0, 0, 0.0
        deadline = time.monotonic() + CONSUME_DEADLINE_S
        while seen < expected:
            if time.monotonic() > deadline:
                raise LogError(f"consumed {seen} of {expected} records within {CONSUME_DEADLINE_S:g} s")
            batch = member.poll(max_records=1000, timeout=1.0)
            if not batch:
                continue
            if not started:
                started = time.perf_counter()
            else:
                counted += len(batch)
            member.commit_step([], batch)
            seen += len(batch)
        return counted / (time.perf_counter() - started)
    finally:
        member.close()


def _run(ctx: Context, opener: Callable[[], AbstractContextManager[EventLog]],
         append: Callable[[EventLog, list[OutRecord]], float] = _append) -> dict[str, list[float]]:
    records = _records(ctx.size(20000))
    out: dict[str, list[float]] = {"append_then_consume": [], "append": [], "consume": []}
    for _ in range(ctx.repetitions):
        with opener() as log:
            log.create_topics([TOPIC], PARTITIONS)
            appended = append(log, records)
            consumed = _consume(log, len(records))
            out["append"].append(appended)
            out["consume"].append(consumed)
            # the whole trip: every event appended, then every event consumed and committed
            out["append_then_consume"].append(1.0 / (1.0 / appended + 1.0 / consumed))
    return out


on_both_engines(
    "log", _run, [TOPIC], PARTITIONS,
    "SQLite engine (WAL file on local disk): append batches of 500, consume + commit.",
    "Kafka engine (local broker, acks=all, transactions): append batches of 500, consume + commit.",
)


@benchmark("log.kafka.grouped")
def kafka_grouped(ctx: Context) -> dict[str, list[float]]:
    """Kafka engine, 8 threads of one process appending batches of 500 at once (group commit
    shares their transactions), then consume + commit as above."""
    opener = kafka_opener(ctx, [TOPIC], PARTITIONS)
    return _run(ctx, opener, _append_grouped)


SINGLE_APPENDERS = 16


def _single_appends(log: EventLog, records: list[OutRecord]) -> dict[str, float]:
    """Appends of one record each, as every POST /servers is: events/s from one thread, then from
    SINGLE_APPENDERS threads at once (group commit shares their transactions)."""
    log.append(records[:1])  # starts the producers, untimed
    half = len(records) // 2
    start = time.perf_counter()
    for record in records[1:half]:
        log.append([record])
    serial = (half - 1) / (time.perf_counter() - start)

    rest = records[half:]
    failures: list[BaseException] = []

    def appender(mine: list[OutRecord]) -> None:
        try:
            for record in mine:
                log.append([record])
        except BaseException as exc:  # re-raised below: a failed append must fail the benchmark
            failures.append(exc)

    threads = [threading.Thread(target=appender, args=(rest[k::SINGLE_APPENDERS],))
               for k in range(SINGLE_APPENDERS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    concurrent = len(rest) / (time.perf_counter() - start)
    if failures:
        raise failures[0]
    return {"serial": serial, "concurrent": concurrent}


@benchmark("log.kafka.single_appends")
def kafka_single_appends(ctx: Context) -> dict[str, list[float]]:
    """Kafka engine, appends of one record: one thread, then 16 threads at once (group commit)."""
    opener = kafka_opener(ctx, [TOPIC], PARTITIONS)
    records = _records(ctx.size(2000))
    out: dict[str, list[float]] = {"serial": [], "concurrent": []}
    for _ in range(ctx.repetitions):
        with opener() as log:
            log.create_topics([TOPIC], PARTITIONS)
            for metric, rate in _single_appends(log, records).items():
                out[metric].append(rate)
    return out
