"""A full replay of the log into the read models (`eventsvm replay`), in events/s, on each engine.

The log holds realistic boot flows (tests/factories.py: five events per instance, ~600 bytes each),
appended once; each repetition then replays it from the beginning. Three metrics per engine:
`replay` (eventsvm.replay: the projection decoder and the read model's fold), `readmodel` (what the
API's ReadModel does at start: a full decode of every event, then the same fold) and `read` (the
records alone, read and dropped undecoded: the floor of any replay, and what a restart from a
snapshot pays per record it steps over).
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from bench.logs import on_both_engines
from bench.suite import Context
from eventsvm.events.codec import Codec
from eventsvm.log.port import BEGINNING, EventLog, LogError, OutRecord
from eventsvm.projections.readmodel import ALL_TOPICS, ReadModel
from eventsvm.projections.replay import Drain, replay
from tests.factories import pipeline_events

PARTITIONS = 4
BATCH = 2000


def _records(count: int) -> list[OutRecord]:
    codec = Codec()
    events = pipeline_events(count // 5 + 1, random.Random(6))[:count]
    return [OutRecord(str(e.topic), e.aggregate_id.encode(), codec.encode(e)) for e in events]


def _fill(log: EventLog, records: list[OutRecord]) -> None:
    log.create_topics([str(t) for t in ALL_TOPICS], PARTITIONS)
    for i in range(0, len(records), BATCH):
        log.append(records[i : i + BATCH])


def _read_only(log: EventLog) -> int:
    reader = log.reader([str(t) for t in ALL_TOPICS], BEGINNING)
    try:
        return sum(len(batch) for batch in Drain(reader))
    finally:
        reader.close()


def _readmodel(log: EventLog, codec: Codec) -> None:
    model = ReadModel(log, codec)
    model.start(tail=False)
    model.close()


def _run(ctx: Context, opener: Callable[[], AbstractContextManager[EventLog]]) -> dict[str, list[float]]:
    records = _records(ctx.size(100_000))
    codec = Codec()
    out: dict[str, list[float]] = {"replay": [], "readmodel": [], "read": []}
    with opener() as log:
        _fill(log, records)
        for _ in range(ctx.repetitions):
            gc.collect()
            _, report = replay(log, codec)
            if report.events != len(records):
                raise LogError(f"replay folded {report.events} of {len(records)} events")
            out["replay"].append(report.events_per_second)
            gc.collect()
            started = time.perf_counter()
            _readmodel(log, codec)
            out["readmodel"].append(len(records) / (time.perf_counter() - started))
            started = time.perf_counter()
            read = _read_only(log)
            out["read"].append(read / (time.perf_counter() - started))
    return out


on_both_engines(
    "replay", _run, [str(t) for t in ALL_TOPICS], PARTITIONS,
    "Full replay of 100k instance events from the SQLite engine into the read models.",
    "Full replay of 100k instance events from the Kafka engine (local broker) into the read models.",
)
