"""A full replay of the log into the read models (`eventsvm replay`), in events/s, on each engine.

The log holds realistic boot flows (tests/factories.py: five events per instance, ~600 bytes each),
appended once; each repetition then replays it from the beginning. Three metrics per engine:
`replay` (eventsvm.replay: the projection decoder and the read model's fold), `readmodel` (what the
API's ReadModel does at start: a full decode of every event, then the same fold) and `read` (the
records alone, read and dropped undecoded: the floor of any replay, and what a restart from a
snapshot pays per record it steps over).

`replay_signed` replays a log of signed events (each signed by the writer that may write it, as the
cloud stores them) three ways: `unverified` (a codec without the key ring: the frames are stepped
over, no signature checked; the floor), `verified` (the writers' key ring, every Ed25519 signature
verified: a fresh replay without a seal) and `sealed` (under a verified seal of the whole log,
eventsvm.projections.seal: digests instead of signatures). Each repetition uses a fresh key ring, so
no signature verified by an earlier one is remembered. `unverified_cpu` and `sealed_cpu` are the
same replays in events per second of the benchmark process's CPU time (the machine is shared).
`sealed_two_processes` is the sealed replay as `eventsvm replay` runs a large log: a second
process (ReplayHelper, forked on SQLite, spawned beside a Kafka client) folds half of the instance
partitions on the other core.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial

from bench.logs import LogOpener, on_both_engines
from bench.suite import Context, scratch_dir
from eventsvm.app.writers import key_dir, trusting_codec
from eventsvm.events.codec import Codec
from eventsvm.log.factory import open_log
from eventsvm.log.port import BEGINNING, EventLog, LogError, OutRecord
from eventsvm.projections.readmodel import ALL_TOPICS, ReadModel
from eventsvm.projections.replay import Drain, ReplayHelper, ReplayReport, replay
from eventsvm.projections.seal import Sealing, SealStore
from tests.factories import pipeline_events, signed_records

PARTITIONS = 4
BATCH = 2000


def _records(count: int) -> list[OutRecord]:
    codec = Codec()
    events = pipeline_events(count // 5 + 1, random.Random(6))[:count]
    return [OutRecord(str(e.topic), e.aggregate_id.encode(), codec.encode(e)) for e in events]


def _timed(count: int, report: ReplayReport, started: float) -> float:
    if report.events != count:
        raise LogError(f"replay folded {report.events} of {count} events")
    return count / (time.perf_counter() - started)


class _Cpu:
    """Events per second of this process's CPU time: on a shared machine, what a replay costs
    however many other processes wait for the same cores (the wall-clock rate then is not)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.started = time.process_time()

    def rate(self) -> float:
        return self.count / (time.process_time() - self.started)


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


def _run_signed(ctx: Context, opener: LogOpener) -> dict[str, list[float]]:
    count = ctx.size(100_000)
    out: dict[str, list[float]] = {"unverified": [], "verified": [], "sealed": [], "unverified_cpu": [],
                                   "sealed_cpu": [], "sealed_two_processes": []}
    with scratch_dir(ctx, "bench-signed-") as data_dir, opener() as log:
        records = signed_records(data_dir, pipeline_events(count // 5 + 1, random.Random(6))[:count])
        _fill(log, records)
        # a gigabyte at a million events that no replay reads: a replay from the command line runs
        # in a process without it (and the two-process replay's fork would copy its page tables)
        del records
        seals = SealStore(data_dir, key_dir(data_dir), "bench")
        sealing = Sealing()
        replay(log, trusting_codec(data_dir), sealing=sealing)  # the full replay that seals
        seals.save(sealing)
        for _ in range(ctx.repetitions):
            gc.collect()
            started, cpu = time.perf_counter(), _Cpu(count)
            _, report = replay(log, Codec())
            out["unverified"].append(_timed(count, report, started))
            out["unverified_cpu"].append(cpu.rate())
            gc.collect()
            started = time.perf_counter()
            _, report = replay(log, trusting_codec(data_dir))
            out["verified"].append(_timed(count, report, started))
            gc.collect()
            started, cpu = time.perf_counter(), _Cpu(count)  # the seal's load and check included
            _, report = replay(log, trusting_codec(data_dir), sealing=Sealing(seals.load(log)))
            if report.sealed != count:
                raise LogError(f"the seal vouched for {report.sealed} of {count} records")
            out["sealed"].append(_timed(count, report, started))
            out["sealed_cpu"].append(cpu.rate())
            gc.collect()
            helper = ReplayHelper(partial(open_log, log.config), partial(trusting_codec, data_dir), 0)
            started = time.perf_counter()
            _, report = replay(log, trusting_codec(data_dir), sealing=Sealing(seals.load(log)), helper=helper)
            if report.sealed != count or not report.helped:
                raise LogError(f"the seal vouched for {report.sealed} of {count} records, the helper folded "
                               f"{report.helped}")
            out["sealed_two_processes"].append(_timed(count, report, started))
    return out


on_both_engines(
    "replay_signed", _run_signed, [str(t) for t in ALL_TOPICS], PARTITIONS,
    "Full replay of 100k signed instance events from the SQLite engine: signatures stepped over, "
    "each verified, or under a verified seal.",
    "Full replay of 100k signed instance events from the Kafka engine (local broker): signatures "
    "stepped over, each verified, or under a verified seal.",
)
