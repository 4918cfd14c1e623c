"""Append-then-consume throughput of each log engine, through the EventLog port only.

Each repetition opens a fresh log, appends pre-encoded boot-flow events in batches, then one group
member consumes them all, committing after every poll (commit_step with no outputs, as a consumer
that only folds state would).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from bench.suite import Context, Skip, benchmark, scratch_dir
from eventsvm.config import LogConfig
from eventsvm.events.codec import default_codec
from eventsvm.log.factory import open_log
from eventsvm.log.port import EventLog, LogError, OutRecord
from tests.factories import pipeline_events

TOPIC = "eventsvm.bench.events"
BATCH = 100
PARTITIONS = 4
CONSUME_DEADLINE_S = 120.0


def _records(count: int) -> list[OutRecord]:
    codec = default_codec()
    events = pipeline_events(count // 5 + 1, random.Random(2))[:count]
    return [OutRecord(TOPIC, e.aggregate_id.encode(), codec.encode(e)) for e in events]


def _append(log: EventLog, records: list[OutRecord]) -> float:
    start = time.perf_counter()
    for i in range(0, len(records), BATCH):
        log.append(records[i:i + BATCH])
    return len(records) / (time.perf_counter() - start)


def _consume(log: EventLog, expected: int) -> float:
    """Events/s from the poll that brought the first records (group join excluded) to the last."""
    member = log.member("bench", [TOPIC], member_name="bench-0")
    try:
        seen, started = 0, 0.0
        deadline = time.monotonic() + CONSUME_DEADLINE_S
        while seen < expected:
            if time.monotonic() > deadline:
                raise LogError(f"consumed {seen} of {expected} records within {CONSUME_DEADLINE_S:g} s")
            before = time.perf_counter()
            batch = member.poll(max_records=1000, timeout=1.0)
            if batch:
                started = started or before
                member.commit_step([], batch)
                seen += len(batch)
        return seen / (time.perf_counter() - started)
    finally:
        member.close()


def _run(ctx: Context, opener: Callable[[], AbstractContextManager[EventLog]]) -> dict[str, list[float]]:
    records = _records(ctx.size(20000))
    out: dict[str, list[float]] = {"append": [], "consume": []}
    for _ in range(ctx.repetitions):
        with opener() as log:
            log.create_topics([TOPIC], PARTITIONS)
            out["append"].append(_append(log, records))
            out["consume"].append(_consume(log, len(records)))
    return out



@benchmark("log.sqlite")
def sqlite(ctx: Context) -> dict[str, list[float]]:
    """SQLite engine (WAL file on local disk): append batches of 100, consume + commit."""

    @contextmanager
    def opener() -> Iterator[EventLog]:
        with scratch_dir(ctx, "bench-sqlite-") as path:
            log = open_log(LogConfig(url=f"sqlite://{path / 'log.db'}", partitions=PARTITIONS))
            try:
                yield log
            finally:
                log.close()

    return _run(ctx, opener)


@benchmark("log.kafka")
def kafka(ctx: Context) -> dict[str, list[float]]:
    """Kafka engine (local broker, acks=all, transactions): append batches of 100, consume + commit."""
    config = LogConfig(url=f"kafka://{ctx.kafka_bootstrap}", partitions=PARTITIONS, connect_timeout_s=5.0)
    try:
        open_log(config).close()
    except LogError as exc:
        raise Skip(f"no Kafka broker at {ctx.kafka_bootstrap}: {exc}") from None

    @contextmanager
    def opener() -> Iterator[EventLog]:
        namespace = f"bench-{uuid.uuid4().hex[:8]}"
        log = open_log(LogConfig(url=config.url, namespace=namespace, partitions=PARTITIONS))
        try:
            yield log
        finally:
            physical = getattr(log, "physical", None)
            log.close()
            if physical is not None:
                _delete_topic(ctx.kafka_bootstrap, physical(TOPIC))

    return _run(ctx, opener)


def _delete_topic(bootstrap: str, name: str) -> None:
    """Drop the benchmark's topic: event topics are kept forever, and this one is throwaway."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive its futures
    for future in admin.delete_topics([name], operation_timeout=30).values():
        future.result()
